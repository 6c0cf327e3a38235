//! The `framefusion` command-line tool.
//!
//! ```text
//! framefusion sql "CREATE EXTERNAL TABLE v STORED AS VIDEO LOCATION '/data/videos'; SELECT * FROM v"
//! framefusion sql -f job.sql --format parquet --output probe.parquet
//! framefusion run job.sql --output s3://corpus/manifests/run-42/   # resumable
//! framefusion serve --bind 0.0.0.0:50060 --user ana:secret --allow-root /data/videos
//! ```
//!
//! ```text
//! framefusion cluster --executors 2            # scheduler on 127.0.0.1:50050
//! framefusion sql --cluster df://127.0.0.1:50050 -f job.sql
//! ```
//!
//! Errors are one line on stderr (`error: ...`) and exit status 1; the tool never prints
//! a panic message or a backtrace.

mod catalog_args;
mod cluster;
mod http;
mod output;
mod run;
mod serve;
mod shell;
mod sql;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// framefusion: curate video corpora with SQL.
#[derive(Debug, Parser)]
#[command(name = "framefusion", version, about, long_about = None)]
struct Cli {
    /// Cores framefusion's CPU work may use in this process (decoding, pixel conversion,
    /// inference share them; default: the cores the process may use).
    #[arg(long, global = true, env = "FRAMEFUSION_THREADS", value_name = "N")]
    threads: Option<usize>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run SQL statements, embedded (default) or on a cluster (--cluster).
    Sql(sql::SqlArgs),
    /// Run a curation job and write its rows as a resumable Parquet manifest.
    Run(run::RunArgs),
    /// Serve the engine to remote clients over Arrow Flight SQL.
    Serve(serve::ServeArgs),
    /// Run a Ballista scheduler that carries framefusion's tables and functions.
    Scheduler(cluster::SchedulerArgs),
    /// Run a Ballista executor that carries framefusion's tables and functions.
    Executor(cluster::ExecutorArgs),
    /// Run a scheduler and N executors on this machine until Ctrl-C.
    Cluster(cluster::ClusterArgs),
}

/// A failure of the tool, printed as one line.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// An engine error (planning, execution, bad input).
    #[error("{}", framefusion_engine::user_message(.0))]
    Engine(#[from] datafusion::error::DataFusionError),
    /// Bad command-line usage.
    #[error("{0}")]
    Usage(String),
    /// Reading input or writing output failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being read or written.
        context: String,
        /// The underlying error.
        source: std::io::Error,
    },
}

fn main() -> ExitCode {
    // A bug must still be one line, not a panic message with a backtrace.
    std::panic::set_hook(Box::new(|info| {
        let payload = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        let location = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        eprintln!(
            "error: internal error: {payload}{location} (this is a framefusion bug; please report it)"
        );
    }));
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();

    let cli = Cli::parse();
    framefusion_media::cpu::configure(cli.threads.unwrap_or(0));
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Sql(args) => sql::run(args).await,
            Command::Run(args) => run::run(args).await,
            Command::Serve(args) => serve::run(args).await,
            Command::Scheduler(args) => cluster::scheduler(args).await,
            Command::Executor(args) => cluster::executor(args).await,
            Command::Cluster(args) => cluster::cluster(args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Resolves on Ctrl-C or SIGTERM.
pub use framefusion_engine::cluster::shutdown_signal;

/// Sends SIGTERM to a child process.
pub fn terminate(pid: u32) {
    if let Ok(pid) = libc::pid_t::try_from(pid) {
        // SAFETY: kill(2) with a pid we spawned and a valid signal number has no memory effects.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
    }
}
