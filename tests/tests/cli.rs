//! The `framefusion` CLI: statements, files, output formats, one-line errors.

use framefusion_tests::{corpus_dir, json_lines, run_framefusion};

fn stderr_is_one_error_line(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr).into_owned();
    let lines: Vec<_> = text.lines().collect();
    assert_eq!(lines.len(), 1, "exactly one line on stderr, got: {text:?}");
    assert!(lines[0].starts_with("error: "), "{text:?}");
    assert!(
        !text.contains("panicked") && !text.contains("backtrace"),
        "{text:?}"
    );
    lines[0].to_owned()
}

#[test]
fn a_syntax_error_is_one_line_and_exit_1() {
    let out = run_framefusion(&["sql", "SELEC 1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let line = stderr_is_one_error_line(&out.stderr);
    assert_eq!(
        line,
        "error: syntax error: Expected: an SQL statement, found: SELEC at Line: 1, Column: 1"
    );
}

#[test]
fn planning_and_location_errors_are_one_line() {
    let out = run_framefusion(&["sql", "SELECT * FROM missing_table"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr_is_one_error_line(&out.stderr),
        "error: table 'datafusion.public.missing_table' not found"
    );

    let out = run_framefusion(&[
        "sql",
        "CREATE EXTERNAL TABLE v STORED AS VIDEO LOCATION '/no/such/folder'",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let line = stderr_is_one_error_line(&out.stderr);
    assert!(line.contains("'/no/such/folder' does not exist"), "{line}");

    let out = run_framefusion(&[
        "sql",
        "CREATE EXTERNAL TABLE v STORED AS VIDEO LOCATION '/tmp' OPTIONS ('colour' 'red')",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let line = stderr_is_one_error_line(&out.stderr);
    assert!(line.contains("unknown option 'colour'"), "{line}");

    let out = run_framefusion(&["sql", "-f", "/no/such/file.sql"]);
    assert_eq!(out.status.code(), Some(1));
    let line = stderr_is_one_error_line(&out.stderr);
    assert!(
        line.contains("cannot read SQL file '/no/such/file.sql'"),
        "{line}"
    );
}

#[test]
fn a_file_of_several_statements_runs_in_order() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let script = dir.path().join("job.sql");
    std::fs::write(
        &script,
        format!(
            "-- register, filter, aggregate\n\
             CREATE EXTERNAL TABLE v STORED AS VIDEO LOCATION '{}';\n\
             SET video.files_per_partition = 2;\n\
             SELECT count(*) AS n FROM v;\n\
             SELECT video_codec, count(*) AS files, round(sum(duration_s), 2) AS seconds\n\
             FROM v WHERE probe_error IS NULL GROUP BY video_codec ORDER BY video_codec\n",
            corpus_dir().display()
        ),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let path = script.display().to_string();

    // table output: both queries print
    let out = run_framefusion(&["sql", "-f", &path]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("| n "), "{text}");
    assert!(text.contains("| h264        | 5     | 75.42   |"), "{text}");

    // csv to stdout
    let out = run_framefusion(&["sql", "-f", &path, "--format", "csv"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("n\n6\n"), "{text}");
    assert!(
        text.contains("video_codec,files,seconds\nh264,5,75.42\n"),
        "{text}"
    );

    // parquet to a file: the last query's rows, readable back
    let parquet = dir.path().join("out.parquet");
    let out = run_framefusion(&[
        "sql",
        "-f",
        &path,
        "--format",
        "parquet",
        "--output",
        &parquet.display().to_string(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout.is_empty());
    let check = format!("SELECT video_codec, files FROM '{}'", parquet.display());
    let out = run_framefusion(&["sql", &check, "--format", "json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows = json_lines(&out.stdout);
    assert_eq!(
        rows,
        vec![serde_json::json!({"video_codec": "h264", "files": 5})]
    );

    // parquet needs a file
    let out = run_framefusion(&["sql", "SELECT 1", "--format", "parquet"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr_is_one_error_line(&out.stderr),
        "error: --format parquet needs --output PATH"
    );
}
