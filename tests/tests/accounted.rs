//! Nothing silent: every video of a run is accounted for in the manifest itself, however
//! the job is written (`unnest` of a null list, a `WHERE` on a null or on `probe_error IS
//! NULL`, a join), embedded and on a 2-executor cluster; a broken setup (the ONNX Runtime
//! library or a model missing, an invalid setting met inside a shared decode pass) fails
//! the run and marks no video done; operators are never evaluated while planning.

use std::path::{Path, PathBuf};
use std::process::Command;

use framefusion_tests::cluster::TestCluster;
use framefusion_tests::{framefusion_bin, sample};

use crate::manifest::{corpus, count, finished, manifest_table, parts, run_command, success};

/// One good video (6 s, a cut at 3 s) and four bad files: empty, text, random bytes, a
/// truncated Matroska file.
fn mixed_corpus() -> tempfile::TempDir {
    let dir = corpus(1);
    let put = |name: &str, bytes: &[u8]| {
        std::fs::write(dir.path().join(name), bytes).unwrap_or_else(|e| panic!("{e}"));
    };
    put("empty.mp4", b"");
    put("notes.mp4", b"these are my notes, not a video\n");
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let random: Vec<u8> = (0..64 * 1024)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect();
    put("random.mov", &random);
    std::fs::copy(sample("sample.mkv"), dir.path().join("truncated.mkv"))
        .unwrap_or_else(|e| panic!("{e}"));
    dir
}

const BAD: [&str; 4] = ["empty.mp4", "notes.mp4", "random.mov", "truncated.mkv"];

/// The shapes of job a user writes; each drops a failed video's null in its own way.
fn shape(name: &str) -> &'static str {
    match name {
        // finding 1 of the issue: shots unnested, motion per shot
        "unnest" => {
            "WITH s AS (SELECT path, unnest(detect_shots(path)) AS shot FROM hv)
SELECT path, shot['start_s'] AS start_s, shot['end_s'] AS end_s,
       motion_score(path, shot['start_s'], shot['end_s']) AS motion FROM s"
        }
        "where_not_null" => {
            "SELECT path, motion FROM (SELECT path, motion_score(path, 0.0, 2.0) AS motion FROM hv)
WHERE motion IS NOT NULL"
        }
        "probe_filter" => "SELECT path, duration_s, width FROM hv WHERE probe_error IS NULL",
        "join" => {
            "WITH shots AS (SELECT path, unnest(detect_shots(path)) AS s FROM hv)
SELECT v.path, v.width, s.s['start_s'] AS start_s, s.s['end_s'] AS end_s
FROM hv v JOIN shots s ON v.path = s.path"
        }
        // the good video is filtered out by a condition on its good values: no rows, no error
        "no_rows" => {
            "SELECT path, duration_s FROM hv WHERE probe_error IS NULL AND duration_s > 100"
        }
        other => panic!("no shape {other}"),
    }
}

fn job_file(dir: &Path, corpus: &Path, setup: &str, query: &str) -> PathBuf {
    let file = dir.join("job.sql");
    let sql = format!(
        "CREATE EXTERNAL TABLE hv STORED AS VIDEO LOCATION '{}';\n{setup}{query}",
        corpus.display()
    );
    std::fs::write(&file, sql).unwrap_or_else(|e| panic!("{e}"));
    file
}

fn run(job: &Path, out: &Path, cluster: Option<&str>, extra: &[&str]) -> String {
    finished(
        run_command(job, out, cluster, extra)
            .output()
            .unwrap_or_else(|e| panic!("{e}")),
    )
}

/// The error rows of the manifest at `out` (pyarrow), by file name.
fn error_rows(out: &Path) -> Vec<(String, String)> {
    manifest_table(out)
        .iter()
        .filter(|r| r["status"] == "error")
        .map(|r| {
            let path = r["path"].as_str().unwrap_or_default();
            let name = path.rsplit('/').next().unwrap_or_default().to_owned();
            (name, r["error"].as_str().unwrap_or_default().to_owned())
        })
        .collect()
}

/// Runs `shape` over the mixed corpus and checks that the four bad files are error rows
/// naming their file and the reason, the good one is not, and the counts say so.
fn every_video_accounted(shape_name: &str, cluster: Option<&str>) {
    let corpus = mixed_corpus();
    let work = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let job = job_file(work.path(), corpus.path(), "", shape(shape_name));
    let out = work.path().join("manifest");
    let first = run(&job, &out, cluster, &[]);
    let errors = error_rows(&out);
    let names: Vec<&str> = errors.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, BAD, "{shape_name}: {first}\n{errors:?}");
    for (name, error) in &errors {
        assert!(
            error.contains(name.as_str()) && error.contains(": "),
            "{shape_name}: the error of {name} must name the file and say why: {error}"
        );
    }
    let table = manifest_table(&out);
    assert!(
        table.iter().any(
            |r| r["path"].as_str().is_some_and(|p| p.ends_with("v000.mp4")) && r["status"] == "ok"
        ),
        "{shape_name}: the good video keeps its ok rows: {table:?}"
    );
    assert!(
        first.contains("4 videos failed, 0 gave no rows"),
        "{shape_name}: {first}"
    );
    let summary = success(&out);
    assert_eq!(count(&summary, "error_videos"), 4, "{summary}");
    assert_eq!(count(&summary, "error_rows"), 4, "{summary}");
    assert_eq!(count(&summary, "no_row_videos"), 0, "{summary}");
    assert_eq!(count(&summary, "videos"), 5, "{summary}");

    // a rerun skips them; --retry-errors runs exactly them again, and they fail again
    let again = run(&job, &out, cluster, &[]);
    assert!(again.contains("(0 run now, 5 already done)"), "{again}");
    let retried = run(&job, &out, cluster, &["--retry-errors"]);
    assert!(retried.contains("(4 run now, 1 already done)"), "{retried}");
    assert_eq!(error_rows(&out).len(), 4, "{retried}");
    assert_eq!(count(&success(&out), "error_videos"), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_videos_are_error_rows_whatever_the_job_shape() {
    for shape_name in ["unnest", "where_not_null", "probe_filter", "join"] {
        every_video_accounted(shape_name, None);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_videos_are_error_rows_on_a_cluster() {
    let cluster = TestCluster::start(2, 2, 10).await;
    for shape_name in ["unnest", "where_not_null", "probe_filter", "join"] {
        every_video_accounted(shape_name, Some(&cluster.url()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_video_filtered_out_by_its_values_is_counted_as_no_rows() {
    let corpus = mixed_corpus();
    let work = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let job = job_file(work.path(), corpus.path(), "", shape("no_rows"));
    let out = work.path().join("manifest");
    let first = run(&job, &out, None, &[]);
    assert!(first.contains("4 videos failed, 1 gave no rows"), "{first}");
    let summary = success(&out);
    assert_eq!(count(&summary, "no_row_videos"), 1, "{summary}");
    assert_eq!(count(&summary, "error_videos"), 4, "{summary}");
    assert_eq!(count(&summary, "ok_rows"), 0, "{summary}");
}

/// The peer harness's job: shots, then per shot motion, sharpness and text coverage (the
/// text detector runs inside the decode pass `detect_shots` starts).
const HARNESS: &str = "WITH s AS (SELECT path, unnest(detect_shots(path)) AS shot FROM hv)
SELECT path, shot['start_s'] AS start_s, shot['end_s'] AS end_s,
       motion_score(path, shot['start_s'], shot['end_s']) AS motion,
       clip_quality(path, shot['start_s'], shot['end_s'])['sharpness'] AS sharpness,
       text_area_ratio(path, shot['start_s'], shot['end_s']) AS text_ratio
FROM s";

/// Runs the harness job over two good videos with `setup` statements and the environment
/// `env`; checks that it fails naming `message` and marks no video done.
fn setup_failure_stops_the_run(setup: &str, env: &[(&str, &Path)], message: &str) {
    let corpus = corpus(2);
    let work = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let job = job_file(work.path(), corpus.path(), setup, HARNESS);
    let out = work.path().join("manifest");
    let mut cmd = run_command(&job, &out, None, &[]);
    cmd.env_remove("ORT_DYLIB_PATH");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let output = cmd.output().unwrap_or_else(|e| panic!("{e}"));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success(),
        "a broken setup must fail the run: {}{stderr}",
        String::from_utf8_lossy(&output.stdout)
    );
    assert!(stderr.contains(message), "{stderr}");
    assert_eq!(parts(&out), 0, "no video may be marked done: {stderr}");
    assert!(!out.join("_SUCCESS").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_setup_fails_the_run_and_marks_no_video_done() {
    // the ONNX Runtime library missing (a FRAMEFUSION_HOME without it)
    let empty_home = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    setup_failure_stops_the_run(
        "",
        &[("FRAMEFUSION_HOME", empty_home.path())],
        "the ONNX Runtime library is missing",
    );
    // a model file missing
    let empty_models = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    setup_failure_stops_the_run(
        &format!(
            "SET onnx.model_dir = '{}';\n",
            empty_models.path().display()
        ),
        &[],
        "is missing; run scripts/setup.sh",
    );
    // an invalid setting, met by the text detector inside detect_shots' decode pass
    setup_failure_stops_the_run("SET onnx.device = 'tpu';\n", &[], "onnx.device = 'tpu'");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_setup_on_a_cluster_fails_the_run() {
    let corpus = corpus(2);
    let empty_home = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let home = empty_home.path().display().to_string();
    let cluster = TestCluster::start_with_env(2, 2, 10, &[("FRAMEFUSION_HOME", &home)]).await;
    let work = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let job = job_file(work.path(), corpus.path(), "", HARNESS);
    let out = work.path().join("manifest");
    let output = run_command(&job, &out, Some(&cluster.url()), &[])
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains("the ONNX Runtime library is missing"),
        "{stderr}\n{}",
        cluster.logs()
    );
    assert_eq!(parts(&out), 0, "no video may be marked done: {stderr}");
}

/// `framefusion sql` on `cluster` with info logs: (stdout, stderr).
fn cluster_sql(cluster: &TestCluster, sql: &str) -> (String, String) {
    let output = Command::new(framefusion_bin())
        .args(["sql", "--no-catalog", "--format", "json", "--cluster"])
        .arg(cluster.url())
        .arg(sql)
        .env("RUST_LOG", "info")
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "{sql}: {stderr}");
    (String::from_utf8_lossy(&output.stdout).into_owned(), stderr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_are_not_evaluated_while_planning() {
    let file = sample("bikes.mp4");
    let call = format!("text_area_ratio('{}', 0.0, 3.0)", file.display());
    let embedded = framefusion_tests::query(&format!("SELECT {call} AS r")).await;
    let expected = embedded[0]
        .column(0)
        .as_any()
        .downcast_ref::<datafusion::arrow::array::Float64Array>()
        .map(|a| a.value(0))
        .unwrap_or_else(|| panic!("not a double"));

    let cluster = TestCluster::start(2, 2, 10).await;
    let (plan, client_log) = cluster_sql(&cluster, &format!("EXPLAIN SELECT {call} AS r"));
    assert!(
        plan.contains("text_area_ratio("),
        "EXPLAIN must show the call, not a value computed while planning: {plan}"
    );
    let (rows, query_log) = cluster_sql(&cluster, &format!("SELECT {call} AS r"));
    let rows = framefusion_tests::json_lines(rows.as_bytes());
    let got = rows[0]["r"].as_f64().unwrap_or(f64::NAN);
    assert!(
        (got - expected).abs() < 1e-9,
        "the cluster's answer {got} must be the embedded one {expected}"
    );
    for log in [&client_log, &query_log] {
        assert!(
            !log.contains("loaded model") && !log.contains("decode pass of"),
            "the client must not decode or run a model: {log}"
        );
    }
    for series in [
        "framefusion_decode_passes_total",
        "framefusion_frames_decoded_total",
    ] {
        assert_eq!(
            cluster.scheduler_metric(series),
            Some(0.0),
            "the scheduler must decode nothing ({series})"
        );
    }
    let loads = cluster
        .scheduler_metric("framefusion_model_loads_total{model=\"ch_PP-OCRv4_det_infer.onnx\"}");
    assert!(
        loads.is_none_or(|n| n == 0.0),
        "the scheduler loaded the model: {loads:?}"
    );
    let executors = cluster.executor_logs();
    assert!(
        executors.contains("loaded model") && executors.contains("decode pass of"),
        "the executors run the call: {executors}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_reach_the_executors() {
    // a `SET onnx.*` of the client decides what the executors run: an invalid device is
    // the executors' setup failure (before, the executors kept their defaults and answered)
    let cluster = TestCluster::start(1, 2, 10).await;
    let call = format!(
        "text_area_ratio('{}', 0.0, 1.0)",
        sample("bikes.mp4").display()
    );
    let output = Command::new(framefusion_bin())
        .args(["sql", "--no-catalog", "--cluster"])
        .arg(cluster.url())
        .arg(format!("SET onnx.device = 'tpu'; SELECT {call} AS r"))
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(stderr.contains("onnx.device = 'tpu'"), "{stderr}");
}
