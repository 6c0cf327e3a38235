//! Media conformance: a matrix of video codecs and containers, generated here with the
//! ffmpeg CLI (no media is committed), each with a trait that breaks readers (a start
//! offset, B-frames, variable frame rate, rotation, colour tags, full range, odd sizes, an
//! audio track), plus copies with a damaged packet. For every file: the probe equals
//! ffprobe; the counts of all frames, `fps=1` and `keyframes` equal ffmpeg's (key frames:
//! the packets the container flags key); every `fps=1` frame is pixel-identical to
//! `ffmpeg -vf fps=1 -pix_fmt rgb24`'s; the operators return values, not errors.
//!
//! The matrix is also the source of the SQL reference's "Supported media" table: a test
//! checks that every codec and container here has its row there.

use std::path::{Path, PathBuf};
use std::process::Command;

use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::{Float64Type, Int32Type, Int64Type};
use framefusion_tests::{decode, ffprobe, query};
use framefusion_udfs::media::decode::{Resize, Sampling};

/// One generated file: how ffmpeg makes it, and what it must show.
struct Case {
    /// File name (its extension picks the container).
    file: &'static str,
    /// The codec ffprobe names.
    codec: &'static str,
    /// The container, as the "Supported media" table names it.
    container: &'static str,
    /// The lavfi video source (size and rate are traits of the case).
    source: &'static str,
    /// Seconds of video (and audio).
    seconds: &'static str,
    /// Video encoding arguments.
    video: &'static [&'static str],
    /// Audio encoding arguments (a sine track), or none.
    audio: &'static [&'static str],
    /// Arguments after the codecs (muxer options, metadata).
    extra: &'static [&'static str],
    /// What the case exercises.
    traits: &'static str,
}

const SECONDS: &str = "3";

fn cases() -> Vec<Case> {
    vec![
        Case {
            file: "h264_bt709_aac.mp4",
            codec: "h264",
            container: "mp4",
            source: "testsrc2=size=320x240:rate=25",
            seconds: SECONDS,
            video: &[
                "-c:v",
                "libx264",
                "-preset",
                "veryfast",
                "-bf",
                "3",
                "-pix_fmt",
                "yuv420p",
                "-colorspace",
                "bt709",
                "-color_primaries",
                "bt709",
                "-color_trc",
                "bt709",
            ],
            audio: &["-c:a", "aac"],
            extra: &[],
            traits: "B-frames, bt709 tags, aac",
        },
        Case {
            file: "h264_fullrange_vfr.mkv",
            codec: "h264",
            container: "matroska",
            source: "testsrc2=size=320x240:rate=25",
            seconds: SECONDS,
            video: &[
                "-vf",
                "select='lt(mod(n\\,10)\\,6)'",
                "-fps_mode",
                "vfr",
                "-c:v",
                "libx264",
                "-preset",
                "veryfast",
                "-pix_fmt",
                "yuvj420p",
                "-color_range",
                "pc",
            ],
            audio: &["-c:a", "libopus"],
            extra: &[],
            traits: "variable frame rate, full range, opus",
        },
        Case {
            file: "hevc_rotated.mov",
            codec: "hevc",
            container: "mov",
            source: "testsrc2=size=320x240:rate=30",
            seconds: SECONDS,
            video: &[
                "-c:v",
                "libx265",
                "-preset",
                "ultrafast",
                "-x265-params",
                "log-level=error",
                "-tag:v",
                "hvc1",
                "-metadata:s:v",
                "rotate=90",
            ],
            audio: &["-c:a", "pcm_s16le"],
            extra: &[],
            traits: "rotation metadata, pcm",
        },
        Case {
            file: "vp9_opus.webm",
            codec: "vp9",
            container: "webm",
            source: "testsrc2=size=320x240:rate=25",
            seconds: SECONDS,
            video: &[
                "-c:v",
                "libvpx-vp9",
                "-deadline",
                "realtime",
                "-cpu-used",
                "8",
                "-g",
                "30",
            ],
            audio: &["-c:a", "libopus"],
            extra: &[],
            traits: "decoder ignores skip_frame (keyframes by packet flag), opus",
        },
        Case {
            file: "av1.mkv",
            codec: "av1",
            container: "matroska",
            source: "testsrc2=size=320x240:rate=25",
            seconds: SECONDS,
            video: &["-c:v", "libsvtav1", "-preset", "12", "-g", "30"],
            audio: &[],
            extra: &[],
            traits: "AV1",
        },
        Case {
            file: "mpeg2_ps.mpg",
            codec: "mpeg2video",
            container: "mpeg",
            source: "testsrc2=size=352x288:rate=25",
            seconds: SECONDS,
            video: &["-c:v", "mpeg2video", "-bf", "2", "-q:v", "4"],
            audio: &["-c:a", "mp2"],
            extra: &["-f", "vob"],
            traits: "program stream: start time 0.5 s, audio first, B-frames, mp2",
        },
        Case {
            file: "mpeg2_ps_30fps.mpg",
            codec: "mpeg2video",
            container: "mpeg",
            source: "testsrc2=size=352x288:rate=30",
            seconds: "7.5",
            video: &["-c:v", "mpeg2video", "-bf", "2", "-q:v", "4"],
            audio: &["-c:a", "mp2"],
            extra: &["-f", "vob"],
            traits: "program stream of 7.5 s at 30 fps starting 0.53 s in, whose index lists nearly every packet as a seek point; its last fps=1 slot is filled at the end of the stream",
        },
        Case {
            file: "mpeg2_ps_24fps.mpg",
            codec: "mpeg2video",
            container: "mpeg",
            source: "testsrc2=size=352x288:rate=24",
            seconds: "7.6",
            video: &["-c:v", "mpeg2video", "-bf", "2", "-q:v", "4"],
            audio: &["-c:a", "mp2"],
            extra: &["-f", "vob"],
            traits: "program stream of 7.6 s at 24 fps, the same index",
        },
        Case {
            file: "mpeg2_ts.ts",
            codec: "mpeg2video",
            container: "mpegts",
            source: "testsrc2=size=352x288:rate=25",
            seconds: SECONDS,
            video: &["-c:v", "mpeg2video", "-bf", "2", "-q:v", "4"],
            audio: &["-c:a", "ac3"],
            extra: &[],
            traits: "transport stream: start time 1.4 s, ac3",
        },
        Case {
            file: "mpeg4_bframes.avi",
            codec: "mpeg4",
            container: "avi",
            source: "testsrc2=size=320x240:rate=24000/1001",
            seconds: SECONDS,
            video: &["-c:v", "mpeg4", "-bf", "2", "-q:v", "4"],
            audio: &["-c:a", "libmp3lame"],
            extra: &[],
            traits: "packets without presentation timestamps, B-frames, 23.976 fps, mp3",
        },
        Case {
            file: "msmpeg4v3.avi",
            codec: "msmpeg4v3",
            container: "avi",
            source: "testsrc2=size=320x240:rate=25",
            seconds: SECONDS,
            video: &["-c:v", "msmpeg4", "-q:v", "4"],
            audio: &["-c:a", "pcm_s16le"],
            extra: &[],
            traits: "DivX 3, pcm",
        },
        Case {
            file: "mjpeg_odd.avi",
            codec: "mjpeg",
            container: "avi",
            source: "testsrc2=size=321x241:rate=15",
            seconds: SECONDS,
            video: &["-c:v", "mjpeg", "-pix_fmt", "yuvj422p", "-q:v", "3"],
            audio: &[],
            extra: &[],
            traits: "odd size, full-range 4:2:2, intra only",
        },
        Case {
            file: "prores.mov",
            codec: "prores",
            container: "mov",
            source: "testsrc2=size=320x240:rate=25",
            seconds: SECONDS,
            video: &["-c:v", "prores_ks", "-profile:v", "1"],
            audio: &["-c:a", "pcm_s16le"],
            extra: &[],
            traits: "10-bit 4:2:2, intra only",
        },
        Case {
            file: "cinepak.avi",
            codec: "cinepak",
            container: "avi",
            source: "testsrc2=size=320x240:rate=25",
            seconds: SECONDS,
            video: &["-c:v", "cinepak", "-g", "25"],
            audio: &[],
            extra: &[],
            traits: "decoder ignores skip_frame, RGB-era codec",
        },
        Case {
            file: "ffv1_odd.mkv",
            codec: "ffv1",
            container: "matroska",
            source: "testsrc2=size=319x239:rate=25",
            seconds: SECONDS,
            video: &["-c:v", "ffv1", "-pix_fmt", "yuv420p"],
            audio: &["-c:a", "flac"],
            extra: &[],
            traits: "lossless, odd size, flac",
        },
        Case {
            file: "flv1.flv",
            codec: "flv1",
            container: "flv",
            source: "testsrc2=size=320x240:rate=25",
            seconds: SECONDS,
            video: &["-c:v", "flv", "-q:v", "4"],
            audio: &["-c:a", "libmp3lame", "-ar", "44100"],
            extra: &[],
            traits: "Sorenson H.263, mp3",
        },
        Case {
            file: "h264_offset.mkv",
            codec: "h264",
            container: "matroska",
            source: "testsrc2=size=320x240:rate=25",
            seconds: SECONDS,
            video: &["-c:v", "libx264", "-preset", "veryfast", "-bf", "2"],
            audio: &["-c:a", "aac"],
            extra: &["-output_ts_offset", "1.3"],
            traits: "start time 1.3 s",
        },
        Case {
            file: "h264.ts",
            codec: "h264",
            container: "mpegts",
            source: "testsrc2=size=320x240:rate=25",
            seconds: SECONDS,
            video: &[
                "-c:v", "libx264", "-preset", "veryfast", "-bf", "3", "-g", "25",
            ],
            audio: &["-c:a", "aac"],
            extra: &[],
            traits: "B-frames in a transport stream",
        },
    ]
}

/// Encodes `case` into `dir`.
fn generate(dir: &Path, case: &Case) -> PathBuf {
    let out = dir.join(case.file);
    let mut args: Vec<String> = vec![
        "-f".into(),
        "lavfi".into(),
        "-t".into(),
        case.seconds.into(),
        "-i".into(),
        case.source.into(),
    ];
    if !case.audio.is_empty() {
        args.extend(
            [
                "-f",
                "lavfi",
                "-t",
                case.seconds,
                "-i",
                "sine=frequency=440:sample_rate=48000",
            ]
            .map(String::from),
        );
    }
    args.extend(case.video.iter().map(|s| s.to_string()));
    args.extend(case.audio.iter().map(|s| s.to_string()));
    args.extend(case.extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    framefusion_tests::ffmpeg(&args, &out);
    out
}

/// (position, size, key) of the packets of `stream` (`v:0`, `a:0`) in `file`, as ffprobe
/// lists them.
fn packets(file: &Path, stream: &str) -> Vec<(u64, u64, bool)> {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", stream, "-show_entries"])
        .args(["packet=pos,size,flags", "-of", "compact=p=0"])
        .arg(file)
        .output()
        .unwrap_or_else(|e| panic!("ffprobe: {e}"));
    // `size=..|pos=..|flags=..` (ffprobe's own field order)
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let field = |key: &str| {
                l.split('|')
                    .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
                    .map(str::to_owned)
            };
            Some((
                field("pos")?.parse().ok()?,
                field("size")?.parse().ok()?,
                field("flags")?.contains('K'),
            ))
        })
        .collect()
}

/// A copy of `file` whose video packet in the middle is overwritten with garbage (its
/// length kept, so the container stays readable): a damaged packet.
fn damaged_copy(file: &Path, dir: &Path) -> PathBuf {
    let packets = packets(file, "v:0");
    // a predicted packet past the middle; in an intra-only stream, any
    let middle = &packets[packets.len() / 2..];
    let (pos, size, _) = middle
        .iter()
        .find(|(_, size, key)| !key && *size >= 64)
        .or_else(|| middle.iter().find(|(_, size, _)| *size >= 64))
        .copied()
        .unwrap_or_else(|| panic!("{}: no packet to damage", file.display()));
    let mut bytes = std::fs::read(file).unwrap_or_else(|e| panic!("{e}"));
    let (from, to) = ((pos + size / 4) as usize, (pos + size * 3 / 4) as usize);
    for (i, b) in bytes[from..to].iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(151) ^ 0xa5;
    }
    let name = format!(
        "damaged_{}",
        file.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default()
    );
    let copy = dir.join(name);
    std::fs::write(&copy, bytes).unwrap_or_else(|e| panic!("{e}"));
    copy
}

/// The MD5s of the frames ffmpeg outputs with `filter` (`None`: every decoded frame, no
/// frame rate conversion), as packed RGB24, the video as stored (`-noautorotate`).
fn ffmpeg_md5s(file: &Path, filter: Option<&str>) -> Vec<String> {
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-v", "error", "-noautorotate", "-i"])
        .arg(file)
        .args(["-an", "-map", "0:v:0"]);
    match filter {
        Some(f) => cmd.args(["-vf", f]),
        None => cmd.args(["-fps_mode", "passthrough"]),
    };
    let out = cmd
        .args(["-pix_fmt", "rgb24", "-f", "framemd5", "-"])
        .output()
        .unwrap_or_else(|e| panic!("ffmpeg: {e}"));
    assert!(
        out.status.success(),
        "ffmpeg on {}: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(',').nth(5).map(|m| m.trim().to_owned()))
        .collect()
}

/// Packets of the video stream the container flags key.
fn key_packets(file: &Path) -> usize {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v:0", "-show_entries"])
        .args(["packet=flags", "-of", "csv=p=0"])
        .arg(file)
        .output()
        .unwrap_or_else(|e| panic!("ffprobe: {e}"));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains('K'))
        .count()
}

fn md5_hex(bytes: &[u8]) -> String {
    use md5::{Digest, Md5};
    Md5::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// What differs between framefusion and the reference tools on `file` (empty: nothing).
/// `clean`: not a damaged copy (whose damaged packet may be a key one); `pixels`: compare
/// the `fps=1` frames' pixels too.
fn check_decoding(file: &Path, clean: bool, pixels: bool) -> Vec<String> {
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut problems = Vec::new();
    let all = decode(file, Sampling::All, Resize::Original, None);
    let reference_all = ffmpeg_md5s(file, None);
    if all.len() != reference_all.len() {
        problems.push(format!(
            "{name}: {} frames, ffmpeg decodes {}",
            all.len(),
            reference_all.len()
        ));
    }
    let keys = decode(file, Sampling::Keyframes, Resize::Original, None);
    let flagged = key_packets(file);
    // a damaged copy of an intra-only stream has its damaged packet among the key ones
    let lost = usize::from(!clean);
    if keys.len() > flagged || keys.len() + lost < flagged {
        problems.push(format!(
            "{name}: {} key frames, the container flags {flagged} packets key",
            keys.len()
        ));
    }
    let sampled = decode(file, Sampling::Fps(1.0), Resize::Original, None);
    let reference = ffmpeg_md5s(file, Some("fps=1"));
    if sampled.len() != reference.len() || reference.is_empty() {
        problems.push(format!(
            "{name}: fps=1 gives {} frames, ffmpeg {}",
            sampled.len(),
            reference.len()
        ));
    } else if pixels {
        for (i, (ours, theirs)) in sampled.iter().zip(&reference).enumerate() {
            if md5_hex(&ours.rgb) != *theirs {
                let source = reference_all.iter().position(|m| m == theirs);
                problems.push(format!(
                    "{name}: fps=1 frame {i} (ours: source frame {} at {:.3} s) differs from ffmpeg's (source frame {source:?})",
                    ours.index, ours.pts_s
                ));
            }
        }
    }
    problems
}

/// What differs between `probe(path)` and ffprobe on `file`.
async fn check_probe(file: &Path) -> Vec<String> {
    let name = file.display().to_string();
    let sql = format!(
        "SELECT p['video_codec'] AS codec, p['width'] AS w, p['height'] AS h, p['pix_fmt'] AS pix, \
         p['audio_codec'] AS audio, p['duration_s'] AS d, p['rotation'] AS r, p['probe_error'] AS e, \
         p['container'] AS container, p['bit_rate'] AS bit_rate, p['frame_count'] AS frames, \
         p['audio_channels'] AS channels, p['audio_sample_rate'] AS rate, p['fps'] AS fps \
         FROM (SELECT probe('{name}') AS p)"
    );
    let batches = query(&sql).await;
    let b = &batches[0];
    let text = |i: usize| {
        let c = b.column(i).as_string::<i32>();
        (!c.is_null(0)).then(|| c.value(0).to_owned())
    };
    let reference = ffprobe(file).unwrap_or_else(|| panic!("ffprobe cannot read {name}"));
    let streams = reference["streams"].as_array().cloned().unwrap_or_default();
    let video = streams
        .iter()
        .find(|s| s["codec_type"] == "video")
        .cloned()
        .unwrap_or_default();
    let audio = streams.iter().find(|s| s["codec_type"] == "audio");
    let mut problems = Vec::new();
    if let Some(e) = text(7) {
        return vec![format!("{name}: probe_error {e}")];
    }
    let expect = [
        (
            "video_codec",
            text(0),
            video["codec_name"].as_str().map(String::from),
        ),
        (
            "pix_fmt",
            text(3),
            video["pix_fmt"].as_str().map(String::from),
        ),
        (
            "audio_codec",
            text(4),
            audio.and_then(|a| a["codec_name"].as_str().map(String::from)),
        ),
    ];
    for (what, ours, theirs) in expect {
        if ours != theirs {
            problems.push(format!("{name}: {what} {ours:?}, ffprobe {theirs:?}"));
        }
    }
    let int = |i: usize| -> Option<i64> {
        let c = b.column(i);
        if c.is_null(0) {
            None
        } else if let Some(v) = c.as_primitive_opt::<Int64Type>() {
            Some(v.value(0))
        } else {
            c.as_primitive_opt::<Int32Type>()
                .map(|v| i64::from(v.value(0)))
        }
    };
    let number = |v: &serde_json::Value| -> Option<i64> {
        v.as_i64()
            .or_else(|| v.as_str().and_then(|t| t.parse().ok()))
    };
    let counts = [
        ("bit_rate", int(9), number(&reference["format"]["bit_rate"])),
        ("frame_count", int(10), number(&video["nb_frames"])),
        (
            "audio_channels",
            int(11),
            audio.and_then(|a| number(&a["channels"])),
        ),
        (
            "audio_sample_rate",
            int(12),
            audio.and_then(|a| number(&a["sample_rate"])),
        ),
    ];
    for (what, ours, theirs) in counts {
        if ours != theirs {
            problems.push(format!("{name}: {what} {ours:?}, ffprobe {theirs:?}"));
        }
    }
    if text(8).as_deref() != reference["format"]["format_name"].as_str() {
        problems.push(format!(
            "{name}: container {:?}, ffprobe {}",
            text(8),
            reference["format"]["format_name"]
        ));
    }
    let ratio = |v: &serde_json::Value| -> Option<f64> {
        let (n, d) = v.as_str()?.split_once('/')?;
        let (n, d) = (n.parse::<f64>().ok()?, d.parse::<f64>().ok()?);
        (n > 0.0 && d > 0.0).then_some(n / d)
    };
    let fps = b.column(13).as_primitive::<Float64Type>();
    let reference_fps = ratio(&video["avg_frame_rate"]).or_else(|| ratio(&video["r_frame_rate"]));
    let ours_fps = (!fps.is_null(0)).then(|| fps.value(0));
    let agree = match (ours_fps, reference_fps) {
        (Some(a), Some(b)) => (a - b).abs() < 1e-6,
        (None, None) => true,
        _ => false,
    };
    if !agree {
        problems.push(format!(
            "{name}: fps {ours_fps:?}, ffprobe {reference_fps:?}"
        ));
    }
    let (w, h) = (
        b.column(1).as_primitive::<Int32Type>().value(0),
        b.column(2).as_primitive::<Int32Type>().value(0),
    );
    if Some(i64::from(w)) != video["width"].as_i64()
        || Some(i64::from(h)) != video["height"].as_i64()
    {
        problems.push(format!(
            "{name}: {w}x{h}, ffprobe {}x{}",
            video["width"], video["height"]
        ));
    }
    let duration = b.column(5).as_primitive::<Float64Type>();
    let reference_duration = reference["format"]["duration"]
        .as_str()
        .and_then(|d| d.parse::<f64>().ok());
    match (duration.is_null(0), reference_duration) {
        (false, Some(d)) if (duration.value(0) - d).abs() <= 1e-3 => {}
        (true, None) => {}
        (_, d) => problems.push(format!(
            "{name}: duration {:?}, ffprobe {d:?}",
            (!duration.is_null(0)).then(|| duration.value(0))
        )),
    }
    let rotation = b.column(6).as_primitive::<Int32Type>().value(0);
    let reference_rotation = video["side_data_list"]
        .as_array()
        .and_then(|l| l.iter().find_map(|s| s["rotation"].as_i64()))
        .or_else(|| {
            video["tags"]["rotate"]
                .as_str()
                .and_then(|r| r.parse().ok())
        })
        .unwrap_or(0);
    if i64::from(rotation).rem_euclid(360) != reference_rotation.rem_euclid(360)
        && i64::from(rotation).rem_euclid(360) != (-reference_rotation).rem_euclid(360)
    {
        problems.push(format!(
            "{name}: rotation {rotation}, ffprobe {reference_rotation}"
        ));
    }
    problems
}

/// What the operators fail on `file` (empty: every one returned a value).
async fn check_operators(file: &Path, has_audio: bool) -> Vec<String> {
    let name = file.display().to_string();
    let sql = format!(
        "SELECT cardinality(detect_shots(p)) AS shots, clip_signals(p, 0, 2)['error'] AS signals, \
         clip_signals(p, 0, 2)['sharpness'] AS sharpness, speech_activity(p)['error'] AS speech, \
         text_area_ratio(p, 0, 2) AS text FROM (SELECT '{name}' AS p)"
    );
    let batches = query(&sql).await;
    let b = &batches[0];
    let mut problems = Vec::new();
    let shots = b.column(0);
    if shots.is_null(0)
        || shots
            .as_primitive::<datafusion::arrow::datatypes::UInt64Type>()
            .value(0)
            == 0
    {
        problems.push(format!("{name}: detect_shots gave no shots"));
    }
    let signals = b.column(1).as_string::<i32>();
    if !signals.is_null(0) || b.column(2).is_null(0) {
        problems.push(format!(
            "{name}: clip_signals failed: {:?}",
            signals.is_valid(0).then(|| signals.value(0))
        ));
    }
    let speech = b.column(3).as_string::<i32>();
    if has_audio && !speech.is_null(0) {
        problems.push(format!(
            "{name}: speech_activity failed: {}",
            speech.value(0)
        ));
    }
    if b.column(4).is_null(0) {
        problems.push(format!("{name}: text_area_ratio gave null"));
    }
    problems
}

/// The whole matrix, embedded: every file and its damaged copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_media_matrix_agrees_with_ffmpeg() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let started = std::time::Instant::now();
    let mut problems = Vec::new();
    let mut files = 0;
    for case in cases() {
        eprintln!("{}: {} ({})", case.file, case.codec, case.traits);
        let file = generate(dir.path(), &case);
        let damaged = damaged_copy(&file, dir.path());
        for (path, clean) in [(&file, true), (&damaged, false)] {
            files += 1;
            // damaged copies: counts only. Measured 2026-11-30, their fps=1 frames are
            // ffmpeg's too except one of the MPEG-PS copy, next to its damaged packet
            // (a guessed timestamp there differs by a frame)
            problems.extend(check_decoding(path, clean, clean));
            if clean {
                problems.extend(check_probe(path).await);
            }
            problems.extend(check_operators(path, !case.audio.is_empty()).await);
        }
    }
    eprintln!(
        "media matrix: {files} files ({} cases and their damaged copies) in {:.1} s",
        cases().len(),
        started.elapsed().as_secs_f64()
    );
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The "Supported media" table of the SQL reference names every codec and container of
/// the matrix.
#[test]
fn the_supported_media_table_lists_the_matrix() {
    let reference = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/sql-reference.md"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let table = reference
        .split("## Supported media")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .unwrap_or_else(|| panic!("docs/sql-reference.md has no \"Supported media\" section"));
    for case in cases() {
        let row = format!("| `{}` |", case.codec);
        assert!(
            table
                .lines()
                .any(|l| l.starts_with(&row) && l.contains(case.container)),
            "Supported media: no row for {} in {} ({})",
            case.codec,
            case.container,
            case.file
        );
    }
}

/// A subset on a 2-executor cluster: the same frames as embedded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subset_of_the_matrix_on_a_cluster() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    for case in cases()
        .into_iter()
        .filter(|c| ["mpeg2_ps.mpg", "mpeg4_bframes.avi", "vp9_opus.webm"].contains(&c.file))
    {
        generate(dir.path(), &case);
    }
    let sql = format!(
        "SELECT regexp_replace(path, '.*/', '') AS file, count(*) AS n, sum(frame_index) AS idx, \
         count(decode_error) AS errors FROM frames('{}', 'fps=1') GROUP BY file ORDER BY file",
        dir.path().display()
    );
    let embedded = query(&sql).await;
    let cluster = framefusion_tests::cluster::TestCluster::start(2, 1, 30).await;
    let ctx = framefusion_engine::remote_context(&cluster.url())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    use framefusion_engine::SessionContextExt;
    let remote = ctx
        .run_script(&sql)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .collect()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let show = |b: &[datafusion::arrow::array::RecordBatch]| {
        datafusion::arrow::util::pretty::pretty_format_batches(b)
            .map(|t| t.to_string())
            .unwrap_or_default()
    };
    assert_eq!(show(&remote), show(&embedded));
    let counts: Vec<i64> = embedded
        .iter()
        .flat_map(|b| b.column(1).as_primitive::<Int64Type>().values().to_vec())
        .collect();
    assert_eq!(counts.len(), 3);
    assert!(counts.iter().all(|&n| n >= 3), "{}", show(&embedded));
}

/// The reported defects, each on a synthetic file with the same traits.
mod defects {
    use super::*;

    fn case(file: &str) -> Case {
        cases()
            .into_iter()
            .find(|c| c.file == file)
            .unwrap_or_else(|| panic!("no case {file}"))
    }

    fn assert_agrees(files: &[&str]) {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let mut problems = Vec::new();
        for file in files {
            let path = generate(dir.path(), &case(file));
            problems.extend(check_decoding(&path, true, true));
        }
        assert!(problems.is_empty(), "{}", problems.join("\n"));
    }

    /// MPEG-4 Part 2 with B-frames in AVI at 24000/1001 fps: the packets carry no
    /// presentation timestamps; `fps=1` returned no rows (and no error).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn avi_b_frames_without_timestamps_sample_like_ffmpeg() {
        assert_agrees(&["mpeg4_bframes.avi"]);
        // the first frame's time is ffprobe's
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = generate(dir.path(), &case("mpeg4_bframes.avi"));
        let out = Command::new("ffprobe")
            .args(["-v", "error", "-select_streams", "v:0", "-show_entries"])
            .args(["frame=best_effort_timestamp_time", "-of", "csv=p=0"])
            .arg(&path)
            .output()
            .unwrap_or_else(|e| panic!("ffprobe: {e}"));
        let first: f64 = String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .map(|l| l.trim().trim_end_matches(',').to_owned())
            .and_then(|l| l.parse().ok())
            .unwrap_or(f64::NAN);
        let sql = format!("SELECT min(pts_s) AS t FROM frames('{}')", path.display());
        let batches = query(&sql).await;
        let t = batches[0].column(0).as_primitive::<Float64Type>().value(0);
        assert!(
            (t - first).abs() < 1e-6,
            "first frame at {t} s, ffprobe's first frame at {first} s"
        );
    }

    /// An MPEG-2 program stream whose video starts at 0.54 s (audio at 0.53 s): fps=1
    /// picked other source frames than ffmpeg, and one row fewer.
    #[test]
    fn program_stream_start_offset_samples_like_ffmpeg() {
        assert_agrees(&["mpeg2_ps.mpg", "mpeg2_ts.ts", "h264_offset.mkv"]);
    }

    /// MPEG-2 program streams at 30 fps (7.5 s) and 24 fps (7.6 s), starting 0.53 s in:
    /// the demuxer's index lists nearly every packet as a seek point, the frame-skipping
    /// plan took them for key frames and dropped reference frames, and `fps=1` gave
    /// damaged frames (the last slot at 30 fps, five of eight at 24 fps). At 30 fps the
    /// last slot is filled by the end-of-stream rule of ffmpeg's `fps` filter: the last
    /// frame rounds to slot 7, and only the end of the stream (a frame later) to slot 8.
    #[test]
    fn program_stream_seek_points_are_not_key_frames() {
        assert_agrees(&["mpeg2_ps_30fps.mpg", "mpeg2_ps_24fps.mpg"]);
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = generate(dir.path(), &case("mpeg2_ps_30fps.mpg"));
        let probe = |args: &[&str]| {
            let out = Command::new("ffprobe")
                .args(["-v", "error"])
                .args(args)
                .args(["-of", "csv=p=0"])
                .arg(&path)
                .output()
                .unwrap_or_else(|e| panic!("ffprobe: {e}"));
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter_map(|l| l.trim().trim_end_matches(',').parse::<f64>().ok())
                .collect::<Vec<f64>>()
        };
        let start = probe(&["-show_entries", "format=start_time"])[0];
        let last = probe(&[
            "-select_streams",
            "v:0",
            "-show_entries",
            "frame=best_effort_timestamp_time",
        ])
        .into_iter()
        .fold(f64::MIN, f64::max);
        let (last_slot, end_slot) = ((last - start).round(), (last + 1.0 / 30.0 - start).round());
        assert_eq!(
            (last_slot, end_slot),
            (7.0, 8.0),
            "the last slot must be filled at the end of the stream (first frame of the file at {start} s, last at {last} s)"
        );
    }

    /// VP9 and Cinepak decoders ignore `skip_frame`: `keyframes` returned every frame.
    #[test]
    fn keyframes_are_the_packets_flagged_key() {
        assert_agrees(&["vp9_opus.webm", "cinepak.avi"]);
    }

    /// A bt709-tagged H.264 file and a full-range one: RGB as `ffmpeg -pix_fmt rgb24`
    /// (BT.601 always, before).
    #[test]
    fn colour_matrix_and_range_follow_the_tags() {
        assert_agrees(&[
            "h264_bt709_aac.mp4",
            "h264_fullrange_vfr.mkv",
            "mjpeg_odd.avi",
        ]);
    }

    /// An AVI whose AC3 track has a packet the decoder refuses (its sync word garbled) and
    /// ends with an incomplete frame: speech_activity failed the whole file (measured with
    /// the previous build: "audio: Unknown error 16976906"); ffmpeg warns and goes on.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_damaged_audio_frame_costs_that_frame() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let ac3 = dir.path().join("a.ac3");
        framefusion_tests::ffmpeg(
            &[
                "-f",
                "lavfi",
                "-i",
                "sine=frequency=440:duration=6",
                "-c:a",
                "ac3",
            ],
            &ac3,
        );
        let mut bytes = std::fs::read(&ac3).unwrap_or_else(|e| panic!("{e}"));
        bytes.truncate(bytes.len() - 300);
        let truncated = dir.path().join("t.ac3");
        std::fs::write(&truncated, bytes).unwrap_or_else(|e| panic!("{e}"));
        let avi = dir.path().join("ac3.avi");
        framefusion_tests::ffmpeg(
            &[
                "-f",
                "lavfi",
                "-i",
                "testsrc=size=320x240:rate=25:duration=6",
                "-i",
                &truncated.display().to_string(),
                "-c:v",
                "mpeg4",
                "-c:a",
                "copy",
                "-shortest",
            ],
            &avi,
        );
        let audio = packets(&avi, "a:0");
        let (pos, size, _) = audio[audio.len() / 2];
        let mut bytes = std::fs::read(&avi).unwrap_or_else(|e| panic!("{e}"));
        for (i, b) in bytes[pos as usize..(pos + size) as usize]
            .iter_mut()
            .enumerate()
        {
            *b = (i as u8).wrapping_mul(151) ^ 0xa5;
        }
        std::fs::write(&avi, bytes).unwrap_or_else(|e| panic!("{e}"));
        let sql = format!(
            "SELECT s['error'] AS e, s['speech_fraction'] AS r FROM (SELECT speech_activity('{}') AS s)",
            avi.display()
        );
        let batches = query(&sql).await;
        let error = batches[0].column(0).as_string::<i32>();
        assert!(
            error.is_null(0),
            "speech_activity failed: {}",
            error.value(0)
        );
        assert!(batches[0].column(1).is_valid(0));
    }
}

/// A corpus of the matrix's files, their damaged copies and a truncated one runs through
/// `framefusion run examples/curate.sql`: every file is in the manifest, with rows or an
/// error row, and the damaged copies keep their clips.
#[test]
fn a_damaged_corpus_runs_through_the_curation_job() {
    let corpus = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let scratch = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let mut names = Vec::new();
    for case in cases().into_iter().filter(|c| {
        [
            "h264_bt709_aac.mp4",
            "mpeg2_ps.mpg",
            "mpeg4_bframes.avi",
            "vp9_opus.webm",
        ]
        .contains(&c.file)
    }) {
        let file = generate(scratch.path(), &case);
        let damaged = damaged_copy(&file, corpus.path());
        std::fs::copy(&file, corpus.path().join(case.file)).unwrap_or_else(|e| panic!("{e}"));
        names.push(case.file.to_owned());
        names.push(
            damaged
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
        );
    }
    // a file cut off at 60%: no index (the MP4's moov is at its end)
    let whole =
        std::fs::read(corpus.path().join("h264_bt709_aac.mp4")).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(
        corpus.path().join("truncated.mp4"),
        &whole[..whole.len() * 6 / 10],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    names.push("truncated.mp4".to_owned());
    // a file whose header reads (the index first) but whose every frame is garbage: it
    // probes, and nothing decodes
    let faststart = scratch.path().join("faststart.mp4");
    framefusion_tests::ffmpeg(
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=320x240:rate=25:duration=3",
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-movflags",
            "+faststart",
        ],
        &faststart,
    );
    let mut bytes = std::fs::read(&faststart).unwrap_or_else(|e| panic!("{e}"));
    let mdat = bytes
        .windows(4)
        .position(|w| w == b"mdat")
        .unwrap_or_else(|| panic!("no mdat box"));
    for (i, b) in bytes[mdat + 68..].iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(151) ^ 0x5a;
    }
    std::fs::write(corpus.path().join("undecodable.mp4"), bytes).unwrap_or_else(|e| panic!("{e}"));
    names.push("undecodable.mp4".to_owned());
    // the frames table says so too: one row with its decode_error, not zero rows
    let rows = framefusion_tests::ok_rows(&framefusion_tests::sql_with_catalog(
        &scratch.path().join("frames.json"),
        &[],
        &format!(
            "SELECT count(*) AS n, max(decode_error) AS e FROM frames('{}')",
            corpus.path().join("undecodable.mp4").display()
        ),
    ));
    assert!(
        rows[0]["n"] == 1
            && rows[0]["e"]
                .as_str()
                .is_some_and(|e| e.contains("no frame")),
        "{rows:?}"
    );
    let catalog = scratch.path().join("catalog.json");
    crate::manifest::create_raw_table(&catalog, corpus.path());
    let out = scratch.path().join("manifest");
    let printed = crate::manifest::run_curate(&catalog, &out);
    let table = crate::manifest::manifest_table(&out);
    let rows_of = |name: &str| -> Vec<&serde_json::Value> {
        table
            .iter()
            .filter(|r| {
                r["path"]
                    .as_str()
                    .is_some_and(|p| p.ends_with(&format!("/{name}")))
            })
            .collect()
    };
    for name in &names {
        let rows = rows_of(name);
        assert!(
            !rows.is_empty(),
            "{name} is not in the manifest\n{printed}\n{table:?}"
        );
        if name == "truncated.mp4" || name == "undecodable.mp4" {
            assert!(rows.iter().all(|r| r["status"] == "error"), "{rows:?}");
        } else {
            // clean or with one damaged packet: clips with values
            assert!(
                rows.iter()
                    .all(|r| r["status"] == "ok" && r["sharpness"].is_number()),
                "{name}: {rows:?}"
            );
        }
    }
}
