//! Parquet manifests and resumable runs.
//!
//! [`write_manifest`] runs a curation query over a `VIDEO` table and writes its rows as a
//! manifest: ordinary Parquet that pyarrow, DuckDB and DataFusion read as one table.
//!
//! # Layout
//!
//! ```text
//! <output>/part-<attempt>-<n>.parquet   committed parts (each published atomically)
//! <output>/_SUCCESS                     the commit marker: run id, counts, operators (JSON)
//! <output>/_framefusion/run.json        the run's id and the fingerprint of its job
//! <output>/_framefusion/started-*.json  the videos each attempt started (its own stats)
//! <output>/_framefusion/answers/        generated answers of the videos in flight
//! <output>/_tmp/                        parts being written (never read)
//! ```
//!
//! Readers ignore names starting with `_`, so they see committed parts only; a manifest
//! is complete when `_SUCCESS` exists.
//!
//! # Items, units and resume
//!
//! A manifest row is an *item*: a video, or a clip of one. Its key is `path` plus the
//! clip range (`start_s`, `end_s`) when the job returns them, or the columns given as
//! [`ManifestOptions::key`]; the final commit checks that no key occurs twice.
//!
//! The unit of work and of commit is the *video* (`path` of the job's `VIDEO` table): the
//! run splits the table's videos into groups, runs the job on each group (a filter on
//! `path` that the `VIDEO` scan applies before it opens anything), and commits each
//! group's rows as one part whose footer lists the group's videos, including those that
//! gave no rows. A rerun against the same output reads the part footers and runs the job
//! only on the videos no part lists: a finished video is never opened again, and a run
//! killed at any moment redoes at most the groups in flight. A clip never spans
//! videos, so committing by video commits each item exactly once.
//!
//! A generative operator (`caption`) pays for each answer, so a group's answers are not
//! only kept when the group commits: the run names `_framefusion/answers/` as the
//! session's answers folder, the operator keeps each answer there as it arrives and reads
//! it back instead of asking again ([`framefusion_udfs::answers`]), and the run removes a
//! video's answers once its part is published. The settings such an operator's answers
//! depend on (backend, model, prompt...) are part of the job's fingerprint and recorded
//! in `_SUCCESS` with its operators, never a key.
//!
//! # Status
//!
//! Every row has `status` (`ok` / `error`), `error` and `run_id`. A job that returns a
//! column named `error` says itself which rows failed (for example `probe_error`, or the
//! `error` field of `clip_signals`); a video on which the job itself fails becomes one
//! `error` row naming the failure, and the run goes on. A rerun skips videos with error
//! rows, or, with [`ManifestOptions::retry_errors`], runs them again and replaces their
//! rows. Failures of the machinery (the store or the cluster unreachable) stop the run;
//! it resumes later.

mod account;
mod part;
mod store;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use datafusion::arrow::array::{Array, BooleanArray, RecordBatch, StringArray};
use datafusion::arrow::compute::{cast, filter_record_batch};
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{Column, TableReference};
use datafusion::dataframe::DataFrame;
use datafusion::datasource::source_as_provider;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::session_state::SessionState;
use datafusion::logical_expr::{Expr, Filter, LogicalPlan, lit};
use framefusion_catalogs::video::VideoTable;
use framefusion_common::code::ErrorCode;
use framefusion_media::storage::StorageOptions;
use futures::StreamExt;
use parquet::arrow::ParquetRecordBatchStreamBuilder;
use parquet::arrow::ProjectionMask;
// The object-store reader is deprecated in favour of hand-written readers; parts are read
// from the same runtime that writes them, which is what it does.
#[allow(deprecated)]
use parquet::arrow::async_reader::ParquetObjectReader;
use serde::{Deserialize, Serialize};

use account::GroupRows;
pub use part::{ERROR_COLUMN, RUN_ID_COLUMN, STATUS_COLUMN, UNIT_COLUMN};
use part::{JOB_KEY, OPERATORS_KEY, PART_META_KEY, PartMeta, PartWriter, RowShape, RowSink};
pub use store::{COMMIT_PAUSE_ENV, ManifestLocation, ManifestStore};

const SUCCESS: &str = "_SUCCESS";
const RUN_FILE: &str = "_framefusion/run.json";
const STATE_DIR: &str = "_framefusion";
/// Where generative operators keep their answers as they arrive ([`framefusion_udfs::answers`]).
const ANSWERS_DIR: &str = "_framefusion/answers";

/// Called with the run's progress after each commit.
pub type ProgressFn = Arc<dyn Fn(&RunProgress) + Send + Sync>;

/// How to write a manifest.
#[derive(Clone, Default)]
pub struct ManifestOptions {
    /// A local folder, `file://` URI or `s3://bucket/prefix`.
    pub output: String,
    /// Object-store options (`aws.*`) for an `s3://` output.
    pub storage: StorageOptions,
    /// Run videos recorded with `error` rows again (default: keep their error rows).
    pub retry_errors: bool,
    /// Videos per part (default: twice the session's target partitions).
    pub videos_per_part: Option<usize>,
    /// Parts in flight at once (default 2).
    pub concurrency: Option<usize>,
    /// The `VIDEO` table whose videos are the units, when the job reads several.
    pub source: Option<String>,
    /// The columns that identify an item (default: `path`, plus `start_s` and `end_s`
    /// when the job returns them).
    pub key: Option<Vec<String>>,
    /// Progress callback.
    pub progress: Option<ProgressFn>,
}

impl std::fmt::Debug for ManifestOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ManifestOptions")
            .field("output", &self.output)
            .field("retry_errors", &self.retry_errors)
            .field("videos_per_part", &self.videos_per_part)
            .field("concurrency", &self.concurrency)
            .field("source", &self.source)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl ManifestOptions {
    /// Options writing to `output`, everything else default.
    pub fn new(output: impl Into<String>) -> Self {
        Self {
            output: output.into(),
            ..Self::default()
        }
    }
}

/// Where a run stands.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunProgress {
    /// Videos of the job's table.
    pub total: usize,
    /// Videos an earlier attempt already committed (not run again).
    pub skipped: usize,
    /// Videos this attempt committed.
    pub done: usize,
    /// Of those, videos with an error row.
    pub failed: usize,
    /// Of those, videos that gave no row and did not fail.
    pub no_rows: usize,
    /// Rows this attempt committed.
    pub rows: u64,
    /// Since this attempt started.
    pub elapsed: Duration,
}

impl RunProgress {
    /// Videos left to run.
    pub fn remaining(&self) -> usize {
        self.total.saturating_sub(self.skipped + self.done)
    }

    /// Videos committed per second by this attempt.
    pub fn videos_per_s(&self) -> f64 {
        let s = self.elapsed.as_secs_f64();
        if s > 0.0 { self.done as f64 / s } else { 0.0 }
    }

    /// Time left at the current rate (None before the first commit).
    pub fn eta(&self) -> Option<Duration> {
        let rate = self.videos_per_s();
        (rate > 0.0).then(|| Duration::from_secs_f64(self.remaining() as f64 / rate))
    }
}

/// An operator the job runs, as recorded in the manifest.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct OperatorUse {
    /// Function name.
    pub name: String,
    /// framefusion version.
    pub version: String,
    /// The arguments as written (columns by name, literals by value).
    pub parameters: Vec<String>,
    /// What else its answers depend on: a generative operator's backend, model, prompt
    /// and generation settings, from the session's settings and the call's options
    /// (never a key).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub settings: BTreeMap<String, String>,
}

/// What one attempt (one process) did.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct AttemptStats {
    /// The attempt's id (parts it committed are named after it).
    pub attempt: String,
    /// Videos it started (committed or not).
    pub started: usize,
    /// Videos it committed.
    pub committed: usize,
}

/// The commit marker's content: what the finished manifest holds.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct RunSummary {
    /// The run.
    pub run_id: String,
    /// Where the manifest is.
    pub output: String,
    /// The item key.
    pub key: Vec<String>,
    /// Videos the manifest answers for.
    pub videos: usize,
    /// Rows (items).
    pub rows: u64,
    /// Rows with status `ok`.
    pub ok_rows: u64,
    /// Rows with status `error`.
    pub error_rows: u64,
    /// Videos with at least one error row.
    pub error_videos: usize,
    /// Videos that gave no row and did not fail (the job filtered them out).
    #[serde(default)]
    pub no_row_videos: usize,
    /// Part files.
    pub parts: usize,
    /// The operators the job runs.
    pub operators: Vec<OperatorUse>,
    /// Every attempt of the run, oldest first.
    pub attempts: Vec<AttemptStats>,
    /// Videos this attempt ran (0 when the manifest was already complete).
    pub processed: usize,
    /// Videos this attempt skipped as already committed.
    pub skipped: usize,
    /// Seconds this attempt took.
    pub elapsed_s: f64,
}

/// Whether `plan` is a query whose rows a manifest can hold (not DDL, DML, `COPY`, a
/// statement, `EXPLAIN` or `DESCRIBE`).
pub fn is_query(plan: &LogicalPlan) -> bool {
    !matches!(
        plan,
        LogicalPlan::Ddl(_)
            | LogicalPlan::Dml(_)
            | LogicalPlan::Copy(_)
            | LogicalPlan::Statement(_)
            | LogicalPlan::Explain(_)
            | LogicalPlan::Analyze(_)
            | LogicalPlan::DescribeTable(_)
    )
}

/// What a manifest folder records of its run ([`read_run`]).
#[derive(Debug, Clone, PartialEq)]
pub struct RunRecord {
    /// Where the manifest is, as given.
    pub output: String,
    /// The run.
    pub run_id: String,
    /// The job's SQL as the run recorded it.
    pub job: String,
    /// The commit marker, when the manifest is complete.
    pub summary: Option<RunSummary>,
}

/// The run recorded at `output`, `None` when no run was ever started there. A local
/// folder is only read (never created).
pub async fn read_run(
    output: &ManifestLocation,
    storage: &StorageOptions,
) -> Result<Option<RunRecord>> {
    if output
        .local()
        .is_some_and(|path| !path.join(RUN_FILE).is_file())
    {
        return Ok(None);
    }
    let store = ManifestStore::open(output, storage)?;
    let Some(bytes) = store.read(RUN_FILE).await? else {
        return Ok(None);
    };
    let run: RunFile = serde_json::from_slice(&bytes).map_err(|e| {
        DataFusionError::Execution(format!(
            "'{}/{RUN_FILE}' is damaged ({e}); delete the manifest folder to start over",
            store.display()
        ))
    })?;
    let summary = match store.read(SUCCESS).await? {
        Some(bytes) => serde_json::from_slice(&bytes).ok(),
        None => None,
    };
    Ok(Some(RunRecord {
        output: output.given().to_owned(),
        run_id: run.run_id,
        job: run.job,
        summary,
    }))
}

/// The runs recorded at `location`: the manifest there, or those of the folders directly
/// under it, by output.
pub async fn runs_under(
    location: &ManifestLocation,
    storage: &StorageOptions,
) -> Result<Vec<RunRecord>> {
    if let Some(run) = read_run(location, storage).await? {
        return Ok(vec![run]);
    }
    let children: Vec<String> = match location.local() {
        Some(path) => match std::fs::read_dir(path) {
            Ok(entries) => entries
                .filter_map(|e| e.ok())
                .filter(|e| e.path().is_dir())
                .filter_map(|e| e.file_name().into_string().ok())
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => {
                return Err(DataFusionError::Execution(format!(
                    "cannot list the runs folder '{}': {e}",
                    path.display()
                )));
            }
        },
        None => ManifestStore::open(location, storage)?.folders().await?,
    };
    let mut runs = Vec::new();
    for child in children.iter().filter(|c| !c.starts_with(['_', '.'])) {
        if let Some(run) = read_run(&location.child(child), storage).await? {
            runs.push(run);
        }
    }
    runs.sort_by(|a, b| a.output.cmp(&b.output));
    Ok(runs)
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct RunFile {
    run_id: String,
    job_fingerprint: String,
    job: String,
}

/// A committed part.
#[derive(Debug, Clone)]
struct PartInfo {
    meta: PartMeta,
    rows: u64,
    /// Bytes (to read the footer without asking the store).
    size: u64,
}

/// One group of work: new videos, or a part's failed videos run again.
#[derive(Debug, Clone)]
enum Work {
    New(Vec<String>),
    /// `units` of `part` again; the new part answers for every video in `covered`.
    Retry {
        part: String,
        size: u64,
        covered: Vec<String>,
        units: Vec<String>,
        /// The part's videos that gave no row (not retried).
        no_rows: Vec<String>,
    },
}

/// Runs the query `plan` on `state` (embedded or on a cluster) and writes its rows as a
/// manifest at `options.output`, continuing the run recorded there if there is one.
pub async fn write_manifest(
    state: SessionState,
    plan: LogicalPlan,
    options: &ManifestOptions,
) -> Result<RunSummary> {
    let started = Instant::now();
    // parsed once, here: the output must lie within the session's allowed roots (a
    // server's client's), and is written with the session's runtime's clients
    let confinement = framefusion_media::source::Confinement::of(state.config_options())
        .map_err(framefusion_media::error::external)?;
    let output = ManifestLocation::parse(&options.output, &confinement)?;
    let clients = confinement.clients().clone();
    let job = Job::new(state, plan, options)?;
    let store = ManifestStore::open(&output, &options.storage)?;
    let run = open_run(&store, &job).await?;
    let attempt = format!("{:011x}", unix_ms());
    let shape = RowShape::new(job.plan.schema().as_arrow(), &run.run_id)?;
    let key = job.key(&shape, options)?;

    store.clean_staging().await?;
    let mut parts = read_parts(&store).await?;
    finish_replacements(&store, &mut parts).await?;

    let units: Vec<String> = job
        .table
        .list_files(&clients)
        .await
        .map_err(DataFusionError::from)?
        .into_iter()
        .map(|f| f.uri)
        .collect();
    let committed: HashSet<&str> = parts
        .values()
        .flat_map(|p| p.meta.units.iter().map(String::as_str))
        .collect();
    let todo: Vec<String> = units
        .iter()
        .filter(|u| !committed.contains(u.as_str()))
        .cloned()
        .collect();
    let mut work: Vec<Work> = Vec::new();
    let per_part = options
        .videos_per_part
        .unwrap_or_else(|| 2 * job.state.config().target_partitions())
        .max(1);
    if options.retry_errors {
        for (name, part) in &parts {
            for units in part.meta.error_units.chunks(per_part) {
                work.push(Work::Retry {
                    part: name.clone(),
                    size: part.size,
                    covered: part.meta.units.clone(),
                    units: units.to_vec(),
                    no_rows: part.meta.no_row_units.clone(),
                });
            }
        }
    }
    let retried: usize = work
        .iter()
        .map(|w| match w {
            Work::Retry { units, .. } => units.len(),
            Work::New(_) => 0,
        })
        .sum();
    work.extend(todo.chunks(per_part).map(|c| Work::New(c.to_vec())));

    let previous: Option<RunSummary> = match store.read(SUCCESS).await? {
        Some(bytes) => serde_json::from_slice(&bytes).ok(),
        None => None,
    };
    if work.is_empty()
        && let Some(mut done) = previous
    {
        done.processed = 0;
        done.skipped = units.len();
        done.elapsed_s = started.elapsed().as_secs_f64();
        return Ok(done);
    }
    store.delete(SUCCESS).await?;

    let progress = Arc::new(Mutex::new(RunProgress {
        total: units.len(),
        skipped: units.len() - todo.len() - retried,
        ..RunProgress::default()
    }));
    let report = |update: &dyn Fn(&mut RunProgress)| {
        let mut p = progress.lock().unwrap_or_else(|e| e.into_inner());
        update(&mut p);
        p.elapsed = started.elapsed();
        if let Some(callback) = &options.progress {
            callback(&p);
        }
    };
    report(&|_| {});

    let runner = Runner {
        job: &job,
        store: &store,
        shape: &shape,
        key: &key,
        attempt: &attempt,
        run_id: &run.run_id,
    };
    let concurrency = options.concurrency.unwrap_or(2).max(1);
    let mut results = futures::stream::iter(work.into_iter().enumerate())
        .map(|(seq, work)| runner.run(seq, work))
        .buffer_unordered(concurrency);
    let mut parts_now = parts.clone();
    while let Some(result) = results.next().await {
        let (name, info, replaced) = result?;
        let failed = info.meta.error_units.len();
        let no_rows = match &replaced {
            Some(old) => parts_now.get(old).map_or(0, |p| {
                info.meta.no_row_units.len()
                    - p.meta.no_row_units.len().min(info.meta.no_row_units.len())
            }),
            None => info.meta.no_row_units.len(),
        };
        let done = match &replaced {
            Some(old) => parts_now.get(old).map_or(0, |p| p.meta.error_units.len()),
            None => info.meta.units.len(),
        };
        let rows = info.rows;
        if let Some(old) = replaced {
            parts_now.remove(&old);
        }
        parts_now.insert(name, info);
        report(&|p| {
            p.done += done;
            p.failed += failed;
            p.no_rows += no_rows;
            p.rows += rows;
        });
    }
    drop(results);
    parts = parts_now;

    let this = Attempt {
        id: attempt,
        run_id: run.run_id,
        processed: todo.len() + retried,
        skipped: units.len() - todo.len() - retried,
        started,
    };
    commit(&store, &job, &parts, &key, previous, &this).await
}

fn unix_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}

/// The job: its plan, the `VIDEO` table whose videos are the units, and its fingerprint.
struct Job {
    state: SessionState,
    plan: LogicalPlan,
    table_name: TableReference,
    table: VideoTable,
    text: String,
    fingerprint: String,
    operators: Vec<OperatorUse>,
}

impl Job {
    fn new(state: SessionState, plan: LogicalPlan, options: &ManifestOptions) -> Result<Self> {
        let mut tables: BTreeMap<String, (TableReference, VideoTable)> = BTreeMap::new();
        plan.apply_with_subqueries(|node| {
            if let LogicalPlan::TableScan(scan) = node
                && let Ok(provider) = source_as_provider(&scan.source)
                && let Some(table) =
                    (provider.as_ref() as &dyn std::any::Any).downcast_ref::<VideoTable>()
            {
                tables.insert(
                    scan.table_name.table().to_owned(),
                    (scan.table_name.clone(), table.clone()),
                );
            }
            Ok(TreeNodeRecursion::Continue)
        })?;
        let (table_name, table) = match &options.source {
            Some(name) => tables.remove(name).ok_or_else(|| {
                DataFusionError::Plan(format!(
                    "the job reads no VIDEO table named '{name}' (it reads: {})",
                    tables.keys().cloned().collect::<Vec<_>>().join(", ")
                ))
            })?,
            None if tables.len() == 1 => tables.into_values().next().ok_or_else(|| {
                DataFusionError::Internal("a table vanished from a map".to_owned())
            })?,
            None if tables.is_empty() => {
                return Err(DataFusionError::Plan(
                    "a manifest job must read a VIDEO table (CREATE EXTERNAL TABLE ... STORED AS VIDEO): its videos are the units a run commits and resumes".to_owned(),
                ));
            }
            None => {
                return Err(DataFusionError::Plan(format!(
                    "the job reads several VIDEO tables ({}); name the one whose videos are the items with --source",
                    tables.keys().cloned().collect::<Vec<_>>().join(", ")
                )));
            }
        };
        let text = plan.display_indent_schema().to_string();
        let operators = operators(&plan, state.config_options())?;
        // the settings a generative operator's answers depend on belong to the job: a
        // resumed run with another model or prompt is another job
        let settings: Vec<&BTreeMap<String, String>> = operators
            .iter()
            .map(|o| &o.settings)
            .filter(|s| !s.is_empty())
            .collect();
        let fingerprint = if settings.is_empty() {
            format!("{:016x}", framefusion_udfs::fnv1a(&text))
        } else {
            let settings = serde_json::to_string(&settings)
                .map_err(|e| DataFusionError::Internal(format!("settings: {e}")))?;
            format!(
                "{:016x}",
                framefusion_udfs::fnv1a(&format!("{text}\n{settings}"))
            )
        };
        Ok(Self {
            state,
            plan,
            table_name,
            table,
            text,
            fingerprint,
            operators,
        })
    }

    /// The item key columns.
    fn key(&self, shape: &RowShape, options: &ManifestOptions) -> Result<Vec<String>> {
        let schema = shape.schema();
        let key = match &options.key {
            Some(key) => key.clone(),
            None => {
                let mut key = vec![UNIT_COLUMN.to_owned()];
                if schema.index_of("start_s").is_ok() && schema.index_of("end_s").is_ok() {
                    key.extend(["start_s".to_owned(), "end_s".to_owned()]);
                }
                key
            }
        };
        for column in &key {
            if schema.index_of(column).is_err() {
                return Err(DataFusionError::Plan(format!(
                    "the item key column '{column}' is not among the job's columns"
                )));
            }
        }
        Ok(key)
    }

    /// The job restricted to `units`: a filter on the video table's `path`, which its
    /// scan applies to the listing, so no other video is opened.
    fn restricted(&self, units: &[String]) -> Result<LogicalPlan> {
        let list: Vec<Expr> = units.iter().map(|u| lit(u.as_str())).collect();
        self.plan
            .clone()
            .transform_up_with_subqueries(|node| match node {
                LogicalPlan::TableScan(mut scan) if scan.table_name == self.table_name => {
                    let column =
                        Expr::Column(Column::new(Some(scan.table_name.clone()), UNIT_COLUMN));
                    let predicate = column.in_list(list.clone(), false);
                    if scan
                        .projected_schema
                        .has_column_with_unqualified_name(UNIT_COLUMN)
                    {
                        let scan = Arc::new(LogicalPlan::TableScan(scan));
                        Ok(Transformed::yes(LogicalPlan::Filter(Filter::try_new(
                            predicate, scan,
                        )?)))
                    } else {
                        // the scan does not return path: the VIDEO scan still applies it
                        scan.filters.push(predicate);
                        Ok(Transformed::yes(LogicalPlan::TableScan(scan)))
                    }
                }
                other => Ok(Transformed::no(other)),
            })
            .map(|t| t.data)
    }

    /// Whether the job calls a generative operator (one whose answers depend on settings
    /// it records): its answers are kept as they arrive.
    fn generates(&self) -> bool {
        self.operators.iter().any(|o| !o.settings.is_empty())
    }

    fn metadata(&self) -> Result<Vec<(String, String)>> {
        let operators = serde_json::to_string(&self.operators)
            .map_err(|e| DataFusionError::Internal(format!("operators: {e}")))?;
        Ok(vec![
            (OPERATORS_KEY.to_owned(), operators),
            (JOB_KEY.to_owned(), self.text.clone()),
        ])
    }
}

/// The framefusion functions `plan` calls, with their arguments and what else their
/// answers depend on in the session `config`.
fn operators(
    plan: &LogicalPlan,
    config: &datafusion::common::config::ConfigOptions,
) -> Result<Vec<OperatorUse>> {
    let ours: HashSet<String> = framefusion_udfs::scalar_udfs()
        .iter()
        .map(|u| u.name().to_owned())
        .collect();
    let mut found = BTreeSet::new();
    plan.apply_with_subqueries(|node| {
        node.apply_expressions(|expr| {
            expr.apply(|e| {
                if let Expr::ScalarFunction(f) = e
                    && ours.contains(f.name())
                {
                    let literals: Vec<Option<datafusion::common::ScalarValue>> = f
                        .args
                        .iter()
                        .map(|a| match a {
                            Expr::Literal(value, _) => Some(value.clone()),
                            _ => None,
                        })
                        .collect();
                    found.insert(OperatorUse {
                        name: f.name().to_owned(),
                        version: framefusion_udfs::VERSION.to_owned(),
                        parameters: f.args.iter().map(ToString::to_string).collect(),
                        settings: framefusion_udfs::provenance(f.name(), &literals, config),
                    });
                }
                Ok(TreeNodeRecursion::Continue)
            })
        })
    })?;
    Ok(found.into_iter().collect())
}

/// Reads or creates the run record; a different job at the same output is refused.
async fn open_run(store: &ManifestStore, job: &Job) -> Result<RunFile> {
    if let Some(bytes) = store.read(RUN_FILE).await? {
        let run: RunFile = serde_json::from_slice(&bytes).map_err(|e| {
            DataFusionError::Execution(format!(
                "'{}/{RUN_FILE}' is damaged ({e}); delete the manifest folder to start over",
                store.display()
            ))
        })?;
        if run.job_fingerprint != job.fingerprint {
            return Err(DataFusionError::Plan(format!(
                "the manifest at '{}' belongs to another job (run {}); give a new --output, or delete it to start over",
                store.display(),
                run.run_id
            )));
        }
        return Ok(run);
    }
    if store
        .list(None)
        .await?
        .iter()
        .any(|(n, _)| n.ends_with(".parquet"))
    {
        return Err(DataFusionError::Plan(format!(
            "'{}' holds Parquet files that no framefusion run wrote; give an empty or new --output",
            store.display()
        )));
    }
    let run = RunFile {
        run_id: format!(
            "run-{:x}-{:04x}",
            unix_ms() / 1000,
            std::process::id() & 0xffff
        ),
        job_fingerprint: job.fingerprint.clone(),
        job: job.text.clone(),
    };
    let json = serde_json::to_vec_pretty(&run)
        .map_err(|e| DataFusionError::Internal(format!("run file: {e}")))?;
    store.write(RUN_FILE, json).await?;
    Ok(run)
}

fn is_part(name: &str) -> bool {
    name.starts_with("part-") && name.ends_with(".parquet") && !name.contains('/')
}

#[allow(deprecated)]
async fn parquet_builder(
    store: &ManifestStore,
    name: &str,
    size: u64,
) -> Result<ParquetRecordBatchStreamBuilder<ParquetObjectReader>> {
    let (object_store, path) = store.object(name);
    let reader = ParquetObjectReader::new(object_store, path).with_file_size(size);
    ParquetRecordBatchStreamBuilder::new(reader)
        .await
        .map_err(|e| {
            DataFusionError::Execution(format!(
                "cannot read the manifest part '{}/{name}': {e}",
                store.display()
            ))
        })
}

/// The committed parts and what each covers, from their footers.
async fn read_parts(store: &ManifestStore) -> Result<BTreeMap<String, PartInfo>> {
    let mut parts = BTreeMap::new();
    for (name, size) in store.list(None).await? {
        if !is_part(&name) {
            continue;
        }
        let builder = parquet_builder(store, &name, size).await?;
        let metadata = builder.metadata().file_metadata();
        let meta = metadata
            .key_value_metadata()
            .and_then(|kv| kv.iter().find(|kv| kv.key == PART_META_KEY))
            .and_then(|kv| kv.value.as_deref())
            .and_then(|v| serde_json::from_str::<PartMeta>(v).ok())
            .ok_or_else(|| {
                DataFusionError::Execution(format!(
                    "'{}/{name}' is not a framefusion manifest part (no part metadata); move it away",
                    store.display()
                ))
            })?;
        let rows = u64::try_from(metadata.num_rows()).unwrap_or(0);
        parts.insert(name, PartInfo { meta, rows, size });
    }
    Ok(parts)
}

/// Deletes parts that a published replacement supersedes (a retry interrupted between
/// publishing the replacement and deleting the old part).
async fn finish_replacements(
    store: &ManifestStore,
    parts: &mut BTreeMap<String, PartInfo>,
) -> Result<()> {
    let replaced: Vec<String> = parts
        .values()
        .filter_map(|p| p.meta.replaces.clone())
        .filter(|old| parts.contains_key(old))
        .collect();
    for old in replaced {
        store.delete(&old).await?;
        parts.remove(&old);
    }
    Ok(())
}

/// Runs groups of work and commits their parts.
struct Runner<'a> {
    job: &'a Job,
    store: &'a ManifestStore,
    shape: &'a RowShape,
    key: &'a [String],
    attempt: &'a str,
    run_id: &'a str,
}

impl Runner<'_> {
    /// Runs one group and publishes its part: (name, what it covers, the part it replaced).
    async fn run(&self, seq: usize, work: Work) -> Result<(String, PartInfo, Option<String>)> {
        let (units, replaces) = match &work {
            Work::New(units) => (units.clone(), None),
            Work::Retry { part, units, .. } => (units.clone(), Some(part.clone())),
        };
        let marker = format!("{STATE_DIR}/started-{}-{seq:06}.json", self.attempt);
        let json = serde_json::to_vec(&units)
            .map_err(|e| DataFusionError::Internal(format!("marker: {e}")))?;
        self.store.write(&marker, json).await?;

        let name = match &replaces {
            None => format!("part-{}-{seq:06}.parquet", self.attempt),
            Some(_) => format!("part-{}-{seq:06}r.parquet", self.attempt),
        };
        let mut writer = self.writer(&name)?;
        let mut no_rows = Vec::new();
        // a job that cannot even be planned is wrong for every video: stop the run
        match self.group(&units, seq, &mut writer).await? {
            Ok(empty) => no_rows = empty,
            Err(e) if is_systemic(&e) => return Err(e),
            Err(group_error) => {
                // find the video(s) at fault: each alone, a failing one becomes an error row
                writer = self.writer(&name)?;
                for (i, unit) in units.iter().enumerate() {
                    let one = std::slice::from_ref(unit);
                    let mut rows: Vec<(RecordBatch, Vec<String>)> = Vec::new();
                    let result = if units.len() == 1 {
                        Err(group_error.clone_message())
                    } else {
                        self.group(one, (seq + 1) * 1_000_000 + i, &mut rows)
                            .await?
                    };
                    match result {
                        Ok(empty) => {
                            for (batch, failed) in rows {
                                writer.write(&batch, failed)?;
                            }
                            no_rows.extend(empty);
                        }
                        Err(e) if is_systemic(&e) => return Err(e),
                        Err(e) => {
                            let message = crate::user_message(&e);
                            log::warn!("{unit}: {message}");
                            let row = self.shape.error_row(unit, &message)?;
                            writer.write(&row, vec![unit.clone()])?;
                        }
                    }
                }
            }
        }
        let covered = match work {
            Work::New(units) => units,
            Work::Retry {
                part,
                size,
                covered,
                units,
                no_rows: kept,
            } => {
                self.keep_rows(&part, size, &units, &mut writer).await?;
                no_rows.extend(kept);
                covered
            }
        };
        let meta = PartMeta {
            run_id: self.run_id.to_owned(),
            units: covered,
            error_units: Vec::new(),
            no_row_units: no_rows,
            replaces: replaces.clone(),
        };
        let (written, errors) = writer.counts();
        let (staged, meta, rows) = writer.finish(meta)?;
        let size = staged
            .as_file()
            .metadata()
            .map_err(DataFusionError::IoError)?
            .len();
        self.store.publish(staged, &name).await?;
        framefusion_media::metrics::rows_written(
            self.store.display(),
            (written - errors) as u64,
            errors as u64,
        );
        // the videos this attempt ran (a retry's part also lists those it kept)
        let ran: HashSet<&str> = units.iter().map(String::as_str).collect();
        let among = |list: &[String]| list.iter().filter(|u| ran.contains(u.as_str())).count();
        let (failed, empty) = (among(&meta.error_units), among(&meta.no_row_units));
        framefusion_media::metrics::videos_committed(
            self.store.display(),
            units.len().saturating_sub(failed + empty) as u64,
            failed as u64,
            empty as u64,
        );
        if let Some(old) = &replaces {
            self.store.delete(old).await?;
        }
        if self.job.generates() {
            // the answers kept for these videos are in the part now
            for unit in &units {
                let folder = format!(
                    "{ANSWERS_DIR}/{}",
                    framefusion_udfs::answers::video_folder(unit)
                );
                if let Err(e) = self.store.delete_under(&folder).await {
                    log::warn!("{unit}: cannot remove its kept answers: {e}");
                }
            }
        }
        let rows = u64::try_from(rows).unwrap_or(u64::MAX);
        Ok((name, PartInfo { meta, rows, size }, replaces))
    }

    fn writer(&self, name: &str) -> Result<PartWriter> {
        PartWriter::new(
            self.store.staging_file(name)?,
            self.shape.schema(),
            &self.job.metadata()?,
        )
    }

    /// The failure ledger sink of this attempt's query number `tag`.
    fn sink(&self, tag: usize) -> String {
        format!("{}-{}-{tag}", self.run_id, self.attempt)
    }

    /// Runs the job on `units` with its own failure sink and gives its rows to `out` as
    /// they come, then an error row for each video whose failures its rows do not show
    /// ([`account`]); answers the videos that gave no row and did not fail, or the
    /// query's failure. An error (the outer one) means the job cannot be planned, which is
    /// wrong for every video. A setup failure met on a cluster arrives as a plain message:
    /// the sink says what it was, so that it stops the run as it does embedded.
    async fn group(
        &self,
        units: &[String],
        tag: usize,
        out: &mut dyn RowSink,
    ) -> Result<Result<Vec<String>>> {
        let sink = self.sink(tag);
        let config = self.job.state.config();
        let classify = |e| crate::error::with_unreachable_cluster(config, e);
        let mut stream = self.execute(units, &sink).await?;
        let mut rows = GroupRows::new(self.shape, self.key);
        let streamed = async {
            while let Some(batch) = stream.next().await {
                rows.add(&batch?, out)?;
            }
            Ok::<(), DataFusionError>(())
        }
        .await
        .map_err(classify);
        let failures = match (&streamed, crate::ledger::take(config, &sink).await) {
            (Ok(()), Ok(taken)) => taken,
            (Ok(()), Err(e)) => return Ok(Err(e)),
            (Err(_), Ok(taken)) => taken,
            // the query's own failure says more than the ledger's
            (Err(_), Err(e)) => {
                log::warn!("{e}");
                Vec::new()
            }
        };
        if let Err(e) = streamed {
            if crate::error::error_code(&e) == ErrorCode::Internal
                && let Some(setup) = failures.iter().find(|f| f.code.stops_a_run())
            {
                return Ok(Err(framefusion_common::code::external(
                    framefusion_udfs::UdfError::Setup(setup.message.clone()),
                )));
            }
            return Ok(Err(e));
        }
        Ok(rows.finish(units, failures, out))
    }

    async fn execute(
        &self,
        units: &[String],
        sink: &str,
    ) -> Result<datafusion::physical_plan::SendableRecordBatchStream> {
        let plan = self.job.restricted(units)?;
        let mut state = self.job.state.clone();
        let options = state.config_mut().options_mut();
        options.set("framefusion.failure_sink", sink)?;
        if self.job.generates() {
            options.set("framefusion.answers", &self.store.location_of(ANSWERS_DIR))?;
        }
        // the settings a query's operators see are fixed when it starts
        state.mark_start_execution();
        DataFrame::new(state, plan).execute_stream().await
    }

    /// Copies the rows of part `old` (`size` bytes) that are not of `retried` videos into
    /// `writer`.
    async fn keep_rows(
        &self,
        old: &str,
        size: u64,
        retried: &[String],
        writer: &mut PartWriter,
    ) -> Result<()> {
        let builder = parquet_builder(self.store, old, size).await?;
        let retried: HashSet<&str> = retried.iter().map(String::as_str).collect();
        let mut stream = builder.build()?;
        while let Some(batch) = stream.next().await {
            let batch = batch?;
            let units = text_column(&batch, UNIT_COLUMN)?;
            let keep: BooleanArray = (0..batch.num_rows())
                .map(|r| Some(units.is_null(r) || !retried.contains(units.value(r))))
                .collect();
            let kept = filter_record_batch(&batch, &keep)?;
            let kept = RecordBatch::try_new(self.shape.schema(), kept.columns().to_vec())?;
            let failed = failed_units(&kept)?;
            writer.write(&kept, failed)?;
        }
        Ok(())
    }
}

fn text_column(batch: &RecordBatch, name: &str) -> Result<StringArray> {
    let column = batch.column_by_name(name).ok_or_else(|| {
        DataFusionError::Execution(format!("a manifest part has no '{name}' column"))
    })?;
    let text = cast(column, &DataType::Utf8)?;
    text.as_any()
        .downcast_ref::<StringArray>()
        .cloned()
        .ok_or_else(|| DataFusionError::Internal("cast to text".to_owned()))
}

/// The videos of manifest rows with status `error`.
fn failed_units(batch: &RecordBatch) -> Result<Vec<String>> {
    let status = text_column(batch, STATUS_COLUMN)?;
    let units = text_column(batch, UNIT_COLUMN)?;
    Ok((0..batch.num_rows())
        .filter(|&r| status.value(r) == "error" && !units.is_null(r))
        .map(|r| units.value(r).to_owned())
        .collect())
}

/// Whether `e` is a failure of the machinery (stop the run, resume later) rather than of
/// the videos (record it and go on).
fn is_systemic(e: &DataFusionError) -> bool {
    crate::error::error_code(e).stops_a_run()
}

trait CloneMessage {
    fn clone_message(&self) -> DataFusionError;
}

impl CloneMessage for DataFusionError {
    fn clone_message(&self) -> DataFusionError {
        DataFusionError::Execution(crate::user_message(self))
    }
}

/// This attempt, for the commit marker.
struct Attempt {
    id: String,
    run_id: String,
    processed: usize,
    skipped: usize,
    started: Instant,
}

/// The final commit: checks that every video is covered once and every item key occurs
/// once, counts rows, and publishes `_SUCCESS`.
async fn commit(
    store: &ManifestStore,
    job: &Job,
    parts: &BTreeMap<String, PartInfo>,
    key: &[String],
    previous: Option<RunSummary>,
    this: &Attempt,
) -> Result<RunSummary> {
    let attempt = this.id.as_str();
    let mut covered: HashSet<&str> = HashSet::new();
    for (name, part) in parts {
        for unit in &part.meta.units {
            if !covered.insert(unit) {
                return Err(DataFusionError::Execution(format!(
                    "the video '{unit}' is covered by two parts (one is '{}/{name}'); was another run writing to the same output?",
                    store.display()
                )));
            }
        }
    }
    // keys and statuses, column by column from the parts
    let mut seen: HashSet<Box<[u8]>> = HashSet::new();
    let (mut ok_rows, mut error_rows) = (0u64, 0u64);
    let mut converter: Option<RowConverter> = None;
    for (name, part) in parts {
        let builder = parquet_builder(store, name, part.size).await?;
        let schema = builder.schema().clone();
        let mut wanted: Vec<usize> = key.iter().filter_map(|k| schema.index_of(k).ok()).collect();
        wanted.push(schema.index_of(STATUS_COLUMN)?);
        let mask = ProjectionMask::roots(builder.parquet_schema(), wanted);
        let mut stream = builder.with_projection(mask).build()?;
        while let Some(batch) = stream.next().await {
            let batch = batch?;
            let status = text_column(&batch, STATUS_COLUMN)?;
            let errors = (0..batch.num_rows())
                .filter(|&r| status.value(r) == "error")
                .count() as u64;
            error_rows += errors;
            ok_rows += batch.num_rows() as u64 - errors;
            let keys: Vec<_> = key
                .iter()
                .map(|k| batch.column_by_name(k).cloned())
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| {
                    DataFusionError::Execution(format!("'{name}' lacks a key column"))
                })?;
            let converter = match &mut converter {
                Some(c) => c,
                None => converter.insert(RowConverter::new(
                    keys.iter()
                        .map(|k| SortField::new(k.data_type().clone()))
                        .collect(),
                )?),
            };
            let rows = converter.convert_columns(&keys)?;
            for (r, row) in rows.iter().enumerate() {
                if !seen.insert(row.as_ref().into()) {
                    let shown: Vec<String> = keys
                        .iter()
                        .map(|k| {
                            datafusion::arrow::util::display::array_value_to_string(k, r)
                                .unwrap_or_default()
                        })
                        .collect();
                    return Err(DataFusionError::Execution(format!(
                        "the item ({}) = ({}) occurs twice in the manifest at '{}'; the item key must identify one row: pass the columns that do as --key",
                        key.join(", "),
                        shown.join(", "),
                        store.display()
                    )));
                }
            }
        }
    }
    // this attempt's stats, from its markers and parts
    let mut attempts: BTreeMap<String, AttemptStats> = BTreeMap::new();
    let markers = store.list(Some(STATE_DIR)).await?;
    for (name, _) in &markers {
        let Some(rest) = name
            .strip_prefix(&format!("{STATE_DIR}/started-"))
            .and_then(|r| r.strip_suffix(".json"))
        else {
            continue;
        };
        let id = rest.split('-').next().unwrap_or(rest).to_owned();
        let units: Vec<String> = match store.read(name).await? {
            Some(bytes) => serde_json::from_slice(&bytes).unwrap_or_default(),
            None => Vec::new(),
        };
        let entry = attempts.entry(id.clone()).or_insert_with(|| AttemptStats {
            attempt: id,
            ..AttemptStats::default()
        });
        entry.started += units.len();
    }
    for (name, part) in parts {
        if let Some(id) = name.strip_prefix("part-").and_then(|r| r.split('-').next())
            && let Some(entry) = attempts.get_mut(id)
        {
            entry.committed += match part.meta.replaces {
                Some(_) => 0,
                None => part.meta.units.len(),
            };
        }
    }
    let mut all_attempts = previous.map(|p| p.attempts).unwrap_or_default();
    all_attempts.retain(|a| !attempts.contains_key(&a.attempt));
    all_attempts.extend(attempts.into_values());
    if !all_attempts.iter().any(|a| a.attempt == attempt) {
        all_attempts.push(AttemptStats {
            attempt: attempt.to_owned(),
            ..AttemptStats::default()
        });
    }
    let summary = RunSummary {
        run_id: this.run_id.clone(),
        output: store.display().to_owned(),
        key: key.to_vec(),
        videos: covered.len(),
        rows: parts.values().map(|p| p.rows).sum(),
        ok_rows,
        error_rows,
        error_videos: parts.values().map(|p| p.meta.error_units.len()).sum(),
        no_row_videos: parts.values().map(|p| p.meta.no_row_units.len()).sum(),
        parts: parts.len(),
        operators: job.operators.clone(),
        attempts: all_attempts,
        processed: this.processed,
        skipped: this.skipped,
        elapsed_s: this.started.elapsed().as_secs_f64(),
    };
    let json = serde_json::to_vec_pretty(&summary)
        .map_err(|e| DataFusionError::Internal(format!("summary: {e}")))?;
    store.write(SUCCESS, json).await?;
    for (name, _) in markers {
        if name.starts_with(&format!("{STATE_DIR}/started-")) {
            store.delete(&name).await?;
        }
    }
    Ok(summary)
}
