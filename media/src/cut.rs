//! Cutting a clip out of a video into a new MP4 file: by stream copy (no decoding; the
//! clip starts at the keyframe at or before the asked start) or by re-encoding the video to
//! H.264 (frame-exact start and end). Audio, when present, is stream-copied over the same
//! range in both modes.
//!
//! The re-encoding mode has a decode loop of its own, the only one outside the decode
//! pass ([`crate::decode`]): it feeds an encoder frame by frame, in order, a different
//! job from reading frames for consumers.

use std::path::Path;

use crate::MediaError;
use crate::ffmpeg::{self, Rational, codec, format::Pixel, media::Type, software::scaling};
use crate::source::MediaInput;

/// How a clip is cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CutMode {
    /// Stream copy when the start sits on a keyframe (within half a frame), else encode.
    Auto,
    /// Stream copy from the keyframe at or before the start.
    Copy,
    /// Re-encode the video (H.264, libx264 `veryfast`, CRF 18).
    Encode,
}

impl CutMode {
    /// Parses `auto`, `copy` or `encode`.
    pub fn parse(s: &str) -> Result<Self, MediaError> {
        match s.trim().to_ascii_lowercase().as_str() {
            "" | "auto" => Ok(Self::Auto),
            "copy" => Ok(Self::Copy),
            "encode" | "reencode" => Ok(Self::Encode),
            other => Err(MediaError::Option(format!(
                "unknown cut mode '{other}'; use 'auto', 'copy' or 'encode'"
            ))),
        }
    }

    /// The mode's name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Copy => "copy",
            Self::Encode => "encode",
        }
    }
}

fn cut_error(input: &MediaInput, message: String) -> MediaError {
    MediaError::Decode {
        path: input.display.clone(),
        message,
    }
}

fn seconds(ts: i64, tb: Rational) -> f64 {
    ts as f64 * f64::from(tb.numerator()) / f64::from(tb.denominator().max(1))
}

fn ticks(s: f64, tb: Rational) -> i64 {
    (s * f64::from(tb.denominator()) / f64::from(tb.numerator().max(1))).round() as i64
}

/// Seeks `input` to the keyframe at or before `start_s` (seconds from the video stream's
/// start).
fn seek(
    input: &mut ffmpeg::format::context::Input,
    media: &MediaInput,
    start_s: f64,
    stream_start_s: f64,
) -> Result<(), MediaError> {
    if start_s <= 0.0 {
        return Ok(());
    }
    let target = ((start_s + stream_start_s) * 1e6) as i64;
    input
        .seek(target, ..target)
        .map_err(|e| cut_error(media, format!("cannot seek to {start_s} s: {e}")))
}

/// Cuts `[start_s, end_s)` of `media` into an MP4 file at `out`; returns the mode used.
pub fn cut_to_file(
    media: &MediaInput,
    start_s: f64,
    end_s: f64,
    mode: CutMode,
    out: &Path,
) -> Result<CutMode, MediaError> {
    crate::init()?;
    if !(start_s.is_finite() && end_s.is_finite() && start_s >= 0.0 && end_s > start_s) {
        return Err(MediaError::Option(format!(
            "the range [{start_s}, {end_s}) is empty or invalid; give 0 <= start_s < end_s"
        )));
    }
    crate::guard(&media.display.clone(), || {
        let mode = match mode {
            CutMode::Auto => {
                if starts_on_keyframe(media, start_s)? {
                    CutMode::Copy
                } else {
                    CutMode::Encode
                }
            }
            other => other,
        };
        write_clip(media, start_s, end_s, mode, out)?;
        Ok(mode)
    })
}

/// Whether the keyframe at or before `start_s` is within half a frame of it.
fn starts_on_keyframe(media: &MediaInput, start_s: f64) -> Result<bool, MediaError> {
    let mut input = media
        .open()
        .map_err(|e| cut_error(media, format!("cannot open: {e}")))?;
    let stream = input
        .streams()
        .best(Type::Video)
        .ok_or_else(|| cut_error(media, "the file has no video stream".to_owned()))?;
    let (index, tb) = (stream.index(), stream.time_base());
    let first = stream_start(&stream);
    let rate = stream.avg_frame_rate();
    let half_frame = if rate.numerator() > 0 {
        0.5 * f64::from(rate.denominator()) / f64::from(rate.numerator())
    } else {
        0.02
    };
    seek(&mut input, media, start_s, seconds(first, tb))?;
    for (s, packet) in input.packets() {
        if s.index() == index && packet.is_key() {
            let pts = packet.pts().or(packet.dts()).unwrap_or(first);
            return Ok((seconds(pts - first, tb) - start_s).abs() <= half_frame);
        }
    }
    Ok(false)
}

fn stream_start(stream: &ffmpeg::format::stream::Stream) -> i64 {
    let start = stream.start_time();
    if start == ffmpeg::ffi::AV_NOPTS_VALUE {
        0
    } else {
        start
    }
}

/// One input stream mapped to the output.
struct Mapped {
    input: usize,
    output: usize,
    in_tb: Rational,
    /// The stream's first timestamp (its time zero).
    first: i64,
    done: bool,
}

fn write_clip(
    media: &MediaInput,
    start_s: f64,
    end_s: f64,
    mode: CutMode,
    out: &Path,
) -> Result<(), MediaError> {
    let fail = |what: &str, e: ffmpeg::Error| cut_error(media, format!("{what}: {e}"));
    let mut input = media.open().map_err(|e| fail("cannot open", e))?;
    let mut output = ffmpeg::format::output_as(out, "mp4")
        .map_err(|e| fail(&format!("cannot create {}", out.display()), e))?;
    let global_header = output
        .format()
        .flags()
        .contains(ffmpeg::format::Flags::GLOBAL_HEADER);

    let video = input
        .streams()
        .best(Type::Video)
        .ok_or_else(|| cut_error(media, "the file has no video stream".to_owned()))?;
    let mut mapped_video = Mapped {
        input: video.index(),
        output: 0,
        in_tb: video.time_base(),
        first: stream_start(&video),
        done: false,
    };
    let video_start_s = seconds(mapped_video.first, mapped_video.in_tb);
    // the encoder (re-encode mode) or a copied stream
    let mut transcoder = None;
    if mode == CutMode::Encode {
        let decoder = codec::Context::from_parameters(video.parameters())
            .and_then(|c| c.decoder().video())
            .map_err(|e| fail("cannot open the decoder", e))?;
        let h264 = ffmpeg::encoder::find(codec::Id::H264)
            .ok_or_else(|| cut_error(media, "no H.264 encoder in this ffmpeg build".to_owned()))?;
        let mut ost = output
            .add_stream(h264)
            .map_err(|e| fail("cannot add a stream", e))?;
        let mut encoder = codec::Context::new_with_codec(h264)
            .encoder()
            .video()
            .map_err(|e| fail("cannot make an encoder", e))?;
        encoder.set_width(decoder.width());
        encoder.set_height(decoder.height());
        encoder.set_aspect_ratio(decoder.aspect_ratio());
        encoder.set_format(Pixel::YUV420P);
        encoder.set_frame_rate(Some(video.avg_frame_rate()));
        encoder.set_time_base(mapped_video.in_tb);
        if global_header {
            encoder.set_flags(codec::Flags::GLOBAL_HEADER);
        }
        let mut options = ffmpeg::Dictionary::new();
        options.set("preset", "veryfast");
        options.set("crf", "18");
        let encoder = encoder
            .open_with(options)
            .map_err(|e| fail("cannot open the H.264 encoder", e))?;
        ost.set_parameters(&encoder);
        transcoder = Some((decoder, encoder, None::<scaling::Context>));
    } else {
        let mut ost = output
            .add_stream(ffmpeg::encoder::find(codec::Id::None))
            .map_err(|e| fail("cannot add a stream", e))?;
        ost.set_parameters(video.parameters());
        // SAFETY: clearing the codec tag of the parameters we just set, so the muxer picks
        // the tag MP4 uses for the codec.
        unsafe {
            (*ost.parameters().as_mut_ptr()).codec_tag = 0;
        }
    }
    let mut audio = input.streams().best(Type::Audio).map(|a| Mapped {
        input: a.index(),
        output: 1,
        in_tb: a.time_base(),
        first: stream_start(&a),
        done: false,
    });
    if let Some(a) = &audio {
        let parameters = input
            .stream(a.input)
            .map(|s| s.parameters())
            .ok_or_else(|| cut_error(media, "the audio stream vanished".to_owned()))?;
        let mut ost = output
            .add_stream(ffmpeg::encoder::find(codec::Id::None))
            .map_err(|e| fail("cannot add a stream", e))?;
        ost.set_parameters(parameters);
        // SAFETY: as above, for the audio stream.
        unsafe {
            (*ost.parameters().as_mut_ptr()).codec_tag = 0;
        }
    }
    output
        .write_header()
        .map_err(|e| fail("cannot write the header", e))?;
    let out_tb = |output: &ffmpeg::format::context::Output, index: usize| {
        output
            .stream(index)
            .map_or(Rational(1, 90_000), |s| s.time_base())
    };

    seek(&mut input, media, start_s, video_start_s)?;
    // stream copy starts at the first keyframe; its time is the clip's zero
    let mut zero_s: Option<f64> = (mode == CutMode::Encode).then_some(start_s);
    let end_ticks = ticks(end_s, mapped_video.in_tb) + mapped_video.first;
    let start_ticks = ticks(start_s, mapped_video.in_tb) + mapped_video.first;
    let mut frame = ffmpeg::frame::Video::empty();
    let mut converted = ffmpeg::frame::Video::empty();
    let mut encoded = ffmpeg::Packet::empty();

    // sends decoded frames in range to the encoder and writes what it produces
    let mut drain = |transcoder: &mut Option<(
        ffmpeg::decoder::Video,
        ffmpeg::encoder::Video,
        Option<scaling::Context>,
    )>,
                     output: &mut ffmpeg::format::context::Output,
                     video: &mut Mapped|
     -> Result<(), MediaError> {
        let Some((decoder, encoder, scaler)) = transcoder.as_mut() else {
            return Ok(());
        };
        while decoder.receive_frame(&mut frame).is_ok() {
            let Some(ts) = frame.timestamp().or(frame.pts()) else {
                continue;
            };
            if ts < start_ticks {
                continue;
            }
            if ts >= end_ticks {
                video.done = true;
                continue;
            }
            let source = if frame.format() == Pixel::YUV420P {
                &mut frame
            } else {
                let context = match scaler {
                    Some(c) => c,
                    None => scaler.insert(
                        scaling::Context::get(
                            frame.format(),
                            frame.width(),
                            frame.height(),
                            Pixel::YUV420P,
                            frame.width(),
                            frame.height(),
                            scaling::Flags::BICUBIC,
                        )
                        .map_err(|e| fail("cannot convert to yuv420p", e))?,
                    ),
                };
                context
                    .run(&frame, &mut converted)
                    .map_err(|e| fail("cannot convert a frame", e))?;
                &mut converted
            };
            source.set_pts(Some(ts - start_ticks));
            source.set_kind(ffmpeg::picture::Type::None);
            encoder
                .send_frame(source)
                .map_err(|e| fail("the encoder refused a frame", e))?;
            write_encoded(encoder, &mut encoded, output, video)
                .map_err(|e| fail("cannot write an encoded packet", e))?;
        }
        Ok(())
    };

    for (stream, mut packet) in input.packets() {
        let index = stream.index();
        if index == mapped_video.input && !mapped_video.done {
            if transcoder.is_some() {
                let _ = transcoder
                    .as_mut()
                    .map(|(decoder, _, _)| decoder.send_packet(&packet));
                drain(&mut transcoder, &mut output, &mut mapped_video)?;
                continue;
            }
            let pts = packet.pts().or(packet.dts()).unwrap_or(mapped_video.first);
            let zero = match zero_s {
                Some(z) => z,
                None if packet.is_key() => {
                    let z = seconds(pts - mapped_video.first, mapped_video.in_tb);
                    zero_s = Some(z);
                    z
                }
                None => continue, // before the first keyframe
            };
            if packet.dts().unwrap_or(pts) >= end_ticks {
                mapped_video.done = true;
                continue;
            }
            let shift = ticks(zero, mapped_video.in_tb) + mapped_video.first;
            copy_packet(
                &mut packet,
                shift,
                &mapped_video,
                out_tb(&output, 0),
                &mut output,
            )
            .map_err(|e| fail("cannot write a packet", e))?;
        } else if let Some(a) = audio.as_mut().filter(|a| a.input == index && !a.done) {
            let Some(zero) = zero_s else { continue };
            let pts = packet.pts().or(packet.dts()).unwrap_or(a.first);
            let t = seconds(pts - a.first, a.in_tb);
            if t < zero {
                continue;
            }
            if t >= end_s {
                a.done = true;
                continue;
            }
            let shift = ticks(zero, a.in_tb) + a.first;
            copy_packet(
                &mut packet,
                shift,
                a,
                out_tb(&output, a.output),
                &mut output,
            )
            .map_err(|e| fail("cannot write a packet", e))?;
        }
        if mapped_video.done && audio.as_ref().is_none_or(|a| a.done) {
            break;
        }
    }
    if transcoder.is_some() {
        if let Some((decoder, _, _)) = transcoder.as_mut() {
            let _ = decoder.send_eof();
        }
        drain(&mut transcoder, &mut output, &mut mapped_video)?;
        if let Some((_, encoder, _)) = transcoder.as_mut() {
            let _ = encoder.send_eof();
            write_encoded(encoder, &mut encoded, &mut output, &mapped_video)
                .map_err(|e| fail("cannot write an encoded packet", e))?;
        }
    }
    output
        .write_trailer()
        .map_err(|e| fail("cannot finish the file", e))
}

fn copy_packet(
    packet: &mut ffmpeg::Packet,
    shift: i64,
    stream: &Mapped,
    out_tb: Rational,
    output: &mut ffmpeg::format::context::Output,
) -> Result<(), ffmpeg::Error> {
    packet.set_pts(packet.pts().map(|t| t - shift));
    packet.set_dts(packet.dts().map(|t| t - shift));
    packet.rescale_ts(stream.in_tb, out_tb);
    packet.set_position(-1);
    packet.set_stream(stream.output);
    packet.write_interleaved(output)
}

fn write_encoded(
    encoder: &mut ffmpeg::encoder::Video,
    packet: &mut ffmpeg::Packet,
    output: &mut ffmpeg::format::context::Output,
    video: &Mapped,
) -> Result<(), ffmpeg::Error> {
    let out_tb = output
        .stream(video.output)
        .map_or(Rational(1, 90_000), |s| s.time_base());
    while encoder.receive_packet(packet).is_ok() {
        packet.set_stream(video.output);
        packet.rescale_ts(video.in_tb, out_tb);
        packet.write_interleaved(output)?;
    }
    Ok(())
}
