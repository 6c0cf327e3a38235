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
use std::sync::{LazyLock, Mutex};
use std::time::Instant;

pub use super::pictures::{Decoded, Filter, Matrix, Picture, PictureFormat, PictureSpec, Pictures};
pub use super::sample::{SlotSampler, slot_of};
use super::stream::{
    CHUNK_S, SkipPlan, Timing, chunk_bounds, decode_error, first_packets, frame_motion,
    nothing_decodes, open_video_decoder, read_error, report_damage,
};
use crate::MediaError;
use crate::ffmpeg::{self, media::Type};
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
    /// Keyframes only: the decoder decodes no other frame (as `ffmpeg -skip_frame
    /// nokey`), and packets the container does not flag key are not sent to it (some
    /// decoders, VP9 and Cinepak, ignore `skip_frame`).
    Keyframes,
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

    /// Whether this consumer needs no more frames (a caller that asked for the first
    /// frame of a range, a query with enough rows). When every consumer of a pass is
    /// satisfied the pass stops decoding; [`FrameConsumer::finish`] is still called.
    fn satisfied(&self) -> bool {
        false
    }

    /// Whether this consumer's thread may run below the decoder's priority (a nice value
    /// 10 higher, so the decoder gets the cores first): true for consumers that compute
    /// from the frames; a consumer
    /// that hands frames to a reader waiting for them (a frames scan, `frame_at`) says
    /// false, so that a busy machine does not starve the reader (the pass then keeps the
    /// consumers' thread at the decoder's priority).
    fn yields_to_decoder(&self) -> bool {
        true
    }

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
    /// Whether the pass stopped before its end because every consumer was satisfied
    /// ([`FrameConsumer::satisfied`]).
    pub stopped: bool,
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
    report_damage(&display, stats.damaged);
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

fn open_input(media: &MediaInput) -> Result<ffmpeg::format::context::Input, MediaError> {
    media.open().map_err(|e| {
        if open_error_is_transient(e) {
            MediaError::read_failure(&media.display, format!("cannot open: {e}"), true)
        } else {
            decode_error(&media.display, format!("cannot open: {e}"))
        }
    })
}

static CHUNKED_PASSES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// How many passes of this process decoded their file in parallel chunks.
pub fn chunked_passes() -> usize {
    CHUNKED_PASSES.load(std::sync::atomic::Ordering::Relaxed)
}

/// The chunks of whole GOPs (at least [`CHUNK_S`] long, cut at indexed keyframes) in which
/// a pass over the whole of `media` decodes it in parallel: for a cheap look at the
/// anchors, and for fps sampling sparse enough that the decoder skips frames
/// ([`SkipPlan`]); none otherwise (a decoder that decodes every frame keeps its cores
/// busy with frame threads), nor when the first packets lack timestamps.
fn chunks_of(media: &MediaInput, selection: Selection) -> Result<Vec<ChunkBounds>, MediaError> {
    if !matches!(selection, Selection::Sampled(_) | Selection::Anchors) {
        return Ok(Vec::new());
    }
    let input = open_input(media)?;
    let stream = input
        .streams()
        .best(Type::Video)
        .ok_or_else(|| decode_error(&media.display, "the file has no video stream".to_owned()))?;
    if let Selection::Sampled(fps) = selection
        && !SkipPlan::is_sparse(&stream, fps)
    {
        return Ok(Vec::new());
    }
    let first = first_packets(media, &stream);
    if !first.timestamps {
        return Ok(Vec::new());
    }
    let timing = Timing::of_stream(&input, &stream, true);
    Ok(chunk_bounds(&first.keyframes, timing.tb, CHUNK_S))
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
        && !(from.is_finite() && from >= 0.0 && !to.is_nan() && to > from)
    {
        return Err(MediaError::Option(format!(
            "the range [{from}, {to}) is empty or invalid; give 0 <= start_s < end_s"
        )));
    }
    // a window is short: frame threads would spend it filling their pipeline, so it is
    // decoded by one thread (callers decode windows side by side)
    let threads = crate::cpu::budget().lease_decoder_threads(match options.selection {
        Selection::Window => Some(1),
        _ => None,
    });
    let chunks = if options.range.is_none() {
        chunks_of(media, options.selection)?
    } else {
        Vec::new()
    };
    let parallel = chunks.len() >= 2 && threads.count() >= 2;
    if parallel {
        CHUNKED_PASSES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    let threads = threads.count();
    let in_flight = &InFlight::default();
    std::thread::scope(|scope| {
        let mut receivers = Vec::new();
        let mut workers = Vec::new();
        if parallel {
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
        // the consumers on a thread of their own, below the decoder's priority unless one
        // of them hands frames to a waiting reader
        let display = media.display.as_str();
        let lower = consumers.iter().all(|c| c.yields_to_decoder());
        let consumed = scope
            .spawn(move || {
                let _lower = lower.then(|| LowerPriority::of_this_thread(CONSUMER_NICE));
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
            (Ok(stats), Ok(())) if stats.decoded == 0 && !stats.stopped => {
                Err(nothing_decodes(&media.display, stats.damaged))
            }
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
    let satisfied = |consumers: &[&mut dyn FrameConsumer]| {
        !consumers.is_empty() && consumers.iter().all(|c| c.satisfied())
    };
    'chunks: for (chunk, rx) in receivers.into_iter().enumerate() {
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
                        if satisfied(consumers) {
                            // the decoders stop at their next frame (the receivers go)
                            stats.stopped = true;
                            break 'chunks;
                        }
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
    let timing = Timing::of_stream(&input, &stream, false);
    let plan = match options.selection {
        // timestamps checked only when the plan applies (it reads the first packets)
        Selection::Sampled(fps) => SkipPlan::for_stream(media, &stream, &timing, fps),
        _ => None,
    };
    // when frames are not all decoded from the file's start, a frame's index comes from
    // its timestamp
    let timing = timing.index_from_ts(
        options.range.is_some()
            || chunk.is_some()
            || plan.is_some()
            || matches!(options.selection, Selection::Anchors | Selection::Keyframes),
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
    match options.selection {
        Selection::Anchors => {
            decoder.skip_frame(ffmpeg::Discard::Bidirectional);
            decoder.skip_loop_filter(ffmpeg::Discard::All);
        }
        Selection::Keyframes => decoder.skip_frame(ffmpeg::Discard::NonKey),
        _ => {}
    }
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
        if s.index() != stream_index
            || (options.selection == Selection::Keyframes && !packet.is_key())
        {
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
            && let Some(e) = read_error(&input)
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
}
