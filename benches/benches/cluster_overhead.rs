//! Cluster overhead: the same probe-and-aggregate query embedded and on a local cluster of
//! one scheduler and 2 executor processes (`framefusion cluster`), in the same run.
//! Target: the cluster at most 15% slower than embedded on a 2-core machine.
//!
//! Needs the release `framefusion` binary next to this benchmark (`make bench` builds it).
//! `FRAMEFUSION_BENCH_FILES` overrides the corpus size (default 2000).

use std::process::{Command, Stdio};
use std::time::Duration;

use datafusion::arrow::array::RecordBatch;
use datafusion::prelude::SessionContext;
use framefusion_benches::{best_of, corpus_dir, replicate_corpus};
use framefusion_engine::SessionContextExt;

const QUERY: &str = "SELECT video_codec, count(*) AS files, round(sum(duration_s), 3) AS seconds, round(avg(width), 3) AS mean_width, \
     count(probe_error) AS errors FROM corpus GROUP BY video_codec ORDER BY video_codec";

async fn run(ctx: &SessionContext, location: &str) -> Vec<RecordBatch> {
    ctx.register_videos("corpus", location)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    ctx.run_script(QUERY)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .collect()
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

fn main() {
    let n: usize = std::env::var("FRAMEFUSION_BENCH_FILES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    replicate_corpus(&corpus_dir(), dir.path(), n).unwrap_or_else(|e| panic!("{e}"));
    let location = dir.path().display().to_string();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    println!("cluster overhead, probe-and-aggregate over {n} files ({cores} cores)");

    let (embedded, expected) = best_of(3, || {
        runtime.block_on(async {
            let ctx = framefusion_engine::new_context().unwrap_or_else(|e| panic!("{e}"));
            run(&ctx, &location).await
        })
    });
    println!("  embedded            : {:8.3} s", embedded.as_secs_f64());

    let bin = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent()?.parent().map(|d| d.join("framefusion")))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| panic!("the release framefusion binary is missing: cargo build --release -p framefusion-cli"));
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(50050);
    let mut cluster = Command::new(bin)
        .args([
            "cluster",
            "--executors",
            "2",
            "--bind",
            &format!("127.0.0.1:{port}"),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start the cluster: {e}"));
    let addr = format!("127.0.0.1:{port}");
    runtime
        .block_on(framefusion_engine::cluster::wait_for_executors(
            &addr,
            2,
            Duration::from_secs(60),
        ))
        .unwrap_or_else(|e| panic!("{e}"));
    let url = format!("df://{addr}");
    let (clustered, got) = best_of(3, || {
        runtime.block_on(async {
            let ctx = framefusion_engine::remote_context(&url)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            run(&ctx, &location).await
        })
    });
    // SIGTERM: `framefusion cluster` stops its scheduler and executors, then exits
    let _ = Command::new("kill").arg(cluster.id().to_string()).status();
    let _ = cluster.wait();
    assert_eq!(
        datafusion::arrow::util::pretty::pretty_format_batches(&got)
            .map(|t| t.to_string())
            .ok(),
        datafusion::arrow::util::pretty::pretty_format_batches(&expected)
            .map(|t| t.to_string())
            .ok(),
        "the cluster must give the embedded answer"
    );
    println!("  cluster (2 executors): {:8.3} s", clustered.as_secs_f64());
    let ratio = clustered.as_secs_f64() / embedded.as_secs_f64();
    println!(
        "  overhead            : {:+.1}% (target <= +15%: {})",
        (ratio - 1.0) * 100.0,
        if ratio <= 1.15 { "met" } else { "NOT met" }
    );
}
