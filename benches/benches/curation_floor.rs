//! The curation job against its physical floor, in the same run.
//!
//! Jobs, each through the release CLI (`framefusion run JOB --output DIR`, a Parquet
//! manifest), on (a) the four sample videos (74 s of video) and (b) the 10-minute 720p
//! `bbb.mp4` (fetched by `make setup`):
//!
//! - `examples/shots_text.sql`: shots, then per shot `motion_score`, the sharpness of
//!   `clip_quality` and `text_area_ratio` (PP-OCRv4 detection at 1 fps);
//! - `examples/curate.sql`: shots, then per shot of a second or more `clip_signals`.
//!
//! The floor of a job is one decode of its inputs (`ffmpeg -threads 2 -f null`) plus the
//! pure inference time of its model on the frames it samples: the text detector on every
//! video's frames at 1 fps, preloaded as input tensors, ONNX Runtime alone on the CPU
//! (the first round tries 1 and all intra-op threads, spinning; later rounds use the
//! better). Targets (shots_text): job <= 1.3x floor on (a), <= 1.15x on (b).
//!
//! A machine whose speed drifts within minutes makes a ratio of two times taken minutes
//! apart meaningless, so the parts alternate: each round runs the decode, both jobs and
//! the inference once, and the ratio divides the best job by the best decode plus the best
//! inference (`FRAMEFUSION_BENCH_ROUNDS` rounds, default 3 on (a) and 2 on (b)); each
//! round's own ratio is printed too. Also printed: the time of each consumer of the
//! decode passes in the best job (from the passes' log lines), and the job's peak RSS
//! (its own high-water mark, the highest of its rounds).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use framefusion_benches::{Measured, corpus_dir, ffmpeg_decode, framefusion_bin, measure};
use framefusion_udfs::media::decode::{Resize, Sampling, decode_frames};
use framefusion_udfs::media::image::Rgb;
use framefusion_udfs::media::source::VideoSource;
use framefusion_udfs::models::{LoadedModel, OnnxOptions};
use framefusion_udfs::text::{DET_MODEL, input_size};

/// Input tensors of the text detector: every frame of `files` sampled at 1 fps, scaled
/// and normalised as the detector's pre-processing does.
fn preload(files: &[PathBuf]) -> Vec<(Vec<i64>, Vec<f32>)> {
    let mut tensors = Vec::new();
    for file in files {
        let media = VideoSource::parse(&file.display().to_string())
            .and_then(|s| s.media_input(&Default::default()))
            .unwrap_or_else(|e| panic!("{e}"));
        decode_frames(&media, Sampling::Fps(1.0), Resize::Original, true, |f| {
            let rgb = Rgb::from(f);
            let (iw, ih) = input_size(rgb.width, rgb.height);
            let scaled = rgb.resize_bilinear(iw, ih);
            let plane = iw * ih;
            let mut input = vec![0f32; 3 * plane];
            for (p, px) in scaled.data.chunks_exact(3).enumerate() {
                for (c, &v) in [px[2], px[1], px[0]].iter().enumerate() {
                    input[c * plane + p] = (f32::from(v) / 255.0 - 0.5) / 0.5;
                }
            }
            tensors.push((vec![1, 3, ih as i64, iw as i64], input));
            std::ops::ControlFlow::Continue(())
        })
        .unwrap_or_else(|e| panic!("{e}"));
    }
    tensors
}

/// The text detector's pure inference time on `tensors` with `threads` intra-op threads
/// (after one warm-up run: allocations, kernels).
fn pure_inference(tensors: &[(Vec<i64>, Vec<f32>)], threads: usize) -> Duration {
    let options = OnnxOptions::default();
    let model =
        LoadedModel::standalone(&options.model_path(DET_MODEL), threads, &options.library())
            .unwrap_or_else(|e| panic!("{e}"));
    if let Some((shape, data)) = tensors.first() {
        let _ = model.run("x", shape.clone(), data.clone(), None);
    }
    let mut total = Duration::ZERO;
    for (shape, data) in tensors {
        let (shape, data) = (shape.clone(), data.clone());
        let start = Instant::now();
        model
            .run("x", shape, data, None)
            .unwrap_or_else(|e| panic!("{e}"));
        total += start.elapsed();
    }
    total
}

/// The best (shortest) of a part's times over the rounds.
fn best(times: &[f64]) -> f64 {
    times.iter().copied().fold(f64::INFINITY, f64::min)
}

/// Seconds per part of the job's decode passes, from their log lines: `decoding` and each
/// consumer's name.
fn breakdown(log: &str) -> BTreeMap<String, f64> {
    let mut parts = BTreeMap::new();
    for line in log.lines().filter(|l| l.contains("decode pass of")) {
        if let Some((_, inner)) = line.split_once("shown to [")
            && let Some((consumers, rest)) = inner.split_once("], ")
        {
            for consumer in consumers.split(" s, ").map(|c| c.trim_end_matches(" s")) {
                if let Some((name, secs)) = consumer.rsplit_once(": ")
                    && let Ok(secs) = secs.trim().parse::<f64>()
                {
                    *parts.entry(name.to_owned()).or_insert(0.0) += secs;
                }
            }
            if let Some(decoding) = rest
                .rsplit_once('(')
                .and_then(|(_, d)| d.split_once(" s decoding"))
                .and_then(|(d, _)| d.parse::<f64>().ok())
            {
                *parts.entry("decoding".to_owned()).or_insert(0.0) += decoding;
            }
        }
    }
    parts
}

fn main() {
    let bin = framefusion_bin();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let samples: Vec<PathBuf> = [
        "bikes.mp4",
        "trailer_bbb.mp4",
        "bigbuckbunny.mp4",
        "carphone_pristine.mp4",
    ]
    .iter()
    .map(|n| corpus_dir().join(n))
    .collect();
    let long = framefusion_engine::framefusion_home().join("bench/bbb.mp4");
    let mut sets = vec![("(a) 4 sample videos", samples, 1.3)];
    if long.is_file() {
        sets.push(("(b) bbb.mp4, 10 min 720p", vec![long], 1.15));
    } else {
        println!("(bench/bbb.mp4 is missing: run make setup to include the 10-minute file)");
    }
    let jobs = [
        ("shots_text", root.join("examples/shots_text.sql"), true),
        ("curate", root.join("examples/curate.sql"), false),
    ];
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    println!("the curation job against its floor ({cores} cores)");
    for (i, (label, files, target)) in sets.iter().enumerate() {
        let videos = dir.path().join(format!("set{i}"));
        std::fs::create_dir_all(&videos).unwrap_or_else(|e| panic!("{e}"));
        for f in files {
            let dst = videos.join(f.file_name().unwrap_or_default());
            std::fs::hard_link(f, &dst)
                .or_else(|_| std::fs::copy(f, &dst).map(drop))
                .unwrap_or_else(|e| panic!("{e}"));
        }
        let catalog = dir.path().join(format!("catalog{i}.json"));
        measure(
            Command::new(&bin)
                .args(["sql", "--catalog"])
                .arg(&catalog)
                .arg(format!(
                    "CREATE EXTERNAL TABLE raw STORED AS VIDEO LOCATION '{}'",
                    videos.display()
                )),
        );
        let tensors = preload(files);
        let rounds = std::env::var("FRAMEFUSION_BENCH_ROUNDS")
            .ok()
            .and_then(|r| r.parse::<usize>().ok())
            .unwrap_or(if i == 0 { 3 } else { 2 })
            .max(1);
        let mut threads = 1;
        let (mut decodes, mut inferences) = (Vec::new(), Vec::new());
        let mut runs: Vec<Vec<Measured>> = vec![Vec::new(); jobs.len()];
        println!("  {label}");
        for round in 0..rounds {
            let decode: f64 = files
                .iter()
                .map(|f| ffmpeg_decode(f, 1).as_secs_f64())
                .sum();
            for ((name, job, _), times) in jobs.iter().zip(runs.iter_mut()) {
                let out = dir.path().join(format!("out{i}-{name}-{round}"));
                times.push(measure(
                    Command::new(&bin)
                        .env("RUST_LOG", "framefusion::decode=info")
                        .arg("run")
                        .arg(job)
                        .arg("--output")
                        .arg(&out)
                        .arg("--catalog")
                        .arg(&catalog)
                        .arg("--quiet"),
                ));
            }
            let inference = if round == 0 {
                let (time, best_threads) = [1, cores]
                    .into_iter()
                    .map(|t| (pure_inference(&tensors, t), t))
                    .min()
                    .unwrap_or_default();
                threads = best_threads;
                time
            } else {
                pure_inference(&tensors, threads)
            }
            .as_secs_f64();
            let job = runs[0][round].elapsed.as_secs_f64();
            println!(
                "    round {}: decode {decode:.2} s, text detection {inference:.2} s, shots_text {job:.2} s ({:.2}x)",
                round + 1,
                job / (decode + inference)
            );
            decodes.push(decode);
            inferences.push(inference);
        }
        let (decode, inference) = (best(&decodes), best(&inferences));
        println!(
            "    floor (best of {rounds}): decode {decode:.2} s (ffmpeg -threads 2) + text detection {inference:.2} s ({} frames at 1 fps, {:.2} frames/s, {threads} threads) = {:.2} s",
            tensors.len(),
            tensors.len() as f64 / inference,
            decode + inference
        );
        for ((name, _, with_text), runs) in jobs.iter().zip(&runs) {
            let floor = if *with_text {
                decode + inference
            } else {
                decode
            };
            let Some(fastest) = runs.iter().min_by_key(|r| r.elapsed) else {
                continue;
            };
            let elapsed = fastest.elapsed.as_secs_f64();
            let ratio = elapsed / floor;
            let verdict = if !*with_text {
                String::new()
            } else if ratio <= *target {
                format!(" (target <= {target}: met)")
            } else {
                format!(" (target <= {target}: NOT met)")
            };
            let peak = runs.iter().map(|r| r.peak_rss_kib).max().unwrap_or(0);
            let parts = breakdown(&fastest.stderr);
            println!(
                "    {name:<11} {elapsed:7.2} s (best of {rounds}), {ratio:.2}x its floor{verdict}, peak RSS {:.1} MiB, passes: {}",
                peak as f64 / 1024.0,
                parts
                    .iter()
                    .map(|(k, v)| format!("{k} {v:.2} s"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
}
