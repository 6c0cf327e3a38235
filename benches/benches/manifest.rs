//! Manifest write overhead: the reference curation job (examples/curate.sql: shots, then
//! motion, quality and pHash per shot) run as a resumable manifest vs the same query with
//! its rows thrown away, in the same process. Target: under 5% overhead.
//!
//! Each run reads its own hard-linked copy of the corpus, so no run is served by the clip
//! signal cache of an earlier one. `FRAMEFUSION_BENCH_FILES` sets the corpus size
//! (default 12 files, the sample corpus twice).

use std::time::{Duration, Instant};

use framefusion_benches::{corpus_dir, replicate_corpus};
use framefusion_engine::SessionContextExt;
use framefusion_engine::manifest::{ManifestOptions, write_manifest};
use futures::StreamExt;

const RUNS: usize = 3;

fn main() {
    let n: usize = std::env::var("FRAMEFUSION_BENCH_FILES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(12);
    let job = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/curate.sql"
    ))
    .unwrap_or_else(|e| panic!("{e}"));
    let work = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    println!(
        "manifest overhead: examples/curate.sql over {n} files ({cores} cores), best of {RUNS}"
    );

    let mut best_null = Duration::MAX;
    let mut best_manifest = Duration::MAX;
    let mut rows = (0usize, 0u64);
    for run in 0..RUNS {
        for manifest in [false, true] {
            let corpus = work.path().join(format!("corpus-{run}-{manifest}"));
            std::fs::create_dir_all(&corpus).unwrap_or_else(|e| panic!("{e}"));
            replicate_corpus(&corpus_dir(), &corpus, n).unwrap_or_else(|e| panic!("{e}"));
            let output = work.path().join(format!("manifest-{run}"));
            let elapsed = runtime.block_on(async {
                let ctx = framefusion_engine::new_context().unwrap_or_else(|e| panic!("{e}"));
                ctx.register_videos("raw", &corpus.display().to_string())
                    .await
                    .unwrap_or_else(|e| panic!("{e}"));
                let mut statements = ctx.parse_script(&job).unwrap_or_else(|e| panic!("{e}"));
                let query = statements.pop_back().unwrap_or_else(|| panic!("empty job"));
                let plan = ctx
                    .state()
                    .statement_to_plan(query)
                    .await
                    .unwrap_or_else(|e| panic!("{e}"));
                let start = Instant::now();
                if manifest {
                    let summary = write_manifest(
                        ctx.state(),
                        plan,
                        &ManifestOptions::new(output.display().to_string()),
                    )
                    .await
                    .unwrap_or_else(|e| panic!("{e}"));
                    rows.1 = summary.rows;
                } else {
                    let mut stream = datafusion::dataframe::DataFrame::new(ctx.state(), plan)
                        .execute_stream()
                        .await
                        .unwrap_or_else(|e| panic!("{e}"));
                    let mut count = 0;
                    while let Some(batch) = stream.next().await {
                        count += batch.unwrap_or_else(|e| panic!("{e}")).num_rows();
                    }
                    rows.0 = count;
                }
                start.elapsed()
            });
            println!(
                "  run {run} {:<22}: {:7.2} s",
                if manifest {
                    "manifest"
                } else {
                    "rows to /dev/null"
                },
                elapsed.as_secs_f64()
            );
            if manifest {
                best_manifest = best_manifest.min(elapsed);
            } else {
                best_null = best_null.min(elapsed);
            }
        }
    }
    assert_eq!(
        rows.0 as u64, rows.1,
        "the manifest holds every row of the query"
    );
    let overhead = best_manifest.as_secs_f64() / best_null.as_secs_f64() - 1.0;
    println!(
        "  rows {}; best: to /dev/null {:.2} s, manifest {:.2} s: overhead {:+.1}% (target < 5%)",
        rows.0,
        best_null.as_secs_f64(),
        best_manifest.as_secs_f64(),
        overhead * 100.0
    );
}
