//! Bad input never fails a scan: every bad file is a row with `probe_error` set and the
//! probe columns null, and good files next to them are unaffected.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use framefusion_engine::SessionContextExt;
use framefusion_tests::sample;

/// Deterministic pseudo-random bytes (xorshift), so the test is the same on every run.
fn random_bytes(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn make_bad_corpus(dir: &Path) -> std::io::Result<()> {
    std::fs::copy(sample("bikes.mp4"), dir.join("good.mp4"))?;
    std::fs::copy(sample("sample.mkv"), dir.join("truncated.mkv"))?;
    std::fs::write(dir.join("empty.mp4"), b"")?;
    std::fs::write(dir.join("notes.mp4"), b"these are my notes, not a video\n")?;
    std::fs::write(dir.join("random.mov"), random_bytes(64 * 1024))?;
    // half of a real video: the index is there, the frames are not
    let bytes = std::fs::read(sample("trailer_bbb.mp4"))?;
    std::fs::write(dir.join("cut.mp4"), &bytes[..bytes.len() / 50])?;
    // unreadable entries: a broken symlink and a FIFO (opening it would block forever)
    std::os::unix::fs::symlink(dir.join("gone.mp4"), dir.join("dangling.mp4"))?;
    let status = Command::new("mkfifo").arg(dir.join("pipe.mp4")).status()?;
    assert!(status.success(), "mkfifo failed");
    Ok(())
}

async fn rows_by_name(dir: &Path) -> BTreeMap<String, RecordBatch> {
    let ctx = framefusion_engine::new_context().unwrap_or_else(|e| panic!("{e}"));
    ctx.register_videos("bad", &dir.display().to_string())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let batches = ctx
        .run_script("SELECT * FROM bad ORDER BY path")
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .collect()
        .await
        .unwrap_or_else(|e| panic!("the scan must not fail on bad input: {e}"));
    let mut out = BTreeMap::new();
    for batch in batches {
        for i in 0..batch.num_rows() {
            let path = batch.column(0).as_string::<i32>().value(i).to_owned();
            let name = path.rsplit('/').next().unwrap_or_default().to_owned();
            out.insert(name, batch.slice(i, 1));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_files_are_error_rows_not_failures() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    make_bad_corpus(dir.path()).unwrap_or_else(|e| panic!("cannot build the bad corpus: {e}"));
    let rows = rows_by_name(dir.path()).await;
    let names: Vec<_> = rows.keys().cloned().collect();
    assert_eq!(
        names,
        [
            "cut.mp4",
            "dangling.mp4",
            "empty.mp4",
            "good.mp4",
            "notes.mp4",
            "pipe.mp4",
            "random.mov",
            "truncated.mkv"
        ]
    );

    let schema = rows["good.mp4"].schema();
    let error_col = schema
        .index_of("probe_error")
        .unwrap_or_else(|e| panic!("{e}"));
    let probe_cols = schema
        .index_of("container")
        .unwrap_or_else(|e| panic!("{e}"))..error_col;
    for (name, row) in &rows {
        let error = row.column(error_col).as_string::<i32>();
        if name == "good.mp4" {
            assert!(
                error.is_null(0),
                "good.mp4 must probe cleanly: {:?}",
                error.value(0)
            );
            assert_eq!(
                row.column(schema.index_of("width").unwrap_or(0))
                    .as_primitive::<datafusion::arrow::datatypes::Int32Type>()
                    .value(0),
                640
            );
            continue;
        }
        assert!(!error.is_null(0), "{name} must have a probe_error");
        assert!(!error.value(0).is_empty(), "{name}: empty probe_error");
        for c in probe_cols.clone() {
            assert!(
                row.column(c).is_null(0),
                "{name}: column {} must be null",
                schema.field(c).name()
            );
        }
        assert!(!row.column(0).is_null(0), "{name}: path is always set");
    }
    let error_of = |name: &str| {
        rows[name]
            .column(error_col)
            .as_string::<i32>()
            .value(0)
            .to_owned()
    };
    assert!(
        error_of("empty.mp4").contains("empty file"),
        "{}",
        error_of("empty.mp4")
    );
    assert!(
        error_of("dangling.mp4").contains("broken symbolic link"),
        "{}",
        error_of("dangling.mp4")
    );
    assert!(
        error_of("pipe.mp4").contains("FIFO"),
        "{}",
        error_of("pipe.mp4")
    );
    assert!(
        error_of("notes.mp4").contains("not a video"),
        "{}",
        error_of("notes.mp4")
    );
    assert!(
        error_of("truncated.mkv").contains("truncated.mkv"),
        "errors name the file: {}",
        error_of("truncated.mkv")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_without_read_permission_is_an_error_row() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let locked = dir.path().join("locked.mp4");
    std::fs::copy(sample("bikes.mp4"), &locked).unwrap_or_else(|e| panic!("{e}"));
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o000))
        .unwrap_or_else(|e| panic!("{e}"));
    let readable = std::fs::File::open(&locked).is_ok(); // true for root, who bypasses modes
    let rows = rows_by_name(dir.path()).await;
    let row = &rows["locked.mp4"];
    let error = row
        .column(row.schema().index_of("probe_error").unwrap_or(0))
        .as_string::<i32>();
    if readable {
        assert!(error.is_null(0), "a readable file probes cleanly");
    } else {
        assert!(
            error.value(0).contains("Permission denied"),
            "{}",
            error.value(0)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_argument_types_are_one_line_planning_errors() {
    use framefusion_engine::SessionContextExt;
    let ctx = framefusion_engine::new_context().unwrap_or_else(|e| panic!("{e}"));
    for op in framefusion_udfs::operators() {
        let usage = framefusion_udfs::VideoUdf::usage(op.as_ref());
        let arity = op.arities().into_iter().min().unwrap_or(1);
        // a number where the path goes
        let args = vec!["1"; arity].join(", ");
        let sql = format!("SELECT {}({args})", op.name());
        let error = ctx.run_script(&sql).await.err();
        let message = error
            .as_ref()
            .map(framefusion_engine::user_message)
            .unwrap_or_default();
        let first = op.args()[0];
        let wanted = match first.kind {
            framefusion_udfs::operator::ArgKind::Path => "a path or URI (a string)",
            _ => "a string",
        };
        assert_eq!(
            message,
            format!("{usage}: {} must be {wanted}, not Int64", first.name),
            "{sql}"
        );
        // too many arguments
        let args = vec!["'a.mp4'"; op.args().len() + 1].join(", ");
        let sql = format!("SELECT {}({args})", op.name());
        let message = ctx
            .run_script(&sql)
            .await
            .err()
            .map(|e| framefusion_engine::user_message(&e))
            .unwrap_or_default();
        assert!(
            message.starts_with(&usage) && message.contains("arguments, not"),
            "{sql}: {message}"
        );
        assert!(!message.contains("Internal error"), "{sql}: {message}");
    }
}

/// User mistakes through the CLI: each is one line that names the input and what to do,
/// and none reads as DataFusion's "Internal error ... please file a bug" (the helper that
/// runs the CLI fails on that in every test).
#[test]
fn cli_errors_are_one_line_and_never_a_datafusion_bug() {
    let cases: [(&str, &[&str]); 11] = [
        ("SELEC 1", &["syntax error"]),
        (
            "SELECT * FROM nope",
            &["'datafusion.public.nope' not found"],
        ),
        (
            "SELECT range(CAST(1.5 AS DECIMAL(10,2)))",
            &[
                "range(Decimal128(10, 2))",
                "Candidate functions: range(Int64)",
            ],
        ),
        (
            "SELECT substr(1, 2, 3, 4, 5)",
            &[
                "substr(Int64, Int64, Int64, Int64, Int64)",
                "Candidate functions",
            ],
        ),
        (
            "SELECT detect_shots(1)",
            &["detect_shots(path VARCHAR [, options VARCHAR]): path must be a path or URI"],
        ),
        (
            "CREATE EXTERNAL TABLE t STORED AS PARQUET LOCATION '/tmp' OPTIONS ('gcs.x' 'y')",
            &["unknown option namespace 'gcs'", "aws.*"],
        ),
        (
            "CREATE EXTERNAL TABLE t STORED AS PARQUET LOCATION 'gs://b/x/' OPTIONS ('gcp.x' 'y')",
            &["unknown object store option 'gcp.x'", "gcp.base_url"],
        ),
        (
            "CREATE EXTERNAL TABLE t STORED AS PARQUET LOCATION 'az://container/x/'",
            &["'az://container'", "Account must be specified", "azure.*"],
        ),
        (
            "CREATE EXTERNAL TABLE t STORED AS PARQUET LOCATION 'hdfs://cluster/x/'",
            &["no object store serves 'hdfs://cluster/x/'", "s3://"],
        ),
        (
            "COPY (SELECT 1 AS a) TO 'ftp://host/x.parquet'",
            &[
                "no object store serves 'ftp://host/",
                "s3://",
                "gs://",
                "az://",
            ],
        ),
        (
            "CREATE EXTERNAL TABLE t STORED AS PARQUET LOCATION '/tmp' OPTIONS ('aws.region' 'x')",
            &["aws.* options apply to s3:// locations", "'/tmp'"],
        ),
    ];
    for (sql, expected) in cases {
        let out = framefusion_tests::run_framefusion(&["sql", sql]);
        assert!(!out.status.success(), "{sql}");
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        assert_eq!(stderr.lines().count(), 1, "{sql}: {stderr}");
        for part in expected {
            assert!(stderr.contains(part), "{sql}: {stderr}");
        }
    }
}
