//! Manifest runs as the console shows them: the runs this server started (live, with
//! their progress, cancellable) and the manifests found under the `--runs` locations.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionContext;
use framefusion_engine::manifest::{
    ManifestLocation, ManifestOptions, RunProgress, RunRecord, RunSummary, runs_under,
    write_manifest,
};

use crate::durable::{Held, Outcome, RunBook};
use framefusion_media::code::ErrorCode;
use framefusion_media::source::Confinement;
use framefusion_media::storage::{S3Clients, StorageOptions};
use futures::future::{AbortHandle, Abortable};
use serde::Serialize;

/// Where a run stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Started by this server, not finished.
    Running,
    /// Committed (`_SUCCESS` written).
    Succeeded,
    /// Stopped by a failure of the machinery (it resumes when run again).
    Failed,
    /// Cancelled from the console (it resumes when run again).
    Cancelled,
    /// Found under `--runs` without a commit marker: stopped, or running elsewhere.
    Incomplete,
}

/// A run's progress, as the console shows it.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Progress {
    /// Videos of the job's table.
    pub total: usize,
    /// Videos an earlier attempt committed.
    pub skipped: usize,
    /// Videos this attempt committed.
    pub done: usize,
    /// Of those, videos with an error row.
    pub failed: usize,
    /// Of those, videos that gave no row and did not fail (filtered out by the job).
    pub no_rows: usize,
    /// Rows this attempt committed.
    pub rows: u64,
    /// Videos committed per second.
    pub videos_per_s: f64,
    /// Seconds left at that rate (null before the first commit).
    pub eta_s: Option<f64>,
}

impl From<&RunProgress> for Progress {
    fn from(p: &RunProgress) -> Self {
        Self {
            total: p.total,
            skipped: p.skipped,
            done: p.done,
            failed: p.failed,
            no_rows: p.no_rows,
            rows: p.rows,
            videos_per_s: p.videos_per_s(),
            eta_s: p.eta().map(|d| d.as_secs_f64()),
        }
    }
}

/// A failure, with its typed code.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Failure {
    /// The code's name (`not_found`, `unavailable`, ...).
    pub code: &'static str,
    /// What went wrong.
    pub message: String,
}

/// One run, as `GET /api/runs` and `GET /api/runs/{id}` return it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunView {
    /// The console's name of the run (the manifest's run id once known).
    pub id: String,
    /// Where the manifest is.
    pub output: String,
    /// Where it runs: `embedded` or a cluster's name (null for a found run).
    pub target: Option<String>,
    /// Where it stands.
    pub status: Status,
    /// The job's SQL.
    pub sql: String,
    /// Who submitted it (null for a found run).
    pub user: Option<String>,
    /// When it started (Unix seconds; null for a found run).
    pub started_at: Option<f64>,
    /// Seconds since it started, or that it ran.
    pub elapsed_s: Option<f64>,
    /// Its progress (a live run's).
    pub progress: Option<Progress>,
    /// Seconds each operator worked in this run's decode passes (embedded runs; a
    /// cluster's executors count theirs on their own `/metrics`).
    pub operator_seconds: BTreeMap<String, f64>,
    /// The commit marker (`_SUCCESS`): counts, operators and versions, attempts.
    pub summary: Option<RunSummary>,
    /// Why it stopped, when it failed.
    pub error: Option<Failure>,
}

#[derive(Debug)]
struct LiveState {
    status: Status,
    progress: Option<Progress>,
    summary: Option<RunSummary>,
    error: Option<Failure>,
    ended: Option<f64>,
    operators_after: Option<BTreeMap<String, f64>>,
}

/// A run this server started.
#[derive(Debug)]
struct LiveRun {
    id: String,
    output: String,
    target: String,
    embedded: bool,
    sql: String,
    user: String,
    started_at: SystemTime,
    started: Instant,
    operators_before: BTreeMap<String, f64>,
    state: Mutex<LiveState>,
    abort: AbortHandle,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// `after - before`, per operator, dropping those that did not move.
fn operator_delta(
    before: &BTreeMap<String, f64>,
    after: &BTreeMap<String, f64>,
) -> BTreeMap<String, f64> {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0.0)))
        .filter(|(_, v)| *v > 0.0)
        .collect()
}

impl LiveRun {
    fn view(&self) -> RunView {
        let state = lock(&self.state);
        let operator_seconds = if self.embedded {
            let now = state
                .operators_after
                .clone()
                .unwrap_or_else(framefusion_media::metrics::operator_seconds_so_far);
            operator_delta(&self.operators_before, &now)
        } else {
            BTreeMap::new()
        };
        RunView {
            id: self.id.clone(),
            output: self.output.clone(),
            target: Some(self.target.clone()),
            status: state.status,
            sql: self.sql.clone(),
            user: Some(self.user.clone()),
            started_at: self
                .started_at
                .duration_since(UNIX_EPOCH)
                .ok()
                .map(|d| d.as_secs_f64()),
            elapsed_s: Some(
                state
                    .ended
                    .unwrap_or_else(|| self.started.elapsed().as_secs_f64()),
            ),
            progress: state.progress.clone(),
            operator_seconds,
            summary: state.summary.clone(),
            error: state.error.clone(),
        }
    }
}

fn found_view(record: RunRecord) -> RunView {
    RunView {
        id: record.run_id,
        output: record.output,
        target: None,
        status: if record.summary.is_some() {
            Status::Succeeded
        } else {
            Status::Incomplete
        },
        sql: record.job,
        user: None,
        started_at: None,
        elapsed_s: record.summary.as_ref().map(|s| s.elapsed_s),
        progress: None,
        operator_seconds: BTreeMap::new(),
        summary: record.summary,
        error: None,
    }
}

/// What a submitted run needs.
pub struct Submission {
    /// The run's id ([`Registry::new_id`]; a recorded run keeps its own).
    pub id: String,
    /// The job's session (on its target).
    pub ctx: SessionContext,
    /// The job's planned query.
    pub plan: LogicalPlan,
    /// The job's SQL text.
    pub sql: String,
    /// Where the manifest goes.
    pub output: String,
    /// `embedded` or a cluster's name.
    pub target: String,
    /// Whether the target is this process.
    pub embedded: bool,
    /// Who submitted it.
    pub user: String,
}

/// The name of the cluster jobs of run `id`.
pub fn job_name(id: &str) -> String {
    format!("framefusion run {id}")
}

/// Keeps a run's lease on a thread of its own: a query's operators run blocking on the
/// process's CPU pool and hold the runtime's workers for as long as a batch takes, which
/// must not delay a renewal past the lease's expiry. Dropped, it stops renewing.
struct LeaseKeeper {
    /// Why the run must stop: taken over, or its lease could not be renewed.
    lost: tokio::sync::oneshot::Receiver<String>,
    stop: Option<std::sync::mpsc::Sender<()>>,
}

impl LeaseKeeper {
    fn start(book: Arc<RunBook>, held: Held) -> Self {
        let (lost_tx, lost) = tokio::sync::oneshot::channel();
        let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
        let spawned = std::thread::Builder::new()
            .name(format!("lease {}", held.id))
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(r) => r,
                    Err(e) => {
                        let _ = lost_tx.send(format!("cannot keep its lease: {e}"));
                        return;
                    }
                };
                runtime.block_on(async move {
                    tokio::select! {
                        why = keep_lease(&book, &held) => {
                            let _ = lost_tx.send(why);
                        }
                        _ = tokio::task::spawn_blocking(move || stop_rx.recv()) => {}
                    }
                });
            });
        if let Err(e) = spawned {
            log::warn!("cannot start the thread that keeps a run's lease: {e}");
        }
        Self {
            lost,
            stop: Some(stop_tx),
        }
    }
}

impl Drop for LeaseKeeper {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Renews `held` every third of the lease time; returns (why) when the run was taken over
/// or the lease cannot be renewed until it expires.
async fn keep_lease(book: &RunBook, held: &Held) -> String {
    let every = book.lease() / 3;
    let mut last_ok = Instant::now();
    loop {
        tokio::time::sleep(every).await;
        match book.renew(held).await {
            Ok(true) => last_ok = Instant::now(),
            Ok(false) => {
                return "taken over by another server (its lease on the run had expired)"
                    .to_owned();
            }
            Err(e) if last_ok.elapsed() >= book.lease() => {
                return format!(
                    "its lease could not be renewed ({e}); another server may take it over"
                );
            }
            Err(e) => log::warn!("run {}: cannot renew its lease: {e}", held.id),
        }
    }
}

/// The runs of a console.
#[derive(Debug, Default)]
pub struct Registry {
    live: Mutex<Vec<Arc<LiveRun>>>,
    next: std::sync::atomic::AtomicU64,
}

/// Whether one of the `live` runs is writing `output` now.
fn writing(live: &[Arc<LiveRun>], output: &str) -> bool {
    live.iter()
        .any(|r| r.output == output && lock(&r.state).status == Status::Running)
}

impl Registry {
    /// A new run id: unique in this process and across restarts.
    pub fn new_id(&self) -> String {
        format!("live-{}", self.next_name().trim_start_matches("run-"))
    }

    /// Whether the run `id` runs in this process now.
    pub fn is_running(&self, id: &str) -> bool {
        lock(&self.live)
            .iter()
            .any(|r| r.id == id && lock(&r.state).status == Status::Running)
    }

    /// A name for the next run's output folder: unique in this process and across
    /// restarts (the time in milliseconds).
    pub fn next_name(&self) -> String {
        let n = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        format!("run-{ms}-{n}")
    }

    /// Whether a live run is writing `output` now.
    pub fn running_at(&self, output: &str) -> bool {
        writing(&lock(&self.live), output)
    }

    /// Starts `job` on the current runtime: its id, or `None` when a live run already
    /// writes the job's output (checked and registered under one lock, so two submissions
    /// racing for one output cannot both start). A recorded run (`lease`: the run book and
    /// this server's lease on it) renews its lease while it runs, stops if another server
    /// took it over, and records how it ended.
    pub fn start(&self, job: Submission, lease: Option<(Arc<RunBook>, Held)>) -> Option<String> {
        let id = job.id.clone();
        let (abort, registration) = AbortHandle::new_pair();
        let run = Arc::new(LiveRun {
            id: id.clone(),
            output: job.output.clone(),
            target: job.target,
            embedded: job.embedded,
            sql: job.sql,
            user: job.user,
            started_at: SystemTime::now(),
            started: Instant::now(),
            operators_before: framefusion_media::metrics::operator_seconds_so_far(),
            state: Mutex::new(LiveState {
                status: Status::Running,
                progress: None,
                summary: None,
                error: None,
                ended: None,
                operators_after: None,
            }),
            abort,
        });
        {
            let mut live = lock(&self.live);
            if writing(&live, &run.output) {
                return None;
            }
            live.push(Arc::clone(&run));
        }
        let shown = Arc::clone(&run);
        let options = ManifestOptions {
            output: job.output,
            storage: StorageOptions::default(),
            progress: Some(Arc::new(move |p: &RunProgress| {
                lock(&shown.state).progress = Some(Progress::from(p));
            })),
            ..ManifestOptions::default()
        };
        let mut state = job.ctx.state();
        if !job.embedded {
            // the cluster's jobs carry the run's name: a server taking the run over
            // cancels those still there
            let named = state
                .config_mut()
                .options_mut()
                .set("ballista.job.name", &job_name(&id));
            if let Err(e) = named {
                log::warn!("run {id}: cannot name its cluster jobs: {e}");
            }
        }
        tokio::spawn(async move {
            let work = Abortable::new(write_manifest(state, job.plan, &options), registration);
            let outcome = match &lease {
                Some((book, held)) => {
                    let mut keeper = LeaseKeeper::start(Arc::clone(book), held.clone());
                    tokio::select! {
                        outcome = work => outcome,
                        Ok(lost) = &mut keeper.lost => {
                            let mut s = lock(&run.state);
                            s.ended = Some(run.started.elapsed().as_secs_f64());
                            s.status = Status::Cancelled;
                            s.error = Some(Failure {
                                code: ErrorCode::Cancelled.name(),
                                message: lost,
                            });
                            return;
                        }
                    }
                }
                None => work.await,
            };
            let ended = {
                let mut s = lock(&run.state);
                s.ended = Some(run.started.elapsed().as_secs_f64());
                if run.embedded {
                    s.operators_after = Some(framefusion_media::metrics::operator_seconds_so_far());
                }
                match outcome {
                    Ok(Ok(summary)) => {
                        s.status = Status::Succeeded;
                        s.summary = Some(summary);
                    }
                    Ok(Err(e)) => {
                        log::warn!("run {} stopped: {e}", run.id);
                        s.status = Status::Failed;
                        s.error = Some(Failure {
                            code: framefusion_engine::error::error_code(&e).name(),
                            message: e.to_string(),
                        });
                    }
                    Err(_aborted) => {
                        s.status = Status::Cancelled;
                        s.error = Some(Failure {
                            code: ErrorCode::Cancelled.name(),
                            message: "cancelled from the console; submit the job again with the same output to resume it".to_owned(),
                        });
                    }
                }
                Outcome {
                    status: match s.status {
                        Status::Succeeded => "succeeded",
                        Status::Cancelled => "cancelled",
                        _ => "failed",
                    }
                    .to_owned(),
                    message: s.error.as_ref().map(|e| e.message.clone()),
                }
            };
            if let Some((book, held)) = &lease
                && let Err(e) = book.finish(held, &ended).await
            {
                log::warn!(
                    "run {}: cannot record its end in '{}' (another server may run it again, the manifest keeps the result exact): {e}",
                    run.id,
                    book.display()
                );
            }
        });
        Some(id)
    }

    /// Cancels the live run `id`; whether it was running.
    pub fn cancel(&self, id: &str) -> Option<bool> {
        let live = lock(&self.live);
        let run = live.iter().find(|r| r.id == id)?;
        let running = lock(&run.state).status == Status::Running;
        run.abort.abort();
        Some(running)
    }

    /// Every run: the live ones, newest first, then those found under `locations` (read
    /// with `clients`) that no live run writes.
    pub async fn list(&self, locations: &[String], clients: &S3Clients) -> Vec<RunView> {
        let mut views: Vec<RunView> = lock(&self.live).iter().rev().map(|r| r.view()).collect();
        // the server's own folders: not confined by its clients' roots
        let unconfined = Confinement::none().with_clients(clients.clone());
        for location in locations {
            let found = match ManifestLocation::parse(location, &unconfined) {
                Ok(at) => runs_under(&at, &StorageOptions::default()).await,
                Err(e) => Err(e),
            };
            match found {
                Ok(found) => views.extend(
                    found
                        .into_iter()
                        .filter(|f| !views.iter().any(|v| v.output == f.output))
                        .map(found_view)
                        .collect::<Vec<_>>(),
                ),
                Err(e) => log::warn!("cannot list the runs under '{location}': {e}"),
            }
        }
        views
    }

    /// The run `id` (a live run's id, or a found manifest's run id).
    pub async fn get(
        &self,
        id: &str,
        locations: &[String],
        clients: &S3Clients,
    ) -> Option<RunView> {
        if let Some(run) = lock(&self.live).iter().find(|r| r.id == id) {
            return Some(run.view());
        }
        self.list(locations, clients)
            .await
            .into_iter()
            .find(|v| v.id == id)
    }
}
