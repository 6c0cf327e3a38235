//! Ballista scheduler and executor processes that carry framefusion: its UDFs, the
//! `VIDEO` table type and scan (through [`crate::codec`]), and the `video.*` options.
//!
//! Both run until they receive Ctrl-C or SIGTERM.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ballista_core::registry::BallistaFunctionRegistry;
use ballista_core::{ConfigProducer, config::TaskSchedulingPolicy};
use ballista_executor::executor_process::{ExecutorProcessConfig, start_executor_process};
use ballista_scheduler::cluster::BallistaCluster;
use ballista_scheduler::config::{SchedulerConfig, TaskDistributionPolicy};
use ballista_scheduler::scheduler_process::create_scheduler;
use ballista_scheduler::scheduler_server::SchedulerServer;
use datafusion::error::{DataFusionError, Result};
use datafusion_proto::protobuf::{LogicalPlanNode, PhysicalPlanNode};

use crate::codec::{FrameFusionLogicalCodec, FrameFusionPhysicalCodec};
use crate::placement::{Pool, PoolPlacement};
use crate::session::{ballista_session_config, scheduler_session_state};

/// How executors get tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Scheduling {
    /// Executors poll the scheduler for work when they have free slots (the default): a
    /// fast executor simply takes more tasks.
    #[default]
    Pull,
    /// The scheduler pushes tasks to executors (lower latency per task).
    Push,
}

impl From<Scheduling> for TaskSchedulingPolicy {
    fn from(s: Scheduling) -> Self {
        match s {
            Scheduling::Pull => TaskSchedulingPolicy::PullStaged,
            Scheduling::Push => TaskSchedulingPolicy::PushStaged,
        }
    }
}

/// Settings of a scheduler process.
#[derive(Debug, Clone)]
pub struct SchedulerOptions {
    /// Address to listen on (gRPC and the REST API share it).
    pub bind: SocketAddr,
    /// Host name executors and clients use to reach this scheduler.
    pub external_host: String,
    /// Pull (default) or push scheduling.
    pub scheduling: Scheduling,
    /// Seconds without a heartbeat after which an executor is declared lost and its
    /// tasks are rescheduled.
    pub executor_timeout_s: u64,
}

impl Default for SchedulerOptions {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 50050)),
            external_host: "localhost".to_owned(),
            scheduling: Scheduling::Pull,
            executor_timeout_s: 10,
        }
    }
}

/// Settings of an executor process.
#[derive(Debug, Clone)]
pub struct ExecutorOptions {
    /// Host to bind (Flight service and gRPC).
    pub bind_host: String,
    /// Host name others use to reach this executor (default: the bind host).
    pub external_host: Option<String>,
    /// Arrow Flight port (shuffle and result reads); 0 picks a free one.
    pub flight_port: u16,
    /// gRPC port (push scheduling); 0 picks a free one.
    pub grpc_port: u16,
    /// Scheduler host.
    pub scheduler_host: String,
    /// Scheduler port.
    pub scheduler_port: u16,
    /// Concurrent task slots.
    pub slots: usize,
    /// The pool this executor belongs to: the scheduler sends the stages that run a model
    /// to `gpu` executors, the others to `cpu` ones ([`crate::placement`]).
    pub pool: Pool,
    /// Folder for shuffle files (default: a temporary folder).
    pub work_dir: Option<String>,
    /// Must match the scheduler's.
    pub scheduling: Scheduling,
    /// Seconds between heartbeats to the scheduler.
    pub heartbeat_s: u64,
    /// Seconds a stopping executor (SIGTERM, Ctrl-C) lets its running tasks finish before
    /// it exits anyway (the scheduler then reruns what was left elsewhere).
    pub drain_timeout_s: u64,
    /// Readiness, for probes: ready once the scheduler acknowledged a heartbeat, not ready
    /// again from the stop signal on.
    pub health: ExecutorHealth,
}

/// Whether an executor is ready for work (see [`ExecutorOptions::health`]); clones share
/// the state.
#[derive(Clone, Default)]
pub struct ExecutorHealth {
    heartbeat: ballista_executor::health::ExecutorHealth,
    draining: Arc<AtomicBool>,
}

impl ExecutorHealth {
    /// Ready for tasks: registered (a heartbeat acknowledged) and not stopping.
    pub fn is_ready(&self) -> bool {
        self.heartbeat.is_ready() && !self.is_draining()
    }

    /// Stopping: running tasks finish, no new ones are taken.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }
}

impl std::fmt::Debug for ExecutorHealth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecutorHealth")
            .field("ready", &self.is_ready())
            .field("draining", &self.is_draining())
            .finish()
    }
}

impl Default for ExecutorOptions {
    fn default() -> Self {
        Self {
            bind_host: "127.0.0.1".to_owned(),
            external_host: None,
            flight_port: 50051,
            grpc_port: 50052,
            scheduler_host: "localhost".to_owned(),
            scheduler_port: 50050,
            slots: std::thread::available_parallelism().map_or(1, usize::from),
            pool: Pool::Cpu,
            work_dir: None,
            scheduling: Scheduling::Pull,
            heartbeat_s: 2,
            drain_timeout_s: 300,
            health: ExecutorHealth::default(),
        }
    }
}

fn ballista_err(e: ballista_core::error::BallistaError) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

/// The session configuration of a scheduler's or an executor's tasks, all in the runtime
/// of the process (`shared`: one set of store clients and one feature cache for every
/// task, as a task's own would decode a video again in each task of a query).
fn config_producer(shared: framefusion_common::shared::Shared) -> ConfigProducer {
    Arc::new(move || crate::session::sharing(ballista_session_config(), &shared))
}

/// The function registry of framefusion executors: DataFusion's functions (Ballista's
/// default leaves out the nested ones: `cardinality`, `array_*`, `make_array`, ...) and
/// every framefusion UDF.
pub fn executor_function_registry() -> Result<Arc<BallistaFunctionRegistry>> {
    // this registry refuses `register_udf`: its maps are filled directly
    let mut registry = BallistaFunctionRegistry::default();
    for udf in datafusion::functions_nested::all_default_nested_functions() {
        registry.scalar_functions.insert(udf.name().to_owned(), udf);
    }
    for udf in framefusion_udfs::scalar_udfs() {
        registry.scalar_functions.insert(udf.name().to_owned(), udf);
    }
    for udf in framefusion_dedup::scalar_udfs() {
        registry.scalar_functions.insert(udf.name().to_owned(), udf);
    }
    for udaf in framefusion_dedup::aggregate_udfs() {
        registry
            .aggregate_functions
            .insert(udaf.name().to_owned(), udaf);
    }
    Ok(Arc::new(registry))
}

/// The runtime of an executor's tasks: framefusion's object stores
/// ([`crate::stores::StoreRegistry`], with the buckets the client's session configured),
/// spill files under `work_dir` when one is given.
fn executor_runtime(work_dir: Option<String>) -> ballista_core::RuntimeProducer {
    Arc::new(move |config| {
        let mut builder = datafusion::execution::runtime_env::RuntimeEnvBuilder::new()
            .with_object_store_registry(Arc::new(crate::stores::StoreRegistry::for_config(config)));
        if let Some(dir) = &work_dir {
            builder = builder.with_temp_file_path(dir.clone());
        }
        builder.build_arc()
    })
}

/// Runs a scheduler until Ctrl-C or SIGTERM.
///
/// Its task distribution is [`PoolPlacement`] (stages that run a model on the GPU pool);
/// every second it publishes the pending work and live executors of each pool in the
/// process's metrics (`framefusion_pending_tasks`, `framefusion_executors`).
pub async fn run_scheduler(options: SchedulerOptions) -> Result<()> {
    let mut config = SchedulerConfig {
        bind_host: options.bind.ip().to_string(),
        bind_port: options.bind.port(),
        external_host: options.external_host.clone(),
        scheduling_policy: options.scheduling.into(),
        executor_timeout_seconds: options.executor_timeout_s,
        expire_dead_executor_interval_seconds: 1,
        no_executors_grace_period_seconds: options.executor_timeout_s,
        override_config_producer: Some(config_producer(framefusion_common::shared::Shared::new())),
        override_session_builder: Some(Arc::new(scheduler_session_state)),
        override_logical_codec: Some(Arc::new(FrameFusionLogicalCodec::default())),
        override_physical_codec: Some(Arc::new(FrameFusionPhysicalCodec::default())),
        ..Default::default()
    };
    let cluster = BallistaCluster::new_from_config(&config)
        .await
        .map_err(ballista_err)?;
    let placement = Arc::new(PoolPlacement::new(
        cluster.cluster_state(),
        Duration::from_secs(options.executor_timeout_s),
        options.scheduling == Scheduling::Push,
    ));
    config.task_distribution = TaskDistributionPolicy::Custom(placement.clone());
    config.validate().map_err(ballista_err)?;
    let scheduler =
        create_scheduler::<LogicalPlanNode, PhysicalPlanNode>(cluster, Arc::new(config))
            .await
            .map_err(ballista_err)?;
    let state = scheduler.state.clone();
    let gauges = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            let jobs = state.task_manager.get_running_job_cache();
            let pending = crate::placement::pending_partitions(&jobs).await;
            let live = placement.live_executors();
            for pool in Pool::ALL {
                framefusion_media::metrics::pool_state(
                    pool.name(),
                    pending.get(&pool).copied().unwrap_or(0) as u64,
                    live.get(&pool).copied().unwrap_or(0) as u64,
                );
            }
        }
    });
    log::info!(
        "framefusion scheduler listening on {} ({:?} scheduling, model stages on the gpu pool)",
        options.bind,
        options.scheduling
    );
    let result = tokio::select! {
        result = serve_scheduler(options.bind, scheduler) => result,
        () = shutdown_signal() => {
            log::info!("framefusion scheduler stopping");
            Ok(())
        }
    };
    gauges.abort();
    result
}

/// Serves a scheduler on `bind`: Ballista's gRPC service and REST API, the `/healthz`
/// and `/readyz` probes, and the runs' failure ledger ([`crate::ledger`]), all on one
/// port. (Ballista's own `start_grpc_service` serves a fixed set of routes; this serves the
/// same gRPC service and REST API with the ledger beside them. Its optional Flight proxy
/// and KEDA scaler are not built into framefusion's scheduler.)
async fn serve_scheduler(
    bind: SocketAddr,
    scheduler: SchedulerServer<LogicalPlanNode, PhysicalPlanNode>,
) -> Result<()> {
    use ballista_core::serde::protobuf::scheduler_grpc_server::SchedulerGrpcServer;
    let config = scheduler.state.config.clone();
    let grpc = SchedulerGrpcServer::new(scheduler.clone())
        .max_encoding_message_size(config.grpc_server_max_encoding_message_size as usize)
        .max_decoding_message_size(config.grpc_server_max_decoding_message_size as usize);
    let mut grpc_routes = tonic::service::RoutesBuilder::default();
    grpc_routes.add_service(grpc);
    let scheduler = Arc::new(scheduler);
    let ready = Arc::clone(&scheduler);
    let probes = axum::Router::new()
        .route("/healthz", axum::routing::get(|| async { "ok\n" }))
        .route(
            "/readyz",
            axum::routing::get(move || {
                let ready = Arc::clone(&ready);
                async move {
                    if ready.is_ready() {
                        (axum::http::StatusCode::OK, "ready\n".to_owned())
                    } else {
                        (
                            axum::http::StatusCode::SERVICE_UNAVAILABLE,
                            format!(
                                "not ready: fewer than {} executors registered\n",
                                ready.state.config.min_ready_executors
                            ),
                        )
                    }
                }
            }),
        );
    let app = ballista_scheduler::api::get_routes(scheduler)
        .merge(grpc_routes.routes().into_axum_router())
        .merge(probes)
        .merge(crate::ledger::routes());
    let listener = tokio::net::TcpListener::bind(bind).await?;
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await
    .map_err(DataFusionError::IoError)
}

/// Runs an executor until Ctrl-C or SIGTERM (it deregisters from the scheduler then).
pub async fn run_executor(options: ExecutorOptions) -> Result<()> {
    let flight_port = pick_port(&options.bind_host, options.flight_port)?;
    // failures of videos met here go to the scheduler's ledger, where runs take them
    crate::ledger::report_to_scheduler(&options.scheduler_host, options.scheduler_port)?;
    let grpc_port = pick_port(&options.bind_host, options.grpc_port)?;
    let config = ExecutorProcessConfig {
        executor_id: crate::placement::executor_id(options.pool),
        bind_host: options.bind_host.clone(),
        external_host: options
            .external_host
            .clone()
            .or_else(|| Some(options.bind_host.clone())),
        port: flight_port,
        grpc_port,
        scheduler_host: options.scheduler_host.clone(),
        scheduler_port: options.scheduler_port,
        scheduler_connect_timeout_seconds: 30,
        vcores: options.slots.max(1),
        task_scheduling_policy: options.scheduling.into(),
        work_dir: options.work_dir.clone(),
        executor_heartbeat_interval_seconds: options.heartbeat_s.max(1),
        print_thread_info: false,
        override_function_registry: Some(executor_function_registry()?),
        // every task's runtime resolves object stores as the client's session does
        override_runtime_producer: Some(executor_runtime(options.work_dir.clone())),
        override_config_producer: Some(config_producer(framefusion_common::shared::Shared::new())),
        override_logical_codec: Some(Arc::new(FrameFusionLogicalCodec::default())),
        override_physical_codec: Some(Arc::new(FrameFusionPhysicalCodec::default())),
        override_execution_engine: Some(counting_engine()),
        health: options.health.heartbeat.clone(),
        ..Default::default()
    };
    log::info!(
        "framefusion executor {} ({} pool) on {}:{flight_port} with {} slots, scheduler {}:{}",
        config.executor_id,
        options.pool,
        options.bind_host,
        config.vcores,
        options.scheduler_host,
        options.scheduler_port
    );
    // Ballista's executor process listens for the stop signal itself: it tells the
    // scheduler it is terminating (no new tasks), waits for the running ones, then stops its
    // shuffle service. The wait is bounded here by the drain timeout.
    let process = start_executor_process(Arc::new(config));
    tokio::pin!(process);
    tokio::select! {
        result = &mut process => return result.map_err(ballista_err),
        () = shutdown_signal() => {}
    }
    options.health.draining.store(true, Ordering::Release);
    log::info!(
        "framefusion executor stopping: running tasks get {} s to finish",
        options.drain_timeout_s
    );
    match tokio::time::timeout(Duration::from_secs(options.drain_timeout_s), &mut process).await {
        Ok(result) => result.map_err(ballista_err),
        Err(_) => {
            log::warn!(
                "framefusion executor: tasks still running after the {} s drain timeout; \
                 exiting (the scheduler reruns them on other executors)",
                options.drain_timeout_s
            );
            Ok(())
        }
    }
}

/// Ballista's default execution engine, its tasks counted in the executor's metrics.
///
/// Ballista builds its own default with a pool of shuffle-read clients, but that pool's
/// type is private to `ballista-executor`; this one opens a client per shuffle fetch (as
/// Ballista did before it pooled them), a few milliseconds per remote partition read,
/// small beside decoding the video a stage reads.
fn counting_engine() -> Arc<dyn ballista_executor::execution_engine::ExecutionEngine> {
    Arc::new(crate::task_metrics::CountingEngine::new(Arc::new(
        ballista_executor::execution_engine::DefaultExecutionEngine::new(),
    )))
}

/// `port`, or a free port on `host` when it is 0.
fn pick_port(host: &str, port: u16) -> Result<u16> {
    if port != 0 {
        return Ok(port);
    }
    let listener = std::net::TcpListener::bind((host, 0))?;
    Ok(listener.local_addr()?.port())
}

/// Resolves on Ctrl-C or SIGTERM (the one stop signal of every framefusion process).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}

/// The number of executors the scheduler at `addr` (`host:port`) has registered, read
/// from its REST API (`GET /api/executors`).
pub async fn registered_executors(addr: &str) -> Result<usize> {
    let url = format!("http://{addr}/api/executors");
    let failed = |e: String| DataFusionError::IoError(std::io::Error::other(format!("{url}: {e}")));
    let response = reqwest::Client::new()
        .get(&url)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .map_err(|e| failed(e.to_string()))?;
    if !response.status().is_success() {
        return Err(DataFusionError::Execution(format!(
            "scheduler at {addr} answered /api/executors with: {}",
            response.status()
        )));
    }
    let executors: Vec<serde_json::Value> = response.json().await.map_err(|e| {
        DataFusionError::Execution(format!("unexpected /api/executors answer from {addr}: {e}"))
    })?;
    Ok(executors.len())
}

/// Waits until the scheduler at `addr` has at least `n` executors, up to `timeout`.
pub async fn wait_for_executors(addr: &str, n: usize, timeout: std::time::Duration) -> Result<()> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let last = registered_executors(addr).await;
        if matches!(last, Ok(count) if count >= n) {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            let seen = last.map_or_else(
                |e| format!("no answer ({e})"),
                |c| format!("{c} registered"),
            );
            return Err(DataFusionError::Execution(format!(
                "the scheduler at {addr} did not get {n} executor(s) within {timeout:?}: {seen}"
            )));
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}
