//! Manifests and resumable runs: `framefusion run` killed with SIGKILL at random points
//! and during a commit, embedded and on a 2-executor cluster, finishes on rerun with the
//! same manifest as an uninterrupted run; failed videos are error rows and a retry runs
//! only them; the manifest is plain Parquet for DuckDB and pyarrow; the README's
//! DataFrame pipeline runs.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

use datafusion::arrow::json::ArrayWriter;
use datafusion::prelude::{ParquetReadOptions, SessionContext};
use framefusion_tests::cluster::TestCluster;
use framefusion_tests::{ffmpeg, framefusion_bin, run_python};

#[path = "../../engine/examples/pipeline.rs"]
#[allow(dead_code)]
mod pipeline;

/// Videos per part and parts in flight in these tests: at most 4 videos in flight.
const PER_PART: usize = 2;
const CONCURRENCY: usize = 2;

/// A corpus of `n` copies of a 6-second 320x240 video with one cut (at 3 s), and extra
/// named files.
pub(crate) fn corpus(n: usize) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let first = dir.path().join("v000.mp4");
    ffmpeg(
        &[
            "-f",
            "lavfi",
            "-t",
            "3",
            "-i",
            "testsrc=size=320x240:rate=25",
            "-f",
            "lavfi",
            "-t",
            "3",
            "-i",
            "smptebars=size=320x240:rate=25",
            "-filter_complex",
            "[0:v][1:v]concat=n=2:v=1:a=0,format=yuv420p[v]",
            "-map",
            "[v]",
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
        ],
        &first,
    );
    for i in 1..n {
        std::fs::copy(&first, dir.path().join(format!("v{i:03}.mp4")))
            .unwrap_or_else(|e| panic!("{e}"));
    }
    dir
}

/// A curation job over `corpus`: shots, then motion and sharpness per shot.
fn job(dir: &Path, corpus: &Path) -> PathBuf {
    let file = dir.join("job.sql");
    let sql = format!(
        "CREATE EXTERNAL TABLE clips_src STORED AS VIDEO LOCATION '{}';
WITH shots AS (
  SELECT path, unnest(detect_shots(path)) AS s FROM clips_src WHERE probe_error IS NULL
)
SELECT path, s['start_s'] AS start_s, s['end_s'] AS end_s,
       motion_score(path, s['start_s'], s['end_s']) AS motion,
       clip_quality(path, s['start_s'], s['end_s'])['sharpness'] AS sharpness
FROM shots",
        corpus.display()
    );
    std::fs::write(&file, sql).unwrap_or_else(|e| panic!("{e}"));
    file
}

pub(crate) fn run_command(
    job: &Path,
    out: &Path,
    cluster: Option<&str>,
    extra: &[&str],
) -> Command {
    let mut cmd = Command::new(framefusion_bin());
    cmd.arg("run")
        .arg(job)
        .arg("--output")
        .arg(out)
        .args(["--no-catalog", "-q"])
        .args(["--videos-per-part", &PER_PART.to_string()])
        .args(["--concurrency", &CONCURRENCY.to_string()])
        .args(extra);
    if let Some(url) = cluster {
        cmd.args(["--cluster", url]);
    }
    cmd
}

/// Creates the table `raw` (`STORED AS VIDEO` over `dir`) in the catalog file `catalog`.
pub(crate) fn create_raw_table(catalog: &Path, dir: &Path) {
    let created = framefusion_tests::sql_with_catalog(
        catalog,
        &[],
        &format!(
            "CREATE EXTERNAL TABLE raw STORED AS VIDEO LOCATION '{}'",
            dir.display()
        ),
    );
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
}

/// Runs `framefusion run examples/curate.sql` over the table `raw` of `catalog` into the
/// manifest `out`; returns what it printed.
pub(crate) fn run_curate(catalog: &Path, out: &Path) -> String {
    let job = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/curate.sql");
    let mut cmd = Command::new(framefusion_bin());
    cmd.arg("run")
        .arg(&job)
        .arg("--catalog")
        .arg(catalog)
        .arg("--output")
        .arg(out)
        .arg("-q");
    finished(cmd.output().unwrap_or_else(|e| panic!("{e}")))
}

pub(crate) fn finished(output: Output) -> String {
    assert!(
        output.status.success(),
        "framefusion run failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn spawn(mut cmd: Command) -> Child {
    cmd.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start framefusion run: {e}"))
}

fn kill(mut child: Child) -> bool {
    let running = matches!(child.try_wait(), Ok(None));
    let _ = child.kill(); // SIGKILL
    let _ = child.wait();
    running
}

/// A fraction in [lo, hi) that differs from run to run (printed, to replay a failure).
fn random_between(lo: f64, hi: f64) -> f64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let x = lo + (hi - lo) * f64::from(nanos % 10_000) / 10_000.0;
    eprintln!("random point: {x:.3}");
    x
}

/// Published parts.
pub(crate) fn parts(out: &Path) -> usize {
    std::fs::read_dir(out)
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with("part-"))
                .count()
        })
        .unwrap_or(0)
}

/// Whether a part is complete in `_tmp/` but not yet published: the run is committing.
fn committing(out: &Path) -> bool {
    std::fs::read_dir(out.join("_tmp"))
        .map(|entries| {
            entries.flatten().any(|e| {
                std::fs::read(e.path())
                    .is_ok_and(|bytes| bytes.len() > 8 && bytes.ends_with(b"PAR1"))
            })
        })
        .unwrap_or(false)
}

/// The manifest's rows (without `run_id`) as sorted JSON objects, read by DataFusion.
async fn rows(out: &Path) -> Vec<String> {
    let ctx = SessionContext::new();
    let df = ctx
        .read_parquet(out.display().to_string(), ParquetReadOptions::default())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let batches = df
        .drop_columns(&["run_id"])
        .unwrap_or_else(|e| panic!("{e}"))
        .collect()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let mut writer = ArrayWriter::new(Vec::new());
    for b in &batches {
        writer.write(b).unwrap_or_else(|e| panic!("{e}"));
    }
    writer.finish().unwrap_or_else(|e| panic!("{e}"));
    let json: Vec<serde_json::Value> =
        serde_json::from_slice(&writer.into_inner()).unwrap_or_default();
    let mut rows: Vec<String> = json.iter().map(ToString::to_string).collect();
    rows.sort();
    rows
}

pub(crate) fn success(out: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(out.join("_SUCCESS"))
        .unwrap_or_else(|e| panic!("no _SUCCESS in {}: {e}", out.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}"))
}

pub(crate) fn count(v: &serde_json::Value, key: &str) -> usize {
    v[key]
        .as_u64()
        .and_then(|n| usize::try_from(n).ok())
        .unwrap_or_else(|| panic!("no {key} in {v}"))
}

/// Kills a run three times (twice at random points, once in the middle of a commit),
/// reruns it to the end, and compares with an uninterrupted run.
async fn crash_and_resume(cluster: Option<&str>) {
    const VIDEOS: usize = 16;
    let corpus = corpus(VIDEOS);
    let work = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let job = job(work.path(), corpus.path());

    let reference = work.path().join("reference");
    let started = Instant::now();
    finished(
        run_command(&job, &reference, cluster, &[])
            .output()
            .unwrap_or_else(|e| panic!("{e}")),
    );
    let full = started.elapsed();
    let expected = rows(&reference).await;
    assert_eq!(
        expected.len(),
        2 * VIDEOS,
        "two shots per video: {expected:?}"
    );

    let out = work.path().join("crashed");
    let mut kills = 0;
    // killed at a random point after its first commit
    let mut child = spawn(run_command(&job, &out, cluster, &[]));
    let deadline = Instant::now() + full * 3;
    while parts(&out) == 0 && Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(full.mul_f64(random_between(0.0, 0.3)));
    kills += usize::from(kill(child));
    let committed_first = parts(&out);
    assert!(committed_first > 0, "the first run committed nothing");
    // killed while a part is complete but not yet published
    let mut cmd = run_command(&job, &out, cluster, &[]);
    cmd.env("FRAMEFUSION_FAULT_COMMIT_PAUSE_MS", "3000");
    let mut child = spawn(cmd);
    let deadline = Instant::now() + full * 3;
    while !committing(&out) && Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(committing(&out), "the run never reached a commit");
    kills += usize::from(kill(child));
    // killed at another random point (on a loaded machine the little work left may finish
    // first: then that run is the one that completes)
    let child = spawn(run_command(&job, &out, cluster, &[]));
    std::thread::sleep(full.mul_f64(random_between(0.02, 0.2)));
    let third_killed = kill(child);
    kills += usize::from(third_killed);
    assert!(kills >= 2, "at least two runs were killed while running");
    if third_killed {
        assert!(
            !out.join("_SUCCESS").exists(),
            "a killed run must not leave the commit marker"
        );
    }

    let resumed = finished(
        run_command(&job, &out, cluster, &[])
            .output()
            .unwrap_or_else(|e| panic!("{e}")),
    );
    assert_eq!(rows(&out).await, expected, "resumed manifest differs");
    // nothing half-written is left where readers look
    let leftovers: Vec<String> = std::fs::read_dir(&out)
        .unwrap_or_else(|e| panic!("{e}"))
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !(n.starts_with('_') || (n.starts_with("part-") && n.ends_with(".parquet"))))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // the run's own stats: every video committed once; each killed attempt started at
    // most the videos in flight beyond what it committed
    let summary = success(&out);
    let attempts = summary["attempts"].as_array().cloned().unwrap_or_default();
    assert_eq!(attempts.len(), 3 + usize::from(third_killed), "{summary}");
    let committed: usize = attempts.iter().map(|a| count(a, "committed")).sum();
    let started: usize = attempts.iter().map(|a| count(a, "started")).sum();
    assert_eq!(committed, VIDEOS, "{summary}");
    for a in &attempts {
        let redo = count(a, "started") - count(a, "committed");
        assert!(redo <= PER_PART * CONCURRENCY, "{a}");
    }
    assert!(
        started <= VIDEOS + 3 * PER_PART * CONCURRENCY,
        "started {started} for {VIDEOS} videos: {summary}"
    );
    let last = attempts.last().cloned().unwrap_or_default();
    assert_eq!(
        count(&last, "started"),
        count(&summary, "processed"),
        "{resumed}"
    );
    let before: usize = attempts[..attempts.len() - 1]
        .iter()
        .map(|a| count(a, "committed"))
        .sum();
    assert_eq!(
        count(&last, "started"),
        VIDEOS - before,
        "the last run ran exactly the videos no killed run committed: {summary}"
    );
    eprintln!(
        "crash test ({}): uninterrupted {:.1} s; attempts {attempts:?}; videos started {started} for {VIDEOS}",
        if cluster.is_some() {
            "cluster"
        } else {
            "embedded"
        },
        full.as_secs_f64()
    );

    // a rerun of a complete manifest does nothing
    let again = finished(
        run_command(&job, &out, cluster, &[])
            .output()
            .unwrap_or_else(|e| panic!("{e}")),
    );
    assert!(again.contains("(0 run now, 16 already done)"), "{again}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_runs_resume_embedded() {
    crash_and_resume(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_runs_resume_on_a_cluster() {
    let cluster = TestCluster::start(2, 2, 10).await;
    crash_and_resume(Some(&cluster.url())).await;
}

/// A job where one file is not a video (the job reports its probe error) and one video
/// makes the job itself fail (a cast that fails for that path only).
fn failing_job(dir: &Path, corpus: &Path) -> PathBuf {
    let file = dir.join("failing.sql");
    let sql = format!(
        "CREATE EXTERNAL TABLE failing_src STORED AS VIDEO LOCATION '{}';
SELECT path, duration_s, probe_error AS error,
       CAST(CASE WHEN path LIKE '%poison%' THEN 'not a number' ELSE '1' END AS INT) AS n
FROM failing_src",
        corpus.display()
    );
    std::fs::write(&file, sql).unwrap_or_else(|e| panic!("{e}"));
    file
}

pub(crate) fn manifest_table(out: &Path) -> Vec<serde_json::Value> {
    let script = "import json, sys, pyarrow.parquet as pq\nt = pq.read_table(sys.argv[1])\nprint(json.dumps(sorted(t.to_pylist(), key=lambda r: r['path'])))";
    let text = run_python("pyarrow reading the manifest", script, &[out.as_os_str()]);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_videos_are_error_rows_and_retried_alone() {
    let corpus = corpus(3);
    std::fs::write(corpus.path().join("broken.mp4"), b"this is not a video")
        .unwrap_or_else(|e| panic!("{e}"));
    std::fs::copy(
        corpus.path().join("v000.mp4"),
        corpus.path().join("poison.mp4"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let work = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let job = failing_job(work.path(), corpus.path());
    let out = work.path().join("manifest");

    let first = finished(
        run_command(&job, &out, None, &[])
            .output()
            .unwrap_or_else(|e| panic!("{e}")),
    );
    assert!(first.contains("5 rows (3 ok, 2 error)"), "{first}");
    let table = manifest_table(&out);
    let status: Vec<(String, String)> = table
        .iter()
        .map(|r| {
            let name = r["path"].as_str().unwrap_or_default();
            let name = name.rsplit('/').next().unwrap_or_default().to_owned();
            (name, r["status"].as_str().unwrap_or_default().to_owned())
        })
        .collect();
    assert_eq!(
        status,
        [
            ("broken.mp4", "error"),
            ("poison.mp4", "error"),
            ("v000.mp4", "ok"),
            ("v001.mp4", "ok"),
            ("v002.mp4", "ok")
        ]
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
    );
    let poison_error = table[1]["error"].as_str().unwrap_or_default();
    assert!(poison_error.contains("Cannot cast"), "{poison_error}");
    assert!(table[1]["n"].is_null());
    assert!(table[0]["error"].as_str().is_some_and(|e| !e.is_empty()));

    // without the flag a rerun keeps the error rows
    let again = finished(
        run_command(&job, &out, None, &[])
            .output()
            .unwrap_or_else(|e| panic!("{e}")),
    );
    assert!(again.contains("(0 run now, 5 already done)"), "{again}");

    // the broken file is repaired; a retry runs the two failed videos and nothing else
    std::fs::copy(
        corpus.path().join("v000.mp4"),
        corpus.path().join("broken.mp4"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let retried = finished(
        run_command(&job, &out, None, &["--retry-errors"])
            .output()
            .unwrap_or_else(|e| panic!("{e}")),
    );
    assert!(retried.contains("(2 run now, 3 already done)"), "{retried}");
    assert!(retried.contains("5 rows (4 ok, 1 error)"), "{retried}");
    let summary = success(&out);
    let last = summary["attempts"]
        .as_array()
        .and_then(|a| a.last())
        .cloned()
        .unwrap_or_default();
    assert_eq!(count(&last, "started"), 2, "{summary}");
    let table = manifest_table(&out);
    let paths: Vec<&str> = table.iter().filter_map(|r| r["path"].as_str()).collect();
    assert_eq!(paths.len(), 5, "every video exactly once: {paths:?}");
    assert_eq!(table[0]["status"], "ok", "{:?}", table[0]);
    assert_eq!(table[1]["status"], "error", "{:?}", table[1]);

    // DuckDB reads it as one table, with the operators in the key-value metadata
    let script = "import duckdb, sys\nd = sys.argv[1]\nprint(duckdb.sql(f\"SELECT count(*), count(DISTINCT path), sum(CASE WHEN status = 'error' THEN 1 ELSE 0 END) FROM read_parquet('{d}/*.parquet')\").fetchone())\nprint(duckdb.sql(f\"SELECT count(*) FROM parquet_kv_metadata('{d}/*.parquet') WHERE decode(key) = 'framefusion.operators'\").fetchone())";
    let text = run_python("DuckDB reading the manifest", script, &[out.as_os_str()]);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "(5, 5, 1)", "{text}");
    assert_ne!(lines[1], "(0,)", "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_different_job_is_refused_at_the_same_output() {
    let corpus = corpus(2);
    let work = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let out = work.path().join("manifest");
    let job = failing_job(work.path(), corpus.path());
    finished(
        run_command(&job, &out, None, &[])
            .output()
            .unwrap_or_else(|e| panic!("{e}")),
    );
    let other = work.path().join("other.sql");
    std::fs::write(
        &other,
        format!(
            "CREATE EXTERNAL TABLE o STORED AS VIDEO LOCATION '{}'; SELECT path FROM o",
            corpus.path().display()
        ),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let refused = run_command(&other, &out, None, &[])
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("belongs to another job"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dataframe_pipeline_example_writes_a_manifest() {
    let corpus = corpus(2);
    let work = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let out = work.path().join("manifest");
    let summary = pipeline::pipeline(
        &corpus.path().display().to_string(),
        &out.display().to_string(),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(summary.videos, 2);
    assert_eq!(summary.rows, 4, "two shots each: {summary:?}");
    assert_eq!(summary.key, ["path", "start_s", "end_s"]);
    let names: Vec<&str> = summary.operators.iter().map(|o| o.name.as_str()).collect();
    assert_eq!(names, ["clip_quality", "detect_shots", "motion_score"]);
    let table = manifest_table(&out);
    assert_eq!(table.len(), 4);
    assert!(
        table
            .iter()
            .all(|r| r["motion"].is_number() && r["status"] == "ok")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_demo_job_curates_and_resumes() {
    let corpus = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    for name in ["bikes.mp4", "carphone_pristine.mp4", "sample.mkv"] {
        std::os::unix::fs::symlink(framefusion_tests::sample(name), corpus.path().join(name))
            .unwrap_or_else(|e| panic!("{e}"));
    }
    std::fs::write(corpus.path().join("broken.mp4"), b"junk").unwrap_or_else(|e| panic!("{e}"));
    let work = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let catalog = work.path().join("catalog.json");
    create_raw_table(&catalog, corpus.path());
    let out = work.path().join("manifest");
    let run = || run_curate(&catalog, &out);
    let first = run();
    assert!(
        first.contains("4 videos (4 run now, 0 already done)"),
        "{first}"
    );
    let table = manifest_table(&out);
    let errors: Vec<&str> = table
        .iter()
        .filter(|r| r["status"] == "error")
        .filter_map(|r| r["path"].as_str())
        .map(|p| p.rsplit('/').next().unwrap_or_default())
        .collect();
    assert_eq!(errors, ["broken.mp4", "sample.mkv"], "{table:?}");
    let bikes: Vec<&serde_json::Value> = table
        .iter()
        .filter(|r| r["path"].as_str().is_some_and(|p| p.ends_with("bikes.mp4")))
        .collect();
    assert_eq!(
        bikes.len(),
        5,
        "bikes.mp4 has five shots of at least 1 s: {bikes:?}"
    );
    assert!(
        bikes
            .iter()
            .all(|r| r["motion"].is_number() && r["phash"].is_number())
    );
    let summary = success(&out);
    let names: Vec<&str> = summary["operators"]
        .as_array()
        .map(|a| a.iter().filter_map(|o| o["name"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(names, ["clip_signals", "detect_shots"], "{summary}");
    let second = run();
    assert!(second.contains("(0 run now, 4 already done)"), "{second}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manifest_in_s3_from_videos_in_s3() {
    let s3 = framefusion_tests::s3::S3Server::start();
    s3.create_bucket("media");
    let corpus = corpus(3);
    std::fs::write(corpus.path().join("broken.mp4"), b"junk").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(s3.upload_dir("media", "raw/", corpus.path()).await, 4);
    let work = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let job = work.path().join("s3.sql");
    std::fs::write(
        &job,
        "CREATE EXTERNAL TABLE s3_src STORED AS VIDEO LOCATION 's3://media/raw/';
         SELECT path, duration_s, width, probe_error AS error FROM s3_src",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let run = || {
        let mut cmd = Command::new(framefusion_bin());
        cmd.arg("run")
            .arg(&job)
            .args([
                "--output",
                "s3://media/manifests/run-1/",
                "--no-catalog",
                "-q",
            ])
            .args(["--videos-per-part", "2"]);
        for (k, v) in s3.env() {
            cmd.env(k, v);
        }
        finished(cmd.output().unwrap_or_else(|e| panic!("{e}")))
    };
    let first = run();
    assert!(
        first.contains("4 videos (4 run now, 0 already done), 4 rows (3 ok, 1 error), 2 parts"),
        "{first}"
    );
    // s3s-fs keeps objects as files: read the parts where the server stores them
    let stored = s3.root().join("media/manifests/run-1");
    assert!(stored.join("_SUCCESS").is_file());
    assert!(
        !stored.join("_tmp").exists()
            || std::fs::read_dir(stored.join("_tmp")).map_or(0, Iterator::count) == 0
    );
    let table = manifest_table(&stored);
    assert_eq!(table.len(), 4);
    assert!(table.iter().all(|r| {
        r["path"]
            .as_str()
            .is_some_and(|p| p.starts_with("s3://media/raw/"))
    }));
    assert_eq!(table.iter().filter(|r| r["width"] == 320).count(), 3);
    let again = run();
    assert!(again.contains("(0 run now, 4 already done)"), "{again}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_reaches_the_api() {
    use framefusion_engine::manifest::{ManifestOptions, RunProgress};
    use framefusion_engine::{DataFrameExt, SessionContextExt};
    use std::sync::{Arc, Mutex};
    let corpus = corpus(5);
    let work = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let seen: Arc<Mutex<Vec<RunProgress>>> = Arc::default();
    let sink = Arc::clone(&seen);
    let options = ManifestOptions {
        videos_per_part: Some(2),
        concurrency: Some(1),
        progress: Some(Arc::new(move |p: &RunProgress| {
            sink.lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(p.clone());
        })),
        ..ManifestOptions::new(work.path().join("m").display().to_string())
    };
    let ctx = framefusion_engine::new_context().unwrap_or_else(|e| panic!("{e}"));
    let summary = ctx
        .read_videos(&corpus.path().display().to_string())
        .await
        .and_then(|df| df.select_columns(&["path", "duration_s"]))
        .unwrap_or_else(|e| panic!("{e}"))
        .write_manifest(&options)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(summary.rows, 5);
    let seen = seen.lock().unwrap_or_else(|e| e.into_inner()).clone();
    // once at the start, then after each of the 3 parts (2 + 2 + 1 videos)
    let done: Vec<usize> = seen.iter().map(|p| p.done).collect();
    assert_eq!(done, [0, 2, 4, 5], "{seen:?}");
    assert!(seen.iter().all(|p| p.total == 5 && p.skipped == 0));
    let last = seen.last().cloned().unwrap_or_default();
    assert_eq!((last.rows, last.remaining()), (5, 0));
    assert!(last.videos_per_s() > 0.0 && last.eta() == Some(Duration::ZERO));
}
