//! The process's metrics (Prometheus' official Rust client, `prometheus-client`): named
//! once here, recorded where the work happens, and rendered in the OpenMetrics text format
//! by [`render`], which `framefusion serve --http` and `framefusion executor --metrics`
//! serve at `/metrics`.
//!
//! | metric | type | labels | what |
//! |---|---|---|---|
//! | `framefusion_decode_passes_total` | counter | | decode passes run (one per video per query: `framefusion_media::pass`; a frames scan's file, a single frame) |
//! | `framefusion_frames_decoded_total` | counter | | frames the decoders produced |
//! | `framefusion_decoder_threads` | gauge | | decoder threads the passes running now hold (at most the CPU budget, [`crate::cpu`]) |
//! | `framefusion_decode_seconds_total` | counter | | seconds of passes spent demuxing and decoding, outside the operators |
//! | `framefusion_operator_seconds_total` | counter | `operator` | seconds an operator's work took inside decode passes |
//! | `framefusion_inference_seconds_total` | counter | `model` | seconds in ONNX Runtime, per model file |
//! | `framefusion_model_loads_total` | counter | `model` | model sessions created (loads, not cache hits) |
//! | `framefusion_rows_total` | counter | `run`, `status` | manifest rows written per run (its output location), `ok` or `error` |
//! | `framefusion_videos_total` | counter | `run`, `status` | videos a run committed: `ok`, `error` (an error row), `no_rows` (filtered out by the job) |
//! | `framefusion_queries_total` | counter | `status` | statements the Flight SQL server ran, `ok` or `error` |
//! | `framefusion_tasks_total` | counter | `status` | Ballista tasks an executor finished: `ok`, `error` or `cancelled` |
//! | `framefusion_tasks_running` | gauge | | Ballista tasks an executor is running now |
//! | `framefusion_pending_tasks` | gauge | `pool` | scheduler: input partitions of runnable stages waiting for an executor, by the pool that should run them (`gpu`: stages that run a model, `cpu`: the others) |
//! | `framefusion_executors` | gauge | `pool` | scheduler: live executors per pool |
//!
//! Counters start at zero in every process and only grow; a rate over them is what a
//! dashboard shows.

use std::sync::LazyLock;
use std::sync::atomic::AtomicU64;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

type Labels = Vec<(&'static str, String)>;
type Seconds = Counter<f64, AtomicU64>;

struct Metrics {
    registry: Registry,
    passes: Counter,
    frames: Counter,
    decode_seconds: Seconds,
    operator_seconds: Family<Labels, Seconds>,
    inference_seconds: Family<Labels, Seconds>,
    model_loads: Family<Labels, Counter>,
    rows: Family<Labels, Counter>,
    videos: Family<Labels, Counter>,
    queries: Family<Labels, Counter>,
    tasks: Family<Labels, Counter>,
    tasks_running: Gauge,
    decoder_threads: Gauge,
    pending_tasks: Family<Labels, Gauge>,
    executors: Family<Labels, Gauge>,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    let mut registry = Registry::with_prefix("framefusion");
    let m = Metrics {
        registry: Registry::default(),
        passes: Counter::default(),
        frames: Counter::default(),
        decode_seconds: Seconds::default(),
        operator_seconds: Family::default(),
        inference_seconds: Family::default(),
        model_loads: Family::default(),
        rows: Family::default(),
        videos: Family::default(),
        queries: Family::default(),
        tasks: Family::default(),
        tasks_running: Gauge::default(),
        decoder_threads: Gauge::default(),
        pending_tasks: Family::default(),
        executors: Family::default(),
    };
    registry.register(
        "decode_passes",
        "Decode passes run (one per video per query)",
        m.passes.clone(),
    );
    registry.register(
        "frames_decoded",
        "Frames the decoders produced",
        m.frames.clone(),
    );
    registry.register_with_unit(
        "decode",
        "Seconds of decode passes spent demuxing and decoding, outside the operators",
        Unit::Seconds,
        m.decode_seconds.clone(),
    );
    registry.register_with_unit(
        "operator",
        "Seconds each operator's work took inside decode passes",
        Unit::Seconds,
        m.operator_seconds.clone(),
    );
    registry.register_with_unit(
        "inference",
        "Seconds spent in ONNX Runtime, per model file",
        Unit::Seconds,
        m.inference_seconds.clone(),
    );
    registry.register(
        "model_loads",
        "Model sessions created, per model file",
        m.model_loads.clone(),
    );
    registry.register(
        "rows",
        "Manifest rows written, per run and status",
        m.rows.clone(),
    );
    registry.register(
        "videos",
        "Videos a manifest run committed, per run and status (ok, error, no_rows)",
        m.videos.clone(),
    );
    registry.register(
        "queries",
        "Statements the Flight SQL server ran, per status",
        m.queries.clone(),
    );
    registry.register(
        "tasks",
        "Ballista tasks this executor finished, per status (ok, error, cancelled)",
        m.tasks.clone(),
    );
    registry.register(
        "tasks_running",
        "Ballista tasks this executor is running now",
        m.tasks_running.clone(),
    );
    registry.register(
        "decoder_threads",
        "Decoder threads the decode passes running now hold",
        m.decoder_threads.clone(),
    );
    registry.register(
        "pending_tasks",
        "Scheduler: input partitions of runnable stages waiting for an executor, per pool \
         that should run them (gpu: stages that run a model)",
        m.pending_tasks.clone(),
    );
    registry.register(
        "executors",
        "Scheduler: live executors, per pool",
        m.executors.clone(),
    );
    Metrics { registry, ..m }
});

fn status(ok: bool) -> Labels {
    vec![("status", if ok { "ok" } else { "error" }.to_owned())]
}

/// Counts a decode pass that decoded `frames` frames and spent `decode_seconds` outside
/// its consumers.
pub fn pass_done(frames: u64, decode_seconds: f64) {
    METRICS.passes.inc();
    METRICS.frames.inc_by(frames);
    METRICS.decode_seconds.inc_by(decode_seconds.max(0.0));
}

/// Sets the decoder threads the passes running now hold.
pub fn decoder_threads(n: usize) {
    METRICS
        .decoder_threads
        .set(i64::try_from(n).unwrap_or(i64::MAX));
}

/// The operators [`operator_seconds`] has counted.
static OPERATORS: std::sync::Mutex<std::collections::BTreeSet<String>> =
    std::sync::Mutex::new(std::collections::BTreeSet::new());

/// Adds `seconds` of `operator`'s work inside a decode pass.
pub fn operator_seconds(operator: &str, seconds: f64) {
    METRICS
        .operator_seconds
        .get_or_create(&vec![("operator", operator.to_owned())])
        .inc_by(seconds.max(0.0));
    let mut seen = OPERATORS.lock().unwrap_or_else(|e| e.into_inner());
    if !seen.contains(operator) {
        seen.insert(operator.to_owned());
    }
}

/// The seconds each operator has spent in this process's decode passes so far (what
/// `framefusion_operator_seconds_total` says), by operator.
pub fn operator_seconds_so_far() -> std::collections::BTreeMap<String, f64> {
    let seen = OPERATORS.lock().unwrap_or_else(|e| e.into_inner()).clone();
    seen.into_iter()
        .map(|name| {
            let seconds = METRICS
                .operator_seconds
                .get_or_create(&vec![("operator", name.clone())])
                .get();
            (name, seconds)
        })
        .collect()
}

/// Adds `seconds` of ONNX Runtime work on `model` (a model file's name).
pub fn inference_seconds(model: &str, seconds: f64) {
    METRICS
        .inference_seconds
        .get_or_create(&vec![("model", model.to_owned())])
        .inc_by(seconds.max(0.0));
}

/// Counts a session created for `model`.
pub fn model_loaded(model: &str) {
    METRICS
        .model_loads
        .get_or_create(&vec![("model", model.to_owned())])
        .inc();
}

/// Counts `ok` and `error` manifest rows written by the run whose output is `run`.
pub fn rows_written(run: &str, ok: u64, error: u64) {
    for (n, good) in [(ok, true), (error, false)] {
        let mut labels = vec![("run", run.to_owned())];
        labels.extend(status(good));
        METRICS.rows.get_or_create(&labels).inc_by(n);
    }
}

/// Counts the videos a run (whose output is `run`) committed: `ok`, with an error row,
/// and without rows.
pub fn videos_committed(run: &str, ok: u64, error: u64, no_rows: u64) {
    for (n, status) in [(ok, "ok"), (error, "error"), (no_rows, "no_rows")] {
        let labels = vec![("run", run.to_owned()), ("status", status.to_owned())];
        METRICS.videos.get_or_create(&labels).inc_by(n);
    }
}

/// Counts a statement run by the Flight SQL server.
pub fn query_done(ok: bool) {
    METRICS.queries.get_or_create(&status(ok)).inc();
}

/// A Ballista task running on this executor: counted in `framefusion_tasks_running` from
/// [`task_started`] until [`RunningTask::finish`], or until dropped unfinished (the task
/// was cancelled), when `framefusion_tasks_total` counts its outcome.
#[derive(Debug)]
pub struct RunningTask {
    finished: bool,
}

/// Counts a task that starts running now.
pub fn task_started() -> RunningTask {
    METRICS.tasks_running.inc();
    RunningTask { finished: false }
}

impl RunningTask {
    /// Counts the task's outcome.
    pub fn finish(mut self, ok: bool) {
        self.finished = true;
        METRICS.tasks.get_or_create(&status(ok)).inc();
    }
}

impl Drop for RunningTask {
    fn drop(&mut self) {
        METRICS.tasks_running.dec();
        if !self.finished {
            METRICS
                .tasks
                .get_or_create(&vec![("status", "cancelled".to_owned())])
                .inc();
        }
    }
}

/// Sets the scheduler's gauges of `pool`: `pending` input partitions waiting for one of
/// its `executors` live executors.
pub fn pool_state(pool: &str, pending: u64, executors: u64) {
    let labels = vec![("pool", pool.to_owned())];
    METRICS
        .pending_tasks
        .get_or_create(&labels)
        .set(i64::try_from(pending).unwrap_or(i64::MAX));
    METRICS
        .executors
        .get_or_create(&labels)
        .set(i64::try_from(executors).unwrap_or(i64::MAX));
}

/// The content type of [`render`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Every metric of this process in the OpenMetrics text format (which Prometheus
/// scrapes).
pub fn render() -> String {
    let mut out = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &METRICS.registry) {
        log::error!("cannot render the metrics: {e}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_render_with_their_names_and_labels() {
        pass_done(10, 0.5);
        operator_seconds("detect_shots", 0.25);
        model_loaded("det.onnx");
        rows_written("/tmp/run", 3, 1);
        videos_committed("/tmp/run", 1, 4, 0);
        task_started().finish(true);
        drop(task_started());
        pool_state("gpu", 7, 1);
        let text = render();
        for line in [
            "# TYPE framefusion_frames_decoded counter",
            "# TYPE framefusion_decode_seconds counter",
            "framefusion_operator_seconds_total{operator=\"detect_shots\"}",
            "framefusion_model_loads_total{model=\"det.onnx\"}",
            "framefusion_rows_total{run=\"/tmp/run\",status=\"error\"}",
            "framefusion_videos_total{run=\"/tmp/run\",status=\"error\"} 4",
            "framefusion_videos_total{run=\"/tmp/run\",status=\"no_rows\"} 0",
            "framefusion_tasks_total{status=\"ok\"} 1",
            "framefusion_tasks_total{status=\"cancelled\"} 1",
            "framefusion_tasks_running 0",
            "framefusion_pending_tasks{pool=\"gpu\"} 7",
            "framefusion_executors{pool=\"gpu\"} 1",
            "# EOF",
        ] {
            assert!(text.contains(line), "{line} in\n{text}");
        }
    }
}
