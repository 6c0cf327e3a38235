//! Tables in Google Cloud Storage (`gs://`) and Azure Blob Storage (`az://`), against
//! their emulators on loopback (fake-gcs-server, Azurite): `COPY ... TO` Parquet and CSV
//! that pyarrow reads (downloaded through the emulator's own API), read back as external
//! tables and URL tables and joined with a VIDEO table, with `gcp.*` / `azure.*` options
//! and with the `GOOGLE_*` / `AZURE_*` environment instead, embedded and on a 2-executor
//! cluster whose processes have no store settings of their own; and the refusals.
//!
//! fake-gcs-server takes no uploads through GCS's XML API, which object_store's GCS client
//! writes with, so `COPY ... TO 'gs://...'` is not tested here: the GCS tests write the
//! same files locally and upload them through the emulator's JSON API, then read them
//! through framefusion.

use framefusion_tests::cloud::{AZURE_ACCOUNT, AZURE_KEY, Emulator};
use framefusion_tests::cluster::TestCluster;
use framefusion_tests::sql_with_stores as sql;
use framefusion_tests::{corpus_dir, ok_rows, run_python};

/// One of the two stores under test: its emulator, the URL of its bucket, its options
/// (an `OPTIONS` clause body) and the same settings as environment variables.
struct Store {
    emulator: Emulator,
    bucket_url: &'static str,
    /// Whether `COPY` can write to its emulator (see the module docs).
    copy_to: bool,
    options: String,
    env: Vec<(&'static str, String)>,
}

/// A service account that asks for no OAuth token (as object_store's own tests of the
/// emulator): the emulator checks no credentials.
const GCS_EMULATOR_ACCOUNT: &str = r#"{"private_key": "unused", "private_key_id": "unused", "client_email": "emulator@framefusion.test", "disable_oauth": true}"#;

fn gcs() -> Store {
    let emulator = Emulator::gcs(&["curated"]);
    let url = emulator.url();
    Store {
        options: format!(
            "'gcp.base_url' '{url}', 'gcp.service_account_key' '{GCS_EMULATOR_ACCOUNT}'"
        ),
        env: vec![
            ("GOOGLE_BASE_URL", url),
            (
                "GOOGLE_SERVICE_ACCOUNT_KEY",
                GCS_EMULATOR_ACCOUNT.to_owned(),
            ),
        ],
        emulator,
        bucket_url: "gs://curated",
        copy_to: false,
    }
}

fn azure() -> Store {
    let emulator = Emulator::azurite(&["curated"]);
    let endpoint = emulator.azure_endpoint();
    Store {
        options: format!(
            "'azure.endpoint' '{endpoint}', 'azure.account_name' '{AZURE_ACCOUNT}', 'azure.access_key' '{AZURE_KEY}'"
        ),
        env: vec![
            ("AZURE_STORAGE_ENDPOINT", endpoint),
            ("AZURE_STORAGE_ACCOUNT_NAME", AZURE_ACCOUNT.to_owned()),
            ("AZURE_STORAGE_ACCOUNT_KEY", AZURE_KEY.to_owned()),
        ],
        emulator,
        bucket_url: "az://curated",
        copy_to: true,
    }
}

/// Rows of the Parquet or CSV files under `prefix` of the store's bucket, downloaded
/// through the emulator's API and read by pyarrow, sorted by path.
fn pyarrow_rows(store: &Store, prefix: &str, format: &str) -> serde_json::Value {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let n = store.emulator.download("curated", prefix, dir.path());
    assert!(n >= 1, "nothing under {prefix}");
    let script = "import json, sys, pyarrow.dataset as ds\nt = ds.dataset(sys.argv[1], format=sys.argv[2]).to_table()\nprint(json.dumps(sorted(t.to_pylist(), key=lambda r: r['path'])))";
    let text = run_python(
        "pyarrow reading what COPY wrote",
        script,
        &[dir.path().as_os_str(), std::ffi::OsStr::new(format)],
    );
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// Copies the probe columns of the local corpus to the store as Parquet and CSV, reads
/// both back (external tables and a URL table) joined with the VIDEO table, and checks
/// the files with pyarrow. With `by_env` the settings come from the environment, else
/// from options on the first statement that names the bucket.
fn copies_and_reads(store: &Store, by_env: bool, cluster: Option<&str>, out: &str) {
    let (env, with) = if by_env {
        (store.env.clone(), String::new())
    } else {
        (Vec::new(), format!(" OPTIONS ({})", store.options))
    };
    let (with_header, base) = (
        if by_env {
            " OPTIONS ('format.has_header' 'true')".to_owned()
        } else {
            format!(" OPTIONS ('format.has_header' 'true', {})", store.options)
        },
        format!("{}/{out}", store.bucket_url),
    );
    let corpus = corpus_dir();
    let local = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let target = if store.copy_to {
        base.clone()
    } else {
        local.path().display().to_string()
    };
    let copies = format!(
        "CREATE EXTERNAL TABLE raw STORED AS VIDEO LOCATION '{}';
         COPY (SELECT path, width, frame_count FROM raw WHERE probe_error IS NULL) TO '{target}/parquet/' STORED AS PARQUET{};
         COPY (SELECT path, frame_count FROM raw) TO '{target}/csv/' STORED AS CSV{}",
        corpus.display(),
        if store.copy_to { with.as_str() } else { "" },
        if store.copy_to { with.as_str() } else { "" },
    );
    let rows = ok_rows(&sql(&env, cluster, &copies));
    assert_eq!(
        rows,
        vec![
            serde_json::json!({"count": 5}),
            serde_json::json!({"count": 6})
        ],
        "{out}"
    );
    if !store.copy_to {
        let uploaded = store
            .emulator
            .upload_gcs("curated", &format!("{out}/"), local.path());
        assert!(uploaded >= 2, "{uploaded} files");
    }
    let script = format!(
        "CREATE EXTERNAL TABLE raw STORED AS VIDEO LOCATION '{}';
         CREATE EXTERNAL TABLE p STORED AS PARQUET LOCATION '{base}/parquet/'{with};
         CREATE EXTERNAL TABLE c STORED AS CSV LOCATION '{base}/csv/'{with_header};
         SELECT count(*) AS n, sum(p.frame_count) AS frames, count(c.path) AS in_csv
         FROM p JOIN raw ON p.path = raw.path AND p.width = raw.width
         LEFT JOIN c ON c.path = p.path AND c.frame_count = p.frame_count;
         SELECT count(*) AS n FROM '{base}/parquet/' WHERE frame_count = 1323",
        corpus.display()
    );
    let rows = ok_rows(&sql(&env, cluster, &script));
    assert_eq!(
        rows,
        vec![
            serde_json::json!({"n": 5, "frames": 132 + 250 + 120 + 23 + 1323, "in_csv": 5}),
            serde_json::json!({"n": 1}),
        ],
        "{out}"
    );
    let parquet = pyarrow_rows(store, &format!("{out}/parquet/"), "parquet");
    let csv = pyarrow_rows(store, &format!("{out}/csv/"), "csv");
    assert_eq!(parquet.as_array().map_or(0, Vec::len), 5, "{parquet}");
    assert_eq!(csv.as_array().map_or(0, Vec::len), 6, "{csv}");
    let bikes = corpus.join("bikes.mp4");
    let bikes = format!("file://{}", bikes.display());
    assert!(
        parquet
            .as_array()
            .into_iter()
            .flatten()
            .any(|r| r["path"] == bikes.as_str() && r["width"] == 640 && r["frame_count"] == 250),
        "{parquet}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_in_gcs_and_azure_embedded() {
    for store in [gcs(), azure()] {
        copies_and_reads(&store, false, None, "options");
        copies_and_reads(&store, true, None, "env");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_in_gcs_and_azure_on_a_cluster() {
    // no store settings in the cluster's environment: the options travel with the queries
    let cluster = TestCluster::start(2, 1, 10).await;
    for store in [gcs(), azure()] {
        copies_and_reads(&store, false, Some(&cluster.url()), "cluster");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_store_options_are_refused_plainly() {
    let store = gcs();
    let fail = |statements: &str| {
        let out = sql(&[], None, statements);
        assert_eq!(out.status.code(), Some(1), "{statements}");
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        stderr
    };
    let err = fail(
        "CREATE EXTERNAL TABLE t STORED AS PARQUET LOCATION 'gs://curated/x/' OPTIONS ('gcp.base_ulr' 'http://127.0.0.1:1')",
    );
    assert!(
        err.contains("unknown object store option 'gcp.base_ulr'") && err.contains("gcp.base_url"),
        "{err}"
    );
    let err = fail(&format!(
        "CREATE EXTERNAL TABLE t STORED AS PARQUET LOCATION 's3://curated/x/' OPTIONS ({})",
        store.options
    ));
    assert!(
        err.contains("gcp.* options apply to gs:// locations") && err.contains("'s3://curated/x/'"),
        "{err}"
    );
    let err = fail(&format!(
        "CREATE EXTERNAL TABLE t STORED AS PARQUET LOCATION 'gs://no-such-bucket/run-1/' OPTIONS ({})",
        store.options
    ));
    assert!(
        err.contains("gs://no-such-bucket/run-1/") && err.contains("no such"),
        "{err}"
    );
    let azure = azure();
    let err = fail(&format!(
        "CREATE EXTERNAL TABLE t STORED AS PARQUET LOCATION 'az://curated/x/' OPTIONS ('azure.endpoint' '{}', 'azure.account_name' '{AZURE_ACCOUNT}', 'azure.access_key' 'bm90IHRoZSBrZXk=')",
        azure.emulator.azure_endpoint()
    ));
    assert!(
        err.contains("az://curated/x/") && err.contains("access denied"),
        "{err}"
    );
}
