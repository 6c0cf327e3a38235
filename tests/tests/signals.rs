//! Clip signals: motion near zero on a static clip and growing with pan speed, sharpness
//! lower on a blurred copy, black clips flagged, near-duplicates close in pHash distance,
//! and one decode per clip however many signals a query asks of it.

use std::path::{Path, PathBuf};

use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::{Float64Type, Int32Type, Int64Type};
use framefusion_tests::{query, sample};

/// ffmpeg with `args`, encoding H.264 to `out`.
fn ffmpeg(args: &[&str], out: &Path) {
    let mut args = args.to_vec();
    args.extend([
        "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p",
    ]);
    framefusion_tests::ffmpeg(&args, out);
}

/// A 2-second 320x240 clip panning over a static noise texture at `speed` pixels/frame.
fn pan(dir: &Path, speed: u32) -> PathBuf {
    let texture = dir.join("texture.png");
    if !texture.exists() {
        framefusion_tests::ffmpeg(
            &[
                "-f",
                "lavfi",
                "-i",
                "nullsrc=s=1600x240,geq=lum='random(1)*255':cb=128:cr=128,boxblur=2",
                "-frames:v",
                "1",
            ],
            &texture,
        );
    }
    let out = dir.join(format!("pan{speed}.mp4"));
    let crop = format!("crop=320:240:x='n*{speed}':y=0");
    ffmpeg(
        &[
            "-loop",
            "1",
            "-framerate",
            "25",
            "-t",
            "2",
            "-i",
            &texture.display().to_string(),
            "-vf",
            &crop,
        ],
        &out,
    );
    out
}

async fn float(sql: &str) -> f64 {
    let batches = query(sql).await;
    let column = batches[0].column(0);
    assert!(!column.is_null(0), "{sql}: null");
    column.as_primitive::<Float64Type>().value(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn motion_grows_with_pan_speed() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let mut scores = Vec::new();
    for speed in [0, 2, 4, 8] {
        let file = pan(dir.path(), speed);
        let f = file.display();
        let score = float(&format!("SELECT motion_score('{f}', 0, 2)")).await;
        let camera = float(&format!(
            "SELECT clip_signals('{f}', 0, 2)['camera_motion']"
        ))
        .await;
        let source = query(&format!(
            "SELECT clip_signals('{f}', 0, 2)['motion_source']"
        ))
        .await;
        assert_eq!(
            source[0].column(0).as_string::<i32>().value(0),
            "motion_vectors"
        );
        // the camera moves `speed` pixels of 320 per frame
        let expected = f64::from(speed) / 320.0 * 100.0;
        assert!(
            (camera - expected).abs() <= 0.35 * expected.max(0.2),
            "speed {speed}: camera motion {camera:.3}% vs {expected:.3}%"
        );
        scores.push((speed, score));
    }
    eprintln!("motion by pan speed: {scores:?}");
    assert!(
        scores[0].1 < 0.1,
        "a static clip scores near zero: {scores:?}"
    );
    assert!(
        scores.windows(2).all(|w| w[1].1 > w[0].1 * 1.3),
        "motion must grow with the pan speed: {scores:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quality_flags_blur_and_black() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let bikes = sample("bikes.mp4");
    let blurred = dir.path().join("blurred.mp4");
    ffmpeg(
        &[
            "-i",
            &bikes.display().to_string(),
            "-t",
            "3",
            "-vf",
            "boxblur=4",
        ],
        &blurred,
    );
    let black = dir.path().join("black.mp4");
    ffmpeg(
        &[
            "-f",
            "lavfi",
            "-t",
            "2",
            "-i",
            "color=c=black:s=320x240:r=25",
        ],
        &black,
    );
    let q =
        |f: &Path, field: &str| format!("SELECT clip_quality('{}', 0, 3)['{field}']", f.display());
    let sharp = float(&q(&bikes, "sharpness")).await;
    let soft = float(&q(&blurred, "sharpness")).await;
    eprintln!("sharpness: original {sharp:.1}, blurred {soft:.1}");
    assert!(soft < sharp / 2.0, "blurred {soft} vs original {sharp}");
    assert_eq!(float(&q(&black, "black_fraction")).await, 1.0);
    assert_eq!(float(&q(&bikes, "black_fraction")).await, 0.0);
    assert!(float(&q(&black, "brightness")).await < 20.0);
    // a black clip is also frozen: every frame equals the previous one
    assert_eq!(float(&q(&black, "frozen_fraction")).await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn near_duplicates_are_close_in_phash() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let bikes = sample("bikes.mp4");
    let copy = dir.path().join("copy.mp4");
    ffmpeg(
        &[
            "-i",
            &bikes.display().to_string(),
            "-vf",
            "scale=320:-2",
            "-crf",
            "35",
        ],
        &copy,
    );
    let trailer = sample("trailer_bbb.mp4");
    let sql = format!(
        "SELECT hamming_distance(clip_phash('{b}', 0, 3), clip_phash('{c}', 0, 3)),
                hamming_distance(clip_phash('{b}', 0, 3), clip_phash('{t}', 20, 23))",
        b = bikes.display(),
        c = copy.display(),
        t = trailer.display()
    );
    let batches = query(&sql).await;
    let same = batches[0].column(0).as_primitive::<Int32Type>().value(0);
    let other = batches[0].column(1).as_primitive::<Int32Type>().value(0);
    eprintln!("pHash distance: re-encoded copy {same}, other clip {other}");
    assert!(same <= 10, "{same}");
    assert!(other >= 16, "{other}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_signals_of_a_clip_decode_it_once() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let file = dir.path().join("once.mp4");
    std::fs::copy(sample("bikes.mp4"), &file).unwrap_or_else(|e| panic!("{e}"));
    let uri = framefusion_udfs::media::source::local_uri(&file);
    let before = framefusion_udfs::signals::clip_decodes(&uri);
    let sql = format!(
        "SELECT motion_score(p, s, e) AS m, clip_quality(p, s, e)['sharpness'] AS q,
                clip_phash(p, s, e) AS h, clip_quality(p, s, e)['brightness'] AS b
         FROM (VALUES ('{uri}', 0.0, 2.0), ('{uri}', 4.0, 6.0)) AS t(p, s, e)"
    );
    let batches = query(&sql).await;
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    assert_eq!(rows, 2);
    assert!(
        batches[0]
            .column(2)
            .as_primitive::<Int64Type>()
            .null_count()
            == 0
    );
    let decodes = framefusion_udfs::signals::clip_decodes(&uri) - before;
    assert_eq!(decodes, 2, "one decode per clip, not one per signal");
}
