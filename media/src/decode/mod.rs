//! The one decode engine of the workspace: every frame any part of framefusion reads from
//! a video (the operators, the `frames` table, `lip_sync`, the previews, user models)
//! comes out of a decode pass ([`pass::run_pass`]), which runs on the process's CPU budget
//! ([`crate::cpu`]: its decoder threads are leased, so all passes together never run more
//! than the budget). Only `cut_clip`'s transcoder ([`crate::cut`]) has a loop of its own:
//! it encodes, a different job.
//!
//! - [`pass`]: one pass over a video (or a range of it) feeding any number of consumers;
//!   which frames the decoder decodes ([`pass::Selection`]), parallel chunks of whole GOPs
//!   for a sparse look at a whole file, the queue between decoding and consumers.
//! - `pictures`: the pictures a consumer asks of a frame (size, format, interpolation),
//!   converted once per frame and spec ([`pass::Pictures`]).
//! - `sample`: ffmpeg's `fps` filter's choice of frames ([`pass::SlotSampler`]).
//! - `stream`: opening the stream and its decoder, timing, the skip plan of sparse fps
//!   sampling, chunk bounds, motion vectors.
//! - this module: frames as packed RGB24 pictures, for callers that want the frames
//!   themselves ([`decode_frames`], [`frame_at`]): a consumer of a pass of its own.
//!
//! Sampling follows ffmpeg: **fps** as the `fps` filter (default `round=near`,
//! `eof_action=round`: output slot `k` is at `start + k / fps`, each input timestamp is
//! rounded to the nearest slot, a frame is emitted for every slot up to the next frame's
//! slot, and at the end slots up to the rounded end of the last frame are filled; each
//! emitted row carries the timestamp and index of the source frame it shows), so the
//! counts equal `ffmpeg -vf fps=N`'s; below a quarter of the frame rate the decoder skips
//! the frames no sampled frame depends on, and a whole file is decoded in parallel chunks
//! of GOPs. **keyframes** decodes keyframes only (`ffmpeg -skip_frame nokey`). **resize**
//! runs swscale (bicubic, as ffmpeg's `scale` filter) straight to RGB24 with the matrix
//! and range the frame is tagged with ([`crate::colour`]); at the native size the pixels
//! equal `ffmpeg -pix_fmt rgb24`'s.
//!
//! Memory stays bounded whatever the video's length: frames go to the caller one at a
//! time, and a pass holds at most its queue's bytes of decoded frames.

use std::ops::ControlFlow;

use crate::MediaError;
use crate::image::Rgb;
use crate::source::MediaInput;
use pass::{
    Decoded, Filter, FrameConsumer, Matrix, PassOptions, PictureFormat, PictureSpec, Pictures,
    Selection, SlotSampler, StreamInfo,
};
use stream::decode_error;

pub mod pass;
mod pictures;
mod sample;
mod stream;

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
    /// Scale so the shorter side is this many pixels and the longer keeps the aspect, as
    /// Hugging Face's image processors compute it (`int(side * longer / shorter)`; may
    /// enlarge).
    ShortestSide(u32),
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
            Resize::ShortestSide(side) => {
                let (short, long) = (width.min(height).max(1), width.max(height));
                let other = (u64::from(side) * u64::from(long) / u64::from(short)) as u32;
                if width <= height {
                    (side.max(1), other.max(1))
                } else {
                    (other.max(1), side.max(1))
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
    emit: impl FnMut(DecodedFrame) -> ControlFlow<()> + Send,
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
    mut emit: impl FnMut(DecodedFrame) -> ControlFlow<()> + Send,
) -> Result<(), MediaError> {
    let selection = match sampling {
        Sampling::All => Selection::All,
        Sampling::Keyframes => Selection::Keyframes,
        Sampling::Fps(fps) if fps.is_finite() && fps > 0.0 => Selection::Sampled(fps),
        Sampling::Fps(fps) => {
            return Err(decode_error(
                &media.display,
                format!("fps must be a positive number, not {fps}"),
            ));
        }
    };
    // fps sampling over a range starts a slot early: the frames that decide the first
    // slots of the range are those the sampler sees before it (frames shown are those
    // from the range's start on)
    let range = extras.range.map(|(from, to)| match sampling {
        Sampling::Fps(fps) => ((from - 1.0 / fps).max(0.0), to),
        _ => (from, to),
    });
    let mut frames = Frames {
        resize,
        with_pixels,
        from: extras.range.map(|(from, _)| from),
        emit: &mut emit,
        sampler: None,
        fps: match sampling {
            Sampling::Fps(fps) => Some(fps),
            _ => None,
        },
        done: false,
    };
    let options = PassOptions {
        range,
        motion_vectors: extras.motion_vectors,
        selection,
    };
    pass::run_pass(media, &options, &mut [&mut frames])?;
    Ok(())
}

/// The consumer behind [`decode_frames_with`]: samples the pass's frames and hands each
/// to the caller as a [`DecodedFrame`].
struct Frames<'a> {
    resize: Resize,
    with_pixels: bool,
    /// Frames before this time (seconds) are seen by the sampler, not emitted.
    from: Option<f64>,
    emit: &'a mut (dyn FnMut(DecodedFrame) -> ControlFlow<()> + Send),
    fps: Option<f64>,
    sampler: Option<SlotSampler>,
    /// The caller broke off.
    done: bool,
}

impl Frames<'_> {
    /// Emits `frame` (once per slot it shows).
    fn emit(&mut self, frame: &Decoded, pictures: &Pictures) -> Result<(), MediaError> {
        if self.done || self.from.is_some_and(|from| frame.pts_s < from - 1e-9) {
            return Ok(());
        }
        let out = decoded_frame(frame, self.resize, self.with_pixels, pictures)?;
        self.done = (self.emit)(out).is_break();
        Ok(())
    }

    /// Emits `frame` for `slots` slots.
    fn emit_slots(
        &mut self,
        frame: Option<&Decoded>,
        slots: usize,
        pictures: &Pictures,
    ) -> Result<(), MediaError> {
        if let Some(frame) = frame {
            for _ in 0..slots {
                self.emit(frame, pictures)?;
            }
        }
        Ok(())
    }
}

impl FrameConsumer for Frames<'_> {
    fn name(&self) -> &str {
        "frames"
    }

    fn start(&mut self, stream: &StreamInfo) -> Result<(), MediaError> {
        self.sampler = self
            .fps
            .map(|fps| SlotSampler::new(fps, stream.time_base, stream.origin));
        Ok(())
    }

    fn frame(
        &mut self,
        frame: &Decoded,
        previous: Option<&Decoded>,
        pictures: &Pictures,
    ) -> Result<(), MediaError> {
        match self.sampler.as_mut() {
            None => self.emit(frame, pictures),
            Some(sampler) => {
                let slots = sampler.push(frame.ts);
                self.emit_slots(previous, slots, pictures)
            }
        }
    }

    fn satisfied(&self) -> bool {
        self.done
    }

    fn yields_to_decoder(&self) -> bool {
        // its reader (a frames scan, a row's frame) waits for each frame
        false
    }

    fn finish(
        &mut self,
        last: Option<&Decoded>,
        end_ts: Option<i64>,
        pictures: &Pictures,
    ) -> Result<(), MediaError> {
        let slots = match self.sampler.as_mut() {
            Some(sampler) if !self.done => sampler.finish(end_ts),
            _ => 0,
        };
        self.emit_slots(last, slots, pictures)
    }
}

/// `frame` as a [`DecodedFrame`] sized by `resize` (RGB24, bicubic, the tagged matrix;
/// without `with_pixels`, no pixels).
fn decoded_frame(
    frame: &Decoded,
    resize: Resize,
    with_pixels: bool,
    pictures: &Pictures,
) -> Result<DecodedFrame, MediaError> {
    let (width, height) = resize.target(frame.width(), frame.height());
    let rgb = if with_pixels {
        let spec = PictureSpec {
            width,
            height,
            format: PictureFormat::Rgb24,
            filter: Filter::Bicubic,
            matrix: Matrix::Tagged,
        };
        pictures.take(frame, spec)?.data
    } else {
        Vec::new()
    };
    Ok(DecodedFrame {
        index: frame.index,
        pts_s: frame.pts_s,
        is_keyframe: frame.is_keyframe,
        width,
        height,
        rgb,
        motion: frame.motion,
    })
}

/// How far apart two times of [`frames_at`] may be and still be read in one pass: past
/// it, seeking to the keyframe before the later time costs less than decoding every frame
/// between them. (A typical keyframe interval: 2 s to 10 s.)
pub const FRAMES_AT_GAP_S: f64 = 4.0;

/// The frames shown at each of `times` (seconds) of `media`, as [`frame_at`] finds each,
/// in the order of `times`: times less than [`FRAMES_AT_GAP_S`] apart are read in one pass
/// (one open, one seek, each frame converted once), so the frames of many rows of one
/// video cost one decode of the span they cover rather than one seek each. A time with no
/// frame (past the end) is that time's error; a video that cannot be opened or decoded is
/// the whole call's.
pub fn frames_at(
    media: &MediaInput,
    times: &[f64],
    resize: Resize,
) -> Result<Vec<Result<DecodedFrame, MediaError>>, MediaError> {
    let mut found: Vec<Option<DecodedFrame>> = vec![None; times.len()];
    frames_at_each(media, times, resize, &mut |i, frame| {
        found[i] = Some(frame);
        Ok(())
    })?;
    Ok(found
        .into_iter()
        .zip(times)
        .map(|(frame, at_s)| {
            frame.ok_or_else(|| {
                decode_error(
                    &media.display,
                    format!("no frame at {at_s} s (past the end?)"),
                )
            })
        })
        .collect())
}

/// [`frames_at`], handing each time's frame to `each` (with the time's index in `times`)
/// as soon as it is decoded, in ascending order of time, instead of holding them all: for
/// a caller that sends each clip on as its frames arrive. A time with no frame (past the
/// end) is never handed over; an error `each` returns stops the decoding and is returned.
pub fn frames_at_each(
    media: &MediaInput,
    times: &[f64],
    resize: Resize,
    each: &mut (dyn FnMut(usize, DecodedFrame) -> Result<(), MediaError> + Send),
) -> Result<(), MediaError> {
    let mut order: Vec<usize> = (0..times.len()).collect();
    order.sort_by(|&a, &b| times[a].total_cmp(&times[b]));
    let mut run_start = 0;
    while run_start < order.len() {
        let mut run_end = run_start + 1;
        while run_end < order.len()
            && times[order[run_end]] - times[order[run_end - 1]] < FRAMES_AT_GAP_S
        {
            run_end += 1;
        }
        let run = &order[run_start..run_end];
        let wanted: Vec<f64> = run.iter().map(|&i| times[i].max(0.0)).collect();
        let mut at = FramesAt {
            wanted: &wanted,
            next: 0,
            resize,
            each: &mut |k, frame| each(run[k], frame),
        };
        let options = PassOptions {
            range: Some((wanted[0], f64::INFINITY)),
            motion_vectors: false,
            selection: Selection::All,
        };
        pass::run_pass(media, &options, &mut [&mut at])?;
        run_start = run_end;
    }
    Ok(())
}

/// The consumer behind [`frames_at_each`]: for each wanted time (ascending), the first
/// frame at or after it, handed to `each` with the time's index in `wanted`.
struct FramesAt<'a> {
    wanted: &'a [f64],
    /// The first wanted time without its frame yet.
    next: usize,
    resize: Resize,
    each: &'a mut (dyn FnMut(usize, DecodedFrame) -> Result<(), MediaError> + Send),
}

impl FrameConsumer for FramesAt<'_> {
    fn name(&self) -> &str {
        "frames at times"
    }

    fn frame(
        &mut self,
        frame: &Decoded,
        _previous: Option<&Decoded>,
        pictures: &Pictures,
    ) -> Result<(), MediaError> {
        let first = self.next;
        while self.next < self.wanted.len() && frame.pts_s >= self.wanted[self.next] - 1e-9 {
            self.next += 1;
        }
        if self.next > first {
            let out = decoded_frame(frame, self.resize, true, pictures)?;
            for k in first..self.next - 1 {
                (self.each)(k, out.clone())?;
            }
            (self.each)(self.next - 1, out)?;
        }
        Ok(())
    }

    fn satisfied(&self) -> bool {
        self.next == self.wanted.len()
    }

    fn yields_to_decoder(&self) -> bool {
        // its caller waits for the frames
        false
    }

    fn finish(
        &mut self,
        _last: Option<&Decoded>,
        _end_ts: Option<i64>,
        _pictures: &Pictures,
    ) -> Result<(), MediaError> {
        Ok(())
    }
}

/// The frame shown at `at_s` seconds of `media` (the first whose timestamp is at or after
/// it; the demuxer seeks to the keyframe before), sized by `resize`.
pub fn frame_at(media: &MediaInput, at_s: f64, resize: Resize) -> Result<DecodedFrame, MediaError> {
    frames_at(media, &[at_s], resize)?.pop().unwrap_or_else(|| {
        Err(decode_error(
            &media.display,
            format!("no frame at {at_s} s"),
        ))
    })
}

/// The frame shown at `at_s` seconds of `source` (see [`frame_at`]), at its own size.
pub fn rgb_at(source: &crate::source::VideoSource, at_s: f64) -> Result<Rgb, MediaError> {
    let media = source.media_input(&crate::storage::StorageOptions::default())?;
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
    mut each: impl FnMut(Vec<DecodedFrame>) -> Result<(), MediaError> + Send,
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
        assert_eq!(Resize::ShortestSide(224).target(640, 360), (398, 224));
        assert_eq!(Resize::ShortestSide(32).target(32, 48), (32, 48));
    }
}
