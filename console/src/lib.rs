//! # framefusion-console
//!
//! The web console of `framefusion serve --http ADDR`: a page (`/`) whose views read the
//! JSON API below, with the Flight SQL server's users, bearer tokens and allowed
//! locations (every `/api/` call but the login carries `authorization: Bearer TOKEN`).
//!
//! | route | what |
//! |---|---|
//! | `GET /api/targets` | where runs may go: `embedded` and each `--cluster NAME=URL` |
//! | `GET /api/runs` | every run: those this server started (live) and the manifests under `--runs` ([`runs::RunView`]) |
//! | `POST /api/runs` | `{"sql": JOB, "target": NAME, "output": URI}` (output optional: a new folder under the first `--runs`) -> `{"id": ..., "durable": true}` (false without `--runs`) |
//! | `GET /api/runs/{id}` | one run: status, videos done/total, rows ok/error, throughput, ETA, seconds per operator, `_SUCCESS` |
//! | `POST /api/runs/{id}/cancel` | stops a live run (a later run with the same output resumes it) |
//! | `GET /api/runs/{id}/errors` | the manifest's error rows: their key columns and messages |
//! | `GET /api/runs/{id}/clips?where=SQL&limit=N&offset=N` | the manifest's rows (binary columns left out), filtered by a SQL predicate over its columns |
//! | `GET /api/preview?path=P&start_s=A&end_s=B[&frames=N&size=PX]` | a contact sheet of the range (JPEG); with `at_s` instead, a thumbnail |
//! | `GET /api/clusters` | each cluster's executors, slots and jobs, from its scheduler |
//!
//! A run executes where its target says: `embedded` in this process, a cluster through a
//! session on its scheduler. Failures answer `{"error": {"code", "message"}}` with the
//! HTTP status of the code, as the SQL API does.
//!
//! With `--runs`, submitted runs are durable ([`durable`]): recorded before they start,
//! leased while they run, and taken over by a server (this one after a restart, or
//! another sharing the runs location) once the lease expires. Without `--runs` a run
//! lives in this process only, which the server says when it starts and in the answer to
//! `POST /api/runs` (`"durable": false`).

pub mod clusters;
pub mod durable;
mod pages;
pub mod runs;

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use datafusion::arrow::array::{Array, RecordBatch};
use datafusion::arrow::datatypes::DataType;
use datafusion::prelude::{ParquetReadOptions, SessionContext};
use framefusion_flight_server::FrameFusionFlightSql;
use framefusion_flight_server::http::{failure, json, metadata};
use framefusion_flight_server::status::status;
use serde::Deserialize;
use tonic::Status;

/// What a console serves.
#[derive(Debug, Clone, Default)]
pub struct ConsoleOptions {
    /// Locations holding manifests (`--runs`): each a manifest or a folder of manifests;
    /// submitted runs without an output go to a new folder under the first.
    pub runs: Vec<String>,
    /// Clusters runs may be submitted to, by name (`--cluster NAME=df://host:port`).
    pub clusters: Vec<(String, String)>,
    /// How long a run's lease lasts unless renewed (`--run-lease`; default
    /// [`durable::DEFAULT_LEASE`]).
    pub run_lease: Option<std::time::Duration>,
}

/// The console's state.
#[derive(Debug)]
pub struct Console {
    service: Arc<FrameFusionFlightSql>,
    options: ConsoleOptions,
    runs: runs::Registry,
    http: reqwest::Client,
    /// The run book under the first `--runs` location (durable runs).
    book: Option<Arc<durable::RunBook>>,
}

/// The embedded target's name.
pub const EMBEDDED: &str = "embedded";

impl Console {
    /// A console over `service`.
    pub fn new(service: Arc<FrameFusionFlightSql>, options: ConsoleOptions) -> Self {
        let owner = format!(
            "{}-{}",
            std::process::id(),
            runs::Registry::default().next_name()
        );
        let lease = options.run_lease.unwrap_or(durable::DEFAULT_LEASE);
        let book = match options.runs.first() {
            Some(root) => {
                match durable::RunBook::open(root, owner, lease, service.confinement().clients()) {
                    Ok(book) => Some(Arc::new(book)),
                    Err(e) => {
                        log::warn!(
                            "runs are not durable: cannot open the run book under '{root}': {e}"
                        );
                        None
                    }
                }
            }
            None => {
                log::warn!(
                    "runs are not durable: without --runs a submitted run lives in this process only"
                );
                None
            }
        };
        Self {
            service,
            options,
            runs: runs::Registry::default(),
            http: reqwest::Client::new(),
            book,
        }
    }

    fn cluster_url(&self, name: &str) -> Option<&str> {
        self.options
            .clusters
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, url)| url.as_str())
    }
}

/// The console's routes (see the module docs).
pub fn routes(service: Arc<FrameFusionFlightSql>, options: ConsoleOptions) -> Router {
    let console = Arc::new(Console::new(service, options));
    if console.book.is_some() {
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(watch_runs(Arc::clone(&console)));
            }
            Err(_) => log::warn!("runs are not taken over: no runtime to watch them on"),
        }
    }
    Router::new()
        .route("/", get(pages::index))
        .route("/console.js", get(pages::script))
        .route("/console.css", get(pages::style))
        .route("/api/targets", get(targets))
        .route("/api/runs", get(list_runs).post(submit))
        .route("/api/runs/{id}", get(run))
        .route("/api/runs/{id}/cancel", post(cancel))
        .route("/api/runs/{id}/errors", get(errors))
        .route("/api/runs/{id}/clips", get(clips))
        .route("/api/preview", get(preview))
        .route("/api/clusters", get(list_clusters))
        .with_state(console)
}

type Shared = State<Arc<Console>>;

fn ok(value: impl serde::Serialize) -> Response {
    match serde_json::to_value(value) {
        Ok(v) => json(StatusCode::OK, v),
        Err(e) => failure(&Status::internal(format!("cannot write JSON: {e}"))),
    }
}

fn not_found(id: &str) -> Response {
    failure(&Status::not_found(format!(
        "no run '{id}': GET /api/runs lists the runs"
    )))
}

async fn targets(State(console): Shared, headers: HeaderMap) -> Response {
    if let Err(s) = console.service.caller(&metadata(&headers)) {
        return failure(&s);
    }
    let mut targets = vec![serde_json::json!({"name": EMBEDDED, "url": null})];
    targets.extend(
        console
            .options
            .clusters
            .iter()
            .map(|(name, url)| serde_json::json!({"name": name, "url": url})),
    );
    ok(serde_json::json!({ "targets": targets }))
}

async fn list_runs(State(console): Shared, headers: HeaderMap) -> Response {
    if let Err(s) = console.service.caller(&metadata(&headers)) {
        return failure(&s);
    }
    ok(
        serde_json::json!({ "runs": console.runs.list(&console.options.runs, console.service.confinement().clients()).await }),
    )
}

async fn run(State(console): Shared, headers: HeaderMap, Path(id): Path<String>) -> Response {
    if let Err(s) = console.service.caller(&metadata(&headers)) {
        return failure(&s);
    }
    match console
        .runs
        .get(
            &id,
            &console.options.runs,
            console.service.confinement().clients(),
        )
        .await
    {
        Some(view) => ok(view),
        None => not_found(&id),
    }
}

#[derive(Debug, Deserialize)]
struct SubmitBody {
    sql: String,
    #[serde(default)]
    target: Option<String>,
    #[serde(default)]
    output: Option<String>,
}

async fn submit(State(console): Shared, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    match start(&console, &headers, &body).await {
        Ok(id) => json(
            StatusCode::CREATED,
            serde_json::json!({ "id": id, "durable": console.book.is_some() }),
        ),
        Err(s) => failure(&s),
    }
}

/// Takes over the recorded runs whose lease expired, every half lease.
async fn watch_runs(console: Arc<Console>) {
    let Some(book) = console.book.clone() else {
        return;
    };
    loop {
        match book.orphans().await {
            Ok(orphans) => {
                for (record, epoch) in orphans {
                    if console.runs.is_running(&record.id) {
                        continue;
                    }
                    match book.take(&record.id, epoch).await {
                        Ok(Some(held)) => {
                            log::info!(
                                "taking over run {} (its lease expired): {} -> {}",
                                record.id,
                                record.target,
                                record.output
                            );
                            if let Err(e) = resume(&console, &book, record, held).await {
                                log::warn!("{e}");
                            }
                        }
                        Ok(None) => {}
                        Err(e) => log::warn!("cannot take over run {}: {e}", record.id),
                    }
                }
            }
            Err(e) => log::warn!("cannot read the run book '{}': {e}", book.display()),
        }
        tokio::time::sleep(book.lease() / 2).await;
    }
}

/// Runs a recorded run again under `held`: the old owner's cluster jobs cancelled, the
/// job planned again, the manifest resumed. A failure leaves the lease to expire, so
/// that the run is tried again.
async fn resume(
    console: &Console,
    book: &Arc<durable::RunBook>,
    record: durable::RunRecord,
    held: durable::Held,
) -> Result<(), String> {
    let id = record.id.clone();
    let cluster = if record.target == EMBEDDED {
        None
    } else {
        Some(console.cluster_url(&record.target).ok_or_else(|| {
            format!(
                "run {id}: its target '{}' is not a cluster of this server (--cluster NAME=URL)",
                record.target
            )
        })?)
    };
    if let Some(url) = cluster {
        clusters::cancel_jobs_named(&console.http, url, &runs::job_name(&id))
            .await
            .map_err(|e| format!("run {id}: cannot cancel its old jobs on '{url}': {e}"))?;
    }
    let ctx = console
        .service
        .new_session(cluster)
        .await
        .map_err(|e| format!("run {id}: {}", e.message()))?;
    let plan = console
        .service
        .plan_job(&ctx, &record.sql)
        .await
        .map_err(|e| format!("run {id}: {}", e.message()))?;
    let submission = runs::Submission {
        id: id.clone(),
        ctx,
        plan,
        sql: record.sql,
        output: record.output.clone(),
        embedded: cluster.is_none(),
        target: record.target,
        user: record.user,
    };
    match console
        .runs
        .start(submission, Some((Arc::clone(book), held)))
    {
        Some(_) => Ok(()),
        None => Err(format!(
            "run {id}: a run of this server already writes '{}'",
            record.output
        )),
    }
}

async fn start(console: &Console, headers: &HeaderMap, body: &[u8]) -> Result<String, Status> {
    let caller = console.service.caller(&metadata(headers))?;
    let body: SubmitBody = serde_json::from_slice(body).map_err(|e| {
        Status::invalid_argument(format!(
            "the body must be JSON such as {{\"sql\": \"...\", \"target\": \"embedded\", \"output\": \"/runs/a\"}}: {e}"
        ))
    })?;
    let target = body.target.unwrap_or_else(|| EMBEDDED.to_owned());
    let cluster = if target == EMBEDDED {
        None
    } else {
        Some(console.cluster_url(&target).ok_or_else(|| {
            Status::invalid_argument(format!(
                "no target '{target}': use '{EMBEDDED}' or a cluster of --cluster NAME=URL (GET /api/targets)"
            ))
        })?)
    };
    let output = match body.output.filter(|o| !o.trim().is_empty()) {
        Some(output) => output.trim().to_owned(),
        None => {
            let root = console.options.runs.first().ok_or_else(|| {
                Status::invalid_argument(
                    "give an output: this server has no --runs location to put runs in",
                )
            })?;
            format!(
                "{}/{}",
                root.trim_end_matches('/'),
                console.runs.next_name()
            )
        }
    };
    // checked again when the run starts; this spares the planning
    if console.runs.running_at(&output) {
        return Err(already_running(&output));
    }
    // the output must be one of the server's allowed locations
    console
        .service
        .confinement()
        .check_location(&output)
        .map_err(|e| status(&framefusion_media::error::external(e)))?;
    if console.book.is_some()
        && let Some(key) = durable::secret_in(&body.sql)
    {
        return Err(Status::invalid_argument(format!(
            "the job sets '{key}': runs are recorded in the run book, which never holds a secret; give store credentials through the server's environment or its catalog"
        )));
    }
    let ctx = console.service.new_session(cluster).await?;
    let plan = console.service.plan_job(&ctx, &body.sql).await?;
    let id = console.runs.new_id();
    let lease = match &console.book {
        Some(book) => {
            let record = durable::RunRecord {
                id: id.clone(),
                sql: body.sql.clone(),
                target: target.clone(),
                output: output.clone(),
                user: caller.user.clone(),
                submitted_ms: std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis()),
            };
            let held = book.record(&record).await.map_err(|e| status(&e))?;
            Some((Arc::clone(book), held))
        }
        None => None,
    };
    let recorded = lease.clone();
    let started = console.runs.start(
        runs::Submission {
            id,
            ctx,
            plan,
            sql: body.sql,
            output: output.clone(),
            embedded: cluster.is_none(),
            target,
            user: caller.user,
        },
        lease,
    );
    if started.is_none()
        && let Some((book, held)) = recorded
    {
        // recorded but not started: no server may run it later
        let ended = durable::Outcome {
            status: "failed".to_owned(),
            message: Some(format!("a run was already writing '{output}'")),
        };
        if let Err(e) = book.finish(&held, &ended).await {
            log::warn!("cannot record the end of run {}: {e}", held.id);
        }
    }
    started.ok_or_else(|| already_running(&output))
}

fn already_running(output: &str) -> Status {
    Status::failed_precondition(format!(
        "a run is already writing '{output}': wait for it or cancel it"
    ))
}

async fn cancel(State(console): Shared, headers: HeaderMap, Path(id): Path<String>) -> Response {
    if let Err(s) = console.service.caller(&metadata(&headers)) {
        return failure(&s);
    }
    match console.runs.cancel(&id) {
        Some(was_running) => ok(serde_json::json!({ "cancelled": was_running })),
        None => not_found(&id),
    }
}

/// The caller's session and the output of run `id`.
async fn manifest_of(
    console: &Console,
    headers: &HeaderMap,
    id: &str,
) -> Result<(SessionContext, String), Status> {
    let ctx = console.service.caller_session(metadata(headers)).await?;
    let view = console
        .runs
        .get(
            id,
            &console.options.runs,
            console.service.confinement().clients(),
        )
        .await
        .ok_or_else(|| Status::not_found(format!("no run '{id}': GET /api/runs lists the runs")))?;
    framefusion_engine::stores::register_location(&ctx.state(), &view.output, &HashMap::new())
        .map_err(|e| status(&e))?;
    Ok((ctx, view.output))
}

/// Rows as JSON objects, binary columns left out.
fn rows_json(batches: &[RecordBatch]) -> Result<(Vec<String>, serde_json::Value), Status> {
    let text_only = batches
        .iter()
        .map(|batch| {
            let keep: Vec<usize> = (0..batch.num_columns())
                .filter(|&i| {
                    !matches!(
                        batch.schema().field(i).data_type(),
                        DataType::Binary | DataType::LargeBinary | DataType::BinaryView
                    )
                })
                .collect();
            batch
                .project(&keep)
                .map_err(|e| Status::internal(e.to_string()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    framefusion_flight_server::http::rows_json(&text_only)
}

#[derive(Debug, Deserialize)]
struct ClipQuery {
    #[serde(default, rename = "where")]
    predicate: Option<String>,
    #[serde(default)]
    limit: Option<usize>,
    #[serde(default)]
    offset: Option<usize>,
}

async fn read_rows(
    console: &Console,
    headers: &HeaderMap,
    id: &str,
    predicate: Option<&str>,
    skip: usize,
    fetch: usize,
) -> Result<Response, Status> {
    let (ctx, output) = manifest_of(console, headers, id).await?;
    let mut df = ctx
        .read_parquet(output.as_str(), ParquetReadOptions::default())
        .await
        .map_err(|e| status(&e))?;
    if let Some(predicate) = predicate.filter(|p| !p.trim().is_empty()) {
        let expr = df
            .parse_sql_expr(predicate)
            .map_err(|e| Status::invalid_argument(format!("bad filter '{predicate}': {e}")))?;
        df = df
            .filter(expr)
            .map_err(|e| Status::invalid_argument(format!("bad filter '{predicate}': {e}")))?;
    }
    let total = df.clone().count().await.map_err(|e| status(&e))?;
    let batches = df
        .limit(skip, Some(fetch))
        .map_err(|e| status(&e))?
        .collect()
        .await
        .map_err(|e| status(&e))?;
    let (columns, rows) = rows_json(&batches)?;
    Ok(ok(serde_json::json!({
        "columns": columns,
        "rows": rows,
        "total": total,
        "offset": skip,
    })))
}

async fn clips(
    State(console): Shared,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(query): Query<ClipQuery>,
) -> Response {
    let fetch = query.limit.unwrap_or(48).clamp(1, 500);
    read_rows(
        &console,
        &headers,
        &id,
        query.predicate.as_deref(),
        query.offset.unwrap_or(0),
        fetch,
    )
    .await
    .unwrap_or_else(|s| failure(&s))
}

async fn errors(State(console): Shared, headers: HeaderMap, Path(id): Path<String>) -> Response {
    let predicate = format!("{} = 'error'", framefusion_engine::manifest::STATUS_COLUMN);
    read_rows(&console, &headers, &id, Some(&predicate), 0, 500)
        .await
        .unwrap_or_else(|s| failure(&s))
}

#[derive(Debug, Deserialize)]
struct PreviewQuery {
    path: String,
    #[serde(default)]
    start_s: Option<f64>,
    #[serde(default)]
    end_s: Option<f64>,
    #[serde(default)]
    at_s: Option<f64>,
    #[serde(default)]
    frames: Option<u32>,
    #[serde(default)]
    size: Option<u32>,
}

/// A SQL string literal of `text`.
fn quoted(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

async fn preview(
    State(console): Shared,
    headers: HeaderMap,
    Query(query): Query<PreviewQuery>,
) -> Response {
    match render_preview(&console, &headers, &query).await {
        Ok(bytes) => (StatusCode::OK, [(CONTENT_TYPE, "image/jpeg")], bytes).into_response(),
        Err(s) => failure(&s),
    }
}

async fn render_preview(
    console: &Console,
    headers: &HeaderMap,
    query: &PreviewQuery,
) -> Result<Vec<u8>, Status> {
    let ctx = console.service.caller_session(metadata(headers)).await?;
    let finite = |v: f64, name: &str| {
        if v.is_finite() {
            Ok(v)
        } else {
            Err(Status::invalid_argument(format!("{name} must be a number")))
        }
    };
    let sql = match (query.at_s, query.start_s, query.end_s) {
        (Some(at), _, _) => format!(
            "SELECT thumbnail({}, {}, {}) AS image",
            quoted(&query.path),
            finite(at, "at_s")?,
            query.size.unwrap_or(320)
        ),
        (None, Some(start), Some(end)) => format!(
            "SELECT contact_sheet({}, {}, {}, {}) AS image",
            quoted(&query.path),
            finite(start, "start_s")?,
            finite(end, "end_s")?,
            quoted(&format!(
                "frames={},size={}",
                query.frames.unwrap_or(4),
                query.size.unwrap_or(160)
            ))
        ),
        _ => {
            return Err(Status::invalid_argument(
                "give at_s (a thumbnail) or start_s and end_s (a contact sheet)",
            ));
        }
    };
    let batches = ctx
        .sql(&sql)
        .await
        .map_err(|e| status(&e))?
        .collect()
        .await
        .map_err(|e| status(&e))?;
    let image = batches.iter().find(|b| b.num_rows() > 0).and_then(|b| {
        let column = b.column(0);
        let binary = column
            .as_any()
            .downcast_ref::<datafusion::arrow::array::BinaryArray>()?;
        (!binary.is_null(0)).then(|| binary.value(0).to_vec())
    });
    image.ok_or_else(|| {
        Status::not_found(format!(
            "no picture of '{}' there: the video cannot be read or has no frame in the range",
            query.path
        ))
    })
}

async fn list_clusters(State(console): Shared, headers: HeaderMap) -> Response {
    if let Err(s) = console.service.caller(&metadata(&headers)) {
        return failure(&s);
    }
    let views = futures::future::join_all(
        console
            .options
            .clusters
            .iter()
            .map(|(name, url)| clusters::describe(&console.http, name, url)),
    )
    .await;
    ok(serde_json::json!({ "clusters": views }))
}
