//! One decode pass of a video feeding any number of consumers.
//!
//! Every operator a query asks of a video reads its frames from one pass ([`run_pass`]):
//! the demuxer reads the file once, the decoder decodes each frame once, and each
//! [`FrameConsumer`] sees every decoded frame in presentation order, asking for the
//! pictures it needs ([`Pictures::get`]) in its own size and pixel format. A picture is
//! converted straight from the decoder's YUV by swscale (or, for a centre-sampled shrink,
//! [`Filter::CentreSample`], by a gather and a SIMD conversion) and only once per frame and
//! [`PictureSpec`], so consumers asking the same spec share it.
//!
//! - **Range.** A pass covers the whole file or a range `[from, to)`: the demuxer seeks to
//!   the keyframe before `from`, frames before `from` are decoded (they are references)
//!   but not shown to consumers, and the pass stops at the first frame at or after `to`,
//!   whose timestamp consumers get as the end ([`FrameConsumer::finish`]).
//! - **Selection.** [`Selection::All`] decodes every frame; [`Selection::Sampled`] those
//!   fps sampling may show (consumers that sample at that rate see the same frames as
//!   with every frame decoded). [`Selection::Anchors`] lets
//!   the decoder skip B-frames and the loop filter (a cheap look at a file, as the fast
//!   shot detector takes: about a third of the decoding time of H.264 with B-frames); the
//!   frames consumers see are then a subset, with indices from their timestamps.
//!   [`Selection::Window`] decodes every frame of a range but skips the non-reference
//!   frames of its lead-in (the fast shot detector's exact look around a candidate cut).
//! - **Sampling.** A consumer that samples N frames per second keeps a [`SlotSampler`]:
//!   ffmpeg's `fps` filter's choice, made frame by frame with the previous frame still at
//!   hand ([`FrameConsumer::frame`] gets it), so no frame is copied to be sampled.
//! - **Threads.** The decoder runs [`crate::cpu::CpuBudget::decoder_threads`] frame
//!   threads; consumers run on the caller's thread, between frames.
//!
//! [`passes`] counts the passes over each video in this process, and each pass is logged
//! (target `framefusion::decode`, info level) with its frames and consumers.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Instant;

use crate::MediaError;
use crate::centre::centre_sample_rgb;
pub use crate::colour::Matrix;
use crate::colour::{ColourKey, colour_key, configure};
pub use crate::decode::slot_of;
use crate::decode::{
    FrameMotion, Timing, decode_error, first_packets, frame_motion, open_video_decoder,
};
use crate::ffmpeg::{self, format::Pixel, media::Type, software::scaling};
use crate::probe::open_error_is_transient;
use crate::source::MediaInput;

/// Which frames a pass decodes.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Selection {
    /// Every frame.
    #[default]
    All,
    /// The frames sampling at this many frames per second may show ([`SlotSampler`]):
    /// below a quarter of the frame rate the decoder skips the frames nothing sampled
    /// depends on (as the `frames` table function does), and a whole file is decoded in
    /// chunks of GOPs in parallel.
    Sampled(f64),
    /// Intra and predicted frames (no B-frames), without the loop filter: a fraction of
    /// the cost, for a cheap look.
    Anchors,
    /// Every frame of the pass's range, as [`Selection::All`]; before the range (from the
    /// keyframe it seeks to) the decoder skips the frames no other frame references,
    /// which nothing in the range can need: a second, exact look at a short stretch,
    /// decoded by one thread (callers decode several side by side). Without a range, or
    /// when the stream's timestamps are incomplete, every frame is decoded.
    Window,
}

/// What a pass decodes.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct PassOptions {
    /// Only frames whose timestamps (seconds from the stream's start) fall in
    /// `[from, to)`; `None`: the whole file.
    pub range: Option<(f64, f64)>,
    /// Export the codec's motion vectors ([`Decoded::motion`]).
    pub motion_vectors: bool,
    /// Which frames the decoder decodes.
    pub selection: Selection,
}

/// Pixel formats of [`Picture`]s.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PictureFormat {
    /// Packed RGB, 3 bytes per pixel.
    Rgb24,
    /// Luma, 1 byte per pixel.
    Gray8,
}

/// swscale's interpolation for a [`Picture`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Filter {
    /// Bilinear (the `scale` filter's `bilinear`).
    Bilinear,
    /// Bicubic (the `scale` filter's default).
    Bicubic,
    /// Area averaging.
    Area,
    /// Fast bilinear: two taps, for a cheap look.
    FastBilinear,
    /// A shrink for a cheap look at a much smaller picture: swscale reads one source row
    /// in every `⌊height / picture height⌋` (the middle row of each band, where a two-tap
    /// shrink such as OpenCV's `INTER_LINEAR` reads at an integer factor), then scales
    /// those rows with [`Filter::FastBilinear`]. The rows it skips are never read, so a
    /// 720p frame costs a fifth of a full-frame scale at 256 pixels; frames in formats
    /// other than 8-bit planar YUV, NV12 and grey are scaled whole.
    TwoTapShrink,
    /// The pixel at the centre of each block, when the picture's size divides the frame's
    /// by an odd integer (a 720p frame at 256 pixels: 5) and the frame is 8-bit planar
    /// YUV: the pixels OpenCV's `INTER_LINEAR` reads at that factor, converted to RGB
    /// without swscale (the `centre` module; RGB only). Otherwise as
    /// [`Filter::TwoTapShrink`].
    CentreSample,
}

impl Filter {
    fn flags(self) -> scaling::Flags {
        match self {
            Filter::Bilinear => scaling::Flags::BILINEAR,
            Filter::Bicubic => scaling::Flags::BICUBIC,
            Filter::Area => scaling::Flags::AREA,
            Filter::FastBilinear | Filter::TwoTapShrink | Filter::CentreSample => {
                scaling::Flags::FAST_BILINEAR
            }
        }
    }
}

/// A picture a consumer asks of a frame: size, format and interpolation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PictureSpec {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Pixel format.
    pub format: PictureFormat,
    /// Interpolation.
    pub filter: Filter,
    /// YUV matrix and range ([`Matrix::Tagged`]: the frame's tags, as ffmpeg).
    pub matrix: Matrix,
}

/// A converted picture, packed (no row padding).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Picture {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// Pixel format.
    pub format: PictureFormat,
    /// `width * height * bytes per pixel` bytes, rows top to bottom.
    pub data: Vec<u8>,
}

/// A decoded frame as consumers see it.
pub struct Decoded {
    frame: ffmpeg::frame::Video,
    /// Timestamp in stream ticks.
    pub ts: i64,
    /// Presentation timestamp in seconds from the stream's start.
    pub pts_s: f64,
    /// Presentation-order index of the frame in its stream (0-based; from the timestamp
    /// when not every frame is decoded from the start).
    pub index: i64,
    /// Whether the frame is a keyframe (or an intra frame).
    pub is_keyframe: bool,
    /// Whether the frame is a B-frame.
    pub is_bidirectional: bool,
    /// The codec's motion vectors, summarised, when asked for and exported.
    pub motion: Option<FrameMotion>,
    pictures: RefCell<Vec<(PictureSpec, Arc<Picture>)>>,
}

impl std::fmt::Debug for Decoded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decoded")
            .field("ts", &self.ts)
            .field("pts_s", &self.pts_s)
            .field("index", &self.index)
            .field("is_keyframe", &self.is_keyframe)
            .finish_non_exhaustive()
    }
}

impl Decoded {
    /// A frame at time 0 with nothing else known (tests).
    #[cfg(test)]
    fn bare(frame: ffmpeg::frame::Video) -> Self {
        Self {
            frame,
            ts: 0,
            pts_s: 0.0,
            index: 0,
            is_keyframe: true,
            is_bidirectional: false,
            motion: None,
            pictures: RefCell::default(),
        }
    }

    /// The decoded picture's width.
    pub fn width(&self) -> u32 {
        self.frame.width()
    }

    /// The decoded picture's height.
    pub fn height(&self) -> u32 {
        self.frame.height()
    }
}

/// The stream a pass decodes: what a consumer may need to know before the first frame.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StreamInfo {
    /// Seconds per timestamp tick.
    pub time_base: f64,
    /// The stream's start time in ticks.
    pub start: i64,
    /// Where fps slots count from, in ticks: the file's start (the video stream's in MPEG
    /// program and transport streams), as `ffmpeg -vf fps=N`.
    pub origin: i64,
    /// The average frame rate, when the container gives one.
    pub frame_rate: Option<f64>,
    /// Decoded picture size.
    pub width: u32,
    /// Decoded picture size.
    pub height: u32,
}

/// A scaler's source format and size, and the picture it makes.
type ScalerKey = (Pixel, u32, u32, PictureSpec, ColourKey);

/// Converts frames to pictures with swscale, one context per source format and spec,
/// caching each frame's pictures on the frame.
#[derive(Default)]
pub struct Pictures {
    scalers: RefCell<Vec<(ScalerKey, scaling::Context)>>,
    display: String,
}

impl Pictures {
    /// A converter for frames of the video named `display` (in error messages).
    pub fn new(display: &str) -> Self {
        Self {
            scalers: RefCell::default(),
            display: display.to_owned(),
        }
    }

    /// The picture `spec` of `frame`, converted once per frame and spec.
    pub fn get(&self, frame: &Decoded, spec: PictureSpec) -> Result<Arc<Picture>, MediaError> {
        if let Some((_, picture)) = frame.pictures.borrow().iter().find(|(s, _)| *s == spec) {
            return Ok(Arc::clone(picture));
        }
        let picture = Arc::new(self.convert(&frame.frame, spec)?);
        frame
            .pictures
            .borrow_mut()
            .push((spec, Arc::clone(&picture)));
        Ok(picture)
    }

    fn convert(
        &self,
        frame: &ffmpeg::frame::Video,
        spec: PictureSpec,
    ) -> Result<Picture, MediaError> {
        let (width, height) = (spec.width.max(1), spec.height.max(1));
        if spec.filter == Filter::CentreSample
            && spec.format == PictureFormat::Rgb24
            && let Some(data) = centre_sample_rgb(frame, width, height, spec.matrix)
        {
            return Ok(Picture {
                width: width as usize,
                height: height as usize,
                format: spec.format,
                data,
            });
        }
        let colour = colour_key(frame, spec.matrix);
        let rows = match spec.filter {
            Filter::TwoTapShrink | Filter::CentreSample => RowView::of(frame, height),
            _ => None,
        };
        let frame = rows.as_ref().map_or(frame, |view| &view.frame);
        let (w, h, format) = (frame.width(), frame.height(), frame.format());
        let key = (format, w, h, spec, colour);
        let mut scalers = self.scalers.borrow_mut();
        let at = match scalers.iter().position(|(k, _)| *k == key) {
            Some(at) => at,
            None => {
                let pixel = match spec.format {
                    PictureFormat::Rgb24 => Pixel::RGB24,
                    PictureFormat::Gray8 => Pixel::GRAY8,
                };
                let mut context = scaling::Context::get(
                    format,
                    w,
                    h,
                    pixel,
                    width,
                    height,
                    spec.filter.flags(),
                )
                .map_err(|e| {
                    decode_error(
                        &self.display,
                        format!(
                            "cannot convert {format:?} {w}x{h} to {pixel:?} {width}x{height}: {e}"
                        ),
                    )
                })?;
                configure(&mut context, colour);
                scalers.push((key, context));
                scalers.len() - 1
            }
        };
        let context = &mut scalers[at].1;
        let mut out = ffmpeg::frame::Video::empty();
        context
            .run(frame, &mut out)
            .map_err(|e| decode_error(&self.display, format!("cannot convert a frame: {e}")))?;
        let bytes = match spec.format {
            PictureFormat::Rgb24 => 3,
            PictureFormat::Gray8 => 1,
        };
        let (rw, rh) = (out.width() as usize, out.height() as usize);
        let stride = out.stride(0);
        let data = out.data(0);
        let mut packed = Vec::with_capacity(rw * rh * bytes);
        for row in 0..rh {
            packed.extend_from_slice(&data[row * stride..row * stride + rw * bytes]);
        }
        Ok(Picture {
            width: rw,
            height: rh,
            format: spec.format,
            data: packed,
        })
    }
}

/// A view of every `step`-th row of a decoded frame: a frame header whose plane pointers
/// and line sizes select the rows, sharing the decoder's buffers (no copy). It lives only
/// while its source frame is borrowed.
struct RowView<'a> {
    frame: ffmpeg::frame::Video,
    _source: std::marker::PhantomData<&'a ffmpeg::frame::Video>,
}

impl<'a> RowView<'a> {
    /// The rows of `source` a shrink to `height` rows reads, when it skips at least every
    /// other row and the pixel format's planes are known; `None`: scale the whole frame.
    fn of(source: &'a ffmpeg::frame::Video, height: u32) -> Option<Self> {
        // planes, and the vertical chroma subsampling (log2) of planes after the first
        let (planes, chroma_shift) = match source.format() {
            Pixel::GRAY8 => (1, 0),
            Pixel::YUV420P | Pixel::YUVJ420P => (3, 1),
            Pixel::YUV422P | Pixel::YUVJ422P | Pixel::YUV444P | Pixel::YUVJ444P => (3, 0),
            Pixel::NV12 | Pixel::NV21 => (2, 1),
            _ => return None,
        };
        let (w, h) = (source.width() as usize, source.height() as usize);
        let step = h / height.max(1) as usize;
        if step < 2 {
            return None;
        }
        // the middle row of each band of `step` rows
        let first = (step - 1) / 2;
        let rows = (h - 1 - first) / step + 1;
        let mut view = ffmpeg::frame::Video::empty();
        // SAFETY: the view's header gets the source's format and size, and plane pointers
        // into the source's buffers at rows that exist: row `first + step * r` of the luma
        // plane for r < rows (at most h - 1), and of a plane subsampled by 2^shift the row
        // `first >> shift` + `step * q` for q < rows >> shift (rounded up), which is at
        // most (h - 1) >> shift. The view holds no buffer reference, so freeing it frees
        // nothing of the source's, and it does not outlive the borrowed source.
        unsafe {
            let src = source.as_ptr();
            let dst = view.as_mut_ptr();
            (*dst).format = (*src).format;
            (*dst).width = w as i32;
            (*dst).height = rows as i32;
            (*dst).color_range = (*src).color_range;
            (*dst).colorspace = (*src).colorspace;
            (*dst).color_primaries = (*src).color_primaries;
            (*dst).color_trc = (*src).color_trc;
            (*dst).chroma_location = (*src).chroma_location;
            for plane in 0..planes {
                let shift = if plane == 0 { 0 } else { chroma_shift };
                let line = (*src).linesize[plane] as isize;
                if line <= 0 || (*src).data[plane].is_null() {
                    return None;
                }
                let offset = ((first >> shift) as isize) * line;
                (*dst).data[plane] = (*src).data[plane].offset(offset);
                (*dst).linesize[plane] = (line * step as isize) as i32;
            }
        }
        Some(Self {
            frame: view,
            _source: std::marker::PhantomData,
        })
    }
}

/// A consumer of a decode pass (see the module docs); it runs on a thread of the pass.
pub trait FrameConsumer: Send {
    /// What this consumer computes (in the pass's log line).
    fn name(&self) -> &str;

    /// Called once before the first frame.
    fn start(&mut self, _stream: &StreamInfo) -> Result<(), MediaError> {
        Ok(())
    }

    /// One frame, in presentation order, with the frame shown before it in this pass.
    fn frame(
        &mut self,
        frame: &Decoded,
        previous: Option<&Decoded>,
        pictures: &Pictures,
    ) -> Result<(), MediaError>;

    /// The end of the pass: the last frame shown, and the end of the range in ticks (the
    /// first frame past it, or the end of the stream's last frame).
    fn finish(
        &mut self,
        last: Option<&Decoded>,
        end_ts: Option<i64>,
        pictures: &Pictures,
    ) -> Result<(), MediaError>;
}

/// What a pass did.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PassStats {
    /// Frames the decoder produced (before the range's start included).
    pub decoded: u64,
    /// Frames shown to the consumers.
    pub shown: u64,
    /// Packets the decoder refused (damaged), skipped.
    pub damaged: u64,
    /// Wall-clock seconds.
    pub seconds: f64,
    /// Seconds each consumer took (its pictures and computations), in consumer order;
    /// the rest of `seconds` is demuxing and decoding.
    pub consumer_seconds: Vec<f64>,
}

/// How many videos the record of recent passes ([`passes`]) remembers: a server that
/// decodes ever new videos keeps at most this many entries (the least recently decoded
/// video is forgotten first).
pub const PASS_RECORD: usize = 1024;

/// The record of recent passes: per video (its URI), the passes and when the last one ran
/// (a sequence number).
#[derive(Default)]
struct PassRecord {
    videos: HashMap<String, (u64, u64)>,
    seq: u64,
}

impl PassRecord {
    fn count(&mut self, uri: &str) {
        self.seq += 1;
        let seq = self.seq;
        self.videos.entry(uri.to_owned()).or_default().0 += 1;
        if let Some(entry) = self.videos.get_mut(uri) {
            entry.1 = seq;
        }
        if self.videos.len() > PASS_RECORD {
            let oldest = self
                .videos
                .iter()
                .min_by_key(|(_, (_, last))| *last)
                .map(|(uri, _)| uri.clone());
            if let Some(oldest) = oldest {
                self.videos.remove(&oldest);
            }
        }
    }
}

static PASSES: LazyLock<Mutex<PassRecord>> = LazyLock::new(Default::default);

/// How many decode passes this process has run over the video whose display name (its
/// URI) is `uri`, by every operator together, while it is among the [`PASS_RECORD`] most
/// recently decoded videos (0 once forgotten).
pub fn passes(uri: &str) -> u64 {
    PASSES
        .lock()
        .map(|m| m.videos.get(uri).map_or(0, |(n, _)| *n))
        .unwrap_or(0)
}

/// How many videos the record of recent passes holds now (at most [`PASS_RECORD`]).
pub fn pass_record_len() -> usize {
    PASSES.lock().map(|m| m.videos.len()).unwrap_or(0)
}

/// ffmpeg's `fps` filter's choice of frames, one frame at a time: which frame shows each
/// output slot `k` (at `k / fps` seconds), with `round=near`. A frame is shown for every
/// slot up to the next frame's slot (dropped when it shares its slot with a later frame,
/// repeated when the source has gaps); at the end, slots up to the rounded end time are
/// filled.
#[derive(Debug, Clone)]
pub struct SlotSampler {
    fps: f64,
    tb: f64,
    origin: i64,
    /// The slot of the frame pushed last, if any.
    current: Option<i64>,
    next_slot: i64,
}

impl SlotSampler {
    /// A sampler at `fps` frames per second over timestamps of `tb` seconds per tick, its
    /// slots counted from `origin` ticks ([`StreamInfo::origin`]).
    pub fn new(fps: f64, tb: f64, origin: i64) -> Self {
        Self {
            fps,
            tb,
            origin,
            current: None,
            next_slot: 0,
        }
    }

    /// Pushes the next frame (timestamp `ts`); returns how many slots the frame pushed
    /// before it shows (0: it is dropped).
    pub fn push(&mut self, ts: i64) -> usize {
        let slot = slot_of(ts - self.origin, self.tb, self.fps);
        let shown = match self.current {
            None => {
                self.next_slot = slot;
                0
            }
            Some(_) => {
                let n = (slot - self.next_slot).max(0);
                self.next_slot += n;
                n as usize
            }
        };
        self.current = Some(slot);
        shown
    }

    /// The end of the stream (or range) at `end_ts` ticks (`None`: unknown); returns how
    /// many slots the last frame pushed shows.
    pub fn finish(&mut self, end_ts: Option<i64>) -> usize {
        let Some(slot) = self.current.take() else {
            return 0;
        };
        let end_slot = end_ts.map_or(slot + 1, |end| {
            slot_of(end - self.origin, self.tb, self.fps)
        });
        let n = (end_slot - self.next_slot).max(0);
        self.next_slot += n;
        n as usize
    }
}

/// Runs one decode pass of `media` (see the module docs), feeding every consumer. A
/// consumer's error stops the pass and is returned. A read that fails part-way (a
/// remote server that stops answering) is an error, never a silently shortened stream.
pub fn run_pass(
    media: &MediaInput,
    options: &PassOptions,
    consumers: &mut [&mut dyn FrameConsumer],
) -> Result<PassStats, MediaError> {
    let display = media.display.clone();
    crate::init()?;
    crate::fault::check(&display)?;
    let started = Instant::now();
    let stats = crate::guard(&display, || decode_pass(media, options, consumers))?;
    let stats = PassStats {
        seconds: started.elapsed().as_secs_f64(),
        ..stats
    };
    let spent: f64 = stats.consumer_seconds.iter().sum();
    if let Ok(mut record) = PASSES.lock() {
        record.count(&display);
    }
    crate::metrics::pass_done(stats.decoded, stats.seconds - spent);
    log::info!(
        target: "framefusion::decode",
        "decode pass of {display}{}: {} frames decoded, {} shown to [{}], {} damaged packets skipped, {:.2} s ({:.2} s decoding)",
        options
            .range
            .map(|(a, b)| format!(" [{a:.3}, {b:.3})"))
            .unwrap_or_default(),
        stats.decoded,
        stats.shown,
        consumers
            .iter()
            .zip(&stats.consumer_seconds)
            .map(|(c, s)| format!("{}: {s:.2} s", c.name()))
            .collect::<Vec<_>>()
            .join(", "),
        stats.damaged,
        stats.seconds,
        (stats.seconds - spent).max(0.0),
    );
    crate::decode::report_damage(&display, stats.damaged);
    Ok(stats)
}

/// What the decoding side of a pass sends to the consumers' side.
enum Item {
    /// The stream, before the first frame.
    Start(StreamInfo),
    /// Frames to show, in presentation order: up to [`BATCH`] at once, so that the
    /// consumers' thread is woken once per batch rather than once per frame.
    Frames(Vec<Decoded>),
    /// The end of the frames (of the pass, or of one chunk): where the range or stream
    /// ends (ticks), frames decoded and damaged packets skipped.
    End {
        end_ts: Option<i64>,
        decoded: u64,
        damaged: u64,
    },
}

/// Items the decoding side may run ahead of the consumers; the frames among them hold at
/// most [`QUEUE_BYTES`] of pictures.
const QUEUE: usize = 64;

/// Frames the decoding side hands over at once (fewer when it would otherwise wait for
/// room, and at the end). Handing over each frame alone woke the consumers' thread once
/// per frame: on the 10-minute 720p `bbb.mp4`, 5% of the exact shot detector's CPU went
/// to the channel's waker bookkeeping (perf).
const BATCH: usize = 8;

/// Bytes of decoded pictures the decoding side may run ahead of the consumers (46 frames
/// of 720p, 20 of 1080p, 5 of 4K): whatever the video's length, a pass holds this much.
/// A deeper queue lets the decoder use the gaps the consumers leave (measured: the exact
/// shot detector's pass 2.04 s with 4 frames queued, 1.96 s with 16, 1.88 s with 48, on
/// the 55 s 720p trailer where one decode takes 1.60 s, 2 cores).
const QUEUE_BYTES: usize = 64 << 20;

/// The bytes of decoded pictures in flight between the two sides of a pass.
///
/// With parallel chunks, frames of later chunks wait for room while the consumers read an
/// earlier one; the chunk being read may always go up to twice the bound (its decoder must
/// never wait for bytes that only the consumers of later chunks would free: that would
/// deadlock, as the consumers take the chunks in order).
#[derive(Default)]
struct InFlight {
    state: std::sync::Mutex<Flight>,
    changed: std::sync::Condvar,
}

#[derive(Default)]
struct Flight {
    bytes: usize,
    closed: bool,
    /// The chunk the consumers read now (0 without chunks).
    reading: usize,
}

impl InFlight {
    /// Waits until `n` more bytes fit (or nothing is in flight), for the whole pass'
    /// decoder (`chunk` None) or that of a chunk; false once the consumers are gone.
    fn acquire(&self, n: usize, chunk: Option<usize>) -> bool {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let limit = |state: &Flight| match chunk {
            Some(c) if c == state.reading => 2 * QUEUE_BYTES,
            _ => QUEUE_BYTES,
        };
        while !state.closed && state.bytes > 0 && state.bytes + n > limit(&state) {
            state = self.changed.wait(state).unwrap_or_else(|e| e.into_inner());
        }
        state.bytes += n;
        !state.closed
    }

    /// [`InFlight::acquire`] when it need not wait: `None` when it would.
    fn try_acquire(&self, n: usize, chunk: Option<usize>) -> Option<bool> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let limit = match chunk {
            Some(c) if c == state.reading => 2 * QUEUE_BYTES,
            _ => QUEUE_BYTES,
        };
        if !state.closed && state.bytes > 0 && state.bytes + n > limit {
            return None;
        }
        state.bytes += n;
        Some(!state.closed)
    }

    fn release(&self, n: usize) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.bytes = state.bytes.saturating_sub(n);
        self.changed.notify_all();
    }

    /// The consumers move on to `chunk`.
    fn reading(&self, chunk: usize) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.reading = chunk;
        self.changed.notify_all();
    }

    /// The consumers are gone: no one waits any more.
    fn close(&self) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.closed = true;
        self.changed.notify_all();
    }
}

/// The bytes of a decoded frame's pictures (about).
fn frame_bytes(frame: &ffmpeg::frame::Video) -> usize {
    (0..frame.planes())
        .map(|i| frame.stride(i) * frame.plane_height(i) as usize)
        .sum()
}

/// How much lower the consumers' thread runs than the decoder's: the decoder, whose frame
/// threads wait on each other's references, gets the cores first, and the consumers fill
/// the gaps (measured: the exact shot detector's pass 1.97 s -> 1.86 s on the 55 s
/// trailer, 2 cores, where one decode takes 1.60 s).
const CONSUMER_NICE: i32 = 10;

/// Lowers the calling thread's scheduling priority (Linux: a thread's own nice value;
/// elsewhere nothing), for a thread that ends with the pass: an unprivileged process may
/// not raise it again.
struct LowerPriority;

impl LowerPriority {
    fn of_this_thread(by: i32) -> Self {
        #[cfg(target_os = "linux")]
        {
            // SAFETY: getpriority/setpriority on this thread's own id change only its
            // scheduling priority; errno is reset first as getpriority may return -1.
            unsafe {
                let tid = libc::gettid() as libc::id_t;
                *libc::__errno_location() = 0;
                let old = libc::getpriority(libc::PRIO_PROCESS, tid);
                if *libc::__errno_location() == 0 {
                    libc::setpriority(libc::PRIO_PROCESS, tid, (old + by).min(19));
                }
            }
            Self
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = by;
            Self
        }
    }
}

/// Chunks decoded in parallel for [`Selection::Anchors`] and [`Selection::Sampled`] are
/// this long at least.
const CHUNK_S: f64 = 8.0;

fn open_input(media: &MediaInput) -> Result<ffmpeg::format::context::Input, MediaError> {
    media.open().map_err(|e| {
        if open_error_is_transient(e) {
            MediaError::read_failure(&media.display, format!("cannot open: {e}"), true)
        } else {
            decode_error(&media.display, format!("cannot open: {e}"))
        }
    })
}

/// The decoding side of a pass, on a thread of its own: consumers run while the decoder
/// decodes the next frames (on a GPU or on idle cores, their work overlaps decoding).
/// [`Selection::Anchors`] over a whole file decodes chunks of whole GOPs in parallel, one
/// single-threaded decoder per core (a decoder that skips B-frames keeps one core busy
/// with frame threads: each predicted frame waits for the one before).
fn decode_pass(
    media: &MediaInput,
    options: &PassOptions,
    consumers: &mut [&mut dyn FrameConsumer],
) -> Result<PassStats, MediaError> {
    if let Some((from, to)) = options.range
        && !(from.is_finite() && to.is_finite() && from >= 0.0 && to > from)
    {
        return Err(MediaError::Option(format!(
            "the range [{from}, {to}) is empty or invalid; give 0 <= start_s < end_s"
        )));
    }
    // a window is short: frame threads would spend it filling their pipeline, so it is
    // decoded by one thread (callers decode windows side by side)
    let threads = match options.selection {
        Selection::Window => 1,
        _ => crate::cpu::budget().decoder_threads(),
    };
    let parallel = matches!(
        options.selection,
        Selection::Sampled(_) | Selection::Anchors
    );
    let chunks = if parallel && options.range.is_none() {
        let input = open_input(media)?;
        let stream = input.streams().best(Type::Video).ok_or_else(|| {
            decode_error(&media.display, "the file has no video stream".to_owned())
        })?;
        let first = first_packets(media, &stream);
        if first.timestamps {
            let timing = Timing::of_stream(&input, &stream, true);
            crate::decode::chunk_bounds(&first.keyframes, timing.tb, CHUNK_S)
        } else {
            Vec::new()
        }
    } else {
        Vec::new()
    };
    let in_flight = &InFlight::default();
    std::thread::scope(|scope| {
        let mut receivers = Vec::new();
        let mut workers = Vec::new();
        if chunks.len() >= 2 && threads >= 2 {
            let mut jobs: Vec<Vec<_>> = (0..threads).map(|_| Vec::new()).collect();
            for (i, bounds) in chunks.into_iter().enumerate() {
                let (tx, rx) = std::sync::mpsc::sync_channel(QUEUE);
                receivers.push(rx);
                jobs[i % threads].push(((i, bounds), tx));
            }
            for mine in jobs {
                workers.push(scope.spawn(move || -> Result<(), MediaError> {
                    for (chunk, tx) in mine {
                        decode_frames_into(media, options, 1, Some(chunk), &tx, in_flight)?;
                    }
                    Ok(())
                }));
            }
        } else {
            let (tx, rx) = std::sync::mpsc::sync_channel(QUEUE);
            receivers.push(rx);
            workers.push(
                scope.spawn(move || {
                    decode_frames_into(media, options, threads, None, &tx, in_flight)
                }),
            );
        }
        // the consumers on a thread of their own, below the decoder's priority
        let display = media.display.as_str();
        let consumed = scope
            .spawn(move || {
                let _lower = LowerPriority::of_this_thread(CONSUMER_NICE);
                let consumed = consume(display, receivers, consumers, in_flight);
                in_flight.close();
                consumed
            })
            .join()
            .unwrap_or_else(|_| Err(decode_error(display, "a consumer panicked".to_owned())));
        // the receivers are gone: decoders still running stop at their next frame
        let mut decoded = Ok(());
        for worker in workers {
            let outcome = worker.join().unwrap_or_else(|_| {
                Err(decode_error(
                    &media.display,
                    "a decoder thread panicked".to_owned(),
                ))
            });
            if decoded.is_ok() {
                decoded = outcome;
            }
        }
        match (consumed, decoded) {
            (Err(e), _) | (Ok(_), Err(e)) => Err(e),
            (Ok(stats), Ok(())) if stats.decoded == 0 => Err(crate::decode::nothing_decodes(
                &media.display,
                stats.damaged,
            )),
            (Ok(stats), Ok(())) => Ok(stats),
        }
    })
}

/// The consumers' side: frames from each receiver in turn (the chunks in order).
fn consume(
    display: &str,
    receivers: Vec<std::sync::mpsc::Receiver<Item>>,
    consumers: &mut [&mut dyn FrameConsumer],
    in_flight: &InFlight,
) -> Result<PassStats, MediaError> {
    let pictures = Pictures::new(display);
    let mut stats = PassStats {
        consumer_seconds: vec![0.0; consumers.len()],
        ..PassStats::default()
    };
    let mut previous: Option<Decoded> = None;
    let mut started = false;
    let mut end_ts = None;
    let last = receivers.len().saturating_sub(1);
    for (chunk, rx) in receivers.into_iter().enumerate() {
        in_flight.reading(chunk);
        loop {
            // a decoder that stopped without an end failed: the caller reports its error
            let Ok(item) = rx.recv() else {
                return Ok(stats);
            };
            match item {
                Item::Start(info) => {
                    if !started {
                        for consumer in consumers.iter_mut() {
                            consumer.start(&info)?;
                        }
                        started = true;
                    }
                }
                Item::Frames(frames) => {
                    for current in frames {
                        in_flight.release(frame_bytes(&current.frame));
                        for (consumer, spent) in
                            consumers.iter_mut().zip(&mut stats.consumer_seconds)
                        {
                            let at = Instant::now();
                            consumer.frame(&current, previous.as_ref(), &pictures)?;
                            *spent += at.elapsed().as_secs_f64();
                        }
                        stats.shown += 1;
                        previous = Some(current);
                    }
                }
                Item::End {
                    end_ts: end,
                    decoded,
                    damaged,
                } => {
                    stats.decoded += decoded;
                    stats.damaged += damaged;
                    if chunk == last {
                        end_ts = end;
                    }
                    break;
                }
            }
        }
    }
    for (consumer, spent) in consumers.iter_mut().zip(&mut stats.consumer_seconds) {
        let at = Instant::now();
        consumer.finish(previous.as_ref(), end_ts, &pictures)?;
        *spent += at.elapsed().as_secs_f64();
    }
    Ok(stats)
}

/// A chunk's first and next keyframes (ticks; None: the file's start or end).
type ChunkBounds = (Option<i64>, Option<i64>);

/// Decodes the frames of the pass (or of one chunk of it, between two indexed keyframes,
/// in ticks) and sends them, then their end. Returns early, without an error, when the
/// consumers are gone.
fn decode_frames_into(
    media: &MediaInput,
    options: &PassOptions,
    threads: usize,
    chunk: Option<(usize, ChunkBounds)>,
    tx: &std::sync::mpsc::SyncSender<Item>,
    in_flight: &InFlight,
) -> Result<(), MediaError> {
    let display = media.display.as_str();
    let mut input = open_input(media)?;
    let stream = input
        .streams()
        .best(Type::Video)
        .ok_or_else(|| decode_error(display, "the file has no video stream".to_owned()))?;
    let stream_index = stream.index();
    let timing = Timing::of_stream(
        &input,
        &stream,
        options.range.is_some() || !matches!(options.selection, Selection::All | Selection::Window),
    );
    let mut decoder = open_video_decoder(display, &stream, threads, options.motion_vectors)?;
    let info = StreamInfo {
        time_base: timing.tb,
        start: timing.start,
        origin: timing.origin,
        frame_rate: timing.frame_rate(),
        width: decoder.width(),
        height: decoder.height(),
    };
    if options.selection == Selection::Anchors {
        decoder.skip_frame(ffmpeg::Discard::Bidirectional);
        decoder.skip_loop_filter(ffmpeg::Discard::All);
    }
    let plan = match options.selection {
        // timestamps checked only when the plan applies (it reads the first packets)
        Selection::Sampled(fps) => {
            crate::decode::SkipPlan::for_stream(media, &stream, &timing, fps)
        }
        _ => None,
    };
    // a window's lead-in: up to two frames before the range the decoder skips the frames
    // nothing references (not nearer: a frame skipped next to a shown one measured to
    // cost that one its timestamp, see `SkipPlan`)
    let lead_in_end = match (options.selection, options.range) {
        (Selection::Window, Some((from, _))) => timing
            .frame_rate()
            .filter(|rate| *rate > 0.0 && first_packets(media, &stream).timestamps)
            .map(|rate| timing.start + ((from - 2.0 / rate) / timing.tb).floor() as i64),
        _ => None,
    };
    if tx.send(Item::Start(info)).is_err() {
        return Ok(());
    }
    let chunk_no = chunk.map(|(i, _)| i);
    let (chunk_from, chunk_to) = chunk.map_or((None, None), |(_, bounds)| bounds);
    if let Some((from, _)) = options.range.filter(|(from, _)| *from > 0.0) {
        // to the keyframe at or before `from` (AV_TIME_BASE units, file time)
        let target = ((from + timing.start as f64 * timing.tb) * 1e6) as i64;
        input
            .seek(target, ..target)
            .map_err(|e| decode_error(display, format!("cannot seek to {from} s: {e}")))?;
    }
    if let Some(from) = chunk_from {
        // to a keyframe a second or more before the chunk; packets before its keyframe
        // are skipped below (a demuxer that cannot seek is read from the start)
        let target = from - (1.0 / timing.tb).round() as i64;
        // SAFETY: a seek on the open input's own stream, in its time base.
        let sought = unsafe {
            ffmpeg::ffi::avformat_seek_file(
                input.as_mut_ptr(),
                stream_index as i32,
                i64::MIN,
                target,
                target,
                0,
            )
        };
        if sought < 0 {
            input = open_input(media)?;
        }
    }
    let mut decoded_count = 0u64;
    let mut damaged = 0u64;
    let mut last_end: Option<i64> = None;
    let mut next_index = 0i64;
    let mut packets_end: Option<i64> = None;
    // a chunk: from its keyframe (presentation time `lower`) to the next chunk's (`upper`)
    let mut started = chunk_from.is_none();
    let mut lower: Option<i64> = None;
    let mut upper: Option<i64> = None;
    let mut end_ts: Option<i64> = None;
    let mut done = false;
    let mut decoded = ffmpeg::frame::Video::empty();
    let mut batch: Vec<Decoded> = Vec::with_capacity(BATCH);
    let mut receive = |decoder: &mut ffmpeg::decoder::Video,
                       lower: Option<i64>,
                       upper: Option<i64>,
                       done: &mut bool,
                       end_ts: &mut Option<i64>,
                       last_end: &mut Option<i64>|
     -> bool {
        while !*done && decoder.receive_frame(&mut decoded).is_ok() {
            let frame = std::mem::replace(&mut decoded, ffmpeg::frame::Video::empty());
            decoded_count += 1;
            let (ts, index) = timing.stamp(&frame, last_end, &mut next_index);
            if lower.is_some_and(|l| ts < l) || upper.is_some_and(|u| ts >= u) {
                continue;
            }
            let pts_s = timing.seconds(ts);
            if let Some((from, to)) = options.range {
                if pts_s < from - 1e-9 {
                    continue;
                }
                if pts_s >= to - 1e-9 {
                    *end_ts = Some(ts);
                    *done = true;
                    break;
                }
            }
            let motion = options
                .motion_vectors
                .then(|| frame_motion(&frame))
                .flatten();
            let current = Decoded {
                is_keyframe: frame.is_key() || frame.kind() == ffmpeg::picture::Type::I,
                is_bidirectional: frame.kind() == ffmpeg::picture::Type::B,
                frame,
                ts,
                pts_s,
                index,
                motion,
                pictures: RefCell::default(),
            };
            let bytes = frame_bytes(&current.frame);
            let open = match in_flight.try_acquire(bytes, chunk_no) {
                Some(open) => open,
                None => {
                    // room frees up only as the consumers read: hand over what is held
                    // here before waiting for it
                    if !batch.is_empty()
                        && tx.send(Item::Frames(std::mem::take(&mut batch))).is_err()
                    {
                        return false;
                    }
                    in_flight.acquire(bytes, chunk_no)
                }
            };
            if !open {
                return false;
            }
            batch.push(current);
            if batch.len() >= BATCH && tx.send(Item::Frames(std::mem::take(&mut batch))).is_err() {
                return false;
            }
        }
        true
    };
    for (s, packet) in input.packets() {
        if s.index() != stream_index {
            continue;
        }
        let (pts, dts) = (packet.pts(), packet.dts().or(packet.pts()));
        if !started {
            match (chunk_from, dts) {
                // the same packet the chunk before stops at
                (Some(k), Some(d)) if packet.is_key() && d >= k => {
                    started = true;
                    lower = pts;
                }
                _ => continue,
            }
        }
        if let Some(next) = chunk_to
            && packet.is_key()
            && dts.is_some_and(|d| d >= next)
        {
            upper = pts;
            break;
        }
        if let Some(pts) = pts {
            packets_end = packets_end.max(Some(pts + timing.packet_duration(&packet)));
            if let Some(plan) = &plan {
                decoder.skip_frame(plan.discard(pts, packet.is_key()));
            } else if let Some(end) = lead_in_end {
                decoder.skip_frame(if pts < end {
                    ffmpeg::Discard::NonReference
                } else {
                    ffmpeg::Discard::Default
                });
            }
        }
        if let Err(e) = decoder.send_packet(&packet) {
            // a damaged packet: skip it, as ffmpeg does, and go on decoding
            log::debug!("{display}: skipping a packet the decoder refused: {e}");
            damaged += 1;
            continue;
        }
        if !receive(
            &mut decoder,
            lower,
            upper,
            &mut done,
            &mut end_ts,
            &mut last_end,
        ) {
            return Ok(());
        }
        if done {
            break;
        }
    }
    if !done {
        if upper.is_none()
            && let Some(e) = crate::decode::read_error(&input)
        {
            return Err(MediaError::read_failure(
                display,
                format!("reading stopped part-way: {e}"),
                media.local_path().is_none() || open_error_is_transient(e),
            ));
        }
        let _ = decoder.send_eof();
        if !receive(
            &mut decoder,
            lower,
            upper,
            &mut done,
            &mut end_ts,
            &mut last_end,
        ) {
            return Ok(());
        }
    }
    let end_ts = if done {
        end_ts
    } else {
        upper.or(packets_end.max(last_end))
    };
    if !batch.is_empty() && tx.send(Item::Frames(batch)).is_err() {
        return Ok(());
    }
    let _ = tx.send(Item::End {
        end_ts,
        decoded: decoded_count,
        damaged,
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_pass_record_is_bounded() {
        let mut record = super::PassRecord::default();
        for i in 0..(super::PASS_RECORD + 500) {
            record.count(&format!("file:///v{i}.mp4"));
        }
        record.count("file:///v600.mp4");
        assert_eq!(record.videos.len(), super::PASS_RECORD);
        // the least recently decoded videos are forgotten first
        assert!(!record.videos.contains_key("file:///v0.mp4"));
        assert_eq!(record.videos.get("file:///v600.mp4").map(|v| v.0), Some(2));
    }

    use super::*;

    #[test]
    fn slots_follow_the_fps_filter() {
        // 25 fps source (tb 1/25), 1 fps: frames 0..=49 -> slot k shows the last frame
        // rounding to k: frame 12 (0.48 s) for slot 0, frame 37 for slot 1
        let mut sampler = SlotSampler::new(1.0, 1.0 / 25.0, 0);
        let mut shown = Vec::new();
        for ts in 0..50 {
            let n = sampler.push(ts);
            if n > 0 {
                shown.push((ts - 1, n));
            }
        }
        let last = sampler.finish(Some(50));
        assert_eq!(shown, [(12, 1), (37, 1)]);
        // the end at 2.0 s rounds to slot 2: two slots in all, as `ffmpeg -vf fps=1`
        assert_eq!(last, 0);
        // a gap repeats the frame before it
        let mut sampler = SlotSampler::new(1.0, 1.0, 0);
        assert_eq!(sampler.push(0), 0);
        assert_eq!(sampler.push(3), 3);
        assert_eq!(sampler.finish(Some(4)), 1);
    }

    /// A `format` frame of `w` x `h` whose every byte depends on its plane, row and column.
    fn patterned(
        format: Pixel,
        w: u32,
        h: u32,
        rows: impl Fn(usize) -> usize,
    ) -> ffmpeg::frame::Video {
        let mut frame = ffmpeg::frame::Video::new(format, w, h);
        for plane in 0..frame.planes() {
            let (stride, height) = (frame.stride(plane), frame.plane_height(plane) as usize);
            let data = frame.data_mut(plane);
            for row in 0..height {
                let source = rows(row);
                for col in 0..stride {
                    data[row * stride + col] = (source * 7 + col * 3 + plane * 50) as u8;
                }
            }
        }
        frame
    }

    #[test]
    fn two_tap_shrink_reads_the_middle_row_of_each_band() -> Result<(), MediaError> {
        ffmpeg::init().ok();
        let pictures = Pictures::new("test");
        let mut differs = false;
        for (format, planes_subsampled) in [(Pixel::YUV420P, true), (Pixel::YUV444P, false)] {
            // 720 rows to 144: one row in 5, rows 2, 7, 12, ... (chroma 1, 6, 11, ... at 4:2:0)
            let full = Decoded::bare(patterned(format, 64, 720, |r| r));
            let chroma_first = if planes_subsampled { 1 } else { 2 };
            let rows = patterned(format, 64, 144, |r| 2 + 5 * r);
            // the frame built from those rows, its chroma rows fixed up to the source's
            let mut expected = rows;
            if planes_subsampled {
                for plane in 1..3 {
                    let stride = expected.stride(plane);
                    let height = expected.plane_height(plane) as usize;
                    let data = expected.data_mut(plane);
                    for row in 0..height {
                        let source = chroma_first + 5 * row;
                        for col in 0..stride {
                            data[row * stride + col] = (source * 7 + col * 3 + plane * 50) as u8;
                        }
                    }
                }
            }
            let expected = Decoded::bare(expected);
            for out in [PictureFormat::Rgb24, PictureFormat::Gray8] {
                let spec = |filter| PictureSpec {
                    width: 32,
                    height: 144,
                    format: out,
                    filter,
                    matrix: Matrix::Bt601,
                };
                let shrunk = pictures.get(&full, spec(Filter::TwoTapShrink))?;
                let reference = pictures.get(&expected, spec(Filter::FastBilinear))?;
                assert_eq!(shrunk, reference, "{format:?} -> {out:?}");
                // (swscale's fast bilinear reads the same luma rows of the whole frame,
                // not the same chroma rows: the RGB picture tells the two apart)
                let whole = pictures.get(&full, spec(Filter::FastBilinear))?;
                differs |= shrunk != whole;
            }
        }
        assert!(differs, "the row view changed nothing");
        Ok(())
    }
}
