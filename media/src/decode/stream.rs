//! Opening a video stream for decoding, for the pass ([`super::pass`]): the decoder and
//! its threads, the stream's timing (timestamps, frame indices, where fps slots count
//! from), what the first packets say about reading the file sparsely, the skip plan of
//! sparse fps sampling, the chunks of whole GOPs decoded in parallel, the motion vectors a
//! codec exports, and the errors of a decode.

use super::FrameMotion;
use crate::MediaError;
use crate::ffmpeg::{self, codec};
use crate::source::MediaInput;

/// Chunks of a file decoded in parallel (sparse fps sampling, a cheap look at the anchors)
/// are this long at least.
pub(crate) const CHUNK_S: f64 = 8.0;

pub(crate) fn decode_error(path: &str, message: String) -> MediaError {
    MediaError::Decode {
        path: path.to_owned(),
        message,
    }
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
        if !Self::is_sparse(stream, fps) {
            return None;
        }
        let frame_period = Self::frame_period(stream);
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

    /// Whether sampling `stream` at `fps` is sparse enough for a plan: below a quarter of
    /// the frame rate.
    pub(crate) fn is_sparse(stream: &ffmpeg::format::stream::Stream, fps: f64) -> bool {
        fps > 0.0 && fps * Self::frame_period(stream) < 0.25
    }

    /// The stream's frame period in seconds (0.2 when the container gives no rate).
    fn frame_period(stream: &ffmpeg::format::stream::Stream) -> f64 {
        let rate = stream.avg_frame_rate();
        if rate.numerator() > 0 && rate.denominator() > 0 {
            f64::from(rate.denominator()) / f64::from(rate.numerator())
        } else {
            0.2
        }
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
}

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
