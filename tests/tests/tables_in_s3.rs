//! Every table kind in object storage, against the S3 server on loopback: a manifest
//! written to `s3://` read back as a Parquet table and as a URL table and joined with the
//! VIDEO table, `COPY ... TO 's3://...'` as Parquet and CSV that pyarrow reads, with the
//! `AWS_*` environment and with `aws.*` options instead, embedded and on a cluster; and the
//! refusals that name the location. A manifest's markers and work in progress (`_SUCCESS`,
//! `_tmp/`, `_framefusion/`) are not read as data.

use std::path::Path;
use std::process::Command;

use framefusion_tests::cluster::TestCluster;
use framefusion_tests::s3::S3Server;
use framefusion_tests::sql_with_stores as sql;
use framefusion_tests::{corpus_dir, framefusion_bin, ok_rows, run_python};

/// A manifest of the probe job over `s3://corpus/raw/`, written to
/// `s3://corpus/manifests/m1/` with the environment's credentials.
fn write_manifest(s3: &S3Server, work: &Path) {
    let job = work.join("probe.sql");
    std::fs::write(
        &job,
        "CREATE EXTERNAL TABLE src STORED AS VIDEO LOCATION 's3://corpus/raw/';
         SELECT path, width, frame_count, probe_error AS error FROM src",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let mut cmd = Command::new(framefusion_bin());
    for (k, v) in s3.env() {
        cmd.env(k, v);
    }
    crate::manifest::finished(
        cmd.arg("run")
            .arg(&job)
            .args([
                "--output",
                "s3://corpus/manifests/m1/",
                "--no-catalog",
                "-q",
            ])
            .output()
            .unwrap_or_else(|e| panic!("{e}")),
    );
}

/// Rows of the Parquet or CSV files the server stores under `prefix` of `bucket`, read
/// by pyarrow, sorted by path.
fn pyarrow_rows(s3: &S3Server, bucket: &str, prefix: &str, format: &str) -> serde_json::Value {
    let script = "import json, sys, pyarrow.dataset as ds\nt = ds.dataset(sys.argv[1], format=sys.argv[2]).to_table()\nprint(json.dumps(sorted(t.to_pylist(), key=lambda r: r['path'])))";
    let path = s3.root().join(bucket).join(prefix);
    let text = run_python(
        "pyarrow reading what COPY wrote",
        script,
        &[path.as_os_str(), std::ffi::OsStr::new(format)],
    );
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// The checks of one session: reading the manifest three ways and copying it out.
/// `options` is the OPTIONS clause body for the first statement that names the bucket
/// (empty: the environment gives the credentials).
fn reads_and_copies(s3: &S3Server, env: &[(&str, String)], cluster: Option<&str>, out: &str) {
    let with = |options: &str| {
        if options.is_empty() {
            String::new()
        } else {
            format!(" OPTIONS ({options})")
        }
    };
    let options = if env.is_empty() {
        s3.table_options()
    } else {
        String::new()
    };
    // the manifest as a Parquet table, joined with the VIDEO table it describes
    let script = format!(
        "CREATE EXTERNAL TABLE m STORED AS PARQUET LOCATION 's3://corpus/manifests/m1/'{};
         CREATE EXTERNAL TABLE raw STORED AS VIDEO LOCATION 's3://corpus/raw/'{};
         SELECT count(*) AS n, sum(m.frame_count) AS frames, count(m.error) AS errors
         FROM m JOIN raw ON m.path = raw.path AND m.width IS NOT DISTINCT FROM raw.width",
        with(&options),
        with(&options),
    );
    let rows = ok_rows(&sql(env, cluster, &script));
    assert_eq!(
        rows,
        vec![serde_json::json!({"n": 6, "frames": 132 + 250 + 120 + 23 + 1323, "errors": 1})]
    );
    // the same folder as a URL table (a table with options first names the bucket), and
    // COPY of it to Parquet and CSV
    let script = format!(
        "CREATE EXTERNAL TABLE m STORED AS PARQUET LOCATION 's3://corpus/manifests/m1/'{};
         COPY (SELECT path, width FROM 's3://corpus/manifests/m1/') TO 's3://corpus/{out}/parquet/' STORED AS PARQUET{};
         COPY (SELECT path, frame_count FROM m) TO 's3://corpus/{out}/csv/' STORED AS CSV{};
         SELECT count(*) AS n FROM 's3://corpus/manifests/m1/' WHERE error IS NULL",
        with(&options),
        with(&options),
        with(&options),
    );
    // each COPY answers the rows it wrote
    let rows = ok_rows(&sql(env, cluster, &script));
    assert_eq!(
        rows,
        vec![
            serde_json::json!({"count": 6}),
            serde_json::json!({"count": 6}),
            serde_json::json!({"n": 5})
        ]
    );
    let parquet = pyarrow_rows(s3, "corpus", &format!("{out}/parquet"), "parquet");
    let csv = pyarrow_rows(s3, "corpus", &format!("{out}/csv"), "csv");
    assert_eq!(parquet.as_array().map_or(0, Vec::len), 6, "{parquet}");
    assert_eq!(csv.as_array().map_or(0, Vec::len), 6, "{csv}");
    assert!(
        parquet
            .as_array()
            .into_iter()
            .flatten()
            .any(|r| r["path"] == "s3://corpus/raw/bikes.mp4" && r["width"] == 640),
        "{parquet}"
    );
    assert!(
        csv.as_array()
            .into_iter()
            .flatten()
            .any(|r| r["path"] == "s3://corpus/raw/trailer_bbb.mp4" && r["frame_count"] == 1323),
        "{csv}"
    );
}

async fn corpus_in_s3() -> (S3Server, tempfile::TempDir) {
    let s3 = S3Server::start();
    s3.create_bucket("corpus");
    assert_eq!(s3.upload_dir("corpus", "raw/", &corpus_dir()).await, 6);
    let work = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    write_manifest(&s3, work.path());
    // a run in progress leaves its parts being written under _tmp/ (local manifests) and
    // its state under _framefusion/: half a part there is never read
    use object_store::ObjectStoreExt;
    s3.client("corpus")
        .put(
            &object_store::path::Path::from("manifests/m1/_tmp/part-9-000009.parquet"),
            object_store::PutPayload::from_static(b"PAR1 half written"),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    (s3, work)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifests_and_copies_in_s3_embedded() {
    let (s3, _work) = corpus_in_s3().await;
    reads_and_copies(&s3, &s3.env(), None, "env");
    reads_and_copies(&s3, &[], None, "options");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifests_and_copies_in_s3_on_a_cluster() {
    let (s3, _work) = corpus_in_s3().await;
    let env = s3.env();
    let shared: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let cluster = TestCluster::start_with_env_everywhere(2, 1, 10, &shared).await;
    reads_and_copies(&s3, &env, Some(&cluster.url()), "cluster-env");
    drop(cluster);
    // no credentials in the cluster's environment: the options travel with the queries
    let cluster = TestCluster::start(2, 1, 10).await;
    reads_and_copies(&s3, &[], Some(&cluster.url()), "cluster-options");
    // a table of the persistent catalog defined with options by another process: its
    // options travel too when a later process queries it on the cluster
    let work = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let catalog = work.path().join("catalog.json");
    let with_catalog = |cluster: Option<&str>, statements: &str| {
        let mut cmd = Command::new(framefusion_bin());
        cmd.env_remove("AWS_ENDPOINT_URL")
            .args(["sql", "--format", "json", "--catalog"])
            .arg(&catalog);
        if let Some(url) = cluster {
            cmd.args(["--cluster", url]);
        }
        framefusion_tests::no_bug_report(
            cmd.arg(statements)
                .output()
                .unwrap_or_else(|e| panic!("cannot run framefusion: {e}")),
        )
    };
    ok_rows(&with_catalog(
        None,
        &format!(
            "CREATE EXTERNAL TABLE kept STORED AS PARQUET LOCATION 's3://corpus/manifests/m1/' OPTIONS ({})",
            s3.table_options()
        ),
    ));
    let rows = ok_rows(&with_catalog(
        Some(&cluster.url()),
        "SELECT count(*) AS n, count(error) AS errors FROM kept",
    ));
    assert_eq!(rows, vec![serde_json::json!({"n": 6, "errors": 1})]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_stores_and_buckets_name_the_location() {
    let s3 = S3Server::start();
    s3.create_bucket("corpus");
    let env = s3.env();
    let fail = |statements: &str| {
        let out = sql(&env, None, statements);
        assert_eq!(out.status.code(), Some(1), "{statements}");
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(!stderr.contains("bug in DataFusion"), "{stderr}");
        stderr
    };
    let err = fail("CREATE EXTERNAL TABLE t STORED AS PARQUET LOCATION 'hdfs://cluster/x/'");
    assert!(
        err.contains("no object store serves 'hdfs://cluster/x/'") && err.contains("s3://"),
        "{err}"
    );
    let err = fail("SELECT * FROM 's3://no-such-bucket/run-1/'");
    assert!(
        err.contains("s3://no-such-bucket/run-1/") && err.contains("no such bucket"),
        "{err}"
    );
    let err = fail("CREATE EXTERNAL TABLE t STORED AS PARQUET LOCATION 's3://no-such-bucket/m/'");
    assert!(
        err.contains("s3://no-such-bucket/m/") && err.contains("no such bucket"),
        "{err}"
    );
    let err = fail(
        "CREATE EXTERNAL TABLE t STORED AS PARQUET LOCATION 's3://corpus/x/' OPTIONS ('aws.endpoit' 'http://127.0.0.1:1')",
    );
    assert!(
        err.contains("unknown object store option 'aws.endpoit'") && err.contains("aws.endpoint"),
        "{err}"
    );
    let err = fail("SELECT * FROM 's3://corpus/empty/'");
    assert!(
        err.contains("'s3://corpus/empty/' holds no data files"),
        "{err}"
    );
}
