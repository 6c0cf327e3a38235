//! Text-detection throughput (PP-OCRv4 det on ONNX Runtime, RapidOCR's pre/post-processing)
//! at batch 1 vs 8 vs 16 on the trailer's frames at 1 fps (1280x720, 55 frames), model
//! loads per query (exactly one per process and model), and the same frames through the
//! product's SQL path in the same run: `framefusion sql "SELECT text_area_ratio(trailer,
//! 0, 56)"` with the release CLI (decoding, sampling and detection; target: within 10% of
//! the batch-1 frames/s), at the default detector size and at `max:960`. The device is
//! `onnx.device` (`FRAMEFUSION_BENCH_DEVICE`, default auto: CUDA when ONNX Runtime offers
//! it).

use std::time::Instant;

use datafusion::arrow::array::RecordBatch;
use framefusion_benches::corpus_dir;
use framefusion_engine::SessionContextExt;
use framefusion_udfs::media::decode::{Extras, Resize, Sampling, decode_frames_with};
use framefusion_udfs::media::image::Rgb;
use framefusion_udfs::media::source::VideoSource;
use framefusion_udfs::models::{OnnxOptions, load_count, model};
use framefusion_udfs::text::{DET_MODEL, detect_text_batch};

fn main() {
    let trailer = corpus_dir().join("trailer_bbb.mp4");
    let path = trailer.display().to_string();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let mut options = OnnxOptions::default();
    if let Ok(device) = std::env::var("FRAMEFUSION_BENCH_DEVICE") {
        options.device = device;
    }

    // loads per query: the first query loads the model, the second reuses it
    let query = format!(
        "SET onnx.device = '{}'; SELECT text_area_ratio(p, 11.0, 13.0) FROM (VALUES ('{path}')) AS t(p)",
        options.device
    );
    let mut loads = Vec::new();
    for _ in 0..2 {
        let before = load_count();
        runtime.block_on(async {
            let ctx = framefusion_engine::new_context().unwrap_or_else(|e| panic!("{e}"));
            let _: Vec<RecordBatch> = ctx
                .run_script(&query)
                .await
                .unwrap_or_else(|e| panic!("{e}"))
                .collect()
                .await
                .unwrap_or_else(|e| panic!("{e}"));
        });
        loads.push(load_count() - before);
    }

    let media = VideoSource::parse(&path)
        .and_then(|s| s.media_input(&Default::default()))
        .unwrap_or_else(|e| panic!("{e}"));
    let mut frames = Vec::new();
    decode_frames_with(
        &media,
        Sampling::Fps(1.0),
        Resize::Original,
        true,
        Extras::default(),
        |f| {
            frames.push(Rgb::from(f));
            std::ops::ControlFlow::Continue(())
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let det = model(&options.model_path(DET_MODEL), &options).unwrap_or_else(|e| panic!("{e}"));
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    println!(
        "text detection: {} frames {}x{} of trailer_bbb.mp4 (1 fps), device {}, {cores} cores",
        frames.len(),
        frames[0].width,
        frames[0].height,
        det.device
    );
    println!("  model loads per query: {loads:?} (first query, second query)");
    let mut base = 0.0;
    let frame_count = frames.len();
    for batch in [1usize, 8, 16] {
        let mut best = f64::MAX;
        let mut found = 0;
        for _ in 0..2 {
            let start = Instant::now();
            found = 0;
            for chunk in frames.chunks(batch) {
                found += detect_text_batch(&det, chunk)
                    .unwrap_or_else(|e| panic!("{e}"))
                    .iter()
                    .filter(|b| !b.is_empty())
                    .count();
            }
            best = best.min(start.elapsed().as_secs_f64());
        }
        let rate = frames.len() as f64 / best;
        if batch == 1 {
            base = rate;
        }
        println!(
            "  batch {batch:>2}: {best:6.2} s, {rate:6.2} frames/s ({:.2}x batch 1), {found} frames with text",
            rate / base
        );
    }
    let sql = sql_path(&path, frame_count, &options.device, "min:736");
    println!(
        "  SQL path (framefusion sql, text_area_ratio over the whole trailer, decoding included): {sql:6.2} frames/s, {:.2}x batch 1 (target within 10%: {})",
        sql / base,
        if (sql / base - 1.0).abs() <= 0.10 {
            "met"
        } else {
            "NOT met"
        }
    );
    let fast = sql_path(&path, frame_count, &options.device, "max:960");
    println!(
        "  SQL path at onnx.text_det_limit = 'max:960': {fast:6.2} frames/s ({:.2}x the default size)",
        fast / sql
    );
}

/// Frames per second of text detection through the release CLI's SQL path on the
/// trailer's `frames` 1 fps frames (best of 2), at the detector size `limit`.
fn sql_path(path: &str, frames: usize, device: &str, limit: &str) -> f64 {
    let bin = framefusion_benches::framefusion_bin();
    let sql = format!(
        "SET onnx.device = '{device}'; SET onnx.text_det_limit = '{limit}'; SELECT text_area_ratio('{path}', 0, 56)"
    );
    let (elapsed, _) = framefusion_benches::best_of(2, || {
        framefusion_benches::measure(std::process::Command::new(&bin).args([
            "sql",
            "--no-catalog",
            sql.as_str(),
        ]))
    });
    frames as f64 / elapsed.as_secs_f64()
}
