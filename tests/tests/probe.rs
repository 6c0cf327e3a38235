//! The VIDEO table's probe columns agree with ffprobe on every sample file.

use framefusion_tests::{corpus_dir, ffprobe, json_lines, run_framefusion};
use serde_json::Value;

fn rate(s: &str) -> Option<f64> {
    let (n, d) = s.split_once('/')?;
    let (n, d): (f64, f64) = (n.parse().ok()?, d.parse().ok()?);
    (n > 0.0 && d > 0.0).then_some(n / d)
}

fn stream<'a>(probe: &'a Value, kind: &str) -> Option<&'a Value> {
    probe["streams"]
        .as_array()?
        .iter()
        .find(|s| s["codec_type"] == kind && s["disposition"]["attached_pic"] != 1)
}

#[test]
fn probe_table_matches_ffprobe_for_every_sample_file() {
    let corpus = corpus_dir();
    let sql = format!(
        "CREATE EXTERNAL TABLE v STORED AS VIDEO LOCATION '{}'; \
         SELECT path, duration_s, width, height, fps, video_codec, audio_codec, probe_error FROM v ORDER BY path",
        corpus.display()
    );
    let out = run_framefusion(&["sql", &sql, "--format", "json"]);
    assert!(
        out.status.success(),
        "framefusion failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows = json_lines(&out.stdout);

    let mut files: Vec<_> = std::fs::read_dir(&corpus)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.sort();
    assert_eq!(rows.len(), files.len(), "one row per corpus file: {rows:?}");

    let mut errors = 0;
    for (row, file) in rows.iter().zip(&files) {
        let uri = format!("file://{}", file.display());
        assert_eq!(row["path"], uri.as_str());
        let Some(reference) = ffprobe(file) else {
            // ffprobe cannot read it: we must give an error row, every probe column null
            errors += 1;
            assert!(
                row["probe_error"].as_str().is_some_and(|e| !e.is_empty()),
                "{row}"
            );
            for column in [
                "duration_s",
                "width",
                "height",
                "fps",
                "video_codec",
                "audio_codec",
            ] {
                assert!(
                    row.get(column).is_none_or(Value::is_null),
                    "{column} must be null: {row}"
                );
            }
            continue;
        };
        assert!(row.get("probe_error").is_none_or(Value::is_null), "{row}");
        let video =
            stream(&reference, "video").unwrap_or_else(|| panic!("ffprobe sees no video in {uri}"));
        let duration: f64 = reference["format"]["duration"]
            .as_str()
            .and_then(|d| d.parse().ok())
            .unwrap_or(f64::NAN);
        let ours = row["duration_s"].as_f64().unwrap_or(f64::NAN);
        assert!(
            (ours - duration).abs() <= 0.05,
            "{uri}: duration {ours} vs ffprobe {duration}"
        );
        assert_eq!(row["width"], video["width"], "{uri}: width");
        assert_eq!(row["height"], video["height"], "{uri}: height");
        assert_eq!(
            row["video_codec"], video["codec_name"],
            "{uri}: video codec"
        );
        let fps = video["avg_frame_rate"]
            .as_str()
            .and_then(rate)
            .or_else(|| video["r_frame_rate"].as_str().and_then(rate));
        let ours = row["fps"].as_f64();
        assert!(
            matches!((ours, fps), (Some(a), Some(b)) if (a - b).abs() <= 0.01),
            "{uri}: fps {ours:?} vs ffprobe {fps:?}"
        );
        match stream(&reference, "audio") {
            Some(audio) => assert_eq!(
                row["audio_codec"], audio["codec_name"],
                "{uri}: audio codec"
            ),
            None => assert!(
                row.get("audio_codec").is_none_or(Value::is_null),
                "{uri}: no audio expected"
            ),
        }
    }
    assert_eq!(
        errors, 1,
        "sample.mkv (truncated) is the one bad sample file"
    );
}

#[test]
fn probe_columns_cover_the_rest_of_the_videos_table() {
    // container, bit rate, frame count, pixel format and audio layout, also against ffprobe
    let file = corpus_dir().join("bigbuckbunny.mp4");
    let sql = format!(
        "CREATE EXTERNAL TABLE one STORED AS VIDEO LOCATION '{}'; \
         SELECT container, bit_rate, frame_count, pix_fmt, rotation, audio_channels, audio_sample_rate, size_bytes FROM one",
        file.display()
    );
    let out = run_framefusion(&["sql", &sql, "--format", "json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows = json_lines(&out.stdout);
    assert_eq!(rows.len(), 1);
    let row = &rows[0];
    let reference = ffprobe(&file).unwrap_or_default();
    let video = stream(&reference, "video").cloned().unwrap_or_default();
    let audio = stream(&reference, "audio").cloned().unwrap_or_default();
    let as_i64 = |v: &Value| {
        v.as_str()
            .and_then(|s| s.parse::<i64>().ok())
            .or_else(|| v.as_i64())
    };
    assert_eq!(row["container"], reference["format"]["format_name"]);
    assert_eq!(
        row["bit_rate"].as_i64(),
        as_i64(&reference["format"]["bit_rate"])
    );
    assert_eq!(row["frame_count"].as_i64(), as_i64(&video["nb_frames"]));
    assert_eq!(row["pix_fmt"], video["pix_fmt"]);
    assert_eq!(row["rotation"], 0);
    assert_eq!(row["audio_channels"], audio["channels"]);
    assert_eq!(
        row["audio_sample_rate"].as_i64(),
        as_i64(&audio["sample_rate"])
    );
    assert_eq!(
        row["size_bytes"].as_i64(),
        as_i64(&reference["format"]["size"])
    );
}
