//! Lip sync: a talking clip made from the carphone talking head (its own frames, head
//! motion and all) whose mouth opens with the loudness of speech synthesised by espeak-ng,
//! scored with its own audio, the same audio 1 s late, and other speech in its place.

use std::path::{Path, PathBuf};
use std::process::Command;

use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::Float64Type;
use framefusion_tests::{decode, ffmpeg, query, sample};
use framefusion_udfs::faces::Mtcnn;
use framefusion_udfs::media::decode::{Resize, Sampling};
use framefusion_udfs::media::image::Rgb;
use framefusion_udfs::models::OnnxOptions;

const FPS: f64 = 25.0;

/// espeak-ng speech from SSML (pauses where the text puts them), as a WAV file.
fn speak(dir: &Path, name: &str, ssml: &str) -> PathBuf {
    let wav = dir.join(name);
    let status = Command::new("espeak-ng")
        .args(["-m", "-s", "150", "-w"])
        .arg(&wav)
        .arg(ssml)
        .status();
    assert!(
        status.is_ok_and(|s| s.success()),
        "espeak-ng failed (installed by scripts/setup.sh)"
    );
    wav
}

/// Loudness of `wav` per video frame (RMS over each 40 ms), scaled to 0..1.
fn loudness(dir: &Path, wav: &Path) -> Vec<f64> {
    let raw = dir.join("loudness.raw");
    ffmpeg(
        &[
            "-i",
            &wav.display().to_string(),
            "-f",
            "s16le",
            "-ac",
            "1",
            "-ar",
            "16000",
        ],
        &raw,
    );
    let bytes = std::fs::read(&raw).unwrap_or_else(|e| panic!("{e}"));
    let samples: Vec<f64> = bytes
        .chunks_exact(2)
        .map(|b| f64::from(i16::from_le_bytes([b[0], b[1]])) / 32768.0)
        .collect();
    let per_frame = (16_000.0 / FPS) as usize;
    let rms: Vec<f64> = samples
        .chunks(per_frame)
        .map(|c| (c.iter().map(|v| v * v).sum::<f64>() / c.len() as f64).sqrt())
        .collect();
    let max = rms.iter().copied().fold(1e-9, f64::max);
    rms.iter().map(|v| (v / max).min(1.0)).collect()
}

/// The carphone frames, each with its mouth corners (from the face detector).
fn talking_head() -> Vec<(Rgb, [(f64, f64); 2])> {
    let mtcnn = Mtcnn::load(&OnnxOptions::default()).unwrap_or_else(|e| panic!("{e}"));
    let mut out: Vec<(Rgb, [(f64, f64); 2])> = Vec::new();
    let frames = decode(
        &sample("carphone_pristine.mp4"),
        Sampling::All,
        Resize::Original,
        None,
    );
    for f in frames {
        let rgb = Rgb::from(f);
        let faces = mtcnn.detect(&rgb).unwrap_or_else(|e| panic!("{e}"));
        let corners = faces
            .first()
            .map(|face| [face.landmarks[3], face.landmarks[4]])
            .or_else(|| out.last().map(|(_, c)| *c));
        if let Some(corners) = corners {
            out.push((rgb, corners));
        }
    }
    assert!(
        out.len() >= 100,
        "the talking head has a face in its frames"
    );
    out
}

/// Raw RGB frames of the talking head (played back and forth) whose mouth opens as wide
/// as `openness` (0..1) says, one value per frame.
fn animate(head: &[(Rgb, [(f64, f64); 2])], openness: &[f64], out: &Path) -> (usize, usize) {
    let mut data = Vec::new();
    let cycle = 2 * head.len() - 2;
    let (w, h) = (head[0].0.width, head[0].0.height);
    for (i, &open) in openness.iter().enumerate() {
        let k = i % cycle;
        let k = if k < head.len() { k } else { cycle - k };
        let (frame, [(lx, ly), (rx, ry)]) = &head[k];
        let mut frame = frame.clone();
        let mouth_w = ((rx - lx).powi(2) + (ry - ly).powi(2)).sqrt();
        let (cx, cy) = ((lx + rx) / 2.0, (ly + ry) / 2.0 + 0.1 * mouth_w);
        let (ax, ay) = (0.45 * mouth_w, (0.6 * mouth_w * open).max(0.5));
        for y in 0..h {
            for x in 0..w {
                let (dx, dy) = ((x as f64 - cx) / ax, (y as f64 - cy) / ay);
                if dx * dx + dy * dy <= 1.0 {
                    let p = &mut frame.data[(y * w + x) * 3..][..3];
                    p.copy_from_slice(&[60, 20, 25]);
                }
            }
        }
        data.extend_from_slice(&frame.data);
    }
    std::fs::write(out, data).unwrap_or_else(|e| panic!("{e}"));
    (w, h)
}

fn mux(frames: &Path, size: (usize, usize), audio: &[&str], out: &Path) {
    let size = format!("{}x{}", size.0, size.1);
    let mut args = vec![
        "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", &size, "-r", "25", "-i",
    ];
    let frames = frames.display().to_string();
    args.push(&frames);
    args.extend_from_slice(audio);
    args.extend_from_slice(&[
        "-map",
        "0:v",
        "-map",
        "1:a",
        "-shortest",
        "-c:v",
        "libx264",
        "-crf",
        "18",
        "-pix_fmt",
        "yuv420p",
        "-c:a",
        "aac",
        "-b:a",
        "96k",
    ]);
    ffmpeg(&args, out);
}

struct Scored {
    score: Option<f64>,
    best_offset_s: Option<f64>,
    error: Option<String>,
}

async fn lip_sync(videos: &[&Path]) -> Vec<Option<Scored>> {
    let values: Vec<String> = videos
        .iter()
        .enumerate()
        .map(|(i, p)| format!("({i}, '{}')", p.display()))
        .collect();
    let batches = query(&format!(
        "SELECT lip_sync(p) AS r FROM (VALUES {}) AS v(i, p) ORDER BY i",
        values.join(", ")
    ))
    .await;
    let mut out = Vec::new();
    for b in &batches {
        let r = b.column(0).as_struct();
        let f = |name: &str| {
            r.column_by_name(name)
                .cloned()
                .unwrap_or_else(|| panic!("no field {name}"))
        };
        let (score, offset, error) = (f("score"), f("best_offset_s"), f("error"));
        let (score, offset) = (
            score.as_primitive::<Float64Type>(),
            offset.as_primitive::<Float64Type>(),
        );
        let error = error.as_string::<i32>();
        for i in 0..b.num_rows() {
            if r.is_null(i) {
                out.push(None);
                continue;
            }
            let opt = |a: &datafusion::arrow::array::PrimitiveArray<Float64Type>| {
                (!a.is_null(i)).then(|| a.value(i))
            };
            out.push(Some(Scored {
                score: opt(score),
                best_offset_s: opt(offset),
                error: (!error.is_null(i)).then(|| error.value(i).to_owned()),
            }));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lip_sync_prefers_the_clips_own_audio() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let d = dir.path();
    let own = speak(
        d,
        "own.wav",
        "<speak>Hello there, how are you today? <break time=\"900ms\"/> I am fine, thank you. <break time=\"1500ms\"/> The weather is lovely. <break time=\"600ms\"/> Shall we walk down to the river? <break time=\"1200ms\"/> Yes, let us go now.</speak>",
    );
    let other = speak(
        d,
        "other.wav",
        "<speak>Numbers: one, two, three. <break time=\"400ms\"/> Four and five and six and seven and eight. <break time=\"2000ms\"/> Nine. <break time=\"700ms\"/> Ten, eleven, twelve, thirteen, fourteen, fifteen.</speak>",
    );
    let openness = loudness(d, &own);
    let head = talking_head();
    let frames = d.join("frames.rgb");
    let size = animate(&head, &openness, &frames);
    let talk = d.join("talk.mp4");
    let late = d.join("late.mp4");
    let replaced = d.join("replaced.mp4");
    let silent = d.join("silent.mp4");
    let own_s = own.display().to_string();
    let other_s = other.display().to_string();
    mux(&frames, size, &["-i", &own_s], &talk);
    mux(
        &frames,
        size,
        &["-i", &own_s, "-af", "adelay=1000,apad"],
        &late,
    );
    mux(&frames, size, &["-i", &other_s, "-af", "apad"], &replaced);
    mux(
        &frames,
        size,
        &["-f", "lavfi", "-i", "anullsrc=r=16000:cl=mono"],
        &silent,
    );
    let car = sample("carphone_pristine.mp4");
    let r = lip_sync(&[&talk, &late, &replaced, &silent, &car]).await;
    let score = |i: usize| {
        r[i].as_ref()
            .and_then(|s| s.score)
            .unwrap_or_else(|| panic!("no score for video {i}"))
    };
    let (own_score, late_score, replaced_score) = (score(0), score(1), score(2));
    let offset = |i: usize| r[i].as_ref().and_then(|s| s.best_offset_s);
    eprintln!(
        "lip sync: own audio {own_score:.3} (best offset {:?}), 1 s late {late_score:.3} (best offset {:?}), replaced {replaced_score:.3}",
        offset(0),
        offset(1)
    );
    assert!(own_score >= 0.5, "{own_score}");
    assert!(own_score - late_score >= 0.3, "{own_score} vs {late_score}");
    assert!(
        own_score - replaced_score >= 0.3,
        "{own_score} vs {replaced_score}"
    );
    // the offset search finds the shift
    let own_offset = offset(0).unwrap_or(f64::NAN);
    let late_offset = offset(1).unwrap_or(f64::NAN);
    assert!(own_offset.abs() <= 0.2, "{own_offset}");
    assert!((late_offset - 1.0).abs() <= 0.2, "{late_offset}");
    // silence: nothing to judge, said so; no audio stream: null
    let silent = r[3].as_ref().unwrap_or_else(|| panic!("silence is audio"));
    assert!(silent.score.is_none());
    assert!(
        silent
            .error
            .as_deref()
            .is_some_and(|e| e.contains("no speech")),
        "{:?}",
        silent.error
    );
    assert!(r[4].is_none(), "a video without audio gives null");
}
