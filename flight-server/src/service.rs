//! The Flight SQL service: statements, prepared statements, metadata, cancellation.
//!
//! # Sessions
//!
//! Each bearer token is a session (a DataFusion `SessionContext`): a client's `SET`
//! statements, views and temporary tables are its own, and a handshake starts a new
//! session. Tables created with `CREATE EXTERNAL TABLE` go to the persistent catalog and
//! are shared by every session (and every `framefusion` process using the same catalog
//! file). A session ends when its token expires.
//!
//! # Results
//!
//! `GetFlightInfo` plans a statement (DDL and `SET` take effect there) and returns a
//! ticket; `DoGet` runs it and streams record batches as the engine produces them. A
//! query can be cancelled (`CancelFlightInfo`, or the older `CancelQuery` action) before
//! or while it streams; a client that goes away mid-stream drops the stream, which stops
//! the query.

use std::collections::HashMap;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::FlightService;
use arrow_flight::sql::metadata::{SqlInfoData, SqlInfoDataBuilder};
use arrow_flight::sql::server::{FlightSqlService, PeekableFlightDataStream};
use arrow_flight::sql::{
    ActionCancelQueryRequest, ActionCancelQueryResult, ActionClosePreparedStatementRequest,
    ActionCreatePreparedStatementRequest, ActionCreatePreparedStatementResult, Any,
    CommandGetCatalogs, CommandGetDbSchemas, CommandGetSqlInfo, CommandGetTableTypes,
    CommandGetTables, CommandPreparedStatementQuery, CommandStatementQuery, CommandStatementUpdate,
    DoPutPreparedStatementResult, ProstMessageExt, SqlInfo, TicketStatementQuery,
};
use arrow_flight::{
    Action, CancelFlightInfoRequest, CancelFlightInfoResult, CancelStatus, FlightDescriptor,
    FlightEndpoint, FlightInfo, HandshakeRequest, HandshakeResponse, IpcMessage, SchemaAsIpc,
    Ticket,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::ipc::writer::IpcWriteOptions;
use datafusion::catalog::TableProvider;
use datafusion::common::ScalarValue;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::dataframe::DataFrame;
use datafusion::datasource::TableType;
use datafusion::datasource::listing::ListingTable;
use datafusion::datasource::source_as_provider;
use datafusion::error::DataFusionError;
use datafusion::logical_expr::{DdlStatement, LogicalPlan, Statement};
use datafusion::prelude::SessionContext;
use framefusion_catalogs::frames::FramesTable;
use framefusion_catalogs::video::VideoTable;
use framefusion_common::code::{CodedError, ErrorCode};
use framefusion_common::failures::RunOptions;
use framefusion_common::shared::Shared;
use framefusion_engine::SessionContextExt;
use framefusion_media::source::Confinement;
use framefusion_media::storage::S3Clients;
use futures::future::AbortHandle;
use futures::{Stream, StreamExt, TryStreamExt};
use prost::Message;
use tokio::sync::Mutex;
use tonic::{Request, Response, Status, Streaming};

use crate::auth::{AuthConfig, Authenticator, Caller};
use crate::status::status;
use framefusion_engine::error::with_unreachable_cluster;

/// The custom action that returns how many queries are running (as decimal text).
pub const RUNNING_QUERIES_ACTION: &str = "framefusion.RunningQueries";

/// `ActionCancelQueryResult.CancelResult` values of the Flight SQL protocol (the enum is
/// not exported by arrow-flight).
const CANCEL_RESULT_CANCELLED: i32 = 1;
const CANCEL_RESULT_NOT_CANCELLABLE: i32 = 3;

/// What the service serves.
#[derive(Debug, Clone, Default)]
pub struct ServiceOptions {
    /// Run queries on the Ballista cluster at this URL (`df://host:port`).
    pub cluster: Option<String>,
    /// The persistent catalog file (None: tables last as long as a session).
    pub catalog: Option<PathBuf>,
    /// Who may connect.
    pub auth: AuthConfig,
}

/// A statement planned by `GetFlightInfo`, waiting for its `DoGet`.
struct Pending {
    owner: String,
    df: DataFrame,
}

/// A prepared statement.
struct Prepared {
    owner: String,
    plan: LogicalPlan,
    parameters: usize,
    values: Option<Vec<ScalarValue>>,
}

/// The Flight SQL service over the framefusion engine.
pub struct FrameFusionFlightSql {
    options: ServiceOptions,
    confinement: Confinement,
    /// The runtime every session of this server shares: store clients, feature cache.
    shared: Shared,
    auth: Authenticator,
    sessions: Mutex<HashMap<String, SessionContext>>,
    pending: Mutex<HashMap<String, Pending>>,
    prepared: Mutex<HashMap<String, Prepared>>,
    running: Arc<std::sync::Mutex<HashMap<String, AbortHandle>>>,
    running_count: Arc<AtomicUsize>,
    next_handle: AtomicU64,
    sql_info: SqlInfoData,
}

impl std::fmt::Debug for FrameFusionFlightSql {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrameFusionFlightSql")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

fn sql_info() -> Result<SqlInfoData, Status> {
    let mut builder = SqlInfoDataBuilder::new();
    builder.append(SqlInfo::FlightSqlServerName, "framefusion");
    builder.append(SqlInfo::FlightSqlServerVersion, env!("CARGO_PKG_VERSION"));
    builder.append(SqlInfo::FlightSqlServerArrowVersion, "1.3");
    builder.append(SqlInfo::FlightSqlServerReadOnly, false);
    builder.append(SqlInfo::FlightSqlServerSql, true);
    builder.append(SqlInfo::FlightSqlServerSubstrait, false);
    builder.append(SqlInfo::FlightSqlServerTransaction, 0i32);
    builder.append(SqlInfo::FlightSqlServerCancel, true);
    builder.append(SqlInfo::SqlIdentifierQuoteChar, "\"");
    builder.append(SqlInfo::SqlDdlCatalog, false);
    builder.append(SqlInfo::SqlDdlSchema, true);
    builder.append(SqlInfo::SqlDdlTable, true);
    builder
        .build()
        .map_err(|e| Status::internal(format!("server info: {e}")))
}

type FlightDataStream =
    Pin<Box<dyn Stream<Item = Result<arrow_flight::FlightData, Status>> + Send + 'static>>;

fn internal(e: impl std::fmt::Display) -> Status {
    Status::internal(e.to_string())
}

/// Rewrites JDBC/ODBC-style `?` placeholders to DataFusion's `$1`, `$2`, ...: sqlparser's
/// tokenizer finds them (not inside quotes or comments), and only they are replaced in
/// the text. A statement the tokenizer refuses is left as it is, for the parser to report.
fn number_placeholders(sql: &str) -> String {
    use datafusion::sql::sqlparser::dialect::GenericDialect;
    use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};
    let Ok(tokens) = Tokenizer::new(&GenericDialect {}, sql).tokenize_with_location() else {
        return sql.to_owned();
    };
    let line_starts: Vec<usize> = std::iter::once(0)
        .chain(sql.match_indices('\n').map(|(i, _)| i + 1))
        .collect();
    // the byte offset of a (1-based) line and column, in characters
    let offset = |line: u64, column: u64| -> Option<usize> {
        let start = *line_starts.get(usize::try_from(line).ok()?.checked_sub(1)?)?;
        let column = usize::try_from(column).ok()?.checked_sub(1)?;
        sql[start..]
            .char_indices()
            .nth(column)
            .map(|(i, _)| start + i)
    };
    let mut out = String::with_capacity(sql.len() + 8);
    let (mut copied, mut n) = (0, 0);
    for token in tokens {
        if token.token != Token::Placeholder("?".to_owned()) {
            continue;
        }
        let Some(at) = offset(token.span.start.line, token.span.start.column) else {
            return sql.to_owned();
        };
        n += 1;
        out.push_str(&sql[copied..at]);
        out.push_str(&format!("${n}"));
        copied = at + 1;
    }
    out.push_str(&sql[copied..]);
    out
}

/// Refuses locations outside the server's allowed roots (which its sessions carry, and
/// which a client cannot change: see below): every table a plan reads
/// (VIDEO, frames, Parquet/CSV/JSON listing tables), the table a DDL statement defines, and
/// where `COPY` writes; and a statement that would change the roots (`SET` or `RESET` of
/// `framefusion.allowed_roots`, or of `framefusion.answers`, which a run sets for its own
/// output). (Video operators check the paths they open themselves,
/// on whichever node runs them.)
fn check_locations(plan: &LogicalPlan, confinement: &Confinement) -> Result<(), DataFusionError> {
    let check = |location: &str| -> Result<(), DataFusionError> {
        confinement
            .check_location(location)
            .map_err(framefusion_media::error::external)
    };
    let roots_key = |variable: &str| -> Result<(), DataFusionError> {
        let variable = variable.trim();
        if variable.eq_ignore_ascii_case(RunOptions::ALLOWED_ROOTS_KEY) {
            return Err(DataFusionError::External(Box::new(CodedError::with_code(
                ErrorCode::PermissionDenied,
                format!(
                    "{} is the server's (its --allow-root locations): a client cannot set or reset it",
                    RunOptions::ALLOWED_ROOTS_KEY
                ),
            ))));
        }
        if variable.eq_ignore_ascii_case(RunOptions::ANSWERS_KEY) {
            return Err(DataFusionError::External(Box::new(CodedError::with_code(
                ErrorCode::PermissionDenied,
                format!(
                    "{} is set by a manifest run for its own output: a client cannot set or reset it",
                    RunOptions::ANSWERS_KEY
                ),
            ))));
        }
        Ok(())
    };
    let mut result = Ok(());
    plan.apply_with_subqueries(|node| {
        let outcome = match node {
            LogicalPlan::Statement(Statement::SetVariable(set)) => roots_key(&set.variable),
            LogicalPlan::Statement(Statement::ResetVariable(reset)) => roots_key(&reset.variable),
            LogicalPlan::Ddl(DdlStatement::CreateExternalTable(cmd)) => {
                cmd.locations.iter().try_for_each(|l| check(l))
            }
            LogicalPlan::Copy(copy) => check(&copy.output_url),
            LogicalPlan::TableScan(scan) => match source_as_provider(&scan.source) {
                Ok(provider) => check_provider(provider.as_ref(), &check),
                Err(_) => Ok(()),
            },
            _ => Ok(()),
        };
        if let Err(e) = outcome {
            result = Err(e);
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    result
}

fn check_provider(
    provider: &dyn TableProvider,
    check: &dyn Fn(&str) -> Result<(), DataFusionError>,
) -> Result<(), DataFusionError> {
    let any = provider as &dyn std::any::Any;
    if let Some(table) = any.downcast_ref::<VideoTable>() {
        return table.locations().iter().try_for_each(|l| check(l));
    }
    if let Some(table) = any.downcast_ref::<FramesTable>() {
        return table.files().locations().iter().try_for_each(|l| check(l));
    }
    if let Some(table) = any.downcast_ref::<ListingTable>() {
        return table
            .table_paths()
            .iter()
            .try_for_each(|url| check(url.as_str()));
    }
    Ok(())
}

/// Counts a query as running while it lives and forgets its cancel handle after.
struct RunningGuard {
    handle: String,
    running: Arc<std::sync::Mutex<HashMap<String, AbortHandle>>>,
    count: Arc<AtomicUsize>,
}

impl Drop for RunningGuard {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::SeqCst);
        self.running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.handle);
    }
}

impl FrameFusionFlightSql {
    /// A service with `options`, whose sessions are confined to `confinement` and share
    /// one runtime's handles (store clients, feature cache).
    pub fn new(options: ServiceOptions, confinement: Confinement) -> Result<Self, Status> {
        let shared = Shared::new();
        Ok(Self {
            confinement: confinement.with_clients(S3Clients::in_shared(&shared)),
            shared,
            auth: Authenticator::new(options.auth.clone()),
            options,
            sessions: Mutex::new(HashMap::new()),
            pending: Mutex::new(HashMap::new()),
            prepared: Mutex::new(HashMap::new()),
            running: Arc::default(),
            running_count: Arc::default(),
            next_handle: AtomicU64::new(1),
            sql_info: sql_info()?,
        })
    }

    fn handle(&self, caller: &Caller) -> String {
        let n = self.next_handle.fetch_add(1, Ordering::Relaxed);
        // a handle names its session: another session cannot use it
        format!("{n}-{}", &caller.token[..caller.token.len().min(8)])
    }

    /// The session of an authenticated call.
    async fn session<T>(&self, request: &Request<T>) -> Result<(Caller, SessionContext), Status> {
        let caller = self.auth.check(request.metadata())?;
        let mut sessions = self.sessions.lock().await;
        if let Some(ctx) = sessions.get(&caller.token) {
            return Ok((caller, ctx.clone()));
        }
        let ctx = self.new_session(self.options.cluster.as_deref()).await?;
        sessions.insert(caller.token.clone(), ctx.clone());
        Ok((caller, ctx))
    }

    /// A new session on the cluster at `cluster` (`None`: in this process) with the
    /// server's catalog, for work the server runs on a caller's behalf (the console's runs).
    pub async fn new_session(&self, cluster: Option<&str>) -> Result<SessionContext, Status> {
        let ctx = framefusion_engine::connect_in(cluster, &self.shared)
            .await
            .map_err(|e| status(&e))?;
        // the session carries the server's allowed roots (to a cluster's executors too)
        let roots = self.confinement.setting().unwrap_or_default();
        ctx.state_ref()
            .write()
            .config_mut()
            .options_mut()
            .set(RunOptions::ALLOWED_ROOTS_KEY, &roots)
            .map_err(|e| status(&e))?;
        if let Some(path) = &self.options.catalog {
            framefusion_engine::catalog::attach_file_catalog(&ctx, path).map_err(|e| status(&e))?;
        }
        Ok(ctx)
    }

    /// Where this server's sessions may read and write (its `--allow-root`s), reading
    /// with the server's runtime's clients.
    pub fn confinement(&self) -> &Confinement {
        &self.confinement
    }

    /// The caller whose credentials (a bearer token) are in `headers`.
    pub fn caller(&self, headers: &tonic::metadata::MetadataMap) -> Result<Caller, Status> {
        self.auth.check(headers)
    }

    /// The session of the caller whose bearer token is in `headers`: the one its Flight
    /// SQL and HTTP SQL calls use.
    pub async fn caller_session(
        &self,
        headers: tonic::metadata::MetadataMap,
    ) -> Result<SessionContext, Status> {
        let request = Request::from_parts(headers, Default::default(), ());
        self.session(&request).await.map(|(_, ctx)| ctx)
    }

    /// Plans a job, as `framefusion run` does: every statement but the last runs in `ctx`
    /// now (tables, options), the last must be a query; each is confined to the server's
    /// allowed locations. The last statement's plan.
    pub async fn plan_job(&self, ctx: &SessionContext, sql: &str) -> Result<LogicalPlan, Status> {
        let mut statements = ctx.parse_script(sql).map_err(|e| status(&e))?;
        let query = statements
            .pop_back()
            .ok_or_else(|| Status::invalid_argument("the job holds no SQL statement"))?;
        let state = ctx.state();
        let on_cluster = |e| status(&with_unreachable_cluster(state.config(), e));
        for statement in statements {
            let plan = ctx
                .plan_statement(statement)
                .await
                .map_err(|e| status(&e))?;
            check_locations(&plan, &self.confinement).map_err(|e| status(&e))?;
            ctx.execute_plan(plan)
                .await
                .map_err(on_cluster)?
                .collect()
                .await
                .map_err(on_cluster)?;
        }
        let plan = ctx.plan_statement(query).await.map_err(|e| status(&e))?;
        check_locations(&plan, &self.confinement).map_err(|e| status(&e))?;
        if !framefusion_engine::manifest::is_query(&plan) {
            return Err(Status::invalid_argument(
                "the last statement of a job must be a query (SELECT ...) whose rows the manifest holds",
            ));
        }
        Ok(plan)
    }

    /// The handshake of the HTTP API: Basic credentials in `headers` for a bearer token.
    pub fn http_login(&self, headers: &tonic::metadata::MetadataMap) -> Result<String, Status> {
        self.auth.handshake(headers).map(|caller| caller.token)
    }

    /// Runs `sql` for the HTTP API, as `DoGet` runs a statement: the caller's session (its
    /// bearer token in `headers`), the same allowed locations, and all of the last
    /// statement's rows.
    pub async fn http_sql(
        &self,
        headers: tonic::metadata::MetadataMap,
        sql: &str,
    ) -> Result<Vec<datafusion::arrow::array::RecordBatch>, Status> {
        let request = Request::from_parts(headers, Default::default(), ());
        Ok(self.run_to_end(&request, sql).await?.unwrap_or_default())
    }

    /// Runs `sql` in the session of `request` now, to the end: the last statement's rows
    /// (`None` when it left nothing waiting).
    async fn run_to_end<T>(
        &self,
        request: &Request<T>,
        sql: &str,
    ) -> Result<Option<Vec<datafusion::arrow::array::RecordBatch>>, Status> {
        let (caller, ctx) = self.session(request).await?;
        let (handle, _) = self.plan_sql(&caller, &ctx, sql).await?;
        let Some(pending) = self.pending.lock().await.remove(&handle) else {
            return Ok(None);
        };
        let config = pending.df.task_ctx().session_config().clone();
        let batches = pending
            .df
            .collect()
            .await
            .map_err(|e| with_unreachable_cluster(&config, e));
        framefusion_media::metrics::query_done(batches.is_ok());
        batches.map(Some).map_err(|e| status(&e))
    }

    /// Plans (and for DDL, runs) `sql`; the last statement's result waits for `DoGet`.
    async fn plan_sql(
        &self,
        caller: &Caller,
        ctx: &SessionContext,
        sql: &str,
    ) -> Result<(String, SchemaRef), Status> {
        let planned = self.plan_statements(caller, ctx, sql).await;
        if planned.is_err() {
            framefusion_media::metrics::query_done(false);
        }
        planned
    }

    async fn plan_statements(
        &self,
        caller: &Caller,
        ctx: &SessionContext,
        sql: &str,
    ) -> Result<(String, SchemaRef), Status> {
        let statements = ctx.parse_script(sql).map_err(|e| status(&e))?;
        let count = statements.len();
        let mut last = None;
        for (i, statement) in statements.into_iter().enumerate() {
            let plan = ctx
                .plan_statement(statement)
                .await
                .map_err(|e| status(&e))?;
            check_locations(&plan, &self.confinement).map_err(|e| status(&e))?;
            let state = ctx.state();
            let on_cluster = |e| status(&with_unreachable_cluster(state.config(), e));
            let df = ctx.execute_plan(plan).await.map_err(on_cluster)?;
            if i + 1 == count {
                last = Some(df);
            } else {
                // a COPY or INSERT before the last statement writes now; a query's rows
                // are dropped
                df.collect().await.map_err(on_cluster)?;
            }
        }
        let df = last.ok_or_else(|| Status::invalid_argument("no SQL statement given"))?;
        self.park(caller, df).await
    }

    async fn park(&self, caller: &Caller, df: DataFrame) -> Result<(String, SchemaRef), Status> {
        let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
        let handle = self.handle(caller);
        self.pending.lock().await.insert(
            handle.clone(),
            Pending {
                owner: caller.token.clone(),
                df,
            },
        );
        Ok((handle, schema))
    }

    fn flight_info(
        handle: &str,
        schema: &Schema,
        descriptor: FlightDescriptor,
    ) -> Result<FlightInfo, Status> {
        let ticket = TicketStatementQuery {
            statement_handle: handle.as_bytes().to_vec().into(),
        };
        let endpoint =
            FlightEndpoint::new().with_ticket(Ticket::new(ticket.as_any().encode_to_vec()));
        FlightInfo::new()
            .try_with_schema(schema)
            .map_err(internal)
            .map(|info| {
                info.with_endpoint(endpoint)
                    .with_descriptor(descriptor)
                    .with_ordered(true)
            })
    }

    /// Runs a parked statement and streams its batches.
    async fn stream(&self, caller: &Caller, handle: &str) -> Result<FlightDataStream, Status> {
        let pending = {
            let mut pending = self.pending.lock().await;
            match pending.get(handle) {
                Some(p) if p.owner == caller.token => pending.remove(handle),
                Some(_) => None,
                None => None,
            }
        }
        .ok_or_else(|| {
            Status::not_found(format!(
                "no statement '{handle}' is waiting in this session (each ticket is good for one DoGet; it may have been cancelled)"
            ))
        })?;
        let config = pending.df.task_ctx().session_config().clone();
        let stream = match pending.df.execute_stream().await {
            Ok(stream) => stream,
            Err(e) => {
                framefusion_media::metrics::query_done(false);
                return Err(status(&with_unreachable_cluster(&config, e)));
            }
        };
        let schema = stream.schema();
        let failed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let seen = Arc::clone(&failed);
        let (abort, registration) = AbortHandle::new_pair();
        self.running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(handle.to_owned(), abort.clone());
        self.running_count.fetch_add(1, Ordering::SeqCst);
        let guard = RunningGuard {
            handle: handle.to_owned(),
            running: Arc::clone(&self.running),
            count: Arc::clone(&self.running_count),
        };
        let batches = futures::stream::Abortable::new(stream, registration)
            .map_err(move |e| {
                seen.store(true, Ordering::SeqCst);
                FlightError::Tonic(Box::new(status(&with_unreachable_cluster(&config, e))))
            })
            .chain(
                futures::stream::once(async move {
                    let _guard = guard;
                    framefusion_media::metrics::query_done(
                        !failed.load(Ordering::SeqCst) && !abort.is_aborted(),
                    );
                    abort.is_aborted().then(|| {
                        Err(FlightError::Tonic(Box::new(Status::cancelled(
                            "the query was cancelled by its client",
                        ))))
                    })
                })
                .filter_map(futures::future::ready),
            );
        let encoded = FlightDataEncoderBuilder::new()
            .with_schema(schema)
            .build(batches)
            .map_err(Status::from);
        Ok(Box::pin(encoded))
    }

    fn batch_stream(
        schema: SchemaRef,
        batch: Result<datafusion::arrow::array::RecordBatch, FlightError>,
    ) -> FlightDataStream {
        let stream = FlightDataEncoderBuilder::new()
            .with_schema(schema)
            .build(futures::stream::once(async move { batch }))
            .map_err(Status::from);
        Box::pin(stream)
    }

    /// Cancels the statement a FlightInfo's ticket names.
    async fn cancel(&self, caller: &Caller, info: Option<FlightInfo>) -> Result<bool, Status> {
        let handle = info
            .and_then(|i| i.endpoint.into_iter().next())
            .and_then(|e| e.ticket)
            .and_then(|t| Any::decode(t.ticket).ok())
            .and_then(|any| any.unpack::<TicketStatementQuery>().ok().flatten())
            .and_then(|t| String::from_utf8(t.statement_handle.to_vec()).ok())
            .ok_or_else(|| {
                Status::invalid_argument(
                    "the FlightInfo to cancel names no statement of this server",
                )
            })?;
        let session_tag = &caller.token[..caller.token.len().min(8)];
        if !handle.ends_with(session_tag) {
            return Err(Status::permission_denied(
                "a statement of another session cannot be cancelled",
            ));
        }
        if self.pending.lock().await.remove(&handle).is_some() {
            return Ok(true);
        }
        let running = self
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&handle)
            .cloned();
        Ok(running.map(|abort| abort.abort()).is_some())
    }

    async fn metadata_info(
        &self,
        schema: SchemaRef,
        any: Any,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.session(&request).await?;
        let endpoint = FlightEndpoint::new().with_ticket(Ticket::new(any.encode_to_vec()));
        let info = FlightInfo::new()
            .try_with_schema(&schema)
            .map_err(internal)?
            .with_endpoint(endpoint)
            .with_descriptor(request.into_inner());
        Ok(Response::new(info))
    }
}

#[tonic::async_trait]
impl FlightSqlService for FrameFusionFlightSql {
    type FlightService = FrameFusionFlightSql;

    async fn do_handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<
        Response<Pin<Box<dyn Stream<Item = Result<HandshakeResponse, Status>> + Send>>>,
        Status,
    > {
        let caller = self.auth.handshake(request.metadata())?;
        // sessions of expired tokens go
        let expired = self.auth.expire();
        if !expired.is_empty() {
            let mut sessions = self.sessions.lock().await;
            for token in expired {
                sessions.remove(&token);
            }
        }
        let reply = HandshakeResponse {
            protocol_version: 0,
            payload: caller.token.clone().into(),
        };
        let mut response: Response<Pin<Box<dyn Stream<Item = _> + Send>>> =
            Response::new(Box::pin(futures::stream::iter(vec![Ok(reply)])));
        let header = format!("Bearer {}", caller.token)
            .parse()
            .map_err(internal)?;
        response.metadata_mut().insert("authorization", header);
        Ok(response)
    }

    async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let (caller, ctx) = self.session(&request).await?;
        let (handle, schema) = self.plan_sql(&caller, &ctx, &query.query).await?;
        let info = Self::flight_info(&handle, &schema, request.into_inner())?;
        Ok(Response::new(info))
    }

    async fn do_get_statement(
        &self,
        ticket: TicketStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let (caller, _) = self.session(&request).await?;
        let handle = String::from_utf8(ticket.statement_handle.to_vec())
            .map_err(|_| Status::invalid_argument("malformed statement handle"))?;
        Ok(Response::new(self.stream(&caller, &handle).await?))
    }

    async fn do_put_statement_update(
        &self,
        command: CommandStatementUpdate,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        let Some(batches) = self.run_to_end(&request, &command.query).await? else {
            return Ok(-1);
        };
        // DML returns its row count in a `count` column; DDL returns nothing
        let count = batches
            .first()
            .filter(|b| b.num_columns() == 1 && b.num_rows() == 1)
            .and_then(|b| {
                b.column(0)
                    .as_any()
                    .downcast_ref::<datafusion::arrow::array::UInt64Array>()
                    .map(|a| i64::try_from(a.value(0)).unwrap_or(i64::MAX))
            })
            .unwrap_or(-1);
        Ok(count)
    }

    async fn do_action_create_prepared_statement(
        &self,
        query: ActionCreatePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        let (caller, ctx) = self.session(&request).await?;
        let sql = number_placeholders(&query.query);
        let mut statements = ctx.parse_script(&sql).map_err(|e| status(&e))?;
        if statements.len() != 1 {
            return Err(Status::invalid_argument(
                "a prepared statement is one SQL statement",
            ));
        }
        let statement = statements
            .pop_front()
            .ok_or_else(|| Status::invalid_argument("no SQL statement given"))?;
        let plan = ctx
            .state()
            .statement_to_plan(statement)
            .await
            .map_err(|e| status(&e))?;
        check_locations(&plan, &self.confinement).map_err(|e| status(&e))?;
        let types = plan.get_parameter_types().map_err(|e| status(&e))?;
        let mut fields: Vec<(usize, Field)> = types
            .into_iter()
            .map(|(id, ty)| {
                let n = id.trim_start_matches('$').parse::<usize>().unwrap_or(0);
                (n, Field::new(id, ty.unwrap_or(DataType::Null), true))
            })
            .collect();
        fields.sort_by_key(|(n, _)| *n);
        let parameter_schema =
            Schema::new(fields.iter().map(|(_, f)| f.clone()).collect::<Vec<_>>());
        let dataset_schema = plan.schema().as_arrow().clone();
        let options = IpcWriteOptions::default();
        let IpcMessage(dataset) = SchemaAsIpc::new(&dataset_schema, &options)
            .try_into()
            .map_err(internal)?;
        let IpcMessage(parameters) = SchemaAsIpc::new(&parameter_schema, &options)
            .try_into()
            .map_err(internal)?;
        let handle = self.handle(&caller);
        self.prepared.lock().await.insert(
            handle.clone(),
            Prepared {
                owner: caller.token.clone(),
                plan,
                parameters: fields.len(),
                values: None,
            },
        );
        Ok(ActionCreatePreparedStatementResult {
            prepared_statement_handle: handle.into_bytes().into(),
            dataset_schema: dataset,
            parameter_schema: parameters,
        })
    }

    async fn do_put_prepared_statement_query(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<DoPutPreparedStatementResult, Status> {
        let (caller, _) = self.session(&request).await?;
        let handle = String::from_utf8(query.prepared_statement_handle.to_vec())
            .map_err(|_| Status::invalid_argument("malformed prepared statement handle"))?;
        let stream = request.into_inner().map_err(FlightError::from);
        let batches: Vec<_> = FlightRecordBatchStream::new_from_flight_data(stream)
            .try_collect()
            .await
            .map_err(|e| Status::invalid_argument(format!("cannot read the parameters: {e}")))?;
        let Some(batch) = batches.iter().find(|b| b.num_rows() > 0) else {
            return Err(Status::invalid_argument("no parameter values were sent"));
        };
        if batch.num_rows() > 1 || batches.iter().map(|b| b.num_rows()).sum::<usize>() > 1 {
            return Err(Status::invalid_argument(
                "one row of parameters per execution is supported",
            ));
        }
        let values = batch
            .columns()
            .iter()
            .map(|c| ScalarValue::try_from_array(c, 0))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| status(&e))?;
        let mut prepared = self.prepared.lock().await;
        let statement = prepared
            .get_mut(&handle)
            .filter(|p| p.owner == caller.token)
            .ok_or_else(|| {
                Status::not_found(format!("no prepared statement '{handle}' in this session"))
            })?;
        if values.len() != statement.parameters {
            return Err(Status::invalid_argument(format!(
                "the statement takes {} parameter(s), {} were sent",
                statement.parameters,
                values.len()
            )));
        }
        statement.values = Some(values);
        Ok(DoPutPreparedStatementResult {
            prepared_statement_handle: Some(handle.into_bytes().into()),
        })
    }

    async fn get_flight_info_prepared_statement(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let (caller, ctx) = self.session(&request).await?;
        let handle = String::from_utf8(query.prepared_statement_handle.to_vec())
            .map_err(|_| Status::invalid_argument("malformed prepared statement handle"))?;
        let plan = {
            let prepared = self.prepared.lock().await;
            let statement = prepared
                .get(&handle)
                .filter(|p| p.owner == caller.token)
                .ok_or_else(|| {
                    Status::not_found(format!("no prepared statement '{handle}' in this session"))
                })?;
            match (&statement.values, statement.parameters) {
                (_, 0) => statement.plan.clone(),
                (Some(values), _) => statement
                    .plan
                    .clone()
                    .with_param_values(values.clone())
                    .map_err(|e| status(&e))?,
                (None, n) => {
                    return Err(Status::invalid_argument(format!(
                        "bind the statement's {n} parameter(s) first"
                    )));
                }
            }
        };
        let df = ctx.execute_plan(plan).await.map_err(|e| status(&e))?;
        let (handle, schema) = self.park(&caller, df).await?;
        let info = Self::flight_info(&handle, &schema, request.into_inner())?;
        Ok(Response::new(info))
    }

    async fn do_action_close_prepared_statement(
        &self,
        query: ActionClosePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<(), Status> {
        let (caller, _) = self.session(&request).await?;
        let handle =
            String::from_utf8(query.prepared_statement_handle.to_vec()).unwrap_or_default();
        let mut prepared = self.prepared.lock().await;
        if prepared
            .get(&handle)
            .is_some_and(|p| p.owner == caller.token)
        {
            prepared.remove(&handle);
        }
        Ok(())
    }

    async fn do_action_cancel_query(
        &self,
        query: ActionCancelQueryRequest,
        request: Request<Action>,
    ) -> Result<ActionCancelQueryResult, Status> {
        let (caller, _) = self.session(&request).await?;
        let info = FlightInfo::decode(query.info)
            .map_err(|e| Status::invalid_argument(format!("malformed FlightInfo: {e}")))?;
        let cancelled = self.cancel(&caller, Some(info)).await?;
        Ok(ActionCancelQueryResult {
            result: if cancelled {
                CANCEL_RESULT_CANCELLED
            } else {
                CANCEL_RESULT_NOT_CANCELLABLE
            },
        })
    }

    async fn do_action_fallback(
        &self,
        request: Request<Action>,
    ) -> Result<Response<<Self as FlightService>::DoActionStream>, Status> {
        let (caller, _) = self.session(&request).await?;
        let action = request.into_inner();
        let body: Vec<u8> = match action.r#type.as_str() {
            "CancelFlightInfo" => {
                let cancel = CancelFlightInfoRequest::decode(action.body)
                    .map_err(|e| Status::invalid_argument(format!("malformed request: {e}")))?;
                let cancelled = self.cancel(&caller, cancel.info).await?;
                let status = if cancelled {
                    CancelStatus::Cancelled
                } else {
                    CancelStatus::NotCancellable
                };
                CancelFlightInfoResult {
                    status: status as i32,
                }
                .encode_to_vec()
            }
            RUNNING_QUERIES_ACTION => self
                .running_count
                .load(Ordering::SeqCst)
                .to_string()
                .into_bytes(),
            other => {
                return Err(Status::unimplemented(format!("unknown action '{other}'")));
            }
        };
        let result = arrow_flight::Result { body: body.into() };
        Ok(Response::new(Box::pin(futures::stream::iter(vec![Ok(
            result,
        )]))))
    }

    async fn get_flight_info_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.into_builder().schema();
        self.metadata_info(schema, query.as_any(), request).await
    }

    async fn do_get_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let (_, ctx) = self.session(&request).await?;
        let mut builder = query.into_builder();
        let mut names = ctx.catalog_names();
        names.sort();
        for name in names {
            builder.append(name);
        }
        let schema = builder.schema();
        Ok(Response::new(Self::batch_stream(schema, builder.build())))
    }

    async fn get_flight_info_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder().schema();
        self.metadata_info(schema, query.as_any(), request).await
    }

    async fn do_get_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let (_, ctx) = self.session(&request).await?;
        let mut builder = query.into_builder();
        for catalog_name in ctx.catalog_names() {
            if let Some(catalog) = ctx.catalog(&catalog_name) {
                for schema_name in catalog.schema_names() {
                    builder.append(&catalog_name, schema_name);
                }
            }
        }
        let schema = builder.schema();
        Ok(Response::new(Self::batch_stream(schema, builder.build())))
    }

    async fn get_flight_info_tables(
        &self,
        query: CommandGetTables,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder().schema();
        self.metadata_info(schema, query.as_any(), request).await
    }

    async fn do_get_tables(
        &self,
        query: CommandGetTables,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let (_, ctx) = self.session(&request).await?;
        let include_schema = query.include_schema;
        let mut builder = query.into_builder();
        for catalog_name in ctx.catalog_names() {
            let Some(catalog) = ctx.catalog(&catalog_name) else {
                continue;
            };
            for schema_name in catalog.schema_names() {
                let Some(schema) = catalog.schema(&schema_name) else {
                    continue;
                };
                for table_name in schema.table_names() {
                    let Ok(Some(table)) = schema.table(&table_name).await else {
                        continue; // dropped meanwhile
                    };
                    let table_type = match table.table_type() {
                        TableType::Base => "TABLE",
                        TableType::View => "VIEW",
                        TableType::Temporary => "LOCAL TEMPORARY",
                    };
                    let table_schema = if include_schema {
                        table.schema()
                    } else {
                        Arc::new(Schema::empty())
                    };
                    builder
                        .append(
                            &catalog_name,
                            &schema_name,
                            &table_name,
                            table_type,
                            &table_schema,
                        )
                        .map_err(internal)?;
                }
            }
        }
        let schema = builder.schema();
        Ok(Response::new(Self::batch_stream(schema, builder.build())))
    }

    async fn get_flight_info_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.into_builder().schema();
        self.metadata_info(schema, query.as_any(), request).await
    }

    async fn do_get_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.session(&request).await?;
        let mut builder = query.into_builder();
        for t in ["LOCAL TEMPORARY", "TABLE", "VIEW"] {
            builder.append(t);
        }
        let schema = builder.schema();
        Ok(Response::new(Self::batch_stream(schema, builder.build())))
    }

    async fn get_flight_info_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder(&self.sql_info).schema();
        self.metadata_info(schema, query.as_any(), request).await
    }

    async fn do_get_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.session(&request).await?;
        let builder = query.into_builder(&self.sql_info);
        let schema = builder.schema();
        Ok(Response::new(Self::batch_stream(schema, builder.build())))
    }

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn question_marks_become_numbered_placeholders() {
        assert_eq!(
            number_placeholders("SELECT ? + 1, '?', \"a?\" FROM t WHERE x = ? -- why?\nAND y = ?"),
            "SELECT $1 + 1, '?', \"a?\" FROM t WHERE x = $2 -- why?\nAND y = $3"
        );
        // quotes escaped by doubling, block comments, characters of several bytes
        assert_eq!(
            number_placeholders("SELECT 'it''s ?', /* ? */ 'é', ? FROM t WHERE n = ?"),
            "SELECT 'it''s ?', /* ? */ 'é', $1 FROM t WHERE n = $2"
        );
    }
}
