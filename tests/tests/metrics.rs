//! Metrics: `framefusion serve --http` serves `/metrics`, which Prometheus' own Python
//! parser (prometheus-client, OpenMetrics) reads, and whose counters move by the expected
//! amounts after queries: a decode pass and every frame of the video for `detect_shots`,
//! one model load then none for two text queries, one `ok` and one `error` statement;
//! manifest rows per run and status; `/healthz`; on an executor, its tasks by outcome
//! against the tasks the scheduler lists.

use std::collections::BTreeMap;
use std::path::Path;

use arrow_flight::sql::client::FlightSqlServiceClient;
use framefusion_engine::{DataFrameExt, SessionContextExt};
use framefusion_tests::flight::{FlightServer, http_get};
use framefusion_tests::{corpus_dir, run_python, sample};
use futures::TryStreamExt;
use tonic::transport::Channel;

/// Every sample of an OpenMetrics text as `name{label="value",...}` -> value, by
/// prometheus-client's parser (which fails on text that is not valid OpenMetrics).
const PARSE: &str = r#"
import json, sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
text = open(sys.argv[1]).read()
out, types = {}, {}
for family in text_string_to_metric_families(text):
    types[family.name] = family.type
    for s in family.samples:
        labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
        out[f"{s.name}{{{labels}}}"] = s.value
print(json.dumps({"samples": out, "types": types}))
"#;

struct Scrape {
    samples: BTreeMap<String, f64>,
    types: BTreeMap<String, String>,
}

impl Scrape {
    fn parse(text: &str) -> Self {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let file = dir.path().join("metrics.txt");
        std::fs::write(&file, text).unwrap_or_else(|e| panic!("{e}"));
        let out: serde_json::Value = serde_json::from_str(&run_python(
            "parsing /metrics with prometheus-client",
            PARSE,
            &[file.as_os_str()],
        ))
        .unwrap_or_else(|e| panic!("{e}"));
        Self {
            samples: serde_json::from_value(out["samples"].clone())
                .unwrap_or_else(|e| panic!("{e}")),
            types: serde_json::from_value(out["types"].clone()).unwrap_or_else(|e| panic!("{e}")),
        }
    }

    fn get(&self, name: &str) -> f64 {
        self.samples.get(name).copied().unwrap_or(0.0)
    }
}

fn scrape(server: &FlightServer) -> Scrape {
    let addr = server
        .http
        .as_deref()
        .unwrap_or_else(|| panic!("no HTTP address"));
    Scrape::parse(&http_get(addr, "/metrics"))
}

async fn run(client: &mut FlightSqlServiceClient<Channel>, sql: &str) -> Result<usize, String> {
    let info = client
        .execute(sql.to_owned(), None)
        .await
        .map_err(|e| e.to_string())?;
    let mut rows = 0;
    for endpoint in info.endpoint {
        let ticket = endpoint.ticket.unwrap_or_else(|| panic!("no ticket"));
        let stream = client.do_get(ticket).await.map_err(|e| e.to_string())?;
        let batches: Vec<_> = stream.try_collect().await.map_err(|e| e.to_string())?;
        rows += batches.iter().map(|b| b.num_rows()).sum::<usize>();
    }
    Ok(rows)
}

/// Frames in the video stream of `file`, as ffprobe counts them by decoding.
fn frame_count(file: &Path) -> f64 {
    let out = std::process::Command::new("ffprobe")
        .args(["-v", "error", "-count_frames", "-select_streams", "v:0"])
        .args(["-show_entries", "stream=nb_read_frames", "-of", "csv=p=0"])
        .arg(file)
        .output()
        .unwrap_or_else(|e| panic!("ffprobe: {e}"));
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("ffprobe's frame count: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_endpoint_counts_frames_passes_models_and_statements() {
    let server = FlightServer::start(&corpus_dir(), &["--http", "127.0.0.1:0"]);
    let addr = server
        .http
        .clone()
        .unwrap_or_else(|| panic!("no HTTP line"));
    assert_eq!(http_get(&addr, "/healthz").trim(), "ok");
    let mut client = server.client().await;

    let video = sample("carphone_pristine.mp4");
    let path = video.display().to_string();
    let before = scrape(&server);
    // exact shot detection decodes every frame of the video in one pass
    let rows = run(
        &mut client,
        &format!("SELECT cardinality(detect_shots(p)) FROM (VALUES ('{path}')) AS t(p)"),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(rows, 1);
    let shots = scrape(&server);
    let delta = |name: &str| shots.get(name) - before.get(name);
    assert_eq!(delta("framefusion_decode_passes_total{}"), 1.0);
    assert_eq!(
        delta("framefusion_frames_decoded_total{}"),
        frame_count(&video),
        "every frame, once"
    );
    assert!(delta("framefusion_decode_seconds_total{}") > 0.0);
    assert!(delta("framefusion_operator_seconds_total{operator=\"detect_shots\"}") > 0.0);
    assert_eq!(delta("framefusion_queries_total{status=\"ok\"}"), 1.0);
    assert_eq!(delta("framefusion_queries_total{status=\"error\"}"), 0.0);

    // a statement that fails
    assert!(
        run(&mut client, "SELECT * FROM no_such_table")
            .await
            .is_err()
    );
    let failed = scrape(&server);
    assert_eq!(
        failed.get("framefusion_queries_total{status=\"error\"}")
            - shots.get("framefusion_queries_total{status=\"error\"}"),
        1.0
    );

    // the text detector: loaded once, then reused; inference time counted per model
    let det = "model=\"ch_PP-OCRv4_det_infer.onnx\"";
    for (i, range) in ["0, 2", "2, 4"].iter().enumerate() {
        let was = scrape(&server);
        run(
            &mut client,
            &format!("SELECT text_area_ratio(p, {range}) FROM (VALUES ('{path}')) AS t(p)"),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        let now = scrape(&server);
        let loads = format!("framefusion_model_loads_total{{{det}}}");
        let inference = format!("framefusion_inference_seconds_total{{{det}}}");
        assert_eq!(
            now.get(&loads) - was.get(&loads),
            if i == 0 { 1.0 } else { 0.0 },
            "model loads, query {i}"
        );
        assert!(
            now.get(&inference) > was.get(&inference),
            "inference, query {i}"
        );
        assert!(
            now.get("framefusion_operator_seconds_total{operator=\"text_area_ratio\"}")
                > was.get("framefusion_operator_seconds_total{operator=\"text_area_ratio\"}")
        );
    }
    // every family is a counter (a labelled family shows once it has a sample; manifest
    // rows are checked in-process below)
    let all = scrape(&server);
    for name in [
        "framefusion_frames_decoded",
        "framefusion_decode_passes",
        "framefusion_decode_seconds",
        "framefusion_operator_seconds",
        "framefusion_inference_seconds",
        "framefusion_model_loads",
        "framefusion_queries",
    ] {
        assert_eq!(
            all.types.get(name).map(String::as_str),
            Some("counter"),
            "{name} in {:?}",
            all.types
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifest_rows_are_counted_per_run_and_status() {
    let corpus = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    for name in ["bikes.mp4", "carphone_pristine.mp4"] {
        std::fs::copy(sample(name), corpus.path().join(name)).unwrap_or_else(|e| panic!("{e}"));
    }
    std::fs::write(corpus.path().join("broken.mp4"), b"not a video at all")
        .unwrap_or_else(|e| panic!("{e}"));
    let work = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let output = work.path().join("m").display().to_string();
    let ctx = framefusion_engine::new_context().unwrap_or_else(|e| panic!("{e}"));
    let summary = ctx
        .read_videos(&corpus.path().display().to_string())
        .await
        .and_then(|df| {
            df.select(vec![
                datafusion::prelude::col("path"),
                datafusion::prelude::col("probe_error").alias("error"),
            ])
        })
        .unwrap_or_else(|e| panic!("{e}"))
        .write_manifest(&framefusion_engine::manifest::ManifestOptions::new(
            output.clone(),
        ))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((summary.ok_rows, summary.error_rows), (2, 1));
    let scraped = Scrape::parse(&framefusion_udfs::media::metrics::render());
    let rows = |status: &str| {
        let run = summary.output.replace('\\', "\\\\");
        scraped.get(&format!(
            "framefusion_rows_total{{run=\"{run}\",status=\"{status}\"}}"
        ))
    };
    assert_eq!(
        (rows("ok"), rows("error")),
        (2.0, 1.0),
        "{:?}",
        scraped.samples
    );
    assert_eq!(
        scraped.types.get("framefusion_rows").map(String::as_str),
        Some("counter")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn executors_serve_their_own_metrics() {
    let port = framefusion_tests::cluster::free_port();
    let addr = format!("127.0.0.1:{port}");
    let cluster = framefusion_tests::cluster::TestCluster::start_with_env(
        1,
        1,
        30,
        &[("FRAMEFUSION_METRICS_ADDR", addr.as_str())],
    )
    .await;
    assert_eq!(http_get(&addr, "/healthz").trim(), "ok");
    // registered (the cluster waited for it), so ready for work as soon as the executor
    // has seen the scheduler's answer to its poll (a moment after the scheduler lists it)
    let until = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let ready = loop {
        let (status, body) =
            framefusion_tests::flight::http_request(&addr, "GET", "/readyz", &[], "");
        if status == 200 || std::time::Instant::now() > until {
            break (status, body);
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert_eq!(ready, (200, "ready\n".to_owned()));
    let before = Scrape::parse(&http_get(&addr, "/metrics"));
    let video = sample("carphone_pristine.mp4");
    let ctx = framefusion_engine::remote_context(&cluster.url())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    ctx.sql(&format!(
        "SELECT cardinality(detect_shots(p)) FROM (VALUES ('{}')) AS t(p)",
        video.display()
    ))
    .await
    .unwrap_or_else(|e| panic!("{e}"))
    .collect()
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", cluster.logs()));
    let after = Scrape::parse(&http_get(&addr, "/metrics"));
    let delta = |name: &str| after.get(name) - before.get(name);
    // the executor ran the pass: the client and the scheduler decode nothing
    assert_eq!(
        delta("framefusion_decode_passes_total{}"),
        1.0,
        "{}",
        cluster.logs()
    );
    assert_eq!(
        delta("framefusion_frames_decoded_total{}"),
        frame_count(&video)
    );
    assert!(delta("framefusion_operator_seconds_total{operator=\"detect_shots\"}") > 0.0);
    // one task counted per task of the job, as the scheduler lists them; none running now
    let tasks = scheduled_tasks(&cluster.scheduler_addr());
    assert!(tasks >= 1);
    assert_eq!(
        delta("framefusion_tasks_total{status=\"ok\"}"),
        tasks as f64,
        "{}",
        cluster.logs()
    );
    assert_eq!(delta("framefusion_tasks_total{status=\"error\"}"), 0.0);
    assert_eq!(after.get("framefusion_tasks_running{}"), 0.0);
    assert_eq!(
        after
            .types
            .get("framefusion_tasks_running")
            .map(String::as_str),
        Some("gauge")
    );

    // a task that fails on the executor (a value that is not a number, cast at run time)
    let failed = ctx
        .sql("SELECT CAST(x AS INT) FROM (VALUES ('not a number')) AS t(x)")
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .collect()
        .await;
    assert!(failed.is_err(), "{failed:?}");
    let last = Scrape::parse(&http_get(&addr, "/metrics"));
    assert_eq!(
        last.get("framefusion_tasks_total{status=\"error\"}")
            - after.get("framefusion_tasks_total{status=\"error\"}"),
        1.0,
        "{}",
        cluster.logs()
    );
    assert_eq!(last.get("framefusion_tasks_running{}"), 0.0);
}

/// The tasks of every job the scheduler at `addr` knows (its REST API: `/api/jobs`, then
/// each job's `/stages`).
fn scheduled_tasks(addr: &str) -> usize {
    let parse = |path: &str| -> serde_json::Value {
        serde_json::from_str(&http_get(addr, path)).unwrap_or_else(|e| panic!("{path}: {e}"))
    };
    let jobs = parse("/api/jobs");
    let jobs = jobs
        .as_array()
        .unwrap_or_else(|| panic!("jobs: {jobs}"))
        .iter()
        .map(|job| job["job_id"].as_str().unwrap_or_default().to_owned())
        .collect::<Vec<_>>();
    jobs.iter()
        .map(|id| {
            let stages = parse(&format!("/api/job/{id}/stages"));
            stages["stages"]
                .as_array()
                .unwrap_or_else(|| panic!("stages: {stages}"))
                .iter()
                .map(|stage| stage["tasks"].as_array().map_or(0, Vec::len))
                .sum::<usize>()
        })
        .sum()
}
