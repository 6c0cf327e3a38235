//! `framefusion scheduler`, `framefusion executor` and `framefusion cluster`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use clap::{Args, ValueEnum};
use framefusion_engine::cluster::{
    ExecutorOptions, SchedulerOptions, Scheduling, run_executor, run_scheduler, wait_for_executors,
};
use framefusion_engine::placement::Pool;

use crate::CliError;

/// Task scheduling policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum Policy {
    /// Executors pull tasks when they have free slots.
    #[default]
    Pull,
    /// The scheduler pushes tasks to executors.
    Push,
}

impl From<Policy> for Scheduling {
    fn from(p: Policy) -> Self {
        match p {
            Policy::Pull => Scheduling::Pull,
            Policy::Push => Scheduling::Push,
        }
    }
}

/// Arguments of `framefusion scheduler`.
#[derive(Debug, Args)]
pub struct SchedulerArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:50050")]
    bind: SocketAddr,
    /// Host name executors and clients use to reach this scheduler.
    #[arg(long, default_value = "localhost")]
    external_host: String,
    /// Pull (executors poll for tasks) or push scheduling.
    #[arg(long, value_enum, default_value_t = Policy::Pull)]
    scheduling: Policy,
    /// Seconds without a heartbeat before an executor is declared lost and its work retried.
    #[arg(long, default_value_t = 10)]
    executor_timeout: u64,
    /// Serve `/metrics` (Prometheus: pending tasks and live executors per pool, for
    /// autoscalers) and `/healthz` over HTTP on this address (port 0 picks a free port;
    /// the address is printed).
    #[arg(long, value_name = "ADDR", env = "FRAMEFUSION_METRICS_ADDR")]
    metrics: Option<std::net::SocketAddr>,
}

/// Arguments of `framefusion executor`.
#[derive(Debug, Args)]
pub struct ExecutorArgs {
    /// Scheduler address (host:port).
    #[arg(long, default_value = "localhost:50050")]
    scheduler: String,
    /// Host to bind.
    #[arg(long, default_value = "127.0.0.1")]
    bind_host: String,
    /// Host name others use to reach this executor (default: the bind host).
    #[arg(long)]
    external_host: Option<String>,
    /// Arrow Flight port (0: any free port).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// gRPC port for push scheduling (0: any free port).
    #[arg(long, default_value_t = 0)]
    grpc_port: u16,
    /// Concurrent task slots (default: the number of cores).
    #[arg(long)]
    slots: Option<usize>,
    /// The executor's pool: the scheduler sends the query stages that run a model (text,
    /// faces, speech, ONNX functions) to `gpu` executors and the others to `cpu` ones; a
    /// pool without executors leaves its stages to the other.
    #[arg(
        long,
        value_name = "cpu|gpu",
        env = "FRAMEFUSION_EXECUTOR_POOL",
        default_value = "cpu"
    )]
    pool: Pool,
    /// Folder for shuffle files (default: a temporary folder).
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Must match the scheduler's.
    #[arg(long, value_enum, default_value_t = Policy::Pull)]
    scheduling: Policy,
    /// Seconds between heartbeats.
    #[arg(long, default_value_t = 2)]
    heartbeat: u64,
    /// Confine this executor process to these folders and s3:// prefixes (repeatable):
    /// video operators refuse every other location, whatever a query's session allows
    /// (a Flight SQL server's sessions carry its own --allow-root to the executors
    /// already; this is the executor host's own guard).
    #[arg(
        long = "allow-root",
        value_name = "LOCATION",
        env = "FRAMEFUSION_ALLOW_ROOTS",
        value_delimiter = ','
    )]
    allowed_roots: Vec<String>,
    /// Serve `/metrics` (Prometheus) and `/healthz` over HTTP on this address (port 0
    /// picks a free port; the address is printed).
    #[arg(long, value_name = "ADDR", env = "FRAMEFUSION_METRICS_ADDR")]
    metrics: Option<std::net::SocketAddr>,
    /// Seconds a stopping executor (SIGTERM) lets its running tasks finish before it exits
    /// anyway; it takes no new task from the signal on.
    #[arg(
        long,
        value_name = "SECONDS",
        env = "FRAMEFUSION_DRAIN_TIMEOUT",
        default_value_t = 300
    )]
    drain_timeout: u64,
}

/// Arguments of `framefusion cluster`.
#[derive(Debug, Args)]
pub struct ClusterArgs {
    /// Number of executor processes.
    #[arg(long, default_value_t = 2)]
    executors: usize,
    /// Scheduler address.
    #[arg(long, default_value = "127.0.0.1:50050")]
    bind: SocketAddr,
    /// Task slots per executor (default: cores / executors, at least 1).
    #[arg(long)]
    slots: Option<usize>,
    /// Pull or push scheduling.
    #[arg(long, value_enum, default_value_t = Policy::Pull)]
    scheduling: Policy,
    /// Seconds without a heartbeat before an executor is declared lost.
    #[arg(long, default_value_t = 10)]
    executor_timeout: u64,
}

/// Runs `framefusion scheduler`.
pub async fn scheduler(args: SchedulerArgs) -> Result<(), CliError> {
    if let Some(addr) = args.metrics {
        crate::http::spawn_metrics(addr, "scheduler metrics").await?;
    }
    run_scheduler(SchedulerOptions {
        bind: args.bind,
        external_host: args.external_host,
        scheduling: args.scheduling.into(),
        executor_timeout_s: args.executor_timeout,
    })
    .await?;
    Ok(())
}

/// Runs `framefusion executor`.
pub async fn executor(args: ExecutorArgs) -> Result<(), CliError> {
    let (host, port) = args
        .scheduler
        .rsplit_once(':')
        .and_then(|(h, p)| p.parse::<u16>().ok().map(|p| (h.to_owned(), p)))
        .ok_or_else(|| {
            CliError::Usage(format!(
                "--scheduler '{}' must be host:port",
                args.scheduler
            ))
        })?;
    if !args.allowed_roots.is_empty() {
        let roots = args
            .allowed_roots
            .iter()
            .map(|r| {
                framefusion_media::source::Root::parse(r)
                    .map_err(|e| CliError::Usage(format!("--allow-root '{r}': {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        framefusion_media::source::confine_to(roots);
    }
    let defaults = ExecutorOptions::default();
    if let Some(addr) = args.metrics {
        crate::http::spawn(addr, "executor metrics", defaults.health.clone()).await?;
    }
    run_executor(ExecutorOptions {
        bind_host: args.bind_host,
        external_host: args.external_host,
        flight_port: args.port,
        grpc_port: args.grpc_port,
        scheduler_host: host,
        scheduler_port: port,
        slots: args.slots.unwrap_or(defaults.slots),
        pool: args.pool,
        work_dir: args.work_dir.map(|p| p.display().to_string()),
        scheduling: args.scheduling.into(),
        heartbeat_s: args.heartbeat,
        drain_timeout_s: args.drain_timeout,
        health: defaults.health,
    })
    .await?;
    Ok(())
}

/// Runs `framefusion cluster`: a scheduler and N executors as child processes of this one,
/// until Ctrl-C or SIGTERM, then stops them all.
pub async fn cluster(args: ClusterArgs) -> Result<(), CliError> {
    if args.executors == 0 {
        return Err(CliError::Usage("--executors must be at least 1".to_owned()));
    }
    let exe = std::env::current_exe().map_err(|source| CliError::Io {
        context: "cannot find the framefusion binary".to_owned(),
        source,
    })?;
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let slots = args.slots.unwrap_or((cores / args.executors).max(1));
    let scheduling = match args.scheduling {
        Policy::Pull => "pull",
        Policy::Push => "push",
    };
    let spawn = |what: &str, cmd: &mut tokio::process::Command| {
        cmd.stdin(Stdio::null())
            .kill_on_drop(true)
            // own process group: a terminal's Ctrl-C reaches only this process, which then
            // stops the children in order (executors first, so they deregister)
            .process_group(0)
            .spawn()
            .map_err(|source| CliError::Io {
                context: format!("cannot start the {what}"),
                source,
            })
    };
    let mut children = Vec::new();
    children.push(spawn(
        "scheduler",
        tokio::process::Command::new(&exe).args([
            "scheduler",
            "--bind",
            &args.bind.to_string(),
            "--scheduling",
            scheduling,
            "--executor-timeout",
            &args.executor_timeout.to_string(),
        ]),
    )?);
    let scheduler = format!("{}:{}", args.bind.ip(), args.bind.port());
    // executors start once the scheduler listens
    let listening = async {
        while tokio::net::TcpStream::connect(args.bind).await.is_err() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let started = tokio::select! {
        () = listening => Ok(()),
        () = wait_for_exit(&mut children) => Err(format!("the scheduler exited during start-up (is {} already in use?)", args.bind)),
        () = tokio::time::sleep(Duration::from_secs(30)) => Err(format!("the scheduler did not listen on {} within 30 s", args.bind)),
    };
    if let Err(message) = started {
        stop_all(children).await;
        return Err(CliError::Usage(message));
    }
    for i in 0..args.executors {
        children.push(spawn(
            &format!("executor {i}"),
            tokio::process::Command::new(&exe).args([
                "executor",
                "--scheduler",
                &scheduler,
                "--bind-host",
                &args.bind.ip().to_string(),
                "--slots",
                &slots.to_string(),
                "--scheduling",
                scheduling,
            ]),
        )?);
    }
    let ready = wait_for_executors(&scheduler, args.executors, Duration::from_secs(60));
    let result = tokio::select! {
        r = ready => r.map_err(CliError::from).map(|()| {
            eprintln!(
                "framefusion cluster ready: scheduler df://{scheduler}, {} executor(s) x {slots} slots ({scheduling} scheduling). Ctrl-C stops it.",
                args.executors
            );
        }),
        () = wait_for_exit(&mut children) => Err(CliError::Usage("a cluster process exited during start-up".to_owned())),
    };
    if result.is_ok() {
        tokio::select! {
            () = crate::shutdown_signal() => eprintln!("framefusion cluster stopping"),
            () = wait_for_exit(&mut children) => eprintln!("framefusion cluster: a process exited; stopping the others"),
        }
    }
    stop_all(children).await;
    result
}

async fn wait_for_exit(children: &mut [tokio::process::Child]) {
    loop {
        for child in children.iter_mut() {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Stops the children: SIGTERM to the executors (they deregister from the scheduler),
/// then to the scheduler (the first child); SIGKILL to any still alive after a grace period.
async fn stop_all(mut children: Vec<tokio::process::Child>) {
    if children.is_empty() {
        return;
    }
    let mut scheduler = children.remove(0);
    for child in &children {
        if let Some(pid) = child.id() {
            crate::terminate(pid);
        }
    }
    for child in &mut children {
        stop(child, Duration::from_secs(10)).await;
    }
    if let Some(pid) = scheduler.id() {
        crate::terminate(pid);
    }
    stop(&mut scheduler, Duration::from_secs(5)).await;
}

async fn stop(child: &mut tokio::process::Child, grace: Duration) {
    if tokio::time::timeout(grace, child.wait()).await.is_err() {
        let _ = child.kill().await;
    }
}
