//! A real local Ballista cluster for tests: one `framefusion scheduler` and N
//! `framefusion executor` processes on free loopback ports, killed when dropped.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::framefusion_bin;

/// A free loopback port (bound and released; the child binds it a moment later).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free port: {e}"))
}

/// A scheduler and executors, each a separate `framefusion` process.
pub struct TestCluster {
    scheduler: Child,
    executors: Vec<Child>,
    port: u16,
    metrics_port: u16,
    dir: tempfile::TempDir,
}

impl TestCluster {
    /// Starts a scheduler and `executors` executors with `slots` task slots each, and waits
    /// until every executor has registered. `executor_timeout_s` is how long the scheduler
    /// waits for a silent executor before rescheduling its work.
    pub async fn start(executors: usize, slots: usize, executor_timeout_s: u64) -> Self {
        Self::start_with_env(executors, slots, executor_timeout_s, &[]).await
    }

    /// [`TestCluster::start`], with extra environment variables for the executors.
    pub async fn start_with_env(
        executors: usize,
        slots: usize,
        executor_timeout_s: u64,
        executor_env: &[(&str, &str)],
    ) -> Self {
        Self::launch(executors, slots, executor_timeout_s, &[], executor_env).await
    }

    /// [`TestCluster::start`], with extra environment variables for every process (the
    /// scheduler plans scans, so it reads object stores too).
    pub async fn start_with_env_everywhere(
        executors: usize,
        slots: usize,
        executor_timeout_s: u64,
        env: &[(&str, &str)],
    ) -> Self {
        Self::launch(executors, slots, executor_timeout_s, env, env).await
    }

    async fn launch(
        executors: usize,
        slots: usize,
        executor_timeout_s: u64,
        scheduler_env: &[(&str, &str)],
        executor_env: &[(&str, &str)],
    ) -> Self {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let port = free_port();
        let metrics_port = free_port();
        let log_dir = dir.path().to_path_buf();
        let log = move |name: &str| {
            let file = std::fs::File::create(log_dir.join(format!("{name}.log")))
                .unwrap_or_else(|e| panic!("cannot create {name}.log: {e}"));
            Stdio::from(file)
        };
        let scheduler = Command::new(framefusion_bin())
            .args(["scheduler", "--bind", &format!("127.0.0.1:{port}")])
            .args(["--executor-timeout", &executor_timeout_s.to_string()])
            .args(["--metrics", &format!("127.0.0.1:{metrics_port}")])
            .envs(scheduler_env.iter().copied())
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdout(log("scheduler"))
            .stderr(log("scheduler.err"))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start the scheduler: {e}"));
        let mut cluster = TestCluster {
            scheduler,
            executors: Vec::new(),
            port,
            metrics_port,
            dir,
        };
        for i in 0..executors {
            let work = cluster.dir.path().join(format!("executor-{i}"));
            std::fs::create_dir_all(&work).unwrap_or_else(|e| panic!("{e}"));
            let child = Command::new(framefusion_bin())
                .args(["executor", "--scheduler", &format!("127.0.0.1:{port}")])
                .args(["--slots", &slots.to_string(), "--heartbeat", "1"])
                .arg("--work-dir")
                .arg(&work)
                .envs(executor_env.iter().copied())
                .env(
                    "RUST_LOG",
                    std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
                )
                .stdout(log(&format!("executor-{i}")))
                .stderr(log(&format!("executor-{i}.err")))
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start executor {i}: {e}"));
            cluster.executors.push(child);
        }
        if let Err(e) = framefusion_engine::cluster::wait_for_executors(
            &cluster.scheduler_addr(),
            executors,
            Duration::from_secs(60),
        )
        .await
        {
            panic!("{e}\n{}", cluster.logs());
        }
        cluster
    }

    /// The value of the sample `series` (name and labels) on the scheduler's `/metrics`.
    pub fn scheduler_metric(&self, series: &str) -> Option<f64> {
        crate::flight::metric_sample(&format!("127.0.0.1:{}", self.metrics_port), series)
    }

    /// `127.0.0.1:PORT` of the scheduler.
    pub fn scheduler_addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The client URL of the scheduler (`df://127.0.0.1:PORT`).
    pub fn url(&self) -> String {
        format!("df://127.0.0.1:{}", self.port)
    }

    /// SIGKILLs executor `i`, as a crashed machine would vanish.
    pub fn kill_executor(&mut self, i: usize) {
        let child = &mut self.executors[i];
        child
            .kill()
            .unwrap_or_else(|e| panic!("cannot kill executor {i}: {e}"));
        let _ = child.wait();
    }

    /// Sends SIGTERM to executor `i`, as Kubernetes does to a pod it scales away.
    pub fn terminate_executor(&mut self, i: usize) {
        let pid = self.executors[i].id().to_string();
        let status = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap_or_else(|e| panic!("cannot run kill: {e}"));
        assert!(status.success(), "kill -TERM {pid}: {status}");
    }

    /// Waits up to `limit` for executor `i` to exit: its exit status, or `None` while it
    /// still runs.
    pub fn wait_executor(&mut self, i: usize, limit: Duration) -> Option<std::process::ExitStatus> {
        let until = std::time::Instant::now() + limit;
        loop {
            match self.executors[i].try_wait() {
                Ok(Some(status)) => return Some(status),
                Ok(None) if std::time::Instant::now() < until => {
                    std::thread::sleep(Duration::from_millis(100));
                }
                _ => return None,
            }
        }
    }

    /// Everything the executors have logged so far (standard error and output).
    pub fn executor_logs(&self) -> String {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.dir.path())
            .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        files.sort();
        files
            .iter()
            .filter(|f| {
                f.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("executor-") && n.contains(".log"))
            })
            .map(|f| std::fs::read_to_string(f).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The processes' logs, for a failure message.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.dir.path())
            .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        files.sort();
        for file in files
            .iter()
            .filter(|f| f.extension().is_some_and(|e| e == "log"))
        {
            let text = std::fs::read_to_string(file).unwrap_or_default();
            let tail: Vec<_> = text.lines().rev().take(30).collect();
            out.push_str(&format!("--- {} (last lines)\n", file.display()));
            for line in tail.into_iter().rev() {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        for child in self
            .executors
            .iter_mut()
            .chain(std::iter::once(&mut self.scheduler))
        {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
