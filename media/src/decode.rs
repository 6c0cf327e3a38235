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
//!   non-reference frames except within 1.5 frame periods of a slot boundary (where the
//!   `fps` filter's choice is made), and drops every frame
//!   between the last boundary of a GOP and the next keyframe of the container's index
//!   (with a margin of four frames for reordering), so the same frames are chosen with
//!   less decoding. For a whole file (no range) with more than one core, the file is cut
//!   into chunks of whole GOPs (8 s or more, at indexed keyframes) that single-threaded
//!   decoders, one per core, decode in parallel; each sends on only the last frame of each
//!   slot, and the sampler takes the chunks in order, so the output is the same
//!   (`Chunked`). Frame threading keeps less than two cores busy on such a decode, as each
//!   reference frame waits for the one before it.
//! - Otherwise the decoder runs one frame thread per core.
//! - **keyframes** sets the decoder's `skip_frame` to non-key frames: only keyframes are
//!   decoded at all (as `ffmpeg -skip_frame nokey`).
//! - **resize** runs swscale (bicubic, as ffmpeg's `scale` filter) straight to RGB24, with
//!   the matrix and range the frame is tagged with ([`crate::colour`]); only emitted frames
//!   are converted. At the native size the pixels equal `ffmpeg -pix_fmt rgb24`'s.
//!
//! Memory stays bounded whatever the video's length: frames go to the caller one at a time,
//! and at most two decoded frames are held for sampling (parallel chunks: 16 queued per core).

use std::ops::ControlFlow;

use crate::MediaError;
use crate::colour::{ColourKey, Matrix, colour_key, configure};
use crate::ffmpeg::{self, codec, format::Pixel, media::Type, software::scaling};
use crate::image::Rgb;
use crate::probe::open_error_is_transient;
use crate::source::MediaInput;

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

pub(crate) fn decode_error(path: &str, message: String) -> MediaError {
    MediaError::Decode {
        path: path.to_owned(),
        message,
    }
}

/// Emits a source frame (with the timestamp to report), telling whether to go on.
type Emit<'a> = dyn FnMut(&Source, f64) -> Result<ControlFlow<()>, MediaError> + 'a;

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
) -> Result<(), MediaError> {
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
) -> Result<(), MediaError> {
    let mut emit = |frame: DecodedFrame| match extras.range {
        Some((from, _)) if frame.pts_s < from - 1e-9 => ControlFlow::Continue(()),
        Some((_, to)) if frame.pts_s >= to - 1e-9 => ControlFlow::Break(()),
        _ => emit(frame),
    };
    let display = media.display.clone();
    crate::init()?;
    crate::fault::check(&display)?;
    if let Sampling::Fps(fps) = sampling
        && !(fps.is_finite() && fps > 0.0)
    {
        return Err(decode_error(
            &display,
            format!("fps must be a positive number, not {fps}"),
        ));
    }
    crate::guard(&display, || {
        let mut input = media.open().map_err(|e| {
            if open_error_is_transient(e) {
                MediaError::read_failure(&display, format!("cannot open: {e}"), true)
            } else {
                decode_error(&display, format!("cannot open: {e}"))
            }
        })?;
        let stream = input
            .streams()
            .best(Type::Video)
            .ok_or_else(|| decode_error(&display, "the file has no video stream".to_owned()))?;
        let stream_index = stream.index();
        let threads = crate::cpu::budget().decoder_threads();
        let timing = Timing::of_stream(&input, &stream, false);
        // sparse fps sampling skips frames (timestamps permitting: checked only then, as
        // it reads the file's first packets)
        let plan = match sampling {
            Sampling::Fps(fps) => SkipPlan::for_stream(media, &stream, &timing, fps),
            _ => None,
        };
        // when frames are not all decoded, a frame's index comes from its timestamp
        let timing = timing.index_from_ts(
            sampling == Sampling::Keyframes || plan.is_some() || extras.range.is_some(),
        );
        let mut sampler = Sampler::new(sampling, timing.tb, timing.start, timing.origin);
        let mut scaler: Option<(scaling::Context, (Pixel, u32, u32, ColourKey))> = None;
        let mut out = |src: &Source, pts_s: f64| -> Result<ControlFlow<()>, MediaError> {
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
            let colour = colour_key(frame, Matrix::Tagged);
            let key = (frame.format(), w, h, colour);
            if scaler.as_ref().is_none_or(|(_, k)| *k != key) {
                let mut context = scaling::Context::get(
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
                configure(&mut context, colour);
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
         -> Result<ControlFlow<()>, MediaError> {
            while decoder.receive_frame(&mut decoded).is_ok() {
                let frame = std::mem::replace(&mut decoded, ffmpeg::frame::Video::empty());
                let src = timing.source(frame, last_end, &mut next_index);
                if sampler.push(src, out)?.is_break() {
                    return Ok(ControlFlow::Break(()));
                }
            }
            Ok(ControlFlow::Continue(()))
        };

        if let Some(plan) = plan
            .as_ref()
            .filter(|_| extras.range.is_none() && !extras.motion_vectors && threads >= 2)
        {
            let chunks = chunk_bounds(&plan.keyframes, timing.tb, CHUNK_S);
            if chunks.len() >= 2 {
                let chunked = Chunked {
                    media,
                    display: &display,
                    stream_index,
                    plan,
                    timing: &timing,
                };
                return chunked.run(chunks, threads, &mut sampler, &mut out);
            }
        }

        // one decoder for the whole file (opened once the parallel chunks are ruled out)
        let mut decoder = open_video_decoder(&display, &stream, threads, extras.motion_vectors)?;
        if sampling == Sampling::Keyframes {
            decoder.skip_frame(ffmpeg::Discard::NonKey);
        }
        // the end of the last frame in presentation order, from every packet (decoded or not)
        let mut packets_end: Option<i64> = None;
        let mut damaged = 0u64;
        if let Some((from, _)) = extras.range.filter(|(from, _)| *from > 0.0) {
            // to the keyframe at or before `from` (AV_TIME_BASE units, file time)
            let target = ((from + timing.start as f64 * timing.tb) * 1e6) as i64;
            input
                .seek(target, ..target)
                .map_err(|e| decode_error(&display, format!("cannot seek to {from} s: {e}")))?;
        }
        for (s, packet) in input.packets() {
            if s.index() != stream_index {
                continue;
            }
            // key frames are the packets the container flags key: some decoders (VP9,
            // Cinepak) ignore `skip_frame` and would return every frame
            if sampling == Sampling::Keyframes && !packet.is_key() {
                continue;
            }
            if let (Some(pts), Sampling::Fps(_)) = (packet.pts(), sampling) {
                let duration = timing.packet_duration(&packet);
                packets_end = packets_end.max(Some(pts + duration));
                if let Some(plan) = &plan {
                    decoder.skip_frame(plan.discard(pts, packet.is_key()));
                }
            }
            if let Err(e) = decoder.send_packet(&packet) {
                // a damaged packet: skip it, as ffmpeg does, and go on decoding
                log::debug!("{display}: skipping a packet the decoder refused: {e}");
                damaged += 1;
                continue;
            }
            if receive(&mut decoder, &mut sampler, &mut last_end, &mut out)?.is_break() {
                report_damage(&display, damaged);
                return Ok(());
            }
        }
        if let Some(e) = read_error(&input) {
            return Err(MediaError::read_failure(
                &display,
                format!("reading stopped part-way: {e}"),
                media.local_path().is_none() || open_error_is_transient(e),
            ));
        }
        let _ = decoder.send_eof();
        if receive(&mut decoder, &mut sampler, &mut last_end, &mut out)?.is_break() {
            return Ok(());
        }
        report_damage(&display, damaged);
        if sampler.pushed == 0 {
            return Err(nothing_decodes(&display, damaged));
        }
        sampler.finish(packets_end.max(last_end), &mut out)?;
        Ok(())
    })
}

/// The error of a decode in which no frame decodes at all (a file whose header reads but
/// whose packets are all damaged): the row's error, never an empty result.
pub(crate) fn nothing_decodes(display: &str, damaged: u64) -> MediaError {
    decode_error(
        display,
        if damaged > 0 {
            format!("no frame of the video decodes ({damaged} damaged packets skipped)")
        } else {
            "no frame of the video decodes".to_owned()
        },
    )
}

/// Warns once per decode that `damaged` packets were refused by the decoder and skipped
/// (the frames around them are still given; see the SQL reference, "Supported media").
pub(crate) fn report_damage(display: &str, damaged: u64) {
    if damaged > 0 {
        log::warn!(
            "{display}: {damaged} damaged packets skipped (the frames around them are kept)"
        );
    }
}

/// Opens a decoder for `stream` with `threads` frame threads (0: libavcodec's choice).
pub(crate) fn open_video_decoder(
    display: &str,
    stream: &ffmpeg::format::stream::Stream,
    threads: usize,
    motion_vectors: bool,
) -> Result<ffmpeg::decoder::Video, MediaError> {
    let mut ctx = codec::Context::from_parameters(stream.parameters())
        .map_err(|e| decode_error(display, format!("cannot read the codec parameters: {e}")))?;
    ctx.set_threading(codec::threading::Config {
        kind: codec::threading::Type::Frame,
        // one thread per core: libavcodec's automatic count (cores + 1) measured about
        // 10% slower on 2 cores
        count: threads,
        ..Default::default()
    });
    if motion_vectors {
        // SAFETY: setting a flag on the codec context before it is opened.
        unsafe {
            (*ctx.as_mut_ptr()).flags2 |= ffmpeg::ffi::AV_CODEC_FLAG2_EXPORT_MVS;
        }
    }
    ctx.decoder()
        .video()
        .map_err(|e| decode_error(display, format!("cannot open the decoder: {e}")))
}

/// fps sampling below a quarter of the frame rate: which frames the decoder may skip. A
/// slot shows the last frame before its boundary, so the frames just before a boundary (up
/// to 1.5 frame periods, for timestamp jitter) are always decoded, and those just after it
/// (as many: a B-frame skipped right after the boundary measured to cost the frame before
/// it its timestamp, on a file whose video starts 0.025 s in); elsewhere the decoder skips
/// frames nothing refers to, and drops every frame after the last boundary of a GOP.
pub(crate) struct SkipPlan {
    fps: f64,
    /// Where slots count from (ticks).
    origin: i64,
    tb: f64,
    frame_period: f64,
    /// The keyframes the container indexes (stream ticks, sorted): decoding restarts at
    /// each, so a frame after the last boundary before the next keyframe feeds no sampled
    /// frame.
    keyframes: Vec<i64>,
    /// A few frames (ticks) on both sides for reordering: B-frames shown before a boundary
    /// that refer to a frame shown after it, and the leading frames of an open GOP shown
    /// before its keyframe.
    margin: i64,
}

impl SkipPlan {
    /// The plan for sampling `stream` (timed by `timing`) at `fps`, when that is sparse
    /// enough (below a quarter of the frame rate) for the decoder to skip frames.
    /// It reads the file's first packets (only when the rate allows a plan): none when
    /// they lack presentation timestamps ([`FirstPackets`]).
    pub(crate) fn for_stream(
        media: &MediaInput,
        stream: &ffmpeg::format::stream::Stream,
        timing: &Timing,
        fps: f64,
    ) -> Option<Self> {
        let rate = stream.avg_frame_rate();
        let frame_period = if rate.numerator() > 0 && rate.denominator() > 0 {
            f64::from(rate.denominator()) / f64::from(rate.numerator())
        } else {
            0.2
        };
        if !(fps > 0.0 && fps * frame_period < 0.25) {
            return None;
        }
        let first = first_packets(media, stream);
        first.timestamps.then(|| SkipPlan {
            fps,
            origin: timing.origin,
            tb: timing.tb,
            frame_period,
            keyframes: first.keyframes,
            margin: (4.0 * frame_period / timing.tb).round() as i64,
        })
    }

    fn slots(&self, ts: i64) -> f64 {
        (ts - self.origin) as f64 * self.tb * self.fps
    }

    fn near_boundary(&self, pts: i64) -> bool {
        let slots = self.slots(pts);
        let past_boundary = ((slots - slots.floor()) - 0.5) / self.fps;
        if past_boundary < 0.0 {
            -past_boundary <= 1.5 * self.frame_period
        } else {
            past_boundary <= 1.5 * self.frame_period
        }
    }

    /// Whether a slot boundary's window meets the ticks `[lo, hi]`.
    fn boundary_within(&self, lo: i64, hi: i64) -> bool {
        let window = 1.5 * self.frame_period * self.fps;
        let (lo, hi) = (self.slots(lo) - window, self.slots(hi) + window);
        (hi - 0.5).floor() >= (lo - 0.5).ceil()
    }

    fn feeds_nothing(&self, pts: i64) -> bool {
        let next = self.keyframes.partition_point(|&k| k <= pts);
        self.keyframes
            .get(next)
            .is_some_and(|&key| !self.boundary_within(pts - self.margin, key + self.margin))
    }

    /// What the decoder may skip of the packet at `pts`.
    pub(crate) fn discard(&self, pts: i64, key: bool) -> ffmpeg::Discard {
        if self.near_boundary(pts) {
            ffmpeg::Discard::Default
        } else if !key && self.feeds_nothing(pts) {
            ffmpeg::Discard::All
        } else {
            ffmpeg::Discard::NonReference
        }
    }
}

/// How decoded frames get their timestamp, index and end.
pub(crate) struct Timing {
    pub(crate) start: i64,
    /// Where fps slots count from (ticks): see [`slot_origin`].
    pub(crate) origin: i64,
    pub(crate) tb: f64,
    /// One frame period in stream ticks (packet durations can be wrong, the last one in
    /// particular, so the frame rate wins when it is known).
    frame_ticks: Option<i64>,
    /// The container's average frame rate, when it gives one.
    rate: Option<f64>,
    /// When frames are not all decoded, a frame's index comes from its timestamp.
    index_rate: Option<f64>,
}

impl Timing {
    /// The timing of `stream`; frame indices come from timestamps when `index_from_ts`
    /// (not every frame is decoded from the start) and the frame rate is known.
    pub(crate) fn of_stream(
        input: &ffmpeg::format::context::Input,
        stream: &ffmpeg::format::stream::Stream,
        index_from_ts: bool,
    ) -> Self {
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
        Self {
            start,
            origin: slot_origin(input, start, tb),
            tb,
            frame_ticks: frame_rate.map(|r| (1.0 / (r * tb)).round() as i64),
            rate: frame_rate,
            index_rate: frame_rate.filter(|_| index_from_ts),
        }
    }

    /// The same timing, with frame indices from timestamps when `yes` (and the frame rate
    /// is known), or counted.
    pub(crate) fn index_from_ts(self, yes: bool) -> Self {
        Self {
            index_rate: self.rate.filter(|_| yes),
            ..self
        }
    }

    /// The frame rate, when the container gives one.
    pub(crate) fn frame_rate(&self) -> Option<f64> {
        self.frame_ticks
            .filter(|t| *t > 0)
            .map(|t| 1.0 / (t as f64 * self.tb))
    }

    /// Seconds from the stream's start of a timestamp.
    pub(crate) fn seconds(&self, ts: i64) -> f64 {
        (ts - self.start) as f64 * self.tb
    }

    /// A packet's duration in ticks: the frame period when known, else its own.
    pub(crate) fn packet_duration(&self, packet: &ffmpeg::Packet) -> i64 {
        self.frame_ticks.unwrap_or_else(|| packet.duration().max(0))
    }

    /// A decoded frame's timestamp (ticks) and index; advances the end of the last frame
    /// and the running index.
    pub(crate) fn stamp(
        &self,
        frame: &ffmpeg::frame::Video,
        last_end: &mut Option<i64>,
        next_index: &mut i64,
    ) -> (i64, i64) {
        let ts = frame
            .timestamp()
            .or(frame.pts())
            .unwrap_or_else(|| last_end.unwrap_or(self.start));
        // SAFETY: plain field read of the frame the decoder just filled.
        let packet_duration = unsafe { (*frame.as_ptr()).pkt_duration }.max(0);
        *last_end = Some(ts + self.frame_ticks.unwrap_or(packet_duration));
        let index = self.index_rate.map_or(*next_index, |r| {
            ((ts - self.start) as f64 * self.tb * r).round() as i64
        });
        *next_index += 1;
        (ts, index)
    }

    fn source(
        &self,
        frame: ffmpeg::frame::Video,
        last_end: &mut Option<i64>,
        next_index: &mut i64,
    ) -> Source {
        let (ts, index) = self.stamp(&frame, last_end, next_index);
        Source {
            frame,
            index,
            ts,
            slot: 0,
        }
    }
}

static CHUNKED_RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// How many decodes of this process ran as parallel chunks (see [`decode_frames_with`]).
pub fn chunked_runs() -> usize {
    CHUNKED_RUNS.load(std::sync::atomic::Ordering::Relaxed)
}

/// Chunks of a file decoded in parallel for sparse fps sampling are this long at least.
const CHUNK_S: f64 = 8.0;
/// Sampled frames a chunk's decoder may run ahead of the caller.
const CHUNK_QUEUE: usize = 16;

/// Chunk bounds (keyframe ticks: from, to; None: the file's start or end) of at least
/// `min_s` seconds each, cut at indexed keyframes.
pub(crate) fn chunk_bounds(
    keyframes: &[i64],
    tb: f64,
    min_s: f64,
) -> Vec<(Option<i64>, Option<i64>)> {
    let mut starts: Vec<i64> = Vec::new();
    let mut last = keyframes.first().copied().unwrap_or(0);
    for &k in keyframes {
        if (k - last) as f64 * tb >= min_s {
            starts.push(k);
            last = k;
        }
    }
    let mut bounds = Vec::with_capacity(starts.len() + 1);
    let mut from = None;
    for &k in &starts {
        bounds.push((from, Some(k)));
        from = Some(k);
    }
    bounds.push((from, None));
    bounds
}

/// What a chunk's decoder sends: a frame that may be sampled, or its end.
enum ChunkItem {
    Frame(Source),
    /// The end of the last packet and of the last decoded frame (ticks).
    Done(Option<i64>, Option<i64>),
    Failed(MediaError),
}

/// Sparse fps sampling of a whole file with one single-threaded decoder per core, each on
/// its own chunks of whole GOPs (cut at indexed keyframes), which the caller samples in
/// order. A decoder skipping most frames keeps less than two cores busy with frame
/// threading (each reference frame waits for the one before); GOPs decode independently.
/// Each chunk's decoder decodes exactly the frames the sequential decoder would, and
/// sends on only the last frame of each slot (the sampler drops the others), so the
/// output is the same frames.
struct Chunked<'a> {
    media: &'a MediaInput,
    display: &'a str,
    stream_index: usize,
    plan: &'a SkipPlan,
    timing: &'a Timing,
}

impl Chunked<'_> {
    fn run(
        &self,
        chunks: Vec<(Option<i64>, Option<i64>)>,
        workers: usize,
        sampler: &mut Sampler,
        out: &mut Emit<'_>,
    ) -> Result<(), MediaError> {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::mpsc::sync_channel;
        let stop = AtomicBool::new(false);
        CHUNKED_RUNS.fetch_add(1, Ordering::Relaxed);
        std::thread::scope(|scope| {
            let mut receivers = Vec::with_capacity(chunks.len());
            let mut jobs: Vec<Vec<_>> = (0..workers).map(|_| Vec::new()).collect();
            for (i, bounds) in chunks.into_iter().enumerate() {
                let (tx, rx) = sync_channel(CHUNK_QUEUE);
                receivers.push(rx);
                jobs[i % workers].push((bounds, tx));
            }
            for mine in jobs {
                let stop = &stop;
                scope.spawn(move || {
                    for (bounds, tx) in mine {
                        if stop.load(Ordering::Relaxed) {
                            return;
                        }
                        let outcome = self.decode_chunk(bounds, &tx, stop);
                        let last = match outcome {
                            Ok((packets_end, last_end)) => ChunkItem::Done(packets_end, last_end),
                            Err(e) => ChunkItem::Failed(e),
                        };
                        if tx.send(last).is_err() {
                            return;
                        }
                    }
                });
            }
            let (mut packets_end, mut last_end) = (None, None);
            let result = (|| {
                for rx in receivers {
                    loop {
                        match rx.recv() {
                            Ok(ChunkItem::Frame(src)) => {
                                if sampler.push(src, out)?.is_break() {
                                    return Ok(());
                                }
                            }
                            Ok(ChunkItem::Done(p, l)) => {
                                packets_end = packets_end.max(p);
                                last_end = last_end.max(l);
                                break;
                            }
                            Ok(ChunkItem::Failed(e)) => return Err(e),
                            Err(_) => {
                                return Err(decode_error(
                                    self.display,
                                    "a chunk decoder stopped without a result".to_owned(),
                                ));
                            }
                        }
                    }
                }
                if sampler.pushed == 0 {
                    return Err(nothing_decodes(self.display, 0));
                }
                sampler.finish(packets_end.max(last_end), out)
            })();
            // the receivers are gone: decoders still running stop at their next frame
            stop.store(true, Ordering::Relaxed);
            result
        })
    }

    /// Decodes one chunk, sending the last frame of each slot; returns the end of its last
    /// packet and of its last decoded frame.
    fn decode_chunk(
        &self,
        (from, to): (Option<i64>, Option<i64>),
        tx: &std::sync::mpsc::SyncSender<ChunkItem>,
        stop: &std::sync::atomic::AtomicBool,
    ) -> Result<(Option<i64>, Option<i64>), MediaError> {
        use std::sync::atomic::Ordering;
        let display = self.display;
        let mut input = self
            .media
            .open()
            .map_err(|e| decode_error(display, format!("cannot open: {e}")))?;
        let stream = input
            .stream(self.stream_index)
            .ok_or_else(|| decode_error(display, "the video stream is gone".to_owned()))?;
        let mut decoder = open_video_decoder(display, &stream, 1, false)?;
        if let Some(from) = from {
            // to a keyframe a second or more before the chunk, then read up to it: the
            // chunk's keyframe is met whatever the demuxer's seek precision; a demuxer that
            // seeks past it is read from the start instead
            let target = from - (1.0 / self.timing.tb).round() as i64;
            let seek = |input: &mut ffmpeg::format::context::Input| {
                // SAFETY: a seek on the open input's own stream, in its time base.
                unsafe {
                    ffmpeg::ffi::avformat_seek_file(
                        input.as_mut_ptr(),
                        self.stream_index as i32,
                        i64::MIN,
                        target,
                        target,
                        0,
                    )
                }
            };
            let first_dts = (seek(&mut input) >= 0)
                .then(|| {
                    input
                        .packets()
                        .find(|(s, _)| s.index() == self.stream_index)
                        .and_then(|(_, p)| p.dts().or(p.pts()))
                })
                .flatten();
            if first_dts.is_some_and(|d| d <= from) && seek(&mut input) >= 0 {
                log::trace!("{display}: chunk from tick {from}");
            } else {
                input = self
                    .media
                    .open()
                    .map_err(|e| decode_error(display, format!("cannot open: {e}")))?;
            }
        }
        // the first and the next chunk's keyframes in presentation time, once met
        let mut lower: Option<i64> = None;
        let mut upper: Option<i64> = None;
        let mut started = from.is_none();
        let mut packets_end: Option<i64> = None;
        let mut last_end = None;
        let mut next_index = 0i64;
        let mut pending: Option<Source> = None;
        let mut decoded = ffmpeg::frame::Video::empty();
        let fps = self.plan.fps;
        let tb = self.timing.tb;
        // sends `pending` when `next` starts a later slot (or the chunk ends)
        let mut receive = |decoder: &mut ffmpeg::decoder::Video,
                           lower: Option<i64>,
                           upper: Option<i64>,
                           pending: &mut Option<Source>,
                           last_end: &mut Option<i64>|
         -> bool {
            while decoder.receive_frame(&mut decoded).is_ok() {
                let frame = std::mem::replace(&mut decoded, ffmpeg::frame::Video::empty());
                let mut src = self.timing.source(frame, last_end, &mut next_index);
                if lower.is_some_and(|l| src.ts < l) || upper.is_some_and(|u| src.ts >= u) {
                    continue;
                }
                src.slot = slot_of(src.ts - self.timing.origin, tb, fps);
                if let Some(prev) = pending.take()
                    && src.slot > prev.slot
                    && tx.send(ChunkItem::Frame(prev)).is_err()
                {
                    return false;
                }
                *pending = Some(src);
            }
            true
        };
        for (s, packet) in input.packets() {
            if stop.load(Ordering::Relaxed) {
                return Ok((packets_end, last_end));
            }
            if s.index() != self.stream_index {
                continue;
            }
            let (Some(pts), dts) = (packet.pts(), packet.dts().or(packet.pts())) else {
                continue;
            };
            if !started {
                match (from, dts) {
                    // the same packet the chunk before stops at
                    (Some(k), Some(d)) if packet.is_key() && d >= k => {
                        started = true;
                        lower = Some(pts);
                    }
                    _ => continue,
                }
            }
            if let Some(next) = to {
                match upper {
                    None if packet.is_key() && dts.is_some_and(|d| d >= next) => upper = Some(pts),
                    // past the next keyframe and the leading frames an open GOP shows
                    // before it: the next chunk goes on from here
                    Some(u) if pts >= u => break,
                    _ => {}
                }
            }
            let duration = self.timing.packet_duration(&packet);
            if upper.is_none_or(|u| pts < u) {
                packets_end = packets_end.max(Some(pts + duration));
            }
            decoder.skip_frame(self.plan.discard(pts, packet.is_key()));
            if let Err(e) = decoder.send_packet(&packet) {
                log::warn!("{display}: skipping a damaged packet the decoder refused: {e}");
                continue;
            }
            if !receive(&mut decoder, lower, upper, &mut pending, &mut last_end) {
                return Ok((packets_end, last_end));
            }
        }
        if let Some(e) = read_error(&input) {
            return Err(MediaError::read_failure(
                display,
                format!("reading stopped part-way: {e}"),
                self.media.local_path().is_none() || open_error_is_transient(e),
            ));
        }
        let _ = decoder.send_eof();
        receive(&mut decoder, lower, upper, &mut pending, &mut last_end);
        if let Some(last) = pending.take() {
            let _ = tx.send(ChunkItem::Frame(last));
        }
        Ok((packets_end, last_end))
    }
}

/// Where `ffmpeg -vf fps=N` counts its slots from, in ticks of `tb` (the video stream starts
/// at `stream_start`): the CLI shifts
/// every timestamp by the file's start time (the earliest of all its streams, so an audio
/// track that starts first moves the slots), except in formats with timestamp
/// discontinuities (MPEG program and transport streams), where it corrects the start to
/// the earliest stream it uses: the video's, when frames are extracted.
fn slot_origin(input: &ffmpeg::format::context::Input, stream_start: i64, tb: f64) -> i64 {
    // SAFETY: plain field reads of the open input's format context and its input format.
    let (file_start_us, discontinuous) = unsafe {
        let ctx = input.as_ptr();
        let format = (*ctx).iformat;
        (
            (*ctx).start_time,
            !format.is_null() && (*format).flags & ffmpeg::ffi::AVFMT_TS_DISCONT != 0,
        )
    };
    if discontinuous || file_start_us == ffi_nopts() || tb <= 0.0 {
        return stream_start;
    }
    ((file_start_us as f64 / 1e6 / tb).round() as i64).min(stream_start)
}

/// What the first packets of the video stream say about reading it sparsely (skipping
/// frames by timestamp, parallel chunks cut at key frames); one look at the file.
pub(crate) struct FirstPackets {
    /// Whether they all carry a presentation timestamp. AVI (and MPEG program streams,
    /// for some frames) store only decoding timestamps: the presentation time of such a
    /// frame is known only once the decoder reorders it, so skipping by timestamp and
    /// parallel chunks (both decided per packet) are off for them and every frame is
    /// decoded in order.
    pub(crate) timestamps: bool,
    /// The timestamps (stream ticks, sorted) of the key frames the container's index
    /// lists; empty when it has no index, or when its entries are not key frames: the MPEG
    /// program stream demuxer indexes nearly every packet as a "keyframe" (seek points),
    /// and a plan that trusted it dropped reference frames it took for the tail of a GOP
    /// (a 30 fps MPEG-2 program stream's last `fps=1` frame came out damaged). An index of
    /// key frames lists none of the first packets that is not key.
    pub(crate) keyframes: Vec<i64>,
}

/// Reads the first packets of `stream` of `media` ([`FirstPackets`]).
pub(crate) fn first_packets(
    media: &MediaInput,
    stream: &ffmpeg::format::stream::Stream,
) -> FirstPackets {
    /// Packets looked at: past the first GOP's reordering in every common layout.
    const LOOK: usize = 48;
    let keys = index_entries(stream);
    let Ok(mut input) = media.open() else {
        return FirstPackets {
            timestamps: false,
            keyframes: Vec::new(),
        };
    };
    let stream_index = stream.index();
    let (mut timestamps, mut lists_others) = (true, false);
    for (_, p) in input
        .packets()
        .filter(|(s, _)| s.index() == stream_index)
        .take(LOOK)
    {
        timestamps &= p.pts().is_some();
        lists_others |= !p.is_key()
            && p.dts()
                .or(p.pts())
                .is_some_and(|ts| keys.binary_search(&ts).is_ok());
    }
    if lists_others {
        log::debug!(
            "{}: the container's index lists packets that are not key frames; frames are not skipped by it",
            media.display
        );
    }
    FirstPackets {
        timestamps,
        keyframes: if lists_others { Vec::new() } else { keys },
    }
}

/// The key entries of the container's index (stream ticks, sorted).
fn index_entries(stream: &ffmpeg::format::stream::Stream) -> Vec<i64> {
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
pub(crate) fn frame_motion(frame: &ffmpeg::frame::Video) -> Option<FrameMotion> {
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
pub(crate) fn read_error(input: &ffmpeg::format::context::Input) -> Option<ffmpeg::Error> {
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

/// The output slot of a timestamp: `av_rescale_q_rnd(ts, tb, 1/fps, NEAR_INF)` (halves
/// round away from zero), as ffmpeg's `fps` filter.
pub fn slot_of(ts: i64, tb: f64, fps: f64) -> i64 {
    (ts as f64 * tb * fps).round() as i64
}

/// The sampling state machine (see the module docs).
struct Sampler {
    sampling: Sampling,
    tb: f64,
    start: i64,
    origin: i64,
    /// fps: the frame waiting for its slot(s), and the next output slot.
    current: Option<Source>,
    next_slot: i64,
    /// Frames the decoder gave (before any range's start is applied).
    pushed: u64,
}

impl Sampler {
    fn new(sampling: Sampling, tb: f64, start: i64, origin: i64) -> Self {
        Self {
            sampling,
            tb,
            start,
            origin,
            current: None,
            next_slot: 0,
            pushed: 0,
        }
    }

    fn seconds(&self, ts: i64) -> f64 {
        (ts - self.start) as f64 * self.tb
    }

    fn slot(&self, ts: i64, fps: f64) -> i64 {
        slot_of(ts - self.origin, self.tb, fps)
    }

    fn push(&mut self, mut src: Source, out: &mut Emit<'_>) -> Result<ControlFlow<()>, MediaError> {
        self.pushed += 1;
        crate::metrics::frames_decoded(1);
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

    fn finish(&mut self, end_ts: Option<i64>, out: &mut Emit<'_>) -> Result<(), MediaError> {
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
pub fn frame_at(media: &MediaInput, at_s: f64, resize: Resize) -> Result<DecodedFrame, MediaError> {
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
pub fn rgb_at(path: &str, at_s: f64) -> Result<Rgb, MediaError> {
    let media = crate::source::VideoSource::parse(path)?
        .media_input(&crate::storage::StorageOptions::default())?;
    Ok(frame_at(&media, at_s, Resize::Original)?.into())
}

impl From<DecodedFrame> for Rgb {
    fn from(frame: DecodedFrame) -> Self {
        Rgb {
            width: frame.width as usize,
            height: frame.height as usize,
            data: frame.rgb,
        }
    }
}

/// Decodes the frames of `[start_s, end_s)` sampled by `sampling`, at their own size, and
/// hands them to `each` in batches of up to `batch` (for a model that takes several
/// frames per call); the first error `each` returns stops decoding and is returned.
pub fn decode_batches(
    media: &MediaInput,
    sampling: Sampling,
    (start_s, end_s): (f64, f64),
    batch: usize,
    mut each: impl FnMut(Vec<DecodedFrame>) -> Result<(), MediaError>,
) -> Result<(), MediaError> {
    let mut pending = Vec::with_capacity(batch.max(1));
    let mut failure = None;
    decode_frames_with(
        media,
        sampling,
        Resize::Original,
        true,
        Extras {
            range: Some((start_s, end_s)),
            motion_vectors: false,
        },
        |frame| {
            pending.push(frame);
            if pending.len() >= batch.max(1)
                && let Err(e) = each(std::mem::take(&mut pending))
            {
                failure = Some(e);
                return ControlFlow::Break(());
            }
            ControlFlow::Continue(())
        },
    )?;
    if let Some(e) = failure {
        return Err(e);
    }
    if pending.is_empty() {
        return Ok(());
    }
    each(pending)
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
