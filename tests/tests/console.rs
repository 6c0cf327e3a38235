//! The web console in a real browser: headless chromium driven by selenium
//! (`tests/browser/console.py`) logs in, submits a shots job on sample videos, watches the
//! run finish, opens an error row, opens the shot browser and waits until the page has
//! decoded every thumbnail, opens a larger preview, filters by a manifest column and reads
//! the cluster view; embedded, and on a 2-executor cluster. What the page showed is
//! checked against the manifest the run wrote (read by pyarrow).
//!
//! The screenshots go to `$FRAMEFUSION_SCREENSHOTS` when set (the README's come from
//! there), else to a temporary folder.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use framefusion_tests::cluster::TestCluster;
use framefusion_tests::flight::{FlightServer, USER};
use framefusion_tests::{run_python, sample};

/// Two sample videos and a copy of one on which the job fails (`poison.mp4`).
fn corpus() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    for (from, to) in [
        ("bikes.mp4", "bikes.mp4"),
        ("carphone_pristine.mp4", "carphone_pristine.mp4"),
        ("bikes.mp4", "poison.mp4"),
    ] {
        std::fs::copy(sample(from), dir.path().join(to)).unwrap_or_else(|e| panic!("{e}"));
    }
    dir
}

/// Shots, their motion and captions (the stand-in captioner of the generation tests,
/// in-process, in `captioner`); the job itself fails on `poison.mp4` (a cast of that path
/// only), which the manifest records as an error row.
fn job(corpus: &Path, captioner: &Path) -> String {
    format!(
        "SET caption.backend = 'onnx'; SET caption.model = '{}';
CREATE EXTERNAL TABLE console_src STORED AS VIDEO LOCATION '{}';
SELECT path, s['start_s'] AS start_s, s['end_s'] AS end_s,
       motion_score(path, s['start_s'], s['end_s']) AS motion,
       caption(path, s['start_s'], s['end_s'], 'frames=2') AS caption,
       CAST(CASE WHEN path LIKE '%poison%' THEN 'not a number' ELSE '1' END AS INT) AS n
FROM (SELECT path, unnest(detect_shots(path)) AS s FROM console_src WHERE probe_error IS NULL)",
        captioner.display(),
        corpus.display()
    )
}

/// The stand-in captioner export (`tests/standins/vision_encoder_decoder.py`) in `dir`.
fn captioner(dir: &Path) -> PathBuf {
    let folder = dir.join("captioner");
    let script = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("standins/vision_encoder_decoder.py"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    run_python(
        "the onnx package building a stand-in captioner",
        &script,
        &[folder.as_os_str()],
    );
    folder
}

fn screenshots() -> (Option<tempfile::TempDir>, PathBuf) {
    match std::env::var_os("FRAMEFUSION_SCREENSHOTS") {
        Some(dir) => (None, PathBuf::from(dir)),
        None => {
            let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
            let path = dir.path().to_owned();
            (Some(dir), path)
        }
    }
}

fn manifest_rows(output: &str) -> Vec<serde_json::Value> {
    let script = "import json, sys, pyarrow.parquet as pq\nt = pq.read_table(sys.argv[1])\nprint(json.dumps(sorted(t.to_pylist(), key=lambda r: (r['path'], r['start_s'] or 0))))";
    let text = run_python("pyarrow reading the manifest", script, &[output.as_ref()]);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// Drives the console of a server at `target`; checks what the page showed.
fn drive(cluster: Option<&TestCluster>) {
    let videos = corpus();
    let work = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let runs = work.path().join("runs");
    std::fs::create_dir_all(&runs).unwrap_or_else(|e| panic!("{e}"));
    let job_file = work.path().join("job.sql");
    let model = captioner(work.path());
    std::fs::write(&job_file, job(videos.path(), &model)).unwrap_or_else(|e| panic!("{e}"));
    let url = cluster.map(TestCluster::url);
    let named = url.as_ref().map(|u| format!("two={u}"));
    let mut extra = vec![
        "--http".to_owned(),
        "127.0.0.1:0".to_owned(),
        "--allow-root".to_owned(),
        work.path().display().to_string(),
        "--runs".to_owned(),
        runs.display().to_string(),
    ];
    if let Some(named) = &named {
        extra.extend(["--cluster".to_owned(), named.clone()]);
    }
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    let server = FlightServer::start(videos.path(), &extra);
    let http = server
        .http
        .clone()
        .unwrap_or_else(|| panic!("the server reported no HTTP address"));
    let target = if cluster.is_some() { "two" } else { "embedded" };
    let (_keep, shots) = screenshots();
    let out = Command::new(framefusion_tests::python())
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("browser/console.py"))
        .arg(format!("http://{http}"))
        .args([USER.0, USER.1])
        .arg(&job_file)
        .arg(target)
        .arg(&shots)
        .output()
        .unwrap_or_else(|e| panic!("cannot run the browser test: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the browser test failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: serde_json::Value = stdout
        .lines()
        .last()
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("the browser test printed no result: {stdout}"));

    // the run the page watched is the manifest on disk
    let summary = &seen["summary"];
    let output = summary["output"].as_str().unwrap_or_default().to_owned();
    assert!(
        output.starts_with(&runs.display().to_string()),
        "{output} is not under --runs"
    );
    let rows = manifest_rows(&output);
    let errors: Vec<&serde_json::Value> = rows.iter().filter(|r| r["status"] == "error").collect();
    let ok = rows.len() - errors.len();
    assert!(ok >= 3, "too few shots: {rows:?}");
    assert_eq!(summary["ok_rows"], ok as u64, "{seen}");
    assert_eq!(summary["error_rows"], 1, "{seen}");
    assert_eq!(seen["listed_status"], "succeeded", "{seen}");
    assert!(
        errors[0]["path"]
            .as_str()
            .is_some_and(|p| p.ends_with("poison.mp4")),
        "{errors:?}"
    );

    // the error row opened shows the manifest's message
    assert_eq!(seen["error_rows"], 1, "{seen}");
    let detail = seen["error_detail"].as_str().unwrap_or_default();
    let message = errors[0]["error"].as_str().unwrap_or_default();
    assert!(
        detail.contains("poison.mp4") && detail.contains(message) && !message.is_empty(),
        "{detail} / {message}"
    );

    // the shot browser shows every row, each thumbnail decoded by the page
    assert_eq!(
        seen["clips_info"].as_str().unwrap_or_default(),
        format!("{} rows match; showing {}.", rows.len(), rows.len().min(60)),
        "{seen}"
    );
    let thumbnails = &seen["thumbnails"];
    assert_eq!(thumbnails["shown"], rows.len().min(60) as u64, "{seen}");
    assert_eq!(thumbnails["decoded"], thumbnails["shown"], "{seen}");
    assert_eq!(thumbnails["failed"], 0, "{seen}");
    // a 4-tile sheet of 160-pixel tiles: two columns of two
    let width = seen["thumbnail_size"][0].as_u64().unwrap_or_default();
    assert!((300..=340).contains(&width), "{seen}");
    assert!(
        seen["thumbnail_pixels_vary"].as_u64().unwrap_or_default() > 10,
        "{seen}"
    );
    // the larger preview: 9 tiles of 320 pixels, three columns
    assert!(
        seen["preview_size"][0].as_u64().unwrap_or_default() > 900,
        "{seen}"
    );

    // each clip shows its caption, as the manifest has it (none for the error row)
    let mut want: Vec<String> = rows
        .iter()
        .filter_map(|r| r["caption"].as_str().map(str::to_owned))
        .collect();
    want.sort();
    let mut shown: Vec<String> = seen["captions"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|c| c.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    shown.sort();
    assert_eq!(shown, want, "{seen}");
    assert!(
        rows.iter()
            .filter(|r| r["status"] == "ok")
            .all(|r| r["caption"].as_str().is_some_and(|c| !c.is_empty())),
        "{rows:?}"
    );
    assert_eq!(seen["preview_caption"], seen["captions"][0], "{seen}");

    // the filter keeps the rows of one video
    let bikes = rows
        .iter()
        .filter(|r| r["path"].as_str().is_some_and(|p| p.contains("bikes")))
        .count();
    assert_eq!(
        seen["filtered_info"].as_str().unwrap_or_default(),
        format!("{bikes} rows match; showing {bikes}."),
        "{seen}"
    );
    let paths: Vec<String> = seen["filtered_paths"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|p| p.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    assert!(
        !paths.is_empty() && paths.iter().all(|p| p.ends_with("bikes.mp4")),
        "{paths:?}"
    );

    // operator seconds in this process (embedded), the cluster's executors on a cluster
    let operators = seen["operators"].as_array().map_or(0, Vec::len);
    let clusters = &seen["clusters"];
    match cluster {
        None => {
            assert!(operators >= 1, "{seen}");
            assert_eq!(clusters, &serde_json::json!([]), "{seen}");
        }
        Some(_) => {
            assert_eq!(
                clusters,
                &serde_json::json!([{"name": "two", "executors": 2}]),
                "{seen}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_runs_a_job_and_browses_its_shots_embedded() {
    tokio::task::spawn_blocking(|| drive(None))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_runs_a_job_and_browses_its_shots_on_a_cluster() {
    let cluster = std::sync::Arc::new(TestCluster::start(2, 2, 10).await);
    let shared = std::sync::Arc::clone(&cluster);
    tokio::task::spawn_blocking(move || drive(Some(shared.as_ref())))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
}

/// The lease of the durable-run test's servers, in seconds.
const LEASE_S: u64 = 2;

/// `framefusion serve` with the console over `runs`, a short run lease and slow commits
/// (each part waits `pause_ms` before it is published, so a run lasts long enough to be
/// killed in the middle).
fn durable_server(root: &Path, corpus: &Path, runs: &Path, pause_ms: u64) -> FlightServer {
    FlightServer::start_with_env(
        root,
        &[
            "--allow-root",
            &corpus.display().to_string(),
            "--http",
            "127.0.0.1:0",
            "--runs",
            &runs.display().to_string(),
            "--run-lease",
            &LEASE_S.to_string(),
        ],
        &[(
            framefusion_engine::manifest::COMMIT_PAUSE_ENV,
            pause_ms.to_string(),
        )],
    )
}

/// The lease files of the run book under `runs`.
fn leases(runs: &Path) -> Vec<String> {
    let book = runs.join("_console/runs");
    let mut found: Vec<String> = std::fs::read_dir(&book)
        .into_iter()
        .flatten()
        .flatten()
        .flat_map(|run| {
            std::fs::read_dir(run.path())
                .into_iter()
                .flatten()
                .flatten()
        })
        .map(|f| f.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("lease-"))
        .collect();
    found.sort();
    found
}

/// The manifest rows at `out` without `run_id`, as sorted JSON.
fn rows_without_run(out: &Path) -> Vec<String> {
    let mut rows: Vec<String> = crate::manifest::manifest_table(out)
        .into_iter()
        .map(|mut r| {
            if let Some(o) = r.as_object_mut() {
                o.remove("run_id");
            }
            r.to_string()
        })
        .collect();
    rows.sort();
    rows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_console_run_survives_its_server_being_killed() {
    let corpus = crate::manifest::corpus(16);
    let work = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let runs = work.path().join("runs");
    std::fs::create_dir_all(&runs).unwrap_or_else(|e| panic!("{e}"));
    let out = runs.join("shots");
    let sql = format!(
        "CREATE EXTERNAL TABLE durable_src STORED AS VIDEO LOCATION '{}';
SELECT path, s['start_s'] AS start_s, s['end_s'] AS end_s,
       motion_score(path, s['start_s'], s['end_s']) AS motion
FROM (SELECT path, unnest(detect_shots(path)) AS s FROM durable_src)",
        corpus.path().display()
    );

    // the rows of an uninterrupted run of the same job
    let job = work.path().join("job.sql");
    std::fs::write(&job, &sql).unwrap_or_else(|e| panic!("{e}"));
    let reference = work.path().join("reference");
    crate::manifest::finished(
        Command::new(framefusion_tests::framefusion_bin())
            .arg("run")
            .arg(&job)
            .arg("--output")
            .arg(&reference)
            .args(["--no-catalog", "-q"])
            .output()
            .unwrap_or_else(|e| panic!("{e}")),
    );
    let expected = rows_without_run(&reference);

    let first = durable_server(work.path(), corpus.path(), &runs, 3000);
    let http = first.http.clone().unwrap_or_else(|| panic!("no --http"));
    let bearer = format!("Bearer {}", framefusion_tests::flight::STATIC_TOKEN);
    let body =
        serde_json::json!({"sql": sql, "target": "embedded", "output": out.display().to_string()});
    let (status, answer) = framefusion_tests::flight::http_request(
        &http,
        "POST",
        "/api/runs",
        &[
            ("authorization", &bearer),
            ("content-type", "application/json"),
        ],
        &body.to_string(),
    );
    assert_eq!(status, 201, "{answer}");
    let answer: serde_json::Value = serde_json::from_str(&answer).unwrap_or_default();
    assert_eq!(answer["durable"], true, "{answer}");
    let id = answer["id"].as_str().unwrap_or_default().to_owned();
    assert!(
        runs.join("_console/runs")
            .join(&id)
            .join("run.json")
            .is_file(),
        "the run is recorded before it starts"
    );

    // a second server on the same runs folder does not take a run whose server is alive
    let second = durable_server(work.path(), corpus.path(), &runs, 0);
    std::thread::sleep(Duration::from_secs(3 * LEASE_S));
    assert_eq!(
        leases(&runs),
        ["lease-000001.json"],
        "the run changed hands"
    );
    drop(second);

    // kill the first server in the middle of the run
    let until = std::time::Instant::now() + Duration::from_secs(120);
    while crate::manifest::parts(&out) == 0 {
        assert!(std::time::Instant::now() < until, "no part was published");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        !out.join("_SUCCESS").exists(),
        "the run finished too early to be killed"
    );
    drop(first); // SIGKILL
    let done_before = crate::manifest::parts(&out);

    // started again, the server takes the run over once its lease expires and finishes it
    let restarted = durable_server(work.path(), corpus.path(), &runs, 0);
    let until = std::time::Instant::now() + Duration::from_secs(180);
    while !out.join("_SUCCESS").exists() {
        assert!(
            std::time::Instant::now() < until,
            "the run did not finish after the restart (leases {:?})",
            leases(&runs)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(leases(&runs), ["lease-000001.json", "lease-000002.json"]);
    assert!(done_before >= 1);
    let got = rows_without_run(&out);
    assert_eq!(got, expected, "the rows of an uninterrupted run, each once");
    let restarted_http = restarted.http.clone().unwrap_or_default();
    let view = framefusion_tests::flight::http_request(
        &restarted_http,
        "GET",
        &format!("/api/runs/{id}"),
        &[("authorization", &bearer)],
        "",
    );
    assert!(view.1.contains("succeeded"), "{view:?}");
}

/// The status of the jobs named `name` on the scheduler at `addr` (its REST API).
fn job_statuses(addr: &str, name: &str) -> Vec<String> {
    let jobs = framefusion_tests::flight::http_get(addr, "/api/jobs");
    let jobs: Vec<serde_json::Value> = serde_json::from_str(&jobs).unwrap_or_default();
    jobs.iter()
        .filter(|j| j["job_name"] == name)
        .map(|j| j["status"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_takeover_cancels_the_old_owners_cluster_jobs() {
    // a job of a console run whose server died: still running on the cluster
    let cluster = TestCluster::start(1, 1, 10).await;
    let corpus = crate::manifest::corpus(16);
    let name = framefusion_console::runs::job_name("live-1-0");
    let mut orphan = Command::new(framefusion_tests::framefusion_bin())
        .args(["sql", "--no-catalog", "--cluster", &cluster.url()])
        .arg(format!(
            "SET ballista.job.name = '{name}';
             CREATE EXTERNAL TABLE orphan_src STORED AS VIDEO LOCATION '{}';
             SELECT sum(cardinality(detect_shots(path))) AS shots FROM orphan_src",
            corpus.path().display()
        ))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    let until = std::time::Instant::now() + Duration::from_secs(60);
    while !job_statuses(&cluster.scheduler_addr(), &name).contains(&"Running".to_owned()) {
        assert!(std::time::Instant::now() < until, "the job did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    let client = reqwest::Client::new();
    let cancelled =
        framefusion_console::clusters::cancel_jobs_named(&client, &cluster.url(), &name)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cancelled, 1);
    let until = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let statuses = job_statuses(&cluster.scheduler_addr(), &name);
        if !statuses.iter().any(|s| s == "Running" || s == "Queued") {
            assert!(
                statuses.iter().all(|s| s != "Completed"),
                "the job must end cancelled, not complete: {statuses:?}"
            );
            break;
        }
        assert!(
            std::time::Instant::now() < until,
            "the job still runs: {statuses:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let status = orphan.wait().unwrap_or_else(|e| panic!("{e}"));
    assert!(!status.success(), "its client sees the job cancelled");
    // a job of another name is not touched
    assert_eq!(
        framefusion_console::clusters::cancel_jobs_named(&client, &cluster.url(), "other")
            .await
            .unwrap_or_else(|e| panic!("{e}")),
        0
    );
}
