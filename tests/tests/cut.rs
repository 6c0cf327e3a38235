//! `cut_clip`: the written clip plays (ffprobe reads it), its duration is within one frame
//! of the asked range (re-encode) or one GOP (stream copy), and a rerun writes no second
//! file, to a local folder and to an S3-compatible store.

use std::path::Path;

use datafusion::arrow::array::{Array, AsArray};
use framefusion_tests::s3::S3Server;
use framefusion_tests::{ffprobe, framefusion_bin, json_lines, query, sample};

/// The clip's video stream duration and frame count, and whether it has audio.
fn probe_clip(file: &Path) -> (f64, i64, bool) {
    let info = ffprobe(file).unwrap_or_else(|| panic!("ffprobe cannot read {}", file.display()));
    let streams = info["streams"].as_array().cloned().unwrap_or_default();
    let video = streams
        .iter()
        .find(|s| s["codec_type"] == "video")
        .unwrap_or_else(|| panic!("no video stream in {}", file.display()));
    let duration: f64 = video["duration"]
        .as_str()
        .and_then(|d| d.parse().ok())
        .unwrap_or_else(|| panic!("no duration: {video}"));
    let frames: i64 = video["nb_frames"]
        .as_str()
        .and_then(|d| d.parse().ok())
        .unwrap_or(-1);
    let audio = streams.iter().any(|s| s["codec_type"] == "audio");
    (duration, frames, audio)
}

async fn cut(file: &Path, start: f64, end: f64, dest: &Path, mode: &str) -> String {
    let sql = format!(
        "SELECT cut_clip('{}', {start}, {end}, '{}', '{mode}')",
        file.display(),
        dest.display()
    );
    let batches = query(&sql).await;
    let uris = batches[0].column(0).as_string::<i32>();
    assert!(!uris.is_null(0), "{sql}: null (see the warn log)");
    uris.value(0).to_owned()
}

fn local(uri: &str) -> std::path::PathBuf {
    url::Url::parse(uri)
        .ok()
        .and_then(|u| u.to_file_path().ok())
        .unwrap_or_else(|| panic!("not a file URI: {uri}"))
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clips_play_with_the_asked_duration_and_are_written_once() {
    let dest = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let bikes = sample("bikes.mp4"); // 25 fps, keyframes at 0, 1.2, 3.04, 5.48, 7.48, 9.68 s
    let frame = 1.0 / 25.0;

    // re-encode: frame-exact
    let encoded = local(&cut(&bikes, 2.0, 5.0, dest.path(), "encode").await);
    let (duration, frames, _) = probe_clip(&encoded);
    assert!(
        (duration - 3.0).abs() <= frame + 1e-6,
        "encode: {duration} s"
    );
    assert_eq!(frames, 75);

    // stream copy: from the keyframe at 1.2 s, within one GOP (at most 2.44 s here)
    let copied = local(&cut(&bikes, 2.0, 5.0, dest.path(), "copy").await);
    let (duration, _, _) = probe_clip(&copied);
    assert!((duration - 3.0).abs() <= 2.44 + frame, "copy: {duration} s");
    assert!(
        duration >= 3.0 - frame,
        "copy starts early, never late: {duration} s"
    );

    // auto on a keyframe: a stream copy that is frame-exact at the start
    let auto = local(&cut(&bikes, 1.2, 3.0, dest.path(), "auto").await);
    let (duration, _, _) = probe_clip(&auto);
    assert!((duration - 1.8).abs() <= 2.0 * frame, "auto: {duration} s");

    // audio is carried over
    let trailer = local(
        &cut(
            &sample("trailer_bbb.mp4"),
            12.0,
            15.0,
            dest.path(),
            "encode",
        )
        .await,
    );
    let (duration, _, audio) = probe_clip(&trailer);
    assert!(
        (duration - 3.0).abs() <= 1.0 / 24.0 + 1e-6,
        "trailer: {duration} s"
    );
    assert!(audio, "the trailer clip keeps its audio");

    // a rerun finds the files: same URIs, nothing new, nothing rewritten
    let before = files_in(dest.path());
    assert_eq!(before.len(), 4, "{before:?}");
    let modified = std::fs::metadata(&encoded).and_then(|m| m.modified()).ok();
    assert_eq!(
        local(&cut(&bikes, 2.0, 5.0, dest.path(), "encode").await),
        encoded
    );
    assert_eq!(
        local(&cut(&bikes, 2.0, 5.0, dest.path(), "copy").await),
        copied
    );
    assert_eq!(files_in(dest.path()), before);
    assert_eq!(
        std::fs::metadata(&encoded).and_then(|m| m.modified()).ok(),
        modified
    );

    // bad input is a null row, not a failed query
    let batches = query(&format!(
        "SELECT cut_clip('/no/such.mp4', 0, 1, '{d}'), cut_clip('{b}', 3, 2, '{d}'), cut_clip('{b}', 0, 1, '{d}', 'sideways')",
        d = dest.path().display(),
        b = bikes.display()
    ))
    .await;
    for c in 0..3 {
        assert!(batches[0].column(c).is_null(0), "column {c}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clips_go_to_object_storage_once() {
    let s3 = S3Server::start();
    s3.create_bucket("clips");
    let bikes = sample("bikes.mp4");
    let sql = format!(
        "SELECT cut_clip('{}', 2, 5, 's3://clips/out/', 'encode') AS uri",
        bikes.display()
    );
    let run = || {
        let mut cmd = std::process::Command::new(framefusion_bin());
        for (k, v) in s3.env() {
            cmd.env(k, v);
        }
        let out = cmd
            .args(["sql", "--no-catalog", &sql, "--format", "json"])
            .output()
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        json_lines(&out.stdout)
    };
    let first = run();
    let uri = first[0]["uri"].as_str().unwrap_or_default().to_owned();
    assert!(
        uri.starts_with("s3://clips/out/bikes_2.000_5.000_encode_"),
        "{first:?}"
    );
    assert_eq!(run(), first, "a rerun returns the same object");
    let objects = files_in(&s3.root().join("clips/out"));
    assert_eq!(objects.len(), 1, "{objects:?}");
    let (duration, frames, _) = probe_clip(&s3.root().join("clips/out").join(&objects[0]));
    assert!((duration - 3.0).abs() <= 0.04 + 1e-6, "{duration}");
    assert_eq!(frames, 75);
}
