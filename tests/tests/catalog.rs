//! The persistent catalog: tables outlive the process, DROP forgets them, concurrent
//! processes never corrupt the catalog file, and failed statements leave nothing behind.

use std::path::Path;
use std::process::Output;

use framefusion_tests::{corpus_dir, framefusion_bin, ok_rows, sql_with_catalog};

fn sql(catalog: &Path, statements: &str) -> Output {
    sql_with_catalog(catalog, &[], statements)
}

fn ok(out: &Output) -> Vec<serde_json::Value> {
    ok_rows(out)
}

fn err(out: &Output) -> String {
    assert_eq!(
        out.status.code(),
        Some(1),
        "expected a failure: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).trim().to_owned()
}

#[test]
fn a_table_outlives_its_process_until_dropped() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let catalog = dir.path().join("catalog.json");
    let create = format!(
        "CREATE EXTERNAL TABLE raw STORED AS VIDEO LOCATION '{}'",
        corpus_dir().display()
    );

    ok(&sql(&catalog, &create));
    // a new process sees it
    let rows = ok(&sql(
        &catalog,
        "SELECT count(*) AS n, count(probe_error) AS bad FROM raw",
    ));
    assert_eq!(rows, vec![serde_json::json!({"n": 6, "bad": 1})]);
    let tables = ok(&sql(&catalog, "SHOW TABLES"));
    assert!(
        tables
            .iter()
            .any(|t| t["table_name"] == "raw" && t["table_schema"] == "public"),
        "{tables:?}"
    );
    let columns = ok(&sql(&catalog, "DESCRIBE raw"));
    assert_eq!(columns.len(), 17);
    assert_eq!(columns[0]["column_name"], "path");

    // the same statement again is a no-op; a different definition of the name is refused
    ok(&sql(&catalog, &create));
    let e = err(&sql(
        &catalog,
        "CREATE EXTERNAL TABLE raw STORED AS VIDEO LOCATION '/tmp'",
    ));
    assert!(
        e.contains("raw") && e.contains("already exists") && e.contains("DROP TABLE raw"),
        "{e}"
    );
    // OR REPLACE replaces
    let one = format!(
        "CREATE OR REPLACE EXTERNAL TABLE raw STORED AS VIDEO LOCATION '{}/bikes.mp4'",
        corpus_dir().display()
    );
    ok(&sql(&catalog, &one));
    assert_eq!(
        ok(&sql(&catalog, "SELECT count(*) AS n FROM raw")),
        vec![serde_json::json!({"n": 1})]
    );

    // OPTIONS are part of the definition a new process rebuilds the table from
    let mkv_only = format!(
        "CREATE OR REPLACE EXTERNAL TABLE raw STORED AS VIDEO LOCATION '{}' OPTIONS ('extensions' 'mkv')",
        corpus_dir().display()
    );
    ok(&sql(&catalog, &mkv_only));
    assert_eq!(
        ok(&sql(&catalog, "SELECT count(*) AS n FROM raw")),
        vec![serde_json::json!({"n": 1})]
    );

    ok(&sql(&catalog, "DROP TABLE raw"));
    let e = err(&sql(&catalog, "SELECT * FROM raw"));
    assert!(e.contains("table 'datafusion.public.raw' not found"), "{e}");
    assert!(
        ok(&sql(&catalog, "SHOW TABLES"))
            .iter()
            .all(|t| t["table_name"] != "raw")
    );
}

#[test]
fn failed_statements_leave_no_partial_state() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let catalog = dir.path().join("catalog.json");
    let e = err(&sql(
        &catalog,
        "CREATE EXTERNAL TABLE nope STORED AS VIDEO LOCATION '/no/such/folder'",
    ));
    assert!(e.contains("'/no/such/folder' does not exist"), "{e}");
    let e = err(&sql(
        &catalog,
        &format!(
            "CREATE EXTERNAL TABLE nope STORED AS VIDEO LOCATION '{}' OPTIONS ('colour' 'red')",
            corpus_dir().display()
        ),
    ));
    assert!(e.contains("unknown option"), "{e}");
    assert!(
        ok(&sql(&catalog, "SHOW TABLES"))
            .iter()
            .all(|t| t["table_name"] != "nope")
    );
}

#[test]
fn a_table_whose_location_vanished_is_reported_and_droppable() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let catalog = dir.path().join("catalog.json");
    let videos = dir.path().join("videos");
    std::fs::create_dir(&videos).unwrap_or_else(|e| panic!("{e}"));
    ok(&sql(
        &catalog,
        &format!(
            "CREATE EXTERNAL TABLE gone STORED AS VIDEO LOCATION '{}'",
            videos.display()
        ),
    ));
    std::fs::remove_dir(&videos).unwrap_or_else(|e| panic!("{e}"));
    let e = err(&sql(&catalog, "SELECT * FROM gone"));
    assert!(
        e.contains("table 'gone' is in the catalog but cannot be opened")
            && e.contains("does not exist"),
        "{e}"
    );
    ok(&sql(&catalog, "DROP TABLE gone"));
    assert!(
        ok(&sql(&catalog, "SHOW TABLES"))
            .iter()
            .all(|t| t["table_name"] != "gone")
    );
}

#[test]
fn concurrent_processes_do_not_corrupt_the_catalog() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let catalog = dir.path().join("catalog.json");
    let corpus = corpus_dir();
    let children: Vec<_> = (0..8)
        .map(|i| {
            std::process::Command::new(framefusion_bin())
                .args(["sql", "--catalog"])
                .arg(&catalog)
                .arg(format!(
                    "CREATE EXTERNAL TABLE t{i} STORED AS VIDEO LOCATION '{}'",
                    corpus.display()
                ))
                .spawn()
                .unwrap_or_else(|e| panic!("{e}"))
        })
        .collect();
    for mut child in children {
        assert!(child.wait().is_ok_and(|s| s.success()));
    }
    let names: Vec<String> = ok(&sql(&catalog, "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' ORDER BY table_name"))
        .iter()
        .map(|r| r["table_name"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(names, (0..8).map(|i| format!("t{i}")).collect::<Vec<_>>());
    let text = std::fs::read_to_string(&catalog).unwrap_or_default();
    assert!(
        serde_json::from_str::<serde_json::Value>(&text).is_ok(),
        "the catalog file is valid JSON"
    );
}

/// A taken name is an invalid argument (a client's mistake), typed: not DataFusion's internal
/// error text.
#[tokio::test]
async fn a_taken_table_name_is_an_invalid_argument() {
    use framefusion_engine::SessionContextExt;
    use framefusion_udfs::media::code::ErrorCode;
    let ctx = framefusion_engine::new_context().unwrap_or_else(|e| panic!("{e}"));
    let corpus = corpus_dir().display().to_string();
    ctx.register_videos("taken", &corpus)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let e = ctx
        .run_script("CREATE EXTERNAL TABLE taken STORED AS VIDEO LOCATION '/tmp'")
        .await
        .err()
        .unwrap_or_else(|| panic!("a second definition of 'taken' was accepted"));
    assert_eq!(
        framefusion_engine::error::error_code(&e),
        ErrorCode::InvalidArgument,
        "{e}"
    );
    // IF NOT EXISTS keeps the table, OR REPLACE replaces it
    for statement in [
        "CREATE EXTERNAL TABLE IF NOT EXISTS taken STORED AS VIDEO LOCATION '/tmp'",
        "CREATE OR REPLACE EXTERNAL TABLE taken STORED AS VIDEO LOCATION '/tmp'",
    ] {
        ctx.run_script(statement)
            .await
            .unwrap_or_else(|e| panic!("{statement}: {e}"));
    }
}
