//! Distributed execution: a lost executor costs a retry, not the job, and not a row; a
//! stopped one (SIGTERM) drains within its timeout and the query loses nothing, and one that
//! cannot finish its tasks within the timeout exits anyway while the scheduler reruns them.

use std::time::{Duration, Instant};

use datafusion::prelude::SessionContext;
use framefusion_engine::SessionContextExt;
use framefusion_tests::cluster::TestCluster;
use framefusion_tests::{corpus_dir, slt::format_rows};
use framefusion_udfs::error::ATTEMPTS;

const QUERY: &str = "SELECT path, duration_s, width, height, video_codec, audio_codec, probe_error FROM big ORDER BY path";

/// A corpus of `n` files: the sample files (the truncated one included) hard-linked in turn.
fn big_corpus(n: usize) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let mut samples: Vec<_> = std::fs::read_dir(corpus_dir())
        .unwrap_or_else(|e| panic!("{e}"))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    samples.sort();
    for i in 0..n {
        let src = &samples[i % samples.len()];
        let ext = src.extension().and_then(|e| e.to_str()).unwrap_or("mp4");
        let dst = dir.path().join(format!("{i:05}.{ext}"));
        std::fs::hard_link(src, &dst)
            .or_else(|_| std::fs::copy(src, &dst).map(drop))
            .unwrap_or_else(|e| panic!("{e}"));
    }
    dir
}

async fn rows(ctx: &SessionContext, location: &str) -> Vec<Vec<String>> {
    ctx.register_videos("big", location)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let batches = ctx
        .run_script(QUERY)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .collect()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    format_rows(&batches).unwrap_or_else(|e| panic!("{e}"))
}

/// The embedded answer over a corpus of 3000 files, and the same query started on `cluster`
/// (many small tasks, so both executors hold finished and running work 2.5 s in, when the
/// caller stops one).
async fn start_big_query(
    cluster: &TestCluster,
) -> (
    tempfile::TempDir,
    Vec<Vec<String>>,
    tokio::task::JoinHandle<Vec<Vec<String>>>,
) {
    let corpus = big_corpus(3000);
    let location = corpus.path().display().to_string();
    let expected = rows(
        &framefusion_engine::new_context().unwrap_or_else(|e| panic!("{e}")),
        &location,
    )
    .await;
    assert_eq!(expected.len(), 3000);
    assert_eq!(
        expected.iter().filter(|r| r[6] != "NULL").count(),
        500,
        "one truncated file in six is an error row"
    );
    let ctx = framefusion_engine::remote_context(&cluster.url())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    ctx.run_script("SET video.files_per_partition = 25")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let query = tokio::spawn(async move { rows(&ctx, &location).await });
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(
        !query.is_finished(),
        "the query must still run when the executor is stopped; make the corpus larger"
    );
    (corpus, expected, query)
}

/// Waits for `query` and checks it gave exactly `expected`, after an executor was `what`.
async fn same_rows(
    cluster: &TestCluster,
    query: tokio::task::JoinHandle<Vec<Vec<String>>>,
    expected: &[Vec<String>],
    what: &str,
) {
    let got = match tokio::time::timeout(Duration::from_secs(180), query).await {
        Ok(Ok(rows)) => rows,
        Ok(Err(e)) => panic!(
            "the query failed after an executor was {what}: {e}\n{}",
            cluster.logs()
        ),
        Err(_) => panic!(
            "the query did not finish within 180 s after an executor was {what}\n{}",
            cluster.logs()
        ),
    };
    assert_eq!(got.len(), expected.len(), "no row lost, none duplicated");
    assert_eq!(got, expected, "the cluster's rows equal the embedded run's");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_executor_costs_a_retry_not_a_row() {
    // 8 s without a heartbeat (sent every 2 s) declares an executor lost: long enough that a
    // loaded machine running other tests does not lose the surviving one too
    let mut cluster = TestCluster::start(2, 1, 8).await;
    let (_corpus, expected, query) = start_big_query(&cluster).await;
    cluster.kill_executor(0);
    let killed = Instant::now();
    same_rows(&cluster, query, &expected, "killed").await;
    eprintln!("the query finished {:?} after the kill", killed.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminated_executor_drains_and_the_query_loses_nothing() {
    // the grace period Kubernetes would give the pod (terminationGracePeriodSeconds) minus
    // a margin: the executor's own drain timeout
    let drain_s = 20;
    let mut cluster = TestCluster::start_with_env(
        2,
        1,
        8,
        &[("FRAMEFUSION_DRAIN_TIMEOUT", drain_s.to_string().as_str())],
    )
    .await;
    let (_corpus, expected, query) = start_big_query(&cluster).await;
    // the scheduler's autoscaling signal: the probe query's tasks wait for the cpu pool
    // (both executors), none for the gpu pool (no stage runs a model)
    let pending = |cluster: &TestCluster, pool: &str| {
        cluster.scheduler_metric(&format!("framefusion_pending_tasks{{pool=\"{pool}\"}}"))
    };
    assert!(
        pending(&cluster, "cpu").is_some_and(|n| n > 0.0),
        "pending cpu tasks mid-query: {:?}",
        pending(&cluster, "cpu")
    );
    assert_eq!(pending(&cluster, "gpu"), Some(0.0));
    assert_eq!(
        cluster.scheduler_metric("framefusion_executors{pool=\"cpu\"}"),
        Some(2.0)
    );
    let exited_after = stop_executor_0(&mut cluster, drain_s);
    assert!(
        cluster
            .executor_logs()
            .contains("running tasks get 20 s to finish"),
        "the executor drained (it logs so)\n{}",
        cluster.logs()
    );
    same_rows(&cluster, query, &expected, "stopped").await;
    // nothing waits once the query is done (the gauge is refreshed every second)
    let until = Instant::now() + Duration::from_secs(10);
    while pending(&cluster, "cpu") != Some(0.0) && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(pending(&cluster, "cpu"), Some(0.0));
    eprintln!("executor 0 exited {exited_after:?} after SIGTERM");
}

/// Sends SIGTERM to executor 0 and waits for it to exit (with success) within its drain
/// timeout and a margin: how long it took.
fn stop_executor_0(cluster: &mut TestCluster, drain_s: u64) -> Duration {
    let stopped = Instant::now();
    cluster.terminate_executor(0);
    let status = cluster.wait_executor(0, Duration::from_secs(drain_s + 10));
    let exited_after = stopped.elapsed();
    let status = status.unwrap_or_else(|| {
        panic!(
            "executor 0 still runs {exited_after:?} after SIGTERM (drain timeout {drain_s} s)\n{}",
            cluster.logs()
        )
    });
    assert!(
        status.success(),
        "executor 0 exited with {status}\n{}",
        cluster.logs()
    );
    exited_after
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_executor_past_its_drain_timeout_exits_and_the_query_loses_nothing() {
    // no time to drain: the task executor 0 runs when the signal comes is cut off, and the
    // scheduler reruns it elsewhere once the executor's heartbeats stop
    let drain_s = 0;
    let mut cluster =
        TestCluster::start_with_env(2, 1, 8, &[("FRAMEFUSION_DRAIN_TIMEOUT", "0")]).await;
    let (_corpus, expected, query) = start_big_query(&cluster).await;
    let exited_after = stop_executor_0(&mut cluster, drain_s);
    assert!(
        exited_after < Duration::from_secs(5),
        "executor 0 exited {exited_after:?} after SIGTERM with no drain time\n{}",
        cluster.logs()
    );
    assert!(
        cluster
            .executor_logs()
            .contains("tasks still running after the 0 s drain timeout"),
        "the executor says it left tasks behind\n{}",
        cluster.logs()
    );
    same_rows(&cluster, query, &expected, "stopped without draining").await;
}

fn fault_budget(tokens: usize) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    for i in 0..tokens {
        std::fs::write(dir.path().join(format!("token-{i}")), b"")
            .unwrap_or_else(|e| panic!("{e}"));
    }
    dir
}

fn tokens_left(dir: &tempfile::TempDir) -> usize {
    std::fs::read_dir(dir.path())
        .map(|d| d.count())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_failures_fail_the_task_and_the_scheduler_retries_it() {
    let corpus = corpus_dir().display().to_string();
    // Files are probed one after the other (one partition embedded; one slot on the
    // cluster), so the injected faults hit consecutive attempts of the same file.
    let query = |settings: &str| {
        format!(
            "CREATE EXTERNAL TABLE v STORED AS VIDEO LOCATION '{corpus}'; {settings}; \
             SELECT regexp_replace(path, '.*/', '') AS file, width, probe_error IS NULL AS ok FROM v ORDER BY file"
        )
    };
    let sql = query("SET datafusion.execution.target_partitions = 1");

    // embedded: three transient faults in a row exhaust the local retries; the query
    // fails with an I/O error naming the file, instead of recording a false error row
    let budget = fault_budget(ATTEMPTS as usize);
    let out = framefusion_tests::framefusion_command()
        .args(["sql", &sql])
        .env("FRAMEFUSION_FAULT_BUDGET", budget.path())
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("injected transient fault"), "{stderr}");
    assert_eq!(tokens_left(&budget), 0);

    // one faulty attempt fewer than the local retries: absorbed in place, no error
    let budget = fault_budget(ATTEMPTS as usize - 1);
    let out = framefusion_tests::framefusion_command()
        .args(["sql", &sql, "--format", "csv"])
        .env("FRAMEFUSION_FAULT_BUDGET", budget.path())
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let clean = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(clean.contains("bikes.mp4,640,true"), "{clean}");
    assert!(clean.contains("sample.mkv,,false"), "{clean}");

    // on a cluster (one executor, one slot, so the faults hit one task): the task fails
    // with a retryable error, the scheduler runs it again, and the answer is complete
    let budget = fault_budget(ATTEMPTS as usize);
    let budget_path = budget.path().display().to_string();
    let cluster =
        TestCluster::start_with_env(1, 1, 10, &[("FRAMEFUSION_FAULT_BUDGET", &budget_path)]).await;
    let sql = query("SET video.files_per_partition = 1");
    let out = framefusion_tests::framefusion_command()
        .args(["sql", "--cluster", &cluster.url(), &sql, "--format", "csv"])
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        cluster.logs()
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        clean,
        "the retried run equals a clean one"
    );
    assert_eq!(tokens_left(&budget), 0, "every injected fault was hit");
}
