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
//!
//! The result is the list of shots, `[start_frame, end_frame)` in presentation frame
//! numbers with their times in seconds, covering the whole video (one shot when there is
//! no cut). A file that cannot be decoded gives null.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, Float64Builder, Int64Builder, ListBuilder, StructBuilder,
};
use datafusion::arrow::datatypes::{DataType, Field, Fields};
use datafusion::common::{Result, exec_err};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDFImpl, Signature, TypeSignature, Volatility,
};

use crate::UdfError;
use crate::error::retry_transient;
use crate::media::decode::{Resize, Sampling, decode_frames};
use crate::media::image::{Rgb, mean_abs_diff};
use crate::media::source::VideoSource;
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

/// Shot detection options (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ShotOptions {
    /// The detector.
    pub detector: Detector,
    /// Minimum shot length in frames.
    pub min_scene_len: i64,
}

impl Default for ShotOptions {
    fn default() -> Self {
        Self {
            detector: Detector::Content { threshold: 27.0 },
            min_scene_len: 15,
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
        let bad = |part: &str, why: &str| {
            UdfError::Option(format!(
                "bad detect_shots option '{part}': {why}; write options such as 'threshold=27', 'min_scene_len=15', 'detector=adaptive', 'adaptive_threshold=3', 'window_width=2', 'min_content_val=15', separated by commas"
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
                return Err(UdfError::Option(format!(
                    "unknown detector '{other}'; use detector=content or detector=adaptive"
                )));
            }
        };
        Ok(Self {
            detector,
            min_scene_len,
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
    let mut out = Vec::new();
    match options.detector {
        Detector::Content { threshold } => {
            let mut filter = MergeFilter::new(options.min_scene_len);
            for (frame, &score) in scores.iter().enumerate() {
                out.extend(filter.filter(frame as i64, score >= threshold));
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
                let frame = target as i64;
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

/// Detects the shots of a video.
pub fn detect_shots(
    media: &VideoSource,
    storage: &StorageOptions,
    options: &ShotOptions,
) -> Result<Vec<Shot>, UdfError> {
    let input = media.media_input(storage)?;
    let mut scores = Vec::new();
    let mut times = Vec::new();
    let mut previous: Option<[Vec<u8>; 3]> = None;
    let mut frame_period = 0.0f64;
    decode_frames(&input, Sampling::All, Resize::Original, true, |frame| {
        let rgb = Rgb {
            width: frame.width as usize,
            height: frame.height as usize,
            data: frame.rgb,
        };
        let (w, h) = scoring_size(rgb.width, rgb.height);
        let planes = rgb.resize_bilinear(w, h).hsv_planes();
        let score = previous.as_ref().map_or(0.0, |p| {
            (0..3)
                .map(|c| mean_abs_diff(&planes[c], &p[c]))
                .sum::<f64>()
                / 3.0
        });
        if let Some(&last) = times.last() {
            frame_period = frame.pts_s - last;
        }
        scores.push(score);
        times.push(frame.pts_s);
        previous = Some(planes);
        std::ops::ControlFlow::Continue(())
    })?;
    let frames = scores.len() as i64;
    if frames == 0 {
        return Ok(Vec::new());
    }
    let time = |frame: i64| match times.get(frame as usize) {
        Some(&t) => t,
        None => times.last().copied().unwrap_or(0.0) + frame_period.max(0.0),
    };
    let mut bounds = vec![0];
    bounds.extend(
        cuts(&scores, options)
            .into_iter()
            .filter(|&c| c > 0 && c < frames),
    );
    bounds.push(frames);
    Ok(bounds
        .windows(2)
        .map(|w| Shot {
            start_frame: w[0],
            end_frame: w[1],
            start_s: time(w[0]),
            end_s: time(w[1]),
        })
        .collect())
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

/// `detect_shots(path [, options])`: see the module docs.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct DetectShotsUdf {
    signature: Signature,
}

impl Default for DetectShotsUdf {
    fn default() -> Self {
        Self {
            signature: Signature::one_of(
                vec![TypeSignature::String(1), TypeSignature::String(2)],
                Volatility::Stable,
            ),
        }
    }
}

impl ScalarUDFImpl for DetectShotsUdf {
    fn name(&self) -> &str {
        "detect_shots"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::List(Arc::new(Field::new(
            "item",
            DataType::Struct(shot_fields()),
            true,
        ))))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let n = args.number_rows;
        let path = |p| crate::args::strings(p, n, "detect_shots: path");
        let (paths, specs) = match args.args.as_slice() {
            [p] => (path(p)?, None),
            [p, o] => (
                path(p)?,
                Some(crate::args::strings(o, n, "detect_shots: options")?),
            ),
            _ => return exec_err!("detect_shots(path [, options]) takes one or two arguments"),
        };
        let struct_builder = StructBuilder::new(
            shot_fields(),
            vec![
                Box::new(Int64Builder::new()),
                Box::new(Int64Builder::new()),
                Box::new(Float64Builder::new()),
                Box::new(Float64Builder::new()),
            ],
        );
        let mut list = ListBuilder::new(struct_builder).with_field(Arc::new(Field::new(
            "item",
            DataType::Struct(shot_fields()),
            true,
        )));
        crate::blocking::run_blocking(|| -> Result<()> {
            for i in 0..n {
                if paths.is_null(i) {
                    list.append_null();
                    continue;
                }
                let spec = specs
                    .as_ref()
                    .filter(|s| !s.is_null(i))
                    .map_or("", |s| s.value(i));
                // bad options are the query's fault: fail it with the message
                let options = ShotOptions::parse(spec)
                    .map_err(|e| datafusion::error::DataFusionError::Plan(e.to_string()))?;
                let outcome = retry_transient(|| {
                    let source = VideoSource::parse(paths.value(i))?;
                    detect_shots(&source, &StorageOptions::default(), &options)
                });
                match UdfError::row("detect_shots", outcome)? {
                    Some(shots) => {
                        let values = list.values();
                        for shot in &shots {
                            append_shot(values, shot);
                        }
                        list.append(true);
                    }
                    None => list.append_null(),
                }
            }
            Ok(())
        })?;
        let array: ArrayRef = Arc::new(list.finish());
        Ok(ColumnarValue::Array(array))
    }
}

fn append_shot(values: &mut StructBuilder, shot: &Shot) {
    if let Some(b) = values.field_builder::<Int64Builder>(0) {
        b.append_value(shot.start_frame);
    }
    if let Some(b) = values.field_builder::<Int64Builder>(1) {
        b.append_value(shot.end_frame);
    }
    if let Some(b) = values.field_builder::<Float64Builder>(2) {
        b.append_value(shot.start_s);
    }
    if let Some(b) = values.field_builder::<Float64Builder>(3) {
        b.append_value(shot.end_s);
    }
    values.append(true);
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
                min_scene_len: 10
            })
        );
        assert_eq!(scoring_size(1280, 720), (256, 144));
        assert_eq!(scoring_size(640, 272), (256, 109));
        assert_eq!(scoring_size(176, 144), (176, 144));
    }
}
