//! Frame sampling agrees with ffmpeg: counts equal ffmpeg's `fps` filter / decode /
//! `-skip_frame nokey` counts, timestamps are within one frame, and resized pixels are
//! within a small mean absolute error of `ffmpeg -vf fps=1,scale=...` output.

use std::path::Path;
use std::process::Command;

use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::{Float64Type, Int64Type};
use framefusion_tests::{decode, query, sample};
use framefusion_udfs::media::decode::{Resize, Sampling};
use framefusion_udfs::media::pass::chunked_passes;

/// `(timestamp in seconds, md5)` of the frames ffmpeg outputs (framemd5), with
/// `input_args` before `-i` and an optional video filter.
fn ffmpeg_frames(input_args: &[&str], file: &Path, filter: Option<&str>) -> Vec<(f64, String)> {
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-v", "error"])
        .args(input_args)
        .arg("-i")
        .arg(file)
        .arg("-an");
    match filter {
        Some(f) => cmd.args(["-vf", f]),
        None => cmd.args(["-vsync", "passthrough"]),
    };
    let out = cmd
        .args(["-f", "framemd5", "-"])
        .output()
        .unwrap_or_else(|e| panic!("ffmpeg: {e}"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let tb = text
        .lines()
        .find_map(|l| l.strip_prefix("#tb 0: "))
        .and_then(|tb| tb.split_once('/'))
        .map(|(n, d)| {
            n.trim().parse::<f64>().unwrap_or(1.0) / d.trim().parse::<f64>().unwrap_or(1.0)
        })
        .unwrap_or(1.0);
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let fields: Vec<&str> = l.split(',').map(str::trim).collect();
            Some((
                fields.get(2)?.parse::<f64>().ok()? * tb,
                (*fields.get(5)?).to_owned(),
            ))
        })
        .collect()
}

/// The source timestamps of the frames `ffmpeg -vf fps=N` picks: its output reports slot
/// numbers, so each output frame is matched (by MD5) to the decoded frame it shows, the
/// latest one whose rounded slot is not after the output's slot.
fn ffmpeg_fps_source_times(file: &Path, fps: f64) -> Vec<f64> {
    let all = ffmpeg_frames(&[], file, None);
    let sampled = ffmpeg_frames(&[], file, Some(&format!("fps={fps}")));
    sampled
        .iter()
        .map(|(slot_time, md5)| {
            let slot = (slot_time * fps).round();
            all.iter()
                .filter(|(t, m)| m == md5 && (t * fps).round() <= slot)
                .map(|(t, _)| *t)
                .fold(f64::NAN, f64::max)
        })
        .collect()
}

async fn our_times(file: &Path, options: &str) -> Vec<f64> {
    let sql = format!(
        "SELECT pts_s FROM frames('{}', '{options}') ORDER BY frame_index",
        file.display()
    );
    query(&sql)
        .await
        .iter()
        .flat_map(|b| b.column(0).as_primitive::<Float64Type>().values().to_vec())
        .collect()
}

fn frame_rate(file: &Path) -> f64 {
    let probe = framefusion_tests::ffprobe(file).unwrap_or_default();
    let rate = probe["streams"][0]["avg_frame_rate"]
        .as_str()
        .unwrap_or("25/1")
        .to_owned();
    let (n, d) = rate.split_once('/').unwrap_or(("25", "1"));
    n.parse::<f64>().unwrap_or(25.0) / d.parse::<f64>().unwrap_or(1.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_and_timestamps_match_ffmpeg() {
    for name in ["bikes.mp4", "trailer_bbb.mp4"] {
        let file = sample(name);
        let frame = 1.0 / frame_rate(&file);
        let cases = [
            ("fps=1", ffmpeg_fps_source_times(&file, 1.0)),
            (
                "all",
                ffmpeg_frames(&[], &file, None)
                    .into_iter()
                    .map(|(t, _)| t)
                    .collect(),
            ),
            (
                "keyframes",
                ffmpeg_frames(&["-skip_frame", "nokey"], &file, None)
                    .into_iter()
                    .map(|(t, _)| t)
                    .collect(),
            ),
        ];
        for (options, reference) in cases {
            let ours = our_times(&file, options).await;
            assert_eq!(
                ours.len(),
                reference.len(),
                "{name} {options}: frame count vs ffmpeg"
            );
            for (i, (a, b)) in ours.iter().zip(&reference).enumerate() {
                assert!(
                    (a - b).abs() <= frame + 1e-6,
                    "{name} {options}: frame {i} at {a} s, ffmpeg's at {b} s"
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resized_pixels_match_ffmpeg_scale() {
    // bikes: short GOPs; the trailer: long GOPs and B-pyramids, where 1 fps sampling drops
    // the frames that feed no sampled frame
    for name in ["bikes.mp4", "trailer_bbb.mp4"] {
        pixels_match_ffmpeg(name).await;
    }
}

async fn pixels_match_ffmpeg(name: &str) {
    let file = sample(name);
    let (w, h) = (224usize, 160usize);
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(&file)
        .args([
            "-an",
            "-vf",
            &format!("fps=1,scale={w}:{h}"),
            "-pix_fmt",
            "rgb24",
            "-f",
            "rawvideo",
            "-",
        ])
        .output()
        .unwrap_or_else(|e| panic!("ffmpeg: {e}"));
    assert!(out.status.success());
    let reference = out.stdout;
    let frame_bytes = w * h * 3;
    assert_eq!(reference.len() % frame_bytes, 0);

    let sql = format!(
        "SELECT width, height, rgb FROM frames('{}', 'fps=1,size={w}x{h}') ORDER BY pts_s",
        file.display()
    );
    let batches = query(&sql).await;
    let mut ours = Vec::new();
    for b in &batches {
        let rgb = b.column(2).as_binary::<i32>();
        for i in 0..b.num_rows() {
            assert_eq!(
                b.column(0)
                    .as_primitive::<datafusion::arrow::datatypes::Int32Type>()
                    .value(i),
                w as i32
            );
            assert_eq!(
                b.column(1)
                    .as_primitive::<datafusion::arrow::datatypes::Int32Type>()
                    .value(i),
                h as i32
            );
            assert_eq!(rgb.value(i).len(), frame_bytes);
            ours.extend_from_slice(rgb.value(i));
        }
    }
    assert_eq!(
        ours.len(),
        reference.len(),
        "{name}: same number of frames as ffmpeg"
    );
    for (k, (a, b)) in ours
        .chunks(frame_bytes)
        .zip(reference.chunks(frame_bytes))
        .enumerate()
    {
        let mae = a
            .iter()
            .zip(b)
            .map(|(x, y)| f64::from(x.abs_diff(*y)))
            .sum::<f64>()
            / frame_bytes as f64;
        assert!(
            mae <= 2.0,
            "{name} frame {k}: mean absolute error {mae:.3} vs ffmpeg scale (bound 2.0)"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frame_columns_and_bad_files() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    std::fs::copy(sample("bikes.mp4"), dir.path().join("a.mp4")).unwrap_or_else(|e| panic!("{e}"));
    std::fs::copy(sample("sample.mkv"), dir.path().join("b.mkv")).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(dir.path().join("c.mp4"), b"not a video").unwrap_or_else(|e| panic!("{e}"));
    let sql = format!(
        "SELECT regexp_replace(path, '.*/', '') AS file, count(frame_index) AS frames, max(width) AS w, max(height) AS h, \
         max(decode_error) IS NOT NULL AS failed \
         FROM frames('{}', 'fps=2,size=320') GROUP BY file ORDER BY file",
        dir.path().display()
    );
    let batches = query(&sql).await;
    let text = datafusion::arrow::util::pretty::pretty_format_batches(&batches)
        .map(|t| t.to_string())
        .unwrap_or_default();
    let expected = "\
+-------+--------+-----+-----+--------+
| file  | frames | w   | h   | failed |
+-------+--------+-----+-----+--------+
| a.mp4 | 20     | 320 | 136 | false  |
| b.mkv | 0      |     |     | true   |
| c.mp4 | 0      |     |     | true   |
+-------+--------+-----+-----+--------+";
    assert_eq!(text, expected);
    // frame indices of the sampled frames are the source frames' presentation indices
    let sql = format!(
        "SELECT frame_index FROM frames('{}', 'fps=1') ORDER BY frame_index",
        sample("bikes.mp4").display()
    );
    let idx: Vec<i64> = query(&sql)
        .await
        .iter()
        .flat_map(|b| b.column(0).as_primitive::<Int64Type>().values().to_vec())
        .collect();
    assert_eq!(idx.len(), 10);
    assert!(
        idx.windows(2)
            .all(|w| w[1] - w[0] >= 24 && w[1] - w[0] <= 26),
        "{idx:?}"
    );
    assert!(batches.iter().all(|b| b.column(0).null_count() == 0));
}

/// (timestamp, index, pixel hash) of every frame `decode_frames_with` gives.
fn decoded(file: &Path, sampling: Sampling, range: Option<(f64, f64)>) -> Vec<(f64, i64, u64)> {
    decode(file, sampling, Resize::Exact(160, 90), range)
        .into_iter()
        .map(|f| {
            // FNV-1a of the pixels
            let hash = f.rgb.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
                (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
            });
            (f.pts_s, f.index, hash)
        })
        .collect()
}

/// Sparse fps sampling of a whole file decodes chunks of GOPs in parallel (one decoder per
/// core); a range is decoded by one decoder. Both must give the very same frames.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_chunks_sample_the_same_frames_as_one_decoder() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    // the trailer twice over: chunks meet mid-file and at the join
    let list = dir.path().join("list.txt");
    let line = format!("file '{}'\n", sample("trailer_bbb.mp4").display());
    std::fs::write(&list, line.repeat(2)).unwrap_or_else(|e| panic!("{e}"));
    let twice = dir.path().join("twice.mp4");
    framefusion_tests::ffmpeg(
        &[
            "-f",
            "concat",
            "-safe",
            "0",
            "-i",
            &list.display().to_string(),
            "-c",
            "copy",
        ],
        &twice,
    );
    for file in [sample("bikes.mp4"), sample("trailer_bbb.mp4"), twice] {
        for fps in [1.0, 0.5, 3.0] {
            let runs = chunked_passes();
            let chunked = decoded(&file, Sampling::Fps(fps), None);
            let cores = std::thread::available_parallelism().map_or(1, usize::from);
            if cores >= 2 && file != sample("bikes.mp4") {
                assert!(
                    chunked_passes() > runs,
                    "{} was decoded in chunks",
                    file.display()
                );
            }
            let single = decoded(&file, Sampling::Fps(fps), Some((0.0, f64::INFINITY)));
            assert!(!single.is_empty());
            assert_eq!(
                chunked,
                single,
                "{} at {fps} fps: parallel chunks and one decoder differ",
                file.display()
            );
        }
    }
}

/// Runs in a child process (the integration tests share one process, and the CPU budget
/// is sized once per process): a frames scan of four files in four partitions, under a
/// budget of 2 threads, prints the most decoder threads its passes held at once and the
/// frames of each file.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_four_partition_frames_scan_stays_within_the_decoder_budget() {
    const CHILD: &str = "FRAMEFUSION_TEST_BUDGET_CHILD";
    if let Some(dir) = std::env::var_os(CHILD) {
        let sql = format!(
            "SET datafusion.execution.target_partitions = 4; \
             SELECT regexp_replace(path, '.*/', '') AS file, count(*) AS frames \
             FROM frames('{}') GROUP BY file ORDER BY file",
            Path::new(&dir).display()
        );
        let batches = query(&sql).await;
        let text = datafusion::arrow::util::pretty::pretty_format_batches(&batches)
            .map(|t| t.to_string())
            .unwrap_or_default();
        let budget = framefusion_udfs::media::cpu::budget();
        println!("{text}");
        println!(
            "budget={} peak={}",
            budget.threads(),
            budget.decoder_threads_peak()
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let files = [
        "trailer_bbb.mp4",
        "bikes.mp4",
        "carphone_pristine.mp4",
        "sample.mp4",
    ];
    for name in files {
        std::fs::copy(sample(name), dir.path().join(name)).unwrap_or_else(|e| panic!("{e}"));
    }
    let exe = std::env::current_exe().unwrap_or_else(|e| panic!("{e}"));
    let out = Command::new(exe)
        .args([
            "frames::a_four_partition_frames_scan_stays_within_the_decoder_budget",
            "--exact",
            "--nocapture",
        ])
        .env(CHILD, dir.path())
        .env("FRAMEFUSION_THREADS", "2")
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // every file's frames, as ffmpeg decodes them
    for name in files {
        let frames = ffmpeg_frames(&[], &dir.path().join(name), None).len();
        assert!(
            stdout.contains(&format!("| {name} ")) && stdout.contains(&format!(" {frames} ")),
            "{name}: {frames} frames expected in\n{stdout}"
        );
    }
    let peak = stdout
        .lines()
        .find_map(|l| l.strip_prefix("budget=2 peak="))
        .and_then(|p| p.trim().parse::<usize>().ok())
        .unwrap_or_else(|| panic!("no peak in\n{stdout}"));
    assert!(
        (1..=2).contains(&peak),
        "the scan's passes held {peak} decoder threads at once, over the budget of 2"
    );
}

/// `frames_at` (the frames of many rows of one video) gives each time the very frame
/// `frame_at` gives it alone, in the order asked, whatever the order, duplicates and gaps
/// (times within a few seconds share a pass, farther ones seek); a time past the end is
/// that time's error only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_at_many_times_equal_frame_at_each() {
    use framefusion_udfs::media::decode::{frame_at, frames_at};
    // a name of its own: the passes counted are this test's, whatever else reads the sample
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let file = dir.path().join("trailer_frames_at.mp4");
    std::fs::copy(sample("trailer_bbb.mp4"), &file).unwrap_or_else(|e| panic!("{e}"));
    let media = framefusion_udfs::media::source::VideoSource::parse(&file.display().to_string())
        .and_then(|s| s.media_input(&Default::default()))
        .unwrap_or_else(|e| panic!("{e}"));
    let times = [12.3, 1.0, 1.04, 30.0, 0.0, 12.3, 2.5, 999.0, 31.5];
    let passes = || framefusion_udfs::media::pass::passes(&media.display);
    let before = passes();
    let many = frames_at(&media, &times, Resize::Exact(96, 54)).unwrap_or_else(|e| panic!("{e}"));
    // runs: [0, 1, 1.04, 2.5], [12.3, 12.3], [30, 31.5], [999]
    assert_eq!(passes() - before, 4, "one pass per run of close times");
    assert_eq!(many.len(), times.len());
    for (at, got) in times.iter().zip(many) {
        let alone = frame_at(&media, *at, Resize::Exact(96, 54));
        match (got, alone) {
            (Ok(got), Ok(alone)) => {
                assert_eq!((got.index, got.pts_s), (alone.index, alone.pts_s), "{at} s");
                assert!(got.pts_s >= at - 1e-6, "{at} s: the frame at or after it");
                assert!(got.rgb == alone.rgb, "{at} s: the pixels differ");
            }
            (Err(got), Err(_)) => assert!(got.to_string().contains("999"), "{got}"),
            (got, alone) => panic!(
                "{at} s: {:?} vs {:?}",
                got.map(|f| f.pts_s),
                alone.map(|f| f.pts_s)
            ),
        }
    }
}
