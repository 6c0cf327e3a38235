//! Probe throughput: framefusion's VIDEO table vs a loop of `ffprobe` processes over the
//! same corpus of >= 500 files, in the same run. Target: at least 10x the ffprobe loop.
//!
//! `FRAMEFUSION_BENCH_FILES` overrides the corpus size (default 600).

use std::process::Command;

use datafusion::arrow::array::RecordBatch;
use framefusion_benches::{best_of, corpus_dir, replicate_corpus};
use framefusion_engine::SessionContextExt;

fn main() {
    let n: usize = std::env::var("FRAMEFUSION_BENCH_FILES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(600);
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let files = replicate_corpus(&corpus_dir(), dir.path(), n).unwrap_or_else(|e| panic!("{e}"));
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    println!("probe throughput over {n} files ({cores} cores)");

    // baseline: one ffprobe process per file, as a shell loop would run it
    let (ffprobe_time, ok) = best_of(2, || {
        files
            .iter()
            .filter(|f| {
                Command::new("ffprobe")
                    .args([
                        "-v",
                        "error",
                        "-show_format",
                        "-show_streams",
                        "-of",
                        "json",
                    ])
                    .arg(f)
                    .output()
                    .is_ok_and(|o| o.status.success())
            })
            .count()
    });
    let ffprobe_rate = n as f64 / ffprobe_time.as_secs_f64();
    println!(
        "  ffprobe loop : {:8.3} s  {ffprobe_rate:9.1} files/s  ({ok} probed cleanly)",
        ffprobe_time.as_secs_f64()
    );

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let location = dir.path().display().to_string();
    let (ours_time, rows) = best_of(3, || {
        runtime.block_on(async {
            let ctx = framefusion_engine::new_context().unwrap_or_else(|e| panic!("{e}"));
            ctx.register_videos("corpus", &location).await.unwrap_or_else(|e| panic!("{e}"));
            let batches: Vec<RecordBatch> = ctx
                .run_script("SELECT path, duration_s, width, height, fps, video_codec, audio_codec, probe_error FROM corpus")
                .await
                .unwrap_or_else(|e| panic!("{e}"))
                .collect()
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            batches.iter().map(RecordBatch::num_rows).sum::<usize>()
        })
    });
    assert_eq!(rows, n, "one row per file");
    let ours_rate = n as f64 / ours_time.as_secs_f64();
    println!(
        "  framefusion  : {:8.3} s  {ours_rate:9.1} files/s",
        ours_time.as_secs_f64()
    );
    let ratio = ours_rate / ffprobe_rate;
    println!(
        "  ratio        : {ratio:.1}x the ffprobe loop (target >= 10x: {})",
        if ratio >= 10.0 { "met" } else { "NOT met" }
    );
}
