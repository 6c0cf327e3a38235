//! The Flight SQL server with clients nobody in this project wrote: the ADBC Flight SQL
//! driver (Python, from PyPI) and the arrow-flight Rust client; results equal the embedded
//! engine's; authentication, allowed locations, sessions, cancellation, TLS, a cluster.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use arrow_flight::sql::client::FlightSqlServiceClient;
use arrow_flight::sql::{CommandGetDbSchemas, CommandGetTables, ProstMessageExt, SqlInfo};
use arrow_flight::{Action, FlightInfo};
use datafusion::arrow::array::{Int64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::util::pretty::pretty_format_batches;
use framefusion_tests::cluster::TestCluster;
use framefusion_tests::flight::{FlightServer, STATIC_TOKEN, USER, cpu_ticks};
use framefusion_tests::{corpus_dir, query, run_python};
use futures::TryStreamExt;
use prost::Message;
use tonic::Code;
use tonic::transport::Channel;

type Client = FlightSqlServiceClient<Channel>;

const SUMMARY: &str = "SELECT regexp_replace(path, '.*/', '') AS file, width, height, round(duration_s, 3) AS duration_s, video_codec, probe_error IS NOT NULL AS failed FROM raw ORDER BY file";

fn create_raw(corpus: &Path) -> String {
    format!(
        "CREATE EXTERNAL TABLE IF NOT EXISTS raw STORED AS VIDEO LOCATION '{}'",
        corpus.display()
    )
}

/// The embedded engine's answer, as a text table.
async fn embedded(sql: &str) -> String {
    let batches = query(&format!("{}; {sql}", create_raw(&corpus_dir()))).await;
    pretty_format_batches(&batches)
        .unwrap_or_else(|e| panic!("{e}"))
        .to_string()
}

async fn fetch(client: &mut Client, info: FlightInfo) -> Result<Vec<RecordBatch>, tonic::Status> {
    let mut batches = Vec::new();
    for endpoint in info.endpoint {
        let ticket = endpoint
            .ticket
            .unwrap_or_else(|| panic!("an endpoint without a ticket"));
        let stream = client.do_get(ticket).await.map_err(status)?;
        batches.extend(stream.try_collect::<Vec<_>>().await.map_err(status)?);
    }
    Ok(batches)
}

fn status(e: arrow_flight::error::FlightError) -> tonic::Status {
    match e {
        arrow_flight::error::FlightError::Tonic(s) => *s,
        // some client calls fold the status into text
        other => {
            let text = other.to_string();
            let code = [
                (Code::Unauthenticated, "Unauthenticated"),
                // the handshake folds the code into its description
                (
                    Code::Unauthenticated,
                    "does not have valid authentication credentials",
                ),
                (Code::PermissionDenied, "PermissionDenied"),
                (Code::NotFound, "NotFound"),
                (Code::InvalidArgument, "InvalidArgument"),
                (Code::Cancelled, "Cancelled"),
            ]
            .into_iter()
            .find(|(_, name)| text.contains(name))
            .map_or(Code::Unknown, |(code, _)| code);
            tonic::Status::new(code, text)
        }
    }
}

async fn run(client: &mut Client, sql: &str) -> Result<Vec<RecordBatch>, tonic::Status> {
    let info = client.execute(sql.to_owned(), None).await.map_err(status)?;
    fetch(client, info).await
}

/// The rows of `sql` as a text table (panics naming the statement if it fails).
async fn text(client: &mut Client, sql: &str) -> String {
    table(
        &run(client, sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}")),
    )
}

fn table(batches: &[RecordBatch]) -> String {
    pretty_format_batches(batches)
        .unwrap_or_else(|e| panic!("{e}"))
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adbc_python_client_runs_ddl_queries_prepared_statements_and_metadata() {
    let corpus = corpus_dir();
    let server = FlightServer::start(&corpus, &[]);
    let script = r#"
import json, sys
import adbc_driver_flightsql.dbapi as flightsql
uri, user, password, create, summary = sys.argv[1:6]
conn = flightsql.connect(uri, db_kwargs={"username": user, "password": password})
cur = conn.cursor()
cur.execute(create)
cur.fetchall()
cur.execute(summary)
rows = [list(r) for r in cur.fetchall()]
cur.execute("SELECT regexp_replace(path, '.*/', '') AS f FROM raw WHERE width > ? AND height < ? ORDER BY f", parameters=(500, 1080))
prepared = [r[0] for r in cur.fetchall()]
info = conn.adbc_get_info()
objects = conn.adbc_get_objects(depth="all", table_name_filter="raw").read_all().to_pylist()
tables = [t["table_name"] for c in objects for s in c["catalog_db_schemas"] for t in s["db_schema_tables"]]
columns = [col["column_name"] for c in objects for s in c["catalog_db_schemas"] for t in s["db_schema_tables"] for col in (t["table_columns"] or [])]
schema = conn.adbc_get_table_schema("raw")
print(json.dumps({
  "rows": rows, "prepared": prepared, "vendor": info.get("vendor_name"),
  "tables": tables, "columns": columns, "table_types": conn.adbc_get_table_types(),
  "schema": [f.name for f in schema],
}))
"#;
    let uri = format!("grpc://{}", server.addr);
    let create = create_raw(&corpus);
    let text = run_python(
        "the ADBC Flight SQL client",
        script,
        &[
            uri.as_ref(),
            USER.0.as_ref(),
            USER.1.as_ref(),
            create.as_ref(),
            SUMMARY.as_ref(),
        ],
    );
    let got: serde_json::Value = serde_json::from_str(text.lines().last().unwrap_or("{}"))
        .unwrap_or_else(|e| panic!("{e}: {text}"));

    // the same rows as the embedded engine
    let batches = query(&format!("{}; {SUMMARY}", create_raw(&corpus))).await;
    let mut expected = Vec::new();
    let json = {
        let mut w = datafusion::arrow::json::ArrayWriter::new(Vec::new());
        for b in &batches {
            w.write(b).unwrap_or_else(|e| panic!("{e}"));
        }
        w.finish().unwrap_or_else(|e| panic!("{e}"));
        w.into_inner()
    };
    let objects: Vec<serde_json::Value> = serde_json::from_slice(&json).unwrap_or_default();
    for o in objects {
        expected.push(serde_json::json!([
            o["file"],
            o["width"],
            o["height"],
            o["duration_s"],
            o["video_codec"],
            o["failed"]
        ]));
    }
    assert_eq!(got["rows"], serde_json::Value::Array(expected), "{got}");
    assert_eq!(
        got["prepared"],
        serde_json::json!(["bigbuckbunny.mp4", "bikes.mp4", "trailer_bbb.mp4"])
    );
    assert_eq!(got["vendor"], "framefusion");
    assert_eq!(got["tables"], serde_json::json!(["raw"]));
    assert!(
        got["columns"].as_array().is_some_and(|c| c.len() == 17),
        "{got}"
    );
    assert_eq!(
        got["table_types"],
        serde_json::json!(["LOCAL TEMPORARY", "TABLE", "VIEW"])
    );
    assert_eq!(got["schema"][0], "path");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_client_runs_ddl_queries_prepared_statements_and_metadata() {
    let corpus = corpus_dir();
    let server = FlightServer::start(&corpus, &[]);
    let mut client = server.client().await;
    // DDL through an update and through a query
    let changed = client
        .execute_update(create_raw(&corpus), None)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(changed <= 0);
    run(
        &mut client,
        "CREATE VIEW big AS SELECT * FROM raw WHERE width >= 1280",
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let got = text(&mut client, SUMMARY).await;
    assert_eq!(got, embedded(SUMMARY).await);

    // a prepared statement with a parameter, run twice with different values
    let mut prepared = client
        .prepare(
            "SELECT count(*) AS n FROM raw WHERE width >= $1".to_owned(),
            None,
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        prepared
            .parameter_schema()
            .map(|s| s.fields().len())
            .unwrap_or(0),
        1
    );
    let mut counts = Vec::new();
    for min in [1000i32, 0] {
        let params = RecordBatch::try_new(
            std::sync::Arc::new(Schema::new(vec![Field::new("$1", DataType::Int32, false)])),
            vec![std::sync::Arc::new(
                datafusion::arrow::array::Int32Array::from(vec![min]),
            )],
        )
        .unwrap_or_else(|e| panic!("{e}"));
        prepared
            .set_parameters(params)
            .unwrap_or_else(|e| panic!("{e}"));
        let info = prepared.execute().await.unwrap_or_else(|e| panic!("{e}"));
        let batches = fetch(&mut client, info)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let n = batches[0]
            .column(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .map(|a| a.value(0))
            .unwrap_or(-1);
        counts.push(n);
    }
    assert_eq!(
        counts,
        [3, 5],
        "width >= 1000: three files; >= 0: every probed file"
    );
    prepared.close().await.unwrap_or_else(|e| panic!("{e}"));

    // metadata
    let info = client
        .get_catalogs()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let catalogs = table(
        &fetch(&mut client, info)
            .await
            .unwrap_or_else(|e| panic!("{e}")),
    );
    assert!(catalogs.contains("datafusion"), "{catalogs}");
    let info = client
        .get_db_schemas(CommandGetDbSchemas {
            catalog: Some("datafusion".into()),
            db_schema_filter_pattern: None,
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let schemas = table(
        &fetch(&mut client, info)
            .await
            .unwrap_or_else(|e| panic!("{e}")),
    );
    assert!(schemas.contains("public"), "{schemas}");
    let info = client
        .get_tables(CommandGetTables {
            catalog: Some("datafusion".into()),
            db_schema_filter_pattern: Some("public".into()),
            table_name_filter_pattern: Some("%".into()),
            table_types: vec![],
            include_schema: true,
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let tables = fetch(&mut client, info)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let names: Vec<String> = tables
        .iter()
        .flat_map(|b| {
            let col = b
                .column_by_name("table_name")
                .and_then(|c| c.as_any().downcast_ref::<StringArray>().cloned())
                .unwrap_or_else(|| StringArray::from(Vec::<String>::new()));
            col.iter().flatten().map(str::to_owned).collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(names, ["big", "raw"]);
    assert!(tables[0].column_by_name("table_schema").is_some());
    let info = client
        .get_table_types()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let types = table(
        &fetch(&mut client, info)
            .await
            .unwrap_or_else(|e| panic!("{e}")),
    );
    assert!(types.contains("VIEW") && types.contains("TABLE"), "{types}");
    let info = client
        .get_sql_info(vec![SqlInfo::FlightSqlServerName])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let sql_info = table(
        &fetch(&mut client, info)
            .await
            .unwrap_or_else(|e| panic!("{e}")),
    );
    assert!(sql_info.contains("framefusion"), "{sql_info}");

    // errors carry their codes
    let bad = run(&mut client, "SELEC 1").await.err().map(|s| s.code());
    assert_eq!(bad, Some(Code::InvalidArgument));
    let missing = run(&mut client, "SELECT * FROM nope").await.err();
    assert_eq!(
        missing.as_ref().map(tonic::Status::code),
        Some(Code::NotFound)
    );
    assert!(
        missing
            .as_ref()
            .is_some_and(|s| s.message().contains("'datafusion.public.nope' not found")),
        "{missing:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_without_a_valid_token_are_refused() {
    let corpus = corpus_dir();
    let server = FlightServer::start(&corpus, &["--token-ttl", "2"]);
    // no token
    let mut anonymous = server.anonymous().await;
    let err = run(&mut anonymous, "SELECT 1")
        .await
        .err()
        .map(|s| s.code());
    assert_eq!(err, Some(Code::Unauthenticated));
    let err = anonymous.get_catalogs().await.err().map(status);
    assert_eq!(err.map(|s| s.code()), Some(Code::Unauthenticated));
    // a wrong password
    let err = anonymous.handshake(USER.0, "wrong").await.err().map(status);
    assert_eq!(
        err.as_ref().map(tonic::Status::code),
        Some(Code::Unauthenticated),
        "{err:?}"
    );
    // an invalid token
    anonymous.set_token("made-up".to_owned());
    let err = run(&mut anonymous, "SELECT 1")
        .await
        .err()
        .map(|s| s.code());
    assert_eq!(err, Some(Code::Unauthenticated));
    // the static token
    anonymous.set_token(STATIC_TOKEN.to_owned());
    assert!(run(&mut anonymous, "SELECT 1").await.is_ok());
    // an issued token works, then expires
    let mut client = server.client().await;
    assert!(run(&mut client, "SELECT 1").await.is_ok());
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let err = run(&mut client, "SELECT 1").await.err();
    assert_eq!(
        err.as_ref().map(tonic::Status::code),
        Some(Code::Unauthenticated)
    );
    assert!(err.is_some_and(|s| s.message().contains("expired")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locations_outside_the_allowed_roots_are_refused() {
    let work = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let root = work.path().join("allowed");
    std::fs::create_dir_all(&root).unwrap_or_else(|e| panic!("{e}"));
    std::fs::copy(corpus_dir().join("bikes.mp4"), root.join("bikes.mp4"))
        .unwrap_or_else(|e| panic!("{e}"));
    std::fs::create_dir_all(work.path().join("secret")).unwrap_or_else(|e| panic!("{e}"));
    std::fs::copy(
        corpus_dir().join("bikes.mp4"),
        work.path().join("secret/x.mp4"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    std::os::unix::fs::symlink(work.path().join("secret"), root.join("link"))
        .unwrap_or_else(|e| panic!("{e}"));
    let server = FlightServer::start(&root, &[]);
    // a table defined outside the roots by someone else, in the shared catalog
    let outside = framefusion_tests::sql_with_catalog(
        &server.catalog,
        &[],
        &format!(
            "CREATE EXTERNAL TABLE planted STORED AS VIDEO LOCATION '{}'",
            work.path().join("secret").display()
        ),
    );
    assert!(
        outside.status.success(),
        "{}",
        String::from_utf8_lossy(&outside.stderr)
    );

    let mut client = server.client().await;
    let r = root.display();
    let denied = [
        "CREATE EXTERNAL TABLE e STORED AS VIDEO LOCATION '/etc'".to_owned(),
        "CREATE EXTERNAL TABLE e STORED AS VIDEO LOCATION 'file:///etc'".to_owned(),
        format!("CREATE EXTERNAL TABLE e STORED AS VIDEO LOCATION '{r}/../secret'"),
        format!("CREATE EXTERNAL TABLE e STORED AS VIDEO LOCATION '{r}/link'"),
        "CREATE EXTERNAL TABLE e STORED AS CSV LOCATION '/etc/passwd'".to_owned(),
        "SELECT count(*) FROM frames('/etc', 'keyframes')".to_owned(),
        format!("SELECT count(*) FROM frames('{r}/../secret/x.mp4', 'keyframes')"),
        "COPY (SELECT 1 AS x) TO '/tmp/framefusion-escape.csv'".to_owned(),
        "SELECT * FROM planted".to_owned(),
        // the roots are the server's: a client cannot change its session's
        "SET framefusion.allowed_roots = '/'".to_owned(),
        "SET framefusion.allowed_roots = ''".to_owned(),
        "RESET framefusion.allowed_roots".to_owned(),
        // nor name a folder for operators to write their answers in
        "SET framefusion.answers = '/tmp/framefusion-answers'".to_owned(),
        "RESET framefusion.answers".to_owned(),
    ];
    for sql in &denied {
        let err = run(&mut client, sql).await.err();
        assert_eq!(
            err.as_ref().map(tonic::Status::code),
            Some(Code::PermissionDenied),
            "{sql}: {err:?}"
        );
    }
    assert!(!Path::new("/tmp/framefusion-escape.csv").exists());
    // operators refuse paths outside too: the row says why
    let rows = text(&mut client, "SELECT probe('/etc/hostname')['probe_error'] AS e, detect_shots('/etc/hostname') IS NULL AS none").await;
    assert!(
        rows.contains("outside the locations this server may read"),
        "{rows}"
    );
    // inside is fine
    let ok = run(
        &mut client,
        &format!(
            "CREATE EXTERNAL TABLE fine STORED AS VIDEO LOCATION '{r}'; SELECT count(*) FROM fine WHERE probe_error IS NULL"
        ),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(table(&ok).contains("| 1 "), "{}", table(&ok));
    // COPY writes inside the roots
    let out = root.join("out.csv");
    run(
        &mut client,
        &format!("COPY (SELECT 1 AS x) TO '{}' STORED AS CSV", out.display()),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(out.exists(), "COPY wrote nothing");
    // a link inside the root that points out of it is listed, but not opened
    let linked = text(
        &mut client,
        "SELECT probe_error FROM fine WHERE path LIKE '%/link/%'",
    )
    .await;
    assert!(linked.contains("outside the locations"), "{linked}");
}

/// Asserts that each statement of `denied` is refused with `PermissionDenied`.
async fn assert_denied(client: &mut Client, denied: &[&str]) {
    for sql in denied {
        let err = run(client, sql).await.err();
        assert_eq!(
            err.as_ref().map(tonic::Status::code),
            Some(Code::PermissionDenied),
            "{sql}: {err:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_locations_outside_the_allowed_roots_are_refused() {
    let s3 = framefusion_tests::s3::S3Server::start();
    s3.create_bucket("corpus");
    assert_eq!(s3.upload_dir("corpus", "ok/raw/", &corpus_dir()).await, 6);
    assert_eq!(s3.upload_dir("corpus", "private/", &corpus_dir()).await, 6);
    let work = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let server =
        FlightServer::start_with_env(work.path(), &["--allow-root", "s3://corpus/ok/"], &s3.env());
    let mut client = server.client().await;
    let denied = [
        "CREATE EXTERNAL TABLE p STORED AS PARQUET LOCATION 's3://corpus/private/'",
        "CREATE EXTERNAL TABLE p STORED AS CSV LOCATION 's3://corpus/okay/'",
        "COPY (SELECT 1 AS x) TO 's3://corpus/private/x.parquet' STORED AS PARQUET",
        "COPY (SELECT 1 AS x) TO 's3://other/x.csv' STORED AS CSV",
    ];
    assert_denied(&mut client, &denied).await;
    // inside the root: COPY a table of the videos to Parquet, read it back as a table
    // (the COPY is not the script's last statement: it runs all the same)
    let rows = text(
        &mut client,
        "CREATE EXTERNAL TABLE raw STORED AS VIDEO LOCATION 's3://corpus/ok/raw/';
         COPY (SELECT path, width FROM raw) TO 's3://corpus/ok/out/' STORED AS PARQUET;
         CREATE EXTERNAL TABLE out STORED AS PARQUET LOCATION 's3://corpus/ok/out/';
         SELECT count(*) AS n, max(width) AS w FROM out",
    )
    .await;
    assert!(rows.contains("| 6 | 1920 |"), "{rows}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azure_and_gcs_locations_outside_the_allowed_roots_are_refused() {
    use framefusion_tests::cloud::{AZURE_ACCOUNT, AZURE_KEY, Emulator};
    let azurite = Emulator::azurite(&["curated"]);
    let work = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let env = [
        ("AZURE_STORAGE_ENDPOINT", azurite.azure_endpoint()),
        ("AZURE_STORAGE_ACCOUNT_NAME", AZURE_ACCOUNT.to_owned()),
        ("AZURE_STORAGE_ACCOUNT_KEY", AZURE_KEY.to_owned()),
    ];
    let server = FlightServer::start_with_env(
        work.path(),
        &[
            "--allow-root",
            "az://curated/ok/",
            "--allow-root",
            "gs://shared/ok/",
        ],
        &env,
    );
    let mut client = server.client().await;
    let denied = [
        "CREATE EXTERNAL TABLE p STORED AS PARQUET LOCATION 'az://curated/private/'",
        "CREATE EXTERNAL TABLE p STORED AS PARQUET LOCATION 'az://curated/ok/../private/'",
        "CREATE EXTERNAL TABLE p STORED AS CSV LOCATION 'gs://shared/other/'",
        "COPY (SELECT 1 AS x) TO 'az://curated/private/x.parquet' STORED AS PARQUET",
        "COPY (SELECT 1 AS x) TO 'gs://elsewhere/ok/x.csv' STORED AS CSV",
    ];
    assert_denied(&mut client, &denied).await;
    let rows = text(
        &mut client,
        "COPY (SELECT 7 AS x) TO 'az://curated/ok/out/x.parquet' STORED AS PARQUET;
         CREATE EXTERNAL TABLE out STORED AS PARQUET LOCATION 'az://curated/ok/out/';
         SELECT sum(x) AS s FROM out",
    )
    .await;
    assert!(rows.contains("| 7 |"), "{rows}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_are_per_session_and_tables_are_shared() {
    let corpus = corpus_dir();
    let server = FlightServer::start(&corpus, &[]);
    let mut a = server.client().await;
    let mut b = server.client().await;
    let setting = "SELECT value FROM information_schema.df_settings WHERE name = 'datafusion.execution.batch_size'";
    run(&mut a, "SET datafusion.execution.batch_size = 1234")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let in_a = text(&mut a, setting).await;
    let in_b = text(&mut b, setting).await;
    assert!(
        in_a.contains("1234") && !in_b.contains("1234"),
        "{in_a}\n{in_b}"
    );
    run(&mut a, &create_raw(&corpus))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    run(&mut a, "CREATE VIEW mine AS SELECT 1")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let seen = text(&mut b, "SELECT count(*) AS n FROM raw").await;
    assert!(seen.contains("| 6 "), "{seen}");
    let err = run(&mut b, "SELECT * FROM mine")
        .await
        .err()
        .map(|s| s.code());
    assert_eq!(err, Some(Code::NotFound), "views belong to their session");
}

async fn running_queries(client: &mut Client) -> usize {
    let mut results = client
        .do_action(Action::new(
            framefusion_flight_server::RUNNING_QUERIES_ACTION,
            Vec::<u8>::new(),
        ))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let body = results
        .message()
        .await
        .ok()
        .flatten()
        .map(|r| r.body)
        .unwrap_or_default();
    String::from_utf8_lossy(&body).parse().unwrap_or(usize::MAX)
}

/// Waits until the server runs no query; returns how long that took.
async fn until_idle(client: &mut Client) -> Duration {
    let start = Instant::now();
    while running_queries(client).await != 0 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the query kept running"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    start.elapsed()
}

/// CPU ticks the server uses over one second.
async fn busy(pid: u32) -> u64 {
    let before = cpu_ticks(pid);
    tokio::time::sleep(Duration::from_secs(1)).await;
    cpu_ticks(pid) - before
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_or_disconnecting_stops_a_long_query() {
    // every frame, at full size, of the 55 s trailer eight times over: tens of seconds
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    for i in 0..8 {
        let target = dir.path().join(format!("trailer{i}.mp4"));
        let source = corpus_dir().join("trailer_bbb.mp4");
        if std::fs::hard_link(&source, &target).is_err() {
            std::fs::copy(&source, &target).unwrap_or_else(|e| panic!("{e}"));
        }
    }
    let server = FlightServer::start(dir.path(), &[]);
    let sql = format!(
        "SELECT count(rgb) AS frames FROM frames('{}')",
        dir.path().display()
    );
    let mut control = server.client().await;

    // cancelled through CancelQuery while its DoGet waits
    let mut client = server.client().await;
    let info = client
        .execute(sql.clone(), None)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let ticket = info.endpoint[0]
        .ticket
        .clone()
        .unwrap_or_else(|| panic!("no ticket"));
    let mut reader = client.clone();
    let reading = tokio::spawn(async move {
        let stream = reader.do_get(ticket).await.map_err(status)?;
        stream.try_collect::<Vec<_>>().await.map_err(status)
    });
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(running_queries(&mut control).await, 1);
    let load = busy(server.pid()).await;
    assert!(
        load > 50,
        "the query should keep the server busy: {load} ticks/s"
    );
    let cancel = arrow_flight::sql::ActionCancelQueryRequest {
        info: info.encode_to_vec().into(),
    };
    let cancelled_at = Instant::now();
    let mut results = client
        .do_action(Action::new("CancelQuery", cancel.as_any().encode_to_vec()))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let reply = results
        .message()
        .await
        .ok()
        .flatten()
        .unwrap_or_else(|| panic!("no reply"));
    let any = arrow_flight::sql::Any::decode(reply.body).unwrap_or_else(|e| panic!("{e}"));
    let result = any
        .unpack::<arrow_flight::sql::ActionCancelQueryResult>()
        .ok()
        .flatten()
        .map(|r| r.result);
    assert_eq!(result, Some(1), "CANCEL_RESULT_CANCELLED");
    let outcome = tokio::time::timeout(Duration::from_secs(5), reading)
        .await
        .unwrap_or_else(|_| panic!("the stream did not end after the cancel"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(outcome.err().map(|s| s.code()), Some(Code::Cancelled));
    let idle = until_idle(&mut control).await;
    let stopped = cancelled_at.elapsed();
    assert!(
        stopped < Duration::from_secs(2),
        "stopped after {stopped:?}"
    );
    let after = busy(server.pid()).await;
    assert!(
        after < load / 3,
        "the server still works after the cancel: {after} vs {load} ticks/s"
    );
    eprintln!(
        "cancel: running count 0 after {idle:?} ({stopped:?} from the cancel); CPU {load} -> {after} ticks/s"
    );

    // a client that goes away mid-stream frees the query too
    let mut client = server.client().await;
    let info = client
        .execute(sql.clone(), None)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let ticket = info.endpoint[0]
        .ticket
        .clone()
        .unwrap_or_else(|| panic!("no ticket"));
    let stream = client
        .do_get(ticket)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(running_queries(&mut control).await, 1);
    drop(stream);
    drop(client);
    let gone = Instant::now();
    until_idle(&mut control).await;
    assert!(
        gone.elapsed() < Duration::from_secs(2),
        "{:?}",
        gone.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_when_a_certificate_is_given() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let ca = dir.path().join("ca.pem");
    // a CA and a server certificate it signs (rustls refuses a CA certificate as a server's)
    let script = format!(
        "set -e; cd '{}'
openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=framefusion-test-ca -keyout ca.key -out ca.pem 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj /CN=localhost -keyout key.pem -out server.csr 2>/dev/null
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\\nbasicConstraints=CA:FALSE\\n' > ext.cnf
openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 1 -extfile ext.cnf -out cert.pem 2>/dev/null",
        dir.path().display()
    );
    let made = Command::new("bash")
        .args(["-c", &script])
        .output()
        .unwrap_or_else(|e| panic!("cannot run openssl: {e}"));
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let corpus = corpus_dir();
    let server = FlightServer::start(
        &corpus,
        &[
            "--tls-cert",
            &cert.display().to_string(),
            "--tls-key",
            &key.display().to_string(),
        ],
    );
    let pem = std::fs::read(&ca).unwrap_or_else(|e| panic!("{e}"));
    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(pem))
        .domain_name("localhost");
    let channel =
        tonic::transport::Endpoint::from_shared(format!("https://localhost:{}", server.port()))
            .unwrap_or_else(|e| panic!("{e}"))
            .tls_config(tls)
            .unwrap_or_else(|e| panic!("{e}"))
            .connect()
            .await
            .unwrap_or_else(|e| panic!("TLS connection failed: {e:?}"));
    let mut client = FlightSqlServiceClient::new(channel);
    client
        .handshake(USER.0, USER.1)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let got = text(&mut client, "SELECT 40 + 2 AS answer").await;
    assert!(got.contains("42"), "{got}");
    // plain text to a TLS port fails
    let plain = tonic::transport::Endpoint::from_shared(format!("http://{}", server.addr))
        .unwrap_or_else(|e| panic!("{e}"))
        .connect()
        .await;
    if let Ok(channel) = plain {
        let mut client = FlightSqlServiceClient::new(channel);
        assert!(client.handshake(USER.0, USER.1).await.is_err());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_run_on_a_cluster_with_the_same_answer() {
    let corpus = corpus_dir();
    let root = corpus.display().to_string();
    let cluster =
        TestCluster::start_with_env(2, 1, 10, &[("FRAMEFUSION_ALLOW_ROOTS", root.as_str())]).await;
    let server = FlightServer::start(&corpus, &["--cluster", &cluster.url()]);
    let mut client = server.client().await;
    run(&mut client, &create_raw(&corpus))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let got = text(&mut client, SUMMARY).await;
    assert_eq!(got, embedded(SUMMARY).await);
    // executors started with the server's roots refuse other paths in operators' rows
    let escaped = text(&mut client, "SELECT probe(regexp_replace(path, '^.*$', '/etc/hostname'))['probe_error'] AS e FROM raw LIMIT 1").await;
    assert!(escaped.contains("outside the locations"), "{escaped}");
}

/// 16 clients, each its own session, mixing metadata calls and queries for a bounded
/// time; no call may fail. Prints latency percentiles and throughput (RESULTS.md).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_concurrent_clients() {
    const CLIENTS: usize = 16;
    const SECONDS: u64 = 5;
    let corpus = corpus_dir();
    let server = FlightServer::start(&corpus, &[]);
    let mut setup = server.client().await;
    run(&mut setup, &create_raw(&corpus))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let mut tasks = Vec::new();
    let start = Instant::now();
    for i in 0..CLIENTS {
        let mut client = server.client().await;
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = Vec::new();
            let mut n = 0usize;
            while start.elapsed() < Duration::from_secs(SECONDS) {
                let t = Instant::now();
                let outcome = match (n + i) % 3 {
                    0 => match client
                        .get_tables(CommandGetTables {
                            include_schema: true,
                            ..CommandGetTables::default()
                        })
                        .await
                    {
                        Ok(info) => fetch(&mut client, info).await.map(drop),
                        Err(e) => Err(status(e)),
                    },
                    1 => run(&mut client, "SELECT count(*), sum(size_bytes) FROM raw")
                        .await
                        .map(drop),
                    _ => run(
                        &mut client,
                        "SELECT video_codec, count(*) FROM raw GROUP BY video_codec",
                    )
                    .await
                    .map(drop),
                };
                match outcome {
                    Ok(()) => latencies.push(t.elapsed()),
                    Err(e) => errors.push(e.to_string()),
                }
                n += 1;
            }
            (latencies, errors)
        }));
    }
    let mut latencies = Vec::new();
    let mut errors = Vec::new();
    for task in tasks {
        let (l, e) = task.await.unwrap_or_else(|e| panic!("{e}"));
        latencies.extend(l);
        errors.extend(e);
    }
    let elapsed = start.elapsed();
    assert!(
        errors.is_empty(),
        "{} failed calls: {:?}",
        errors.len(),
        &errors[..errors.len().min(3)]
    );
    latencies.sort();
    let pick = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
    eprintln!(
        "load: {CLIENTS} clients, {} calls in {:.1} s ({:.1} calls/s), p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        latencies.len(),
        elapsed.as_secs_f64(),
        latencies.len() as f64 / elapsed.as_secs_f64(),
        pick(0.5).as_secs_f64() * 1e3,
        pick(0.99).as_secs_f64() * 1e3,
        pick(1.0).as_secs_f64() * 1e3
    );
    assert!(latencies.len() > CLIENTS, "every client completed calls");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_failure_has_its_code() {
    // a store that refuses the server's credentials, and a cluster nobody runs
    let s3 = framefusion_tests::s3::S3Server::start();
    s3.create_bucket("corpus");
    assert_eq!(s3.upload_dir("corpus", "raw/", &corpus_dir()).await, 6);
    let env: Vec<(&str, String)> = s3
        .env()
        .into_iter()
        .map(|(k, v)| match k {
            "AWS_SECRET_ACCESS_KEY" => (k, "not-the-secret".to_owned()),
            _ => (k, v),
        })
        .collect();
    let work = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let server = FlightServer::start_with_env(work.path(), &["--allow-root", "s3://corpus/"], &env);
    let mut client = server.client().await;
    let code = |r: Result<Vec<RecordBatch>, tonic::Status>| r.err().map(|s| s.code());
    for (sql, want) in [
        ("SELEC 1", Code::InvalidArgument),
        (
            "SELECT nope FROM (VALUES (1)) AS t(x)",
            Code::InvalidArgument,
        ),
        ("SELECT * FROM nowhere", Code::NotFound),
        (
            "CREATE EXTERNAL TABLE p STORED AS PARQUET LOCATION '/etc/'",
            Code::PermissionDenied,
        ),
        (
            "CREATE EXTERNAL TABLE v STORED AS VIDEO LOCATION 's3://corpus/raw/'",
            Code::PermissionDenied,
        ),
    ] {
        assert_eq!(code(run(&mut client, sql).await), Some(want), "{sql}");
    }
    let mut anonymous = server.anonymous().await;
    assert_eq!(
        code(run(&mut anonymous, "SELECT 1").await),
        Some(Code::Unauthenticated)
    );

    let port = framefusion_tests::cluster::free_port();
    let cluster = format!("df://127.0.0.1:{port}");
    let server = FlightServer::start(&corpus_dir(), &["--cluster", &cluster]);
    let mut client = server.client().await;
    let err = run(&mut client, "SELECT 1 AS x").await.err();
    assert_eq!(
        err.as_ref().map(tonic::Status::code),
        Some(Code::Unavailable),
        "{err:?}"
    );
    assert!(
        err.is_some_and(|s| s
            .message()
            .contains("cannot reach the framefusion scheduler")),
        "the message says what to start"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_api_runs_sql_with_the_servers_users_roots_and_codes() {
    use framefusion_tests::flight::http_request;
    let server = FlightServer::start(&corpus_dir(), &["--http", "127.0.0.1:0"]);
    let addr = server
        .http
        .clone()
        .unwrap_or_else(|| panic!("no HTTP line"));
    let error_of = |(status, body): (u16, String)| {
        let value: serde_json::Value =
            serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
        (
            status,
            value["error"]["code"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        )
    };
    // login: wrong password, then the test user (Basic ana:s3cret)
    let wrong = http_request(
        &addr,
        "POST",
        "/api/login",
        &[("Authorization", "Basic YW5hOm5vcGU=")],
        "",
    );
    assert_eq!(error_of(wrong), (401, "unauthenticated".to_owned()));
    let (status, body) = http_request(
        &addr,
        "POST",
        "/api/login",
        &[("Authorization", "Basic YW5hOnMzY3JldA==")],
        "",
    );
    assert_eq!(status, 200, "{body}");
    let token: serde_json::Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}"));
    let bearer = format!("Bearer {}", token["token"].as_str().unwrap_or_default());
    let sql = |text: &str| {
        http_request(
            &addr,
            "POST",
            "/api/sql",
            &[("Authorization", bearer.as_str())],
            text,
        )
    };
    // rows as JSON, DDL and a query over the corpus in one script, the session kept
    let (status, body) = sql(&format!(
        "{}; SELECT count(*) AS n FROM raw",
        create_raw(&corpus_dir())
    ));
    assert_eq!(status, 200, "{body}");
    let rows: serde_json::Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(rows["columns"], serde_json::json!(["n"]), "{body}");
    assert_eq!(rows["rows"], serde_json::json!([{"n": 6}]), "{body}");
    // each failure with its HTTP status and code
    for (text, want) in [
        ("SELEC 1", (400, "invalid_argument")),
        ("SELECT * FROM nowhere", (404, "not_found")),
        (
            "CREATE EXTERNAL TABLE p STORED AS PARQUET LOCATION '/etc/'",
            (403, "permission_denied"),
        ),
    ] {
        assert_eq!(error_of(sql(text)), (want.0, want.1.to_owned()), "{text}");
    }
    let anonymous = http_request(&addr, "POST", "/api/sql", &[], "SELECT 1");
    assert_eq!(error_of(anonymous), (401, "unauthenticated".to_owned()));
    // a cluster nobody runs
    let port = framefusion_tests::cluster::free_port();
    let cluster = format!("df://127.0.0.1:{port}");
    let server = FlightServer::start(
        &corpus_dir(),
        &["--http", "127.0.0.1:0", "--cluster", &cluster],
    );
    let addr = server
        .http
        .clone()
        .unwrap_or_else(|| panic!("no HTTP line"));
    let unreachable = http_request(
        &addr,
        "POST",
        "/api/sql",
        &[("Authorization", &format!("Bearer {STATIC_TOKEN}"))],
        "SELECT 1 AS x",
    );
    assert_eq!(error_of(unreachable), (503, "unavailable".to_owned()));
}
