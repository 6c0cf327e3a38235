//! Frame decoding against the ffmpeg CLI, in the same run, on trailer_bbb.mp4 (55 s, 720p)
//! and a 10-minute 720p video (the trailer concatenated 11 times, stream copy):
//!
//! - full decode: `frames(f, 'all')` without pictures vs `ffmpeg -threads 2 -i f -an -f null -`
//!   (target >= 0.9x ffmpeg's speed);
//! - 1 fps resized to 224x224: `frames(f, 'fps=1,size=224x224')` reading the pictures vs
//!   `ffmpeg -threads 2 -i f -an -vf fps=1,scale=224:224 -f rawvideo -` (target >= 1.2x);
//! - keyframes: `frames(f, 'keyframes,size=224x224')` vs `ffmpeg -skip_frame nokey -threads 2
//!   -i f -an -vsync passthrough -vf scale=224:224 -f rawvideo -` (target >= 0.9x).
//!
//! Memory: the peak RSS of `framefusion sql` sampling 1 fps from the trailer and from the
//! trailer concatenated 10 times (asserted within 25% of each other).
//!
//! Needs the release `framefusion` binary next to this benchmark (`make bench` builds it).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use datafusion::arrow::array::RecordBatch;
use framefusion_benches::{best_of, corpus_dir, measure};
use framefusion_engine::SessionContextExt;

fn concat(src: &Path, times: usize, dst: &Path) {
    let list = dst.with_extension("txt");
    let line = format!("file '{}'\n", src.display());
    std::fs::write(&list, line.repeat(times)).unwrap_or_else(|e| panic!("{e}"));
    let status = Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-f", "concat", "-safe", "0", "-i"])
        .arg(&list)
        .args(["-c", "copy"])
        .arg(dst)
        .status()
        .unwrap_or_else(|e| panic!("ffmpeg: {e}"));
    assert!(status.success(), "ffmpeg concat failed");
}

/// Runs per measurement (the best is kept): this machine's timings vary by about 5%.
const RUNS: usize = 3;

fn ffmpeg(args: &[&str], file: &Path, tail: &[&str]) -> Duration {
    best_of(RUNS, || {
        let status = Command::new("ffmpeg")
            .args(["-v", "error"])
            .args(args)
            .arg("-i")
            .arg(file)
            .args(tail)
            .stdout(Stdio::null())
            .status()
            .unwrap_or_else(|e| panic!("ffmpeg: {e}"));
        assert!(status.success());
    })
    .0
}

fn ours(runtime: &tokio::runtime::Runtime, sql: &str) -> (Duration, i64) {
    best_of(RUNS, || {
        runtime.block_on(async {
            let ctx = framefusion_engine::new_context().unwrap_or_else(|e| panic!("{e}"));
            let batches: Vec<RecordBatch> = ctx
                .run_script(sql)
                .await
                .unwrap_or_else(|e| panic!("{e}"))
                .collect()
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            batches
                .first()
                .and_then(|b| {
                    datafusion::arrow::array::AsArray::as_primitive_opt::<
                        datafusion::arrow::datatypes::Int64Type,
                    >(b.column(0))
                })
                .map_or(0, |a| a.value(0))
        })
    })
}

/// Peak resident memory (KiB) of one `framefusion` process ([`measure`]).
fn peak_rss_kib(bin: &Path, sql: &str) -> i64 {
    measure(Command::new(bin).args(["sql", "--no-catalog", sql])).peak_rss_kib
}

fn main() {
    let trailer = corpus_dir().join("trailer_bbb.mp4");
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let ten_minutes = dir.path().join("trailer_x11.mp4");
    concat(&trailer, 11, &ten_minutes);
    let trailer_x10 = dir.path().join("trailer_x10.mp4");
    concat(&trailer, 10, &trailer_x10);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    println!(
        "frame decoding vs the ffmpeg CLI ({cores} cores), best of {RUNS}; ratio = ffmpeg time / framefusion time"
    );

    let inputs: [(&str, PathBuf); 2] = [
        ("trailer_bbb.mp4 (55 s)", trailer.clone()),
        ("trailer x11 (10 min)", ten_minutes),
    ];
    for (label, file) in &inputs {
        let f = file.display().to_string();
        let cases = [
            (
                "full decode",
                ffmpeg(&["-threads", "2"], file, &["-an", "-f", "null", "-"]),
                ours(
                    &runtime,
                    &format!("SELECT count(*) FROM frames('{f}', 'all')"),
                ),
                0.9,
            ),
            (
                "1 fps, 224x224",
                ffmpeg(
                    &["-threads", "2"],
                    file,
                    &["-an", "-vf", "fps=1,scale=224:224", "-f", "rawvideo", "-"],
                ),
                ours(
                    &runtime,
                    &format!("SELECT count(rgb) FROM frames('{f}', 'fps=1,size=224x224')"),
                ),
                1.2,
            ),
            (
                "keyframes, 224x224",
                ffmpeg(
                    &["-skip_frame", "nokey", "-threads", "2"],
                    file,
                    &[
                        "-an",
                        "-vsync",
                        "passthrough",
                        "-vf",
                        "scale=224:224",
                        "-f",
                        "rawvideo",
                        "-",
                    ],
                ),
                ours(
                    &runtime,
                    &format!("SELECT count(rgb) FROM frames('{f}', 'keyframes,size=224x224')"),
                ),
                0.9,
            ),
        ];
        // the least any exact 1 fps sampler must decode: every reference frame (a
        // sampled frame depends on them), which is what ffmpeg decodes with -skip_frame
        // noref; it bounds the ratio one frame-threaded decoder can reach without changing
        // pixels (framefusion decodes chunks of GOPs in parallel instead, and goes past it)
        let references_only = ffmpeg(
            &["-skip_frame", "noref", "-threads", "2"],
            file,
            &["-an", "-f", "null", "-"],
        );
        let ceiling = cases[1].1.as_secs_f64() / references_only.as_secs_f64();
        println!("  {label}");
        for (what, theirs, (mine, frames), target) in cases {
            let ratio = theirs.as_secs_f64() / mine.as_secs_f64();
            println!(
                "    {what:<20} ffmpeg {:7.3} s  framefusion {:7.3} s ({frames} frames)  ratio {ratio:.2}x (target >= {target}x: {})",
                theirs.as_secs_f64(),
                mine.as_secs_f64(),
                if ratio >= target { "met" } else { "NOT met" }
            );
        }
        println!(
            "    reference frames only (ffmpeg -skip_frame noref): {:.3} s; one exact decoder of them is at most {ceiling:.2}x faster than ffmpeg's 1 fps",
            references_only.as_secs_f64()
        );
    }

    let bin = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent()?.parent().map(|d| d.join("framefusion")))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| panic!("the release framefusion binary is missing: cargo build --release -p framefusion-cli"));
    let sample = |file: &Path| {
        format!(
            "SELECT count(rgb) FROM frames('{}', 'fps=1')",
            file.display()
        )
    };
    let short = peak_rss_kib(&bin, &sample(&trailer));
    let long = peak_rss_kib(&bin, &sample(&trailer_x10));
    let ratio = long as f64 / short as f64;
    println!(
        "  peak RSS, 1 fps at full size: trailer {:.1} MiB, trailer x10 {:.1} MiB, ratio {ratio:.2} (bound 1.25)",
        short as f64 / 1024.0,
        long as f64 / 1024.0
    );
    assert!(
        ratio <= 1.25,
        "memory grew with the video's length: {ratio:.2}x"
    );
}
