//! Decoding and sampling frames: every frame, N frames per second, or keyframes only, with
//! an optional resize, as packed RGB24 pictures.
//!
//! - **fps sampling** follows ffmpeg's `fps` filter (default `round=near`,
//!   `eof_action=round`): output slot `k` is at `start + k / fps`; each input timestamp is
//!   rounded to the nearest slot; a frame is emitted for every slot up to the next frame's
//!   slot (dropping frames that share a slot with a later one, repeating a frame when the
//!   source has gaps); at the end, slots up to the rounded end of the last frame are filled.
//!   So the counts equal `ffmpeg -vf fps=N`'s. Each emitted row carries the timestamp and
//!   index of the source frame it shows (within one source frame of the slot time).
//! - Below a quarter of the source frame rate, fps sampling lets the decoder skip
//!   non-reference frames except from 1.5 frame periods before a slot boundary to half a
//!   period after it (where the `fps` filter's choice is made), and drops every frame
//!   between the last boundary of a GOP and the next keyframe of the container's index
//!   (with a margin of four frames for reordering), so the same frames are chosen with
//!   less decoding.
//! - The decoder runs one frame thread per core.
//! - **keyframes** sets the decoder's `skip_frame` to non-key frames: only keyframes are
//!   decoded at all (as `ffmpeg -skip_frame nokey`).
//! - **resize** runs swscale (bicubic, as ffmpeg's `scale` filter) straight to RGB24; only
//!   emitted frames are converted.
//!
//! Memory stays bounded whatever the video's length: frames go to the caller one at a time,
//! and at most two decoded frames are held for sampling.

use std::ops::ControlFlow;

use super::ffmpeg::{self, codec, format::Pixel, media::Type, software::scaling};
use super::probe::open_error_is_transient;
use super::source::MediaInput;
use crate::UdfError;

/// Which frames to produce.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Sampling {
    /// Every frame.
    All,
    /// This many frames per second (as ffmpeg's `fps` filter).
    Fps(f64),
    /// Keyframes only; other frames are not decoded.
    Keyframes,
}

/// How to size the produced pictures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Resize {
    /// Keep the decoded size.
    Original,
    /// Scale so the longer side is this many pixels (aspect kept, sides even, never enlarge).
    LongestSide(u32),
    /// Scale to exactly this width and height.
    Exact(u32, u32),
}

impl Resize {
    /// The output size for a `width` x `height` source.
    pub fn target(self, width: u32, height: u32) -> (u32, u32) {
        match self {
            Resize::Original => (width, height),
            Resize::Exact(w, h) => (w.max(1), h.max(1)),
            Resize::LongestSide(side) => {
                let longest = width.max(height);
                if side == 0 || longest <= side {
                    return (width, height);
                }
                let scale = f64::from(side) / f64::from(longest);
                let even = |v: f64| (((v / 2.0).round() as u32) * 2).max(2);
                if width >= height {
                    (side, even(f64::from(height) * scale))
                } else {
                    (even(f64::from(width) * scale), side)
                }
            }
        }
    }
}

/// One produced frame.
#[derive(Debug, Clone)]
pub struct DecodedFrame {
    /// Presentation-order index of the source frame in its stream (0-based). With
    /// [`Sampling::Keyframes`] it is derived from the timestamp and the stream's frame rate.
    pub index: i64,
    /// Presentation timestamp of the source frame, in seconds from the stream's start.
    pub pts_s: f64,
    /// Whether the source frame is a keyframe.
    pub is_keyframe: bool,
    /// Picture width.
    pub width: u32,
    /// Picture height.
    pub height: u32,
    /// Packed RGB24 pixels, `width * height * 3` bytes, rows top to bottom.
    pub rgb: Vec<u8>,
    /// The codec's motion vectors of this frame, summarised, when they were asked for
    /// ([`Extras::motion_vectors`]) and the codec exports them.
    pub motion: Option<FrameMotion>,
}

/// A frame's motion vectors (as the codec exported them), summarised, in percent of the
/// picture width per frame.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FrameMotion {
    /// Whether the frame is a P-frame (its vectors point to the previous I- or P-frame);
    /// false for a B-frame.
    pub predicted: bool,
    /// Number of vectors (predicted blocks).
    pub vectors: usize,
    /// Mean vector length.
    pub mean: f64,
    /// Length of the median vector: the motion most blocks share (camera motion).
    pub global: f64,
    /// Mean length of the vectors minus the median vector (motion of objects against the
    /// camera's).
    pub residual: f64,
}

/// What the clip operators ask of the decoder beyond sampling and size.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Extras {
    /// Only frames whose timestamps (seconds from the stream's start) fall in
    /// `[start, end)`; the demuxer first seeks to the keyframe before `start`.
    pub range: Option<(f64, f64)>,
    /// Export the codec's motion vectors ([`DecodedFrame::motion`]).
    pub motion_vectors: bool,
}

fn decode_error(path: &str, message: String) -> UdfError {
    UdfError::Decode {
        path: path.to_owned(),
        message,
    }
}

/// Emits a source frame (with the timestamp to report), telling whether to go on.
type Emit<'a> = dyn FnMut(&Source, f64) -> Result<ControlFlow<()>, UdfError> + 'a;

/// A decoded source frame, before sampling decided whether it is emitted.
struct Source {
    frame: ffmpeg::frame::Video,
    index: i64,
    /// Timestamp in stream time base (best effort).
    ts: i64,
    /// Output slot (fps sampling).
    slot: i64,
}

/// Decodes the best video stream of a local file or remote object and calls `emit` with
/// each sampled frame, until the stream ends or `emit` breaks. Without `with_pixels`,
/// frames are not converted and `rgb` is empty (width and height are still the output
/// size). A read that fails part-way (a remote server that stops answering) is an error,
/// never a silently shortened stream.
pub fn decode_frames(
    media: &MediaInput,
    sampling: Sampling,
    resize: Resize,
    with_pixels: bool,
    emit: impl FnMut(DecodedFrame) -> ControlFlow<()>,
) -> Result<(), UdfError> {
    decode_frames_with(
        media,
        sampling,
        resize,
        with_pixels,
        Extras::default(),
        emit,
    )
}

/// [`decode_frames`], restricted to a time range and/or with motion vectors.
pub fn decode_frames_with(
    media: &MediaInput,
    sampling: Sampling,
    resize: Resize,
    with_pixels: bool,
    extras: Extras,
    mut emit: impl FnMut(DecodedFrame) -> ControlFlow<()>,
) -> Result<(), UdfError> {
    let mut emit = |frame: DecodedFrame| match extras.range {
        Some((from, _)) if frame.pts_s < from - 1e-9 => ControlFlow::Continue(()),
        Some((_, to)) if frame.pts_s >= to - 1e-9 => ControlFlow::Break(()),
        _ => emit(frame),
    };
    let display = media.display.clone();
    super::init()?;
    super::fault::check(&display)?;
    if let Sampling::Fps(fps) = sampling
        && !(fps.is_finite() && fps > 0.0)
    {
        return Err(decode_error(
            &display,
            format!("fps must be a positive number, not {fps}"),
        ));
    }
    super::guard(&display, || {
        let mut input = media.open().map_err(|e| {
            if open_error_is_transient(e) {
                UdfError::Storage {
                    uri: display.clone(),
                    message: format!("cannot open: {e}"),
                    transient: true,
                }
            } else {
                decode_error(&display, format!("cannot open: {e}"))
            }
        })?;
        let stream = input
            .streams()
            .best(Type::Video)
            .ok_or_else(|| decode_error(&display, "the file has no video stream".to_owned()))?;
        let stream_index = stream.index();
        let time_base = stream.time_base();
        let tb = f64::from(time_base.numerator()) / f64::from(time_base.denominator().max(1));
        let start = if stream.start_time() == ffi_nopts() {
            0
        } else {
            stream.start_time()
        };
        let rate = stream.avg_frame_rate();
        let frame_rate = (rate.numerator() > 0 && rate.denominator() > 0)
            .then(|| f64::from(rate.numerator()) / f64::from(rate.denominator()));
        let mut ctx = codec::Context::from_parameters(stream.parameters()).map_err(|e| {
            decode_error(&display, format!("cannot read the codec parameters: {e}"))
        })?;
        ctx.set_threading(codec::threading::Config {
            kind: codec::threading::Type::Frame,
            // one thread per core: libavcodec's automatic count (cores + 1) measured
            // about 10% slower on 2 cores
            count: std::thread::available_parallelism().map_or(0, usize::from),
            ..Default::default()
        });
        if extras.motion_vectors {
            // SAFETY: setting a flag on the codec context before it is opened.
            unsafe {
                (*ctx.as_mut_ptr()).flags2 |= ffmpeg::ffi::AV_CODEC_FLAG2_EXPORT_MVS;
            }
        }
        let mut decoder = ctx
            .decoder()
            .video()
            .map_err(|e| decode_error(&display, format!("cannot open the decoder: {e}")))?;
        if sampling == Sampling::Keyframes {
            decoder.skip_frame(ffmpeg::Discard::NonKey);
        }

        let mut sampler = Sampler::new(sampling, tb, start);
        // fps sampling: a slot shows the last frame before its boundary, so the frames
        // just before a boundary (up to 1.5 frame periods, for timestamp jitter) are always
        // decoded, and those just after it (half a period, for rounding at the boundary);
        // elsewhere the decoder skips frames nothing refers to.
        let frame_period = frame_rate.map_or(0.2, |r| 1.0 / r);
        let near_boundary = |pts: i64, fps: f64| {
            let slots = (pts - start) as f64 * tb * fps;
            let past_boundary = ((slots - slots.floor()) - 0.5) / fps;
            if past_boundary < 0.0 {
                -past_boundary <= 1.5 * frame_period
            } else {
                past_boundary <= 0.5 * frame_period
            }
        };
        let skipping = matches!(sampling, Sampling::Fps(fps) if fps * frame_period < 0.25);
        // whether a slot boundary's window meets the ticks [lo, hi]
        let boundary_within = |lo: i64, hi: i64, fps: f64| {
            let window = 1.5 * frame_period * fps;
            let slots = |ts: i64| (ts - start) as f64 * tb * fps;
            let (lo, hi) = (slots(lo) - window, slots(hi) + window);
            (hi - 0.5).floor() >= (lo - 0.5).ceil()
        };
        // the keyframes the container indexes: decoding restarts at each, so a frame after
        // the last boundary before the next keyframe feeds no sampled frame and is dropped.
        // A margin of a few frames on both sides covers reordering: B-frames shown before
        // a boundary that refer to a frame shown after it, and the leading frames of an
        // open GOP shown before its keyframe.
        let keyframes = if skipping {
            indexed_keyframes(&stream)
        } else {
            Vec::new()
        };
        let margin = (4.0 * frame_period / tb).round() as i64;
        let feeds_nothing = |pts: i64, fps: f64| {
            let next = keyframes.partition_point(|&k| k <= pts);
            keyframes
                .get(next)
                .is_some_and(|&key| !boundary_within(pts - margin, key + margin, fps))
        };
        // one frame period in stream ticks (packet durations can be wrong, the last one in
        // particular, so the frame rate wins when it is known)
        let frame_ticks = frame_rate.map(|r| (1.0 / (r * tb)).round() as i64);
        // when frames are not all decoded, a frame's index comes from its timestamp
        let index_from_ts = frame_rate
            .filter(|_| sampling == Sampling::Keyframes || skipping || extras.range.is_some());
        let mut scaler: Option<(scaling::Context, (Pixel, u32, u32))> = None;
        let mut out = |src: &Source, pts_s: f64| -> Result<ControlFlow<()>, UdfError> {
            let frame = &src.frame;
            let (w, h) = (frame.width(), frame.height());
            let (dw, dh) = resize.target(w, h);
            let is_keyframe = frame.is_key() || frame.kind() == ffmpeg::picture::Type::I;
            let motion = extras.motion_vectors.then(|| frame_motion(frame)).flatten();
            if !with_pixels {
                return Ok(emit(DecodedFrame {
                    index: src.index,
                    pts_s,
                    is_keyframe,
                    width: dw,
                    height: dh,
                    rgb: Vec::new(),
                    motion,
                }));
            }
            let key = (frame.format(), w, h);
            if scaler.as_ref().is_none_or(|(_, k)| *k != key) {
                let context = scaling::Context::get(
                    frame.format(),
                    w,
                    h,
                    Pixel::RGB24,
                    dw,
                    dh,
                    scaling::Flags::BICUBIC,
                )
                .map_err(|e| {
                    decode_error(
                        &display,
                        format!("cannot convert {:?} {w}x{h} to RGB: {e}", frame.format()),
                    )
                })?;
                scaler = Some((context, key));
            }
            let mut rgb = ffmpeg::frame::Video::empty();
            if let Some((context, _)) = scaler.as_mut() {
                context
                    .run(frame, &mut rgb)
                    .map_err(|e| decode_error(&display, format!("cannot convert a frame: {e}")))?;
            }
            let (rw, rh) = (rgb.width() as usize, rgb.height() as usize);
            let stride = rgb.stride(0);
            let data = rgb.data(0);
            let mut packed = Vec::with_capacity(rw * rh * 3);
            for row in 0..rh {
                packed.extend_from_slice(&data[row * stride..row * stride + rw * 3]);
            }
            Ok(emit(DecodedFrame {
                index: src.index,
                pts_s,
                is_keyframe,
                width: rgb.width(),
                height: rgb.height(),
                rgb: packed,
                motion,
            }))
        };

        let mut decoded = ffmpeg::frame::Video::empty();
        let mut next_index = 0i64;
        let mut last_end = None;
        let mut receive = |decoder: &mut ffmpeg::decoder::Video,
                           sampler: &mut Sampler,
                           last_end: &mut Option<i64>,
                           out: &mut Emit<'_>|
         -> Result<ControlFlow<()>, UdfError> {
            while decoder.receive_frame(&mut decoded).is_ok() {
                let ts = decoded
                    .timestamp()
                    .or(decoded.pts())
                    .unwrap_or_else(|| last_end.unwrap_or(start));
                // SAFETY: plain field read of the frame the decoder just filled.
                let packet_duration = unsafe { (*decoded.as_ptr()).pkt_duration }.max(0);
                *last_end = Some(ts + frame_ticks.unwrap_or(packet_duration));
                let index = index_from_ts.map_or(next_index, |r| {
                    ((ts - start) as f64 * tb * r).round() as i64
                });
                next_index += 1;
                let frame = std::mem::replace(&mut decoded, ffmpeg::frame::Video::empty());
                if sampler
                    .push(
                        Source {
                            frame,
                            index,
                            ts,
                            slot: 0,
                        },
                        out,
                    )?
                    .is_break()
                {
                    return Ok(ControlFlow::Break(()));
                }
            }
            Ok(ControlFlow::Continue(()))
        };

        // the end of the last frame in presentation order, from every packet (decoded or not)
        let mut packets_end: Option<i64> = None;
        if let Some((from, _)) = extras.range.filter(|(from, _)| *from > 0.0) {
            // to the keyframe at or before `from` (AV_TIME_BASE units, file time)
            let target = ((from + start as f64 * tb) * 1e6) as i64;
            input
                .seek(target, ..target)
                .map_err(|e| decode_error(&display, format!("cannot seek to {from} s: {e}")))?;
        }
        for (s, packet) in input.packets() {
            if s.index() != stream_index {
                continue;
            }
            if let (Some(pts), Sampling::Fps(fps)) = (packet.pts(), sampling) {
                let duration = frame_ticks.unwrap_or_else(|| packet.duration().max(0));
                packets_end = packets_end.max(Some(pts + duration));
                if skipping {
                    decoder.skip_frame(if near_boundary(pts, fps) {
                        ffmpeg::Discard::Default
                    } else if !packet.is_key() && feeds_nothing(pts, fps) {
                        ffmpeg::Discard::All
                    } else {
                        ffmpeg::Discard::NonReference
                    });
                }
            }
            if let Err(e) = decoder.send_packet(&packet) {
                // a damaged packet: skip it, as ffmpeg does, and go on decoding
                log::debug!("{display}: skipping a packet the decoder refused: {e}");
                continue;
            }
            if receive(&mut decoder, &mut sampler, &mut last_end, &mut out)?.is_break() {
                return Ok(());
            }
        }
        if let Some(e) = read_error(&input) {
            return Err(UdfError::Storage {
                uri: display.clone(),
                message: format!("reading stopped part-way: {e}"),
                transient: media.local_path().is_none() || open_error_is_transient(e),
            });
        }
        let _ = decoder.send_eof();
        if receive(&mut decoder, &mut sampler, &mut last_end, &mut out)?.is_break() {
            return Ok(());
        }
        sampler.finish(packets_end.max(last_end), &mut out)?;
        Ok(())
    })
}

/// The timestamps (stream ticks, sorted) of the keyframes the container's index lists;
/// empty when it has no index.
fn indexed_keyframes(stream: &ffmpeg::format::stream::Stream) -> Vec<i64> {
    // SAFETY: the stream belongs to an open input that outlives this call; the index
    // accessors return entries owned by the stream, read before anything changes it.
    unsafe {
        let st = stream.as_ptr().cast_mut();
        let n = ffmpeg::ffi::avformat_index_get_entries_count(st);
        let mut keys: Vec<i64> = (0..n)
            .filter_map(|i| {
                let entry = ffmpeg::ffi::avformat_index_get_entry(st, i);
                (!entry.is_null() && (*entry).flags() as i32 & ffmpeg::ffi::AVINDEX_KEYFRAME != 0)
                    .then(|| (*entry).timestamp)
            })
            .collect();
        keys.sort_unstable();
        keys
    }
}

/// The summary of a frame's exported motion vectors; `None` when it carries none (an
/// intra frame, or a codec that exports none).
fn frame_motion(frame: &ffmpeg::frame::Video) -> Option<FrameMotion> {
    let side = frame.side_data(ffmpeg::frame::side_data::Type::MotionVectors)?;
    let width = f64::from(frame.width().max(1));
    let bytes = side.data();
    let size = std::mem::size_of::<ffmpeg::ffi::AVMotionVector>();
    let vectors: Vec<(f64, f64)> = bytes
        .chunks_exact(size)
        .map(|chunk| {
            // SAFETY: the side data is an array of AVMotionVector; read_unaligned copies
            // one out of a byte chunk of exactly its size.
            let mv: ffmpeg::ffi::AVMotionVector =
                unsafe { std::ptr::read_unaligned(chunk.as_ptr().cast()) };
            // in percent of the picture width, so sizes compare
            let scale = f64::from(mv.motion_scale.max(1)) * width / 100.0;
            // forward and backward references both count as motion of this block
            (
                f64::from(mv.motion_x) / scale,
                f64::from(mv.motion_y) / scale,
            )
        })
        .collect();
    if vectors.is_empty() {
        return None;
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (gx, gy) = (
        median(vectors.iter().map(|v| v.0).collect()),
        median(vectors.iter().map(|v| v.1).collect()),
    );
    let n = vectors.len() as f64;
    Some(FrameMotion {
        predicted: frame.kind() == ffmpeg::picture::Type::P,
        vectors: vectors.len(),
        mean: vectors.iter().map(|(x, y)| x.hypot(*y)).sum::<f64>() / n,
        global: gx.hypot(gy),
        residual: vectors
            .iter()
            .map(|(x, y)| (x - gx).hypot(y - gy))
            .sum::<f64>()
            / n,
    })
}

/// The error that ended demuxing early, if one did (ffmpeg latches it in the I/O context;
/// the packet iterator ends on it as on the end of the file).
fn read_error(input: &ffmpeg::format::context::Input) -> Option<ffmpeg::Error> {
    // SAFETY: `input` owns a valid AVFormatContext; `pb` is null or a valid AVIOContext
    // that lives as long as the context. Only plain fields are read.
    let code = unsafe {
        let pb = (*input.as_ptr()).pb;
        if pb.is_null() { 0 } else { (*pb).error }
    };
    (code < 0 && code != ffmpeg::ffi::AVERROR_EOF).then(|| ffmpeg::Error::from(code))
}

fn ffi_nopts() -> i64 {
    ffmpeg::ffi::AV_NOPTS_VALUE
}

/// The sampling state machine (see the module docs).
struct Sampler {
    sampling: Sampling,
    tb: f64,
    start: i64,
    /// fps: the frame waiting for its slot(s), and the next output slot.
    current: Option<Source>,
    next_slot: i64,
}

impl Sampler {
    fn new(sampling: Sampling, tb: f64, start: i64) -> Self {
        Self {
            sampling,
            tb,
            start,
            current: None,
            next_slot: 0,
        }
    }

    fn seconds(&self, ts: i64) -> f64 {
        (ts - self.start) as f64 * self.tb
    }

    fn slot(&self, ts: i64, fps: f64) -> i64 {
        // av_rescale_q_rnd(ts, tb, 1/fps, NEAR_INF): halves round away from zero
        (ts as f64 * self.tb * fps).round() as i64
    }

    fn push(&mut self, mut src: Source, out: &mut Emit<'_>) -> Result<ControlFlow<()>, UdfError> {
        let fps = match self.sampling {
            Sampling::All | Sampling::Keyframes => {
                let pts_s = self.seconds(src.ts);
                return out(&src, pts_s);
            }
            Sampling::Fps(fps) => fps,
        };
        src.slot = self.slot(src.ts, fps);
        let Some(current) = self.current.take() else {
            self.next_slot = src.slot;
            self.current = Some(src);
            return Ok(ControlFlow::Continue(()));
        };
        // emit `current` for every slot before the new frame's slot
        while src.slot > self.next_slot {
            let pts_s = self.seconds(current.ts);
            if out(&current, pts_s)?.is_break() {
                return Ok(ControlFlow::Break(()));
            }
            self.next_slot += 1;
        }
        // the new frame is at least as close to the next slot: it replaces `current`
        self.current = Some(src);
        Ok(ControlFlow::Continue(()))
    }

    fn finish(&mut self, end_ts: Option<i64>, out: &mut Emit<'_>) -> Result<(), UdfError> {
        let (Sampling::Fps(fps), Some(current)) = (self.sampling, self.current.take()) else {
            return Ok(());
        };
        let end_slot = end_ts.map_or(current.slot + 1, |end| self.slot(end, fps));
        let pts_s = self.seconds(current.ts);
        while end_slot > self.next_slot {
            if out(&current, pts_s)?.is_break() {
                return Ok(());
            }
            self.next_slot += 1;
        }
        Ok(())
    }
}

/// The frame shown at `at_s` seconds of `media` (the first whose timestamp is at or after
/// it; the demuxer seeks to the keyframe before), sized by `resize`.
pub fn frame_at(media: &MediaInput, at_s: f64, resize: Resize) -> Result<DecodedFrame, UdfError> {
    let mut found = None;
    decode_frames_with(
        media,
        Sampling::All,
        resize,
        true,
        Extras {
            range: Some((at_s.max(0.0), f64::INFINITY)),
            motion_vectors: false,
        },
        |frame| {
            found = Some(frame);
            ControlFlow::Break(())
        },
    )?;
    found.ok_or_else(|| {
        decode_error(
            &media.display,
            format!("no frame at {at_s} s (past the end?)"),
        )
    })
}

/// The frame shown at `at_s` seconds of the video at `path` (see [`frame_at`]), at its
/// own size.
pub fn rgb_at(path: &str, at_s: f64) -> Result<crate::media::image::Rgb, UdfError> {
    let media = crate::media::source::VideoSource::parse(path)?
        .media_input(&crate::storage::StorageOptions::default())?;
    let frame = frame_at(&media, at_s, Resize::Original)?;
    Ok(crate::media::image::Rgb {
        width: frame.width as usize,
        height: frame.height as usize,
        data: frame.rgb,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resize_targets() {
        assert_eq!(Resize::Original.target(640, 272), (640, 272));
        assert_eq!(Resize::Exact(224, 224).target(640, 272), (224, 224));
        assert_eq!(Resize::LongestSide(224).target(640, 272), (224, 96));
        assert_eq!(Resize::LongestSide(224).target(272, 640), (96, 224));
        assert_eq!(Resize::LongestSide(1024).target(640, 272), (640, 272));
    }
}
