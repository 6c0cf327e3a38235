//! Shot detection: `detect_shots(path [, options])`, with PySceneDetect's semantics.
//!
//! Every frame is decoded once, scaled down as PySceneDetect does by default (the longer
//! side to 256 pixels, bilinear) and converted to HSV; a frame's *content value* is the mean
//! absolute difference of hue, saturation and value against the previous frame, averaged
//! over the three planes (ContentDetector's default weights).
//!
//! - `detector=content` (default): a cut where the content value reaches `threshold`
//!   (default 27), with ContentDetector's flash filter (merge mode): cuts closer than
//!   `min_scene_len` frames (default 15) are merged.
//! - `detector=adaptive`: AdaptiveDetector: a cut where the content value divided by the
//!   mean of the `window_width` (default 2) frames on each side reaches
//!   `adaptive_threshold` (default 3) and the content value reaches `min_content_val`
//!   (default 15), at least `min_scene_len` frames after the previous cut.
//! - `mode=fast`: the pass decodes I- and P-frames only, without the loop filter
//!   ([`Selection::Anchors`]), and scores consecutive decoded frames; a jump between two
//!   of them with skipped frames between, differing by at least 0.8 times the threshold,
//!   is decoded again and scored frame by frame (a second look, content detector only),
//!   so cuts land on exact mode's frames and motion over skipped frames is no cut.
//!
//! The result is the list of shots, `[start_frame, end_frame)` in presentation frame
//! numbers with their times in seconds, covering the whole video (one shot when there is
//! no cut). A file that cannot be decoded gives null.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Fields};
use datafusion::common::config::ConfigOptions;
use datafusion::common::scalar::ScalarStructBuilder;
use datafusion::common::{Result, ScalarValue};
use datafusion::logical_expr::Expr;
use framefusion_media::MediaError;
use framefusion_media::pass::{
    Decoded, Filter, FrameConsumer, PassOptions, PictureFormat, PictureSpec, Pictures, Selection,
    StreamInfo,
};

use crate::UdfError;
use crate::analysis::{Demand, Feature, Frames, Need};
pub use crate::features::ContentScores;
use crate::media::image::{hsv_planes, mean_abs_diff};
use crate::media::source::VideoSource;
use crate::operator::{Arg, Batch, FeatureConsumer, RowOutcome, VideoOperator};
use crate::storage::StorageOptions;

/// The width PySceneDetect scales frames down to (its `DEFAULT_MIN_WIDTH`).
const SCORING_WIDTH: f64 = 256.0;

/// Which detector, with its parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Detector {
    /// ContentDetector.
    Content {
        /// Content value that makes a cut.
        threshold: f64,
    },
    /// AdaptiveDetector.
    Adaptive {
        /// Ratio to the neighbours' mean that makes a cut.
        adaptive_threshold: f64,
        /// Frames on each side of the averaging window.
        window_width: usize,
        /// Smallest content value of a cut.
        min_content_val: f64,
    },
}

/// How frames are decoded and scored (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Every frame, PySceneDetect's cuts.
    #[default]
    Exact,
    /// Intra and predicted frames only, without the loop filter.
    Fast,
}

/// Shot detection options (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ShotOptions {
    /// The detector.
    pub detector: Detector,
    /// Minimum shot length in frames.
    pub min_scene_len: i64,
    /// Exact or fast.
    pub mode: Mode,
}

impl Default for ShotOptions {
    fn default() -> Self {
        Self {
            detector: Detector::Content { threshold: 27.0 },
            min_scene_len: 15,
            mode: Mode::Exact,
        }
    }
}

impl ShotOptions {
    /// Parses `threshold=30,min_scene_len=10` or `detector=adaptive,adaptive_threshold=3`.
    pub fn parse(spec: &str) -> Result<Self, UdfError> {
        let mut detector = "content".to_owned();
        let mut threshold = 27.0;
        let mut adaptive_threshold = 3.0;
        let mut window_width = 2usize;
        let mut min_content_val = 15.0;
        let mut min_scene_len = 15i64;
        let mut mode = Mode::Exact;
        let bad = |part: &str, why: &str| {
            UdfError::Setup(format!(
                "bad detect_shots option '{part}': {why}; write options such as 'mode=fast', 'threshold=27', 'min_scene_len=15', 'detector=adaptive', 'adaptive_threshold=3', 'window_width=2', 'min_content_val=15', separated by commas"
            ))
        };
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let Some((key, value)) = part.split_once('=') else {
                return Err(bad(part, "expected key=value"));
            };
            let (key, value) = (key.trim().to_ascii_lowercase(), value.trim());
            let number = || {
                value
                    .parse::<f64>()
                    .ok()
                    .filter(|v| v.is_finite() && *v >= 0.0)
                    .ok_or_else(|| bad(part, "expected a non-negative number"))
            };
            match key.as_str() {
                "detector" => detector = value.to_ascii_lowercase(),
                "threshold" => threshold = number()?,
                "adaptive_threshold" => adaptive_threshold = number()?,
                "min_content_val" => min_content_val = number()?,
                "window_width" => {
                    window_width = number()? as usize;
                    if window_width < 1 {
                        return Err(bad(part, "window_width must be at least 1"));
                    }
                }
                "min_scene_len" => min_scene_len = number()? as i64,
                "mode" => {
                    mode = match value.to_ascii_lowercase().as_str() {
                        "exact" => Mode::Exact,
                        "fast" => Mode::Fast,
                        _ => return Err(bad(part, "mode is exact (the default) or fast")),
                    }
                }
                _ => return Err(bad(part, "unknown option")),
            }
        }
        let detector = match detector.as_str() {
            "content" => Detector::Content { threshold },
            "adaptive" => Detector::Adaptive {
                adaptive_threshold,
                window_width,
                min_content_val,
            },
            other => {
                return Err(UdfError::Setup(format!(
                    "unknown detector '{other}'; use detector=content or detector=adaptive"
                )));
            }
        };
        Ok(Self {
            detector,
            min_scene_len,
            mode,
        })
    }
}

/// One shot: frames `[start_frame, end_frame)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Shot {
    /// First frame (presentation order, 0-based).
    pub start_frame: i64,
    /// One past the last frame.
    pub end_frame: i64,
    /// Start time in seconds.
    pub start_s: f64,
    /// End time in seconds.
    pub end_s: f64,
}

/// ContentDetector's flash filter in merge mode: turns "this frame is above the
/// threshold" into cuts at least `length` frames apart.
#[derive(Debug, Default)]
struct MergeFilter {
    length: i64,
    last_above: Option<i64>,
    merge_enabled: bool,
    merge_triggered: bool,
    merge_start: i64,
}

impl MergeFilter {
    fn new(length: i64) -> Self {
        Self {
            length,
            ..Self::default()
        }
    }

    fn filter(&mut self, frame: i64, above: bool) -> Option<i64> {
        if self.length <= 0 {
            return above.then_some(frame);
        }
        let last_above = *self.last_above.get_or_insert(frame);
        let length_met = frame - last_above >= self.length;
        if above {
            self.last_above = Some(frame);
        }
        let last_above = self.last_above.unwrap_or(frame);
        if self.merge_triggered {
            if length_met && !above && last_above - self.merge_start >= self.length {
                self.merge_triggered = false;
                return Some(last_above);
            }
            return None;
        }
        if !above {
            return None;
        }
        if length_met {
            self.merge_enabled = true;
            return Some(frame);
        }
        if self.merge_enabled {
            self.merge_triggered = true;
            self.merge_start = frame;
        }
        None
    }
}

/// The cut frames of a sequence of content values (one per frame, the first being 0).
pub fn cuts(scores: &[f64], options: &ShotOptions) -> Vec<i64> {
    let frames: Vec<i64> = (0..scores.len() as i64).collect();
    cuts_of(scores, &frames, options)
}

/// The cut frames of content values of the frames numbered `frames` (increasing; each
/// value against the frame before it in the list).
pub fn cuts_of(scores: &[f64], frames: &[i64], options: &ShotOptions) -> Vec<i64> {
    let mut out = Vec::new();
    match options.detector {
        Detector::Content { threshold } => {
            let mut filter = MergeFilter::new(options.min_scene_len);
            for (&frame, &score) in frames.iter().zip(scores) {
                out.extend(filter.filter(frame, score >= threshold));
            }
        }
        Detector::Adaptive {
            adaptive_threshold,
            window_width,
            min_content_val,
        } => {
            let mut last_cut = 0i64;
            let w = window_width;
            for target in w..scores.len().saturating_sub(w) {
                let score = scores[target];
                let neighbours: f64 = scores[target - w..=target + w]
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| *i != w)
                    .map(|(_, s)| s)
                    .sum::<f64>()
                    / (2.0 * w as f64);
                let ratio = if neighbours.abs() >= 1e-5 {
                    (score / neighbours).min(255.0)
                } else if score >= min_content_val {
                    255.0
                } else {
                    0.0
                };
                let frame = frames.get(target).copied().unwrap_or(target as i64);
                if ratio >= adaptive_threshold
                    && score >= min_content_val
                    && frame - last_cut >= options.min_scene_len
                {
                    last_cut = frame;
                    out.push(frame);
                }
            }
        }
    }
    out
}

/// The size frames are scored at: PySceneDetect's automatic downscale.
pub fn scoring_size(width: usize, height: usize) -> (usize, usize) {
    let longest = width.max(height) as f64;
    if longest < SCORING_WIDTH {
        return (width, height);
    }
    let factor = longest / SCORING_WIDTH;
    let side = |v: usize| ((v as f64 / factor).round_ties_even() as usize).max(1);
    (side(width), side(height))
}

impl ContentScores {
    fn push(&mut self, frame: i64, time: f64, score: f64) {
        self.frames.push(frame);
        self.times.push(time);
        self.scores.push(score);
        self.frame_count = self.frame_count.max(frame + 1);
    }

    /// The time of frame `frame`: its own when it was scored, else extrapolated from the
    /// last scored frames.
    fn time(&self, frame: i64) -> f64 {
        if let Ok(i) = self.frames.binary_search(&frame) {
            return self.times[i];
        }
        let n = self.frames.len();
        let (Some(&last), Some(&last_t)) = (self.frames.last(), self.times.last()) else {
            return 0.0;
        };
        let period = if n >= 2 {
            let frames = (last - self.frames[n - 2]).max(1) as f64;
            ((last_t - self.times[n - 2]) / frames).max(0.0)
        } else {
            0.0
        };
        last_t + (frame - last) as f64 * period
    }

    /// The shots these scores make under `options`, covering every frame.
    pub fn shots(&self, options: &ShotOptions) -> Vec<Shot> {
        let frames = self.frame_count;
        if self.scores.is_empty() || frames == 0 {
            return Vec::new();
        }
        let mut bounds = vec![0];
        bounds.extend(
            cuts_of(&self.scores, &self.frames, options)
                .into_iter()
                .filter(|&c| c > 0 && c < frames),
        );
        bounds.push(frames);
        bounds
            .windows(2)
            .map(|w| Shot {
                start_frame: w[0],
                end_frame: w[1],
                start_s: self.time(w[0]),
                end_s: self.time(w[1]),
            })
            .collect()
    }
}

/// The picture the content values are computed on, for a `width` x `height` video:
/// RGB at PySceneDetect's scoring size, straight from the decoder's YUV. PySceneDetect
/// shrinks with OpenCV's `INTER_LINEAR`, which at an odd integer factor (720p's 5) reads
/// one source pixel per output pixel, the centre of its block: [`Filter::CentreSample`]
/// takes those pixels and converts them alone (PySceneDetect's pixels up to the rounding
/// of the conversion). At other factors it hands swscale the middle row of each band and
/// shrinks it with `FAST_BILINEAR`'s two taps, so the values are close to PySceneDetect's
/// (the cuts the same on every test video; benches/RESULTS.md).
fn scoring_picture(width: u32, height: u32) -> PictureSpec {
    let (w, h) = scoring_size(width as usize, height as usize);
    PictureSpec {
        width: w as u32,
        height: h as u32,
        format: PictureFormat::Rgb24,
        filter: Filter::CentreSample,
        // BT.601 whatever the tags, as OpenCV converts for PySceneDetect: the same values
        matrix: framefusion_media::pass::Matrix::Bt601,
    }
}

/// Computes [`ContentScores`] during a decode pass: of every frame (exact), or of intra
/// and predicted frames only (fast; B-frames are not scored even when the pass decodes
/// them, so the cuts do not depend on what else the query asks).
#[derive(Debug)]
struct ScoreConsumer {
    mode: Mode,
    stream: Option<StreamInfo>,
    spec: Option<PictureSpec>,
    previous: Option<[Vec<u8>; 3]>,
    out: ContentScores,
}

impl ScoreConsumer {
    fn new(mode: Mode) -> Self {
        Self {
            mode,
            stream: None,
            spec: None,
            previous: None,
            out: ContentScores::default(),
        }
    }
}

impl FrameConsumer for ScoreConsumer {
    fn name(&self) -> &str {
        match self.mode {
            Mode::Exact => "content values (detect_shots)",
            Mode::Fast => "content values of I- and P-frames (detect_shots, fast)",
        }
    }

    fn start(&mut self, stream: &StreamInfo) -> Result<(), MediaError> {
        self.stream = Some(*stream);
        Ok(())
    }

    fn frame(
        &mut self,
        frame: &Decoded,
        _previous: Option<&Decoded>,
        pictures: &Pictures,
    ) -> Result<(), MediaError> {
        let number = match self.mode {
            // every frame, counted: the index of the frame in presentation order
            Mode::Exact => self.out.frames.len() as i64,
            Mode::Fast if frame.is_bidirectional => return Ok(()),
            Mode::Fast => frame.index,
        };
        let spec = *self
            .spec
            .get_or_insert_with(|| scoring_picture(frame.width(), frame.height()));
        let picture = pictures.get(frame, spec)?;
        let planes = hsv_planes(&picture.data, picture.width * picture.height);
        let score = self.previous.as_ref().map_or(0.0, |p| {
            (0..3)
                .map(|c| mean_abs_diff(&planes[c], &p[c]))
                .sum::<f64>()
                / 3.0
        });
        self.out.push(number, frame.pts_s, score);
        self.previous = Some(planes);
        Ok(())
    }

    fn finish(
        &mut self,
        _last: Option<&Decoded>,
        end_ts: Option<i64>,
        _pictures: &Pictures,
    ) -> Result<(), MediaError> {
        // fast mode skips frames: the count comes from the end of the stream
        if let (Mode::Fast, Some(stream), Some(end)) = (self.mode, self.stream, end_ts)
            && let Some(rate) = stream.frame_rate
        {
            let count = ((end - stream.start) as f64 * stream.time_base * rate).round() as i64;
            self.out.frame_count = self.out.frame_count.max(count);
        }
        Ok(())
    }
}

impl FeatureConsumer for ScoreConsumer {
    fn into_feature(self: Box<Self>) -> Feature {
        Feature::Content(Arc::new(self.out))
    }
}

/// Fast mode looks again, frame by frame, at two scored frames more than a frame apart
/// whose content value reaches this share of the threshold: the jump spans frames fast
/// mode did not decode (B-frames), so the cut may lie on any of them, or the jump may be
/// motion over several frames rather than a cut. A cut's value against the frame before
/// it is about its value over the span (the two frames are in different shots either
/// way), so the margin only has to cover motion and the loop filter fast mode skips.
const SECOND_LOOK_SHARE: f64 = 0.8;

/// Candidate stretches of fast mode's second look this many frames apart or closer are
/// decoded as one: the frames between cost less than a second lead-in from the GOP's
/// keyframe (GOPs are longer than this in the common encoders' defaults).
const SECOND_LOOK_JOIN: i64 = 24;

impl ContentScores {
    /// The stretches fast mode looks at again under `options`: `(first, last)` indices of
    /// scored frames, the two frames of each candidate jump, joined where they are at most
    /// [`SECOND_LOOK_JOIN`] frames apart.
    fn second_look_stretches(&self, options: &ShotOptions) -> Vec<(usize, usize)> {
        let Detector::Content { threshold } = options.detector else {
            return Vec::new();
        };
        let mut out: Vec<(usize, usize)> = Vec::new();
        for i in 1..self.scores.len() {
            if self.frames[i] - self.frames[i - 1] <= 1
                || self.scores[i] < threshold * SECOND_LOOK_SHARE
            {
                continue;
            }
            match out.last_mut() {
                Some(last) if self.frames[i - 1] - self.frames[last.1] <= SECOND_LOOK_JOIN => {
                    last.1 = i
                }
                _ => out.push((i - 1, i)),
            }
        }
        out
    }
}

/// Fast mode's second look ([`SECOND_LOOK_SHARE`]): each candidate stretch of `scores` is
/// decoded again, every frame of it and with the loop filter (its lead-in skipping the
/// frames nothing references, [`Selection::Window`]), and its exact content values replace
/// the jump. The cuts then fall on the frames exact mode puts them on, and motion over
/// the skipped frames no longer passes for a cut. The content detector only: the adaptive
/// detector's window would mix the two spacings. A stretch that cannot be decoded again
/// keeps fast mode's values (logged).
fn second_look(
    input: &framefusion_media::source::MediaInput,
    scores: &ContentScores,
    options: &ShotOptions,
) -> ContentScores {
    let stretches = scores.second_look_stretches(options);
    if stretches.is_empty() {
        return scores.clone();
    }
    let mut out = ContentScores {
        frame_count: scores.frame_count,
        ..ContentScores::default()
    };
    let copy = |out: &mut ContentScores, from: usize, to: usize| {
        for i in from..to {
            out.push(scores.frames[i], scores.times[i], scores.scores[i]);
        }
    };
    // side by side, one single-threaded decoder per decoder thread of the CPU budget
    let workers = framefusion_media::cpu::budget()
        .decoder_threads()
        .clamp(1, stretches.len());
    let next_stretch = std::sync::atomic::AtomicUsize::new(0);
    let mut looks: Vec<Option<Result<ContentScores, String>>> = vec![None; stretches.len()];
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                scope.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let n = next_stretch.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(&(first, last)) = stretches.get(n) else {
                            return done;
                        };
                        done.push((n, exact_stretch(input, scores, first, last)));
                    }
                })
            })
            .collect();
        for handle in handles {
            for (n, look) in handle.join().unwrap_or_default() {
                looks[n] = Some(look);
            }
        }
    });
    let (mut next, mut looked) = (0, 0i64);
    for (&(first, last), look) in stretches.iter().zip(looks) {
        copy(&mut out, next, first + 1);
        let look = look.unwrap_or_else(|| Err("its decoding thread failed".to_owned()));
        match look {
            Ok(exact) => {
                looked += exact.frames.len() as i64;
                log::debug!(
                    "{}: detect_shots (fast) second look at frames {}..={}: largest value {:.1} over the skipped frames, {:.1} frame by frame",
                    input.display,
                    scores.frames[first],
                    scores.frames[last],
                    scores.scores[first + 1..=last]
                        .iter()
                        .fold(0.0f64, |a, &b| a.max(b)),
                    exact.scores[1..].iter().fold(0.0f64, |a, &b| a.max(b)),
                );
                for i in 1..exact.frames.len() {
                    out.push(
                        scores.frames[first] + exact.frames[i],
                        exact.times[i],
                        exact.scores[i],
                    );
                }
            }
            Err(why) => {
                log::warn!(
                    "{}: detect_shots (fast) keeps the anchors' values of frames {}..={}: {why}",
                    input.display,
                    scores.frames[first],
                    scores.frames[last]
                );
                copy(&mut out, first + 1, last + 1);
            }
        }
        next = last + 1;
    }
    copy(&mut out, next, scores.frames.len());
    log::info!(
        target: "framefusion::decode",
        "{}: detect_shots (fast) looked again at {} stretches ({looked} frames)",
        input.display,
        stretches.len()
    );
    out
}

/// The exact content values of the frames `scores.frames[first]..=scores.frames[last]`,
/// numbered from 0, in a pass of their own: checked to be those frames.
fn exact_stretch(
    input: &framefusion_media::source::MediaInput,
    scores: &ContentScores,
    first: usize,
    last: usize,
) -> Result<ContentScores, String> {
    let (from, to) = (scores.times[first], scores.times[last]);
    let frames = scores.frames[last] - scores.frames[first] + 1;
    // half a frame's margin on each side: the range holds exactly these frames
    let half = 0.5 * (to - from) / (frames - 1) as f64;
    let mut consumer = ScoreConsumer::new(Mode::Exact);
    let pass = PassOptions {
        range: Some(((from - half).max(0.0), to + half)),
        selection: Selection::Window,
        ..PassOptions::default()
    };
    framefusion_media::pass::run_pass(input, &pass, &mut [&mut consumer])
        .map_err(|e| e.to_string())?;
    let exact = consumer.out;
    let starts_right = exact.times.first().is_some_and(|t| (t - from).abs() < half);
    if exact.frames.len() as i64 != frames || !starts_right {
        return Err(format!(
            "a second look decoded {} frames from {:.3} s, not the {frames} from {from:.3} s expected",
            exact.frames.len(),
            exact.times.first().copied().unwrap_or(f64::NAN),
        ));
    }
    Ok(exact)
}

/// The demand of shot detection in `mode`: the content values over the whole video.
fn content_demand(mode: Mode) -> Demand {
    Demand {
        whole: true,
        frames: match mode {
            Mode::Exact => Frames::Every,
            Mode::Fast => Frames::Anchors,
        },
        ..Demand::new(Need::Content {
            fast: mode == Mode::Fast,
        })
    }
}

/// Detects the shots of a video in a pass of its own.
pub fn detect_shots(
    media: &VideoSource,
    storage: &StorageOptions,
    options: &ShotOptions,
) -> Result<Vec<Shot>, UdfError> {
    let input = media.media_input(storage)?;
    let mut consumer = ScoreConsumer::new(options.mode);
    let pass = PassOptions {
        selection: match options.mode {
            Mode::Exact => Selection::All,
            Mode::Fast => Selection::Anchors,
        },
        ..PassOptions::default()
    };
    framefusion_media::pass::run_pass(&input, &pass, &mut [&mut consumer])?;
    let scores = match options.mode {
        Mode::Exact => consumer.out,
        Mode::Fast => second_look(&input, &consumer.out, options),
    };
    Ok(scores.shots(options))
}

/// The fields of one shot struct.
pub fn shot_fields() -> Fields {
    Fields::from(vec![
        Field::new("start_frame", DataType::Int64, false),
        Field::new("end_frame", DataType::Int64, false),
        Field::new("start_s", DataType::Float64, false),
        Field::new("end_s", DataType::Float64, false),
    ])
}

const NAME: &str = "detect_shots";

/// `detect_shots(path [, options])`: see the module docs.
#[derive(Debug, Default)]
pub struct DetectShots;

fn shots_type() -> DataType {
    DataType::List(Arc::new(Field::new(
        "item",
        DataType::Struct(shot_fields()),
        true,
    )))
}

fn shot_value(shot: &Shot) -> Result<ScalarValue> {
    let mut builder = ScalarStructBuilder::new();
    for (field, value) in shot_fields().iter().zip([
        ScalarValue::Int64(Some(shot.start_frame)),
        ScalarValue::Int64(Some(shot.end_frame)),
        ScalarValue::Float64(Some(shot.start_s)),
        ScalarValue::Float64(Some(shot.end_s)),
    ]) {
        builder = builder.with_scalar(field.as_ref().clone(), value);
    }
    builder.build()
}

impl VideoOperator for DetectShots {
    fn name(&self) -> &'static str {
        NAME
    }

    fn description(&self) -> &'static str {
        "The shots of a video (PySceneDetect's content or adaptive detector): a list of [start, end) frame and time ranges."
    }

    fn args(&self) -> &'static [Arg] {
        const ARGS: &[Arg] = &[Arg::path(), Arg::options("options")];
        ARGS
    }

    fn arities(&self) -> Vec<usize> {
        vec![1, 2]
    }

    fn return_type(&self) -> DataType {
        shots_type()
    }

    fn demands(&self, args: &[Expr], _config: &ConfigOptions) -> Vec<Demand> {
        // the mode must be known when planning: from literal options (a bad one fails at
        // execution with its message), else exact
        let mode = match args.get(1) {
            Some(Expr::Literal(v, _)) => match v.cast_to(&DataType::Utf8) {
                Ok(ScalarValue::Utf8(Some(spec))) => {
                    ShotOptions::parse(&spec).map_or(Mode::Exact, |o| o.mode)
                }
                _ => Mode::Exact,
            },
            _ => Mode::Exact,
        };
        vec![content_demand(mode)]
    }

    fn consumer(
        &self,
        demand: &Demand,
        _models: &crate::models::Models,
        _config: &ConfigOptions,
    ) -> Result<Box<dyn FeatureConsumer>, UdfError> {
        match demand.need {
            Need::Content { fast } => Ok(Box::new(ScoreConsumer::new(if fast {
                Mode::Fast
            } else {
                Mode::Exact
            }))),
            _ => Err(UdfError::Setup(format!(
                "detect_shots computes no {}",
                demand.need.kind()
            ))),
        }
    }

    fn evaluate(&self, batch: &Batch<'_>) -> Result<Vec<RowOutcome>> {
        // bad options are the query's fault: fail it with the message
        let mut options = std::collections::HashMap::with_capacity(batch.rows().len());
        for &row in batch.rows() {
            let spec = batch.text(1, row).unwrap_or_default();
            let parsed = ShotOptions::parse(spec)
                .map_err(|e| datafusion::error::DataFusionError::Plan(e.to_string()))?;
            options.insert(row, parsed);
        }
        Ok(batch.each_row(|row| {
            let options = options.get(&row).copied().unwrap_or_default();
            let demand = content_demand(options.mode);
            let source = batch.source(row)?;
            let feature = crate::analysis::features(
                &source,
                &StorageOptions::default(),
                None,
                &demand,
                batch.pass,
                batch.config,
            )?;
            let scores = feature.content()?;
            let looked;
            let scores = match options.mode {
                Mode::Exact => scores.as_ref(),
                Mode::Fast => {
                    let input = source.media_input(&StorageOptions::default())?;
                    looked = second_look(&input, &scores, &options);
                    &looked
                }
            };
            let shots = scores
                .shots(&options)
                .iter()
                .map(shot_value)
                .collect::<Result<Vec<_>>>()
                .map_err(|e| UdfError::Option(e.to_string()))?;
            Ok(ScalarValue::List(ScalarValue::new_list(
                &shots,
                &DataType::Struct(shot_fields()),
                true,
            )))
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_cuts_merge_close_flashes() {
        let mut scores = vec![0.0; 100];
        scores[30] = 40.0;
        scores[35] = 40.0; // within min_scene_len of the first: merged away
        scores[70] = 40.0;
        let options = ShotOptions::default();
        assert_eq!(cuts(&scores, &options), [30, 70]);
        // a first cut closer than min_scene_len to the start is not emitted
        let mut early = vec![0.0; 50];
        early[5] = 40.0;
        early[30] = 40.0;
        assert_eq!(cuts(&early, &options), [30]);
    }

    #[test]
    fn adaptive_cuts_need_a_peak() {
        let mut scores = vec![2.0; 60];
        scores[20] = 30.0; // 15x its neighbours
        scores[40] = 10.0; // a peak under min_content_val
        let options = ShotOptions::parse("detector=adaptive").unwrap_or_default();
        assert_eq!(cuts(&scores, &options), [20]);
    }

    #[test]
    fn options_and_sizes() {
        assert!(ShotOptions::parse("threshold=-1").is_err());
        assert!(ShotOptions::parse("colour=red").is_err());
        assert_eq!(
            ShotOptions::parse("threshold=30, min_scene_len=10").ok(),
            Some(ShotOptions {
                detector: Detector::Content { threshold: 30.0 },
                min_scene_len: 10,
                mode: Mode::Exact,
            })
        );
        assert_eq!(scoring_size(1280, 720), (256, 144));
        assert_eq!(scoring_size(640, 272), (256, 109));
        assert_eq!(scoring_size(176, 144), (176, 144));
    }
}
