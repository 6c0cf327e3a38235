//! Probing: the container and stream facts of a video file, as `ffprobe` reports them.
//!
//! The probe opens the container and runs ffmpeg's stream analysis
//! (`avformat_find_stream_info`), exactly what `ffprobe` does before printing, so the
//! values agree with `ffprobe -show_format -show_streams`:
//!
//! | field | ffprobe |
//! |---|---|
//! | `container` | `format_name` |
//! | `duration_s` | format `duration` |
//! | `bit_rate` | format `bit_rate` |
//! | `video_codec` | video stream `codec_name` |
//! | `width`, `height`, `pix_fmt` | video stream fields of the same names |
//! | `fps` | video stream `avg_frame_rate` (`r_frame_rate` when the average is unknown) |
//! | `frame_count` | video stream `nb_frames`: what the container records, `None` when it records none (Matroska, for example) |
//! | `rotation` | the display-matrix rotation in degrees (ffprobe's `rotation` side data), 0 without one |
//! | `audio_*` | the best audio stream's `codec_name`, `channels`, `sample_rate` |
//!
//! The video stream is ffmpeg's "best" video stream that is not an attached picture
//! (cover art). A file without such a stream is a probe error.

use std::path::Path;

use crate::MediaError;
use crate::ffmpeg::{self, ffi, format::Pixel, media::Type};
use crate::source::MediaInput;

/// Facts about a video file's container and its video and audio streams.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeInfo {
    /// Container format names, as ffprobe's `format_name` (`mov,mp4,m4a,3gp,3g2,mj2`).
    pub container: String,
    /// Container duration in seconds, when known.
    pub duration_s: Option<f64>,
    /// Overall bit rate in bits per second, when known.
    pub bit_rate: Option<i64>,
    /// Video codec name (`h264`, `hevc`, `vp9`, ...).
    pub video_codec: String,
    /// Coded picture width in pixels.
    pub width: i32,
    /// Coded picture height in pixels.
    pub height: i32,
    /// Average frame rate in frames per second, when known.
    pub fps: Option<f64>,
    /// Number of video frames recorded by the container, when it records one.
    pub frame_count: Option<i64>,
    /// Pixel format name (`yuv420p`, ...), when known.
    pub pix_fmt: Option<String>,
    /// Display rotation in degrees (ffprobe's sign convention), 0 when none is recorded.
    pub rotation: i32,
    /// The best audio stream, if any.
    pub audio: Option<AudioInfo>,
}

/// Facts about a video file's best audio stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudioInfo {
    /// Audio codec name (`aac`, `mp3`, `opus`, ...).
    pub codec: String,
    /// Number of channels.
    pub channels: Option<i32>,
    /// Sample rate in Hz.
    pub sample_rate: Option<i32>,
}

/// Probes a local file (see [`MediaInput::local`]).
pub fn probe_path(path: &Path) -> Result<ProbeInfo, MediaError> {
    probe_input(&MediaInput::local(path))
}

/// Probes a local file or a remote object.
pub fn probe_input(input: &MediaInput) -> Result<ProbeInfo, MediaError> {
    let display = input.display.clone();
    crate::init()?;
    crate::fault::check(&display)?;
    crate::guard(&display, || {
        if let Some(path) = input.local_path() {
            let metadata = std::fs::metadata(path).map_err(|e| MediaError::Probe {
                path: display.clone(),
                message: e.to_string(),
                transient: crate::error::io_is_transient(&e),
            })?;
            if !metadata.is_file() {
                return Err(probe_error(&display, "not a regular file".to_owned()));
            }
            if metadata.len() == 0 {
                return Err(probe_error(&display, "empty file (0 bytes)".to_owned()));
            }
        }
        let input = input.open().map_err(|e| MediaError::Probe {
            path: display.clone(),
            transient: open_error_is_transient(e),
            message: describe(e),
        })?;
        read_info(&input).map_err(|message| probe_error(&display, message))
    })
}

/// Whether an error opening an input is worth retrying: an I/O error of the moment, or
/// a remote server's 5xx answer.
pub(crate) fn open_error_is_transient(e: ffmpeg::Error) -> bool {
    match e {
        ffmpeg::Error::Other { errno } => crate::error::errno_is_transient(errno),
        ffmpeg::Error::HttpServerError => true,
        _ => false,
    }
}

fn probe_error(path: &str, message: String) -> MediaError {
    MediaError::Probe {
        path: path.to_owned(),
        message,
        transient: false,
    }
}

/// ffmpeg's error text, with a hint for the most common case.
fn describe(e: ffmpeg::Error) -> String {
    match e {
        ffmpeg::Error::InvalidData => {
            "not a video ffmpeg can read (Invalid data found when processing input)".to_owned()
        }
        ffmpeg::Error::Eof => "the file ends early: truncated or corrupt (End of file)".to_owned(),
        ffmpeg::Error::HttpForbidden | ffmpeg::Error::HttpUnauthorized => {
            "the object store refused the read (HTTP 401/403); check the credentials".to_owned()
        }
        ffmpeg::Error::HttpNotFound => "no such object (HTTP 404)".to_owned(),
        other => other.to_string(),
    }
}

fn read_info(input: &ffmpeg::format::context::Input) -> Result<ProbeInfo, String> {
    let video = input
        .streams()
        .best(Type::Video)
        .filter(|s| !is_cover_art(s))
        .or_else(|| {
            input
                .streams()
                .find(|s| s.parameters().medium() == Type::Video && !is_cover_art(s))
        })
        .ok_or_else(|| "the file has no video stream".to_owned())?;

    let codec = ffmpeg::codec::Context::from_parameters(video.parameters())
        .map_err(|e| format!("cannot read the video stream's parameters: {e}"))?;
    // SAFETY: `codec` owns a valid AVCodecContext filled by avcodec_parameters_to_context;
    // we only read plain fields.
    let (width, height, pix_fmt) = unsafe {
        let ctx = &*codec.as_ptr();
        (ctx.width, ctx.height, ctx.pix_fmt)
    };
    if width <= 0 || height <= 0 {
        return Err(format!(
            "the video stream has no picture size ({width}x{height})"
        ));
    }
    let pix_fmt = match Pixel::from(pix_fmt) {
        Pixel::None => None,
        p => p.descriptor().map(|d| d.name().to_owned()),
    };

    let rate = |r: ffmpeg::Rational| {
        (r.numerator() > 0 && r.denominator() > 0)
            .then(|| f64::from(r.numerator()) / f64::from(r.denominator()))
    };
    let fps = rate(video.avg_frame_rate()).or_else(|| rate(video.rate()));

    let audio = input.streams().best(Type::Audio).map(|a| {
        let params = a.parameters();
        // SAFETY: `params` borrows the stream's valid AVCodecParameters; plain field reads.
        let (channels, sample_rate) = unsafe {
            let p = &*params.as_ptr();
            (p.ch_layout.nb_channels, p.sample_rate)
        };
        AudioInfo {
            codec: params.id().name().to_owned(),
            channels: (channels > 0).then_some(channels),
            sample_rate: (sample_rate > 0).then_some(sample_rate),
        }
    });

    let duration = input.duration();
    Ok(ProbeInfo {
        container: input.format().name().to_owned(),
        duration_s: (duration != ffi::AV_NOPTS_VALUE && duration >= 0)
            .then(|| duration as f64 / f64::from(ffi::AV_TIME_BASE)),
        bit_rate: (input.bit_rate() > 0).then(|| input.bit_rate()),
        video_codec: video.parameters().id().name().to_owned(),
        width,
        height,
        fps,
        frame_count: (video.frames() > 0).then(|| video.frames()),
        pix_fmt,
        rotation: rotation(&video),
        audio,
    })
}

fn is_cover_art(stream: &ffmpeg::format::stream::Stream) -> bool {
    stream
        .disposition()
        .contains(ffmpeg::format::stream::Disposition::ATTACHED_PIC)
}

/// The display-matrix rotation, as ffprobe prints it.
fn rotation(stream: &ffmpeg::format::stream::Stream) -> i32 {
    for side in stream.side_data() {
        if side.kind() == ffmpeg::codec::packet::side_data::Type::DisplayMatrix {
            let data = side.data();
            if data.len() >= 9 * std::mem::size_of::<i32>() {
                let m: Vec<f64> = data
                    .chunks_exact(4)
                    .take(9)
                    .map(|c| f64::from(i32::from_ne_bytes([c[0], c[1], c[2], c[3]])) / 65536.0)
                    .collect();
                // av_display_rotation_get, computed here rather than through a pointer cast.
                let scale0 = m[0].hypot(m[3]);
                let scale1 = m[1].hypot(m[4]);
                if scale0 == 0.0 || scale1 == 0.0 {
                    return 0;
                }
                let degrees = -(m[1] / scale1).atan2(m[0] / scale0).to_degrees();
                return degrees.round() as i32;
            }
        }
    }
    0
}
