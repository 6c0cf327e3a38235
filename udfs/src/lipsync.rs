//! `lip_sync(path [, start_s, end_s])`: how well the motion of the mouth under the largest
//! detected face follows the speech in the sound track. A heuristic, not a lip-reading
//! model: no audio-visual sync model ships in the registries this project installs from.
//!
//! Method:
//! 1. Faces: MTCNN ([`crate::faces`]) every 0.2 s of video; between detections the last
//!    largest face is kept. Its mouth box is centred between the two mouth-corner landmarks,
//!    1.5 mouth widths wide, from half a width above the corners to 0.7 below (the jaw
//!    opens downwards).
//! 2. Mouth motion, every frame: the mean absolute difference of luma inside the mouth box
//!    between the frame and the one before, minus the same over the whole face box (so a
//!    moving head or camera counts less), averaged over 0.2 s.
//! 3. Speech: Silero VAD's probability ([`crate::speech`]) of the 32 ms windows within
//!    each frame's interval.
//! 4. `score`: Pearson's correlation of the two series over frames with a face (-1..1).
//!    The same correlation with the audio shifted by up to 1 s either way gives
//!    `best_offset_s` (positive: the sound comes late) and `best_score`.
//!
//! What it detects: audio out of step with the picture by more than the smoothing (a few
//! tenths of a second), dubbed or replaced audio whose pauses do not fall where the mouth
//! rests, speech over a face that does not move its mouth. What it cannot: which of several
//! people speaks (it follows the largest face), phoneme-level agreement (a mouth moving
//! with the right rhythm to the wrong words scores well), continuous speech without pauses
//! (little variation to correlate), faces under 20 pixels, or profiles hiding the mouth.
//! Without speech or without a face there is nothing to correlate: `score` is null and
//! `error` says why. A video without audio gives null.

use datafusion::arrow::datatypes::{DataType, Field, Fields};
use datafusion::common::{Result, ScalarValue};

use crate::UdfError;
use crate::faces::{Face, Mtcnn};
use crate::media::audio::decode_audio;
use crate::media::decode::{Extras, Resize, Sampling, decode_frames_with};
use crate::media::image::Rgb;
use crate::media::source::VideoSource;
use crate::models::LoadedModel;
use crate::nets::mtcnn::{ONET_MODEL, PNET_MODEL, RNET_MODEL};
use crate::operator::{Arg, Batch, RowOutcome, VideoOperator, error_struct, struct_value};
use crate::speech::{SILERO_MODEL, speech_probabilities};
use crate::storage::StorageOptions;

const DETECT_EVERY_S: f64 = 0.2;
const SMOOTH_S: f64 = 0.2;
const MAX_OFFSET_S: f64 = 1.0;
const RATE: u32 = 16_000;
const WINDOW_S: f64 = 512.0 / RATE as f64;

/// The outcome for one range.
#[derive(Debug, Clone, PartialEq)]
pub struct LipSync {
    /// Correlation of mouth motion and speech at no offset.
    pub score: Option<f64>,
    /// The offset (s) of the audio that correlates best, within +-1 s.
    pub best_offset_s: Option<f64>,
    /// The correlation at that offset.
    pub best_score: Option<f64>,
    /// Video frames looked at.
    pub frames: usize,
    /// Share of them with a face.
    pub face_fraction: f64,
    /// Share of them the speech model scores as speech (probability at least 0.5).
    pub speech_fraction: f64,
    /// Why there is no score.
    pub error: Option<String>,
}

/// Pearson's correlation of `a` and `b` over the indices where both are present.
fn correlation(pairs: impl Iterator<Item = (f64, f64)>) -> Option<f64> {
    let (mut n, mut sa, mut sb, mut saa, mut sbb, mut sab) = (0f64, 0f64, 0f64, 0f64, 0f64, 0f64);
    for (a, b) in pairs {
        n += 1.0;
        sa += a;
        sb += b;
        saa += a * a;
        sbb += b * b;
        sab += a * b;
    }
    if n < 3.0 {
        return None;
    }
    let va = saa - sa * sa / n;
    let vb = sbb - sb * sb / n;
    if va <= 1e-12 || vb <= 1e-12 {
        return None;
    }
    Some((sab - sa * sb / n) / (va * vb).sqrt())
}

/// Mean absolute difference of two luma planes inside `[x0, x1) x [y0, y1)`.
fn region_diff(a: &[u8], b: &[u8], width: usize, r: (usize, usize, usize, usize)) -> f64 {
    let (x0, y0, x1, y1) = r;
    let mut sum = 0u64;
    for y in y0..y1 {
        let row = y * width;
        for x in x0..x1 {
            sum += u64::from(a[row + x].abs_diff(b[row + x]));
        }
    }
    let n = ((x1 - x0) * (y1 - y0)).max(1);
    sum as f64 / n as f64
}

/// A box clipped to the frame, or None when nothing of it is inside.
fn clip(
    x0: f64,
    y0: f64,
    x1: f64,
    y1: f64,
    w: usize,
    h: usize,
) -> Option<(usize, usize, usize, usize)> {
    let c = |v: f64, max: usize| v.round().clamp(0.0, max as f64) as usize;
    let r = (c(x0, w), c(y0, h), c(x1, w), c(y1, h));
    (r.2 > r.0 && r.3 > r.1).then_some(r)
}

/// The mouth box and the face box of a face, in frame pixels.
fn regions(face: &Face, w: usize, h: usize) -> Option<[(usize, usize, usize, usize); 2]> {
    let (lx, ly) = face.landmarks[3];
    let (rx, ry) = face.landmarks[4];
    let width = ((rx - lx).powi(2) + (ry - ly).powi(2)).sqrt().max(4.0);
    let (cx, cy) = ((lx + rx) / 2.0, (ly + ry) / 2.0);
    let mouth = clip(
        cx - 0.75 * width,
        cy - 0.5 * width,
        cx + 0.75 * width,
        cy + 0.7 * width,
        w,
        h,
    )?;
    let face = clip(
        face.x,
        face.y,
        face.x + face.width,
        face.y + face.height,
        w,
        h,
    )?;
    Some([mouth, face])
}

/// Moving average over `k` samples (centred), skipping missing values.
fn smooth(values: &[Option<f64>], k: usize) -> Vec<Option<f64>> {
    let half = k / 2;
    (0..values.len())
        .map(|i| {
            values[i]?;
            let window = &values[i.saturating_sub(half)..(i + half + 1).min(values.len())];
            let present: Vec<f64> = window.iter().flatten().copied().collect();
            Some(present.iter().sum::<f64>() / present.len() as f64)
        })
        .collect()
}

/// Scores one range (see the module documentation); `None` for a video without audio.
pub fn lip_sync(
    mtcnn: &Mtcnn,
    vad: &LoadedModel,
    source: &VideoSource,
    range: Option<(f64, f64)>,
) -> Result<Option<LipSync>, UdfError> {
    let media = source.media_input(&StorageOptions::default())?;
    let Some(samples) = decode_audio(&media, range, RATE)? else {
        return Ok(None);
    };
    let audio_start = range.map_or(0.0, |(s, _)| s.max(0.0));
    let probabilities = if samples.is_empty() {
        Vec::new()
    } else {
        speech_probabilities(vad, &samples)?
    };

    // mouth motion per frame
    let mut times = Vec::new();
    let mut motion: Vec<Option<f64>> = Vec::new();
    let mut previous: Option<Vec<u8>> = None;
    let mut face: Option<Face> = None;
    let mut detected_at = f64::NEG_INFINITY;
    let mut failure = None;
    decode_frames_with(
        &media,
        Sampling::All,
        Resize::Original,
        true,
        Extras {
            range: Some(range.unwrap_or((0.0, f64::INFINITY))),
            motion_vectors: false,
        },
        |frame| {
            let pts_s = frame.pts_s;
            let rgb = Rgb::from(frame);
            if pts_s - detected_at >= DETECT_EVERY_S - 1e-6 {
                detected_at = pts_s;
                match mtcnn.detect(&rgb) {
                    Ok(faces) => {
                        face = faces
                            .into_iter()
                            .max_by(|a, b| a.area().total_cmp(&b.area()));
                    }
                    Err(e) => {
                        failure = Some(e);
                        return std::ops::ControlFlow::Break(());
                    }
                }
            }
            let gray = rgb.gray();
            let m = match (
                &previous,
                face.as_ref()
                    .and_then(|f| regions(f, rgb.width, rgb.height)),
            ) {
                (Some(prev), Some([mouth, whole])) if prev.len() == gray.len() => Some(
                    region_diff(prev, &gray, rgb.width, mouth)
                        - region_diff(prev, &gray, rgb.width, whole),
                ),
                _ => None,
            };
            times.push(pts_s);
            motion.push(m);
            previous = Some(gray);
            std::ops::ControlFlow::Continue(())
        },
    )?;
    if let Some(e) = failure {
        return Err(e);
    }
    let frames = times.len();
    let fps = if frames > 1 {
        (frames - 1) as f64 / (times[frames - 1] - times[0]).max(1e-9)
    } else {
        25.0
    };
    // speech probability per frame interval
    let speech: Vec<Option<f64>> = times
        .iter()
        .map(|&t| {
            let (from, to) = (t - audio_start, t - audio_start + 1.0 / fps);
            let a = (from / WINDOW_S).floor().max(0.0) as usize;
            let b = ((to / WINDOW_S).ceil().max(0.0) as usize).min(probabilities.len());
            (b > a).then(|| {
                probabilities[a..b]
                    .iter()
                    .map(|&p| f64::from(p))
                    .sum::<f64>()
                    / (b - a) as f64
            })
        })
        .collect();
    let smoothed = smooth(&motion, ((SMOOTH_S * fps).round() as usize).max(1));
    let with_face = motion.iter().filter(|m| m.is_some()).count();
    let speaking = speech.iter().flatten().filter(|&&p| p >= 0.5).count();
    let at_offset = |lag: i64| {
        correlation((0..frames).filter_map(|i| {
            let j = i as i64 + lag;
            if j < 0 || j >= frames as i64 {
                return None;
            }
            Some((smoothed[i]?, speech[j as usize]?))
        }))
    };
    let scored = speech.iter().flatten().count();
    let error = if frames == 0 {
        Some("no video frames in the range".to_owned())
    } else if with_face < 3 {
        Some("no face in the range: lip sync cannot be judged".to_owned())
    } else if speaking == 0 {
        Some("no speech in the range: lip sync cannot be judged".to_owned())
    } else if speaking == scored {
        Some("speech without a pause over the whole range: lip sync cannot be judged".to_owned())
    } else {
        None
    };
    let score = error.is_none().then(|| at_offset(0)).flatten();
    let max_lag = (MAX_OFFSET_S * fps).round() as i64;
    let best = score.and_then(|_| {
        (-max_lag..=max_lag)
            .filter_map(|lag| at_offset(lag).map(|r| (lag, r)))
            .max_by(|a, b| a.1.total_cmp(&b.1))
    });
    let error = match (error, score) {
        (None, None) => {
            Some("mouth motion does not vary over the range: lip sync cannot be judged".to_owned())
        }
        (e, _) => e,
    };
    Ok(Some(LipSync {
        score,
        best_offset_s: best.map(|(lag, _)| lag as f64 / fps),
        best_score: best.map(|(_, r)| r),
        frames,
        face_fraction: if frames == 0 {
            0.0
        } else {
            with_face as f64 / frames as f64
        },
        speech_fraction: if frames == 0 {
            0.0
        } else {
            speaking as f64 / frames as f64
        },
        error,
    }))
}

fn result_fields() -> Fields {
    Fields::from(vec![
        Field::new("score", DataType::Float64, true),
        Field::new("best_offset_s", DataType::Float64, true),
        Field::new("best_score", DataType::Float64, true),
        Field::new("frames", DataType::Int64, true),
        Field::new("face_fraction", DataType::Float64, true),
        Field::new("speech_fraction", DataType::Float64, true),
        Field::new("error", DataType::Utf8, true),
    ])
}

fn result_value(outcome: Option<LipSync>) -> Result<ScalarValue> {
    let fields = result_fields();
    let Some(r) = outcome else {
        return ScalarValue::try_from(DataType::Struct(fields));
    };
    struct_value(
        &fields,
        vec![
            ScalarValue::Float64(r.score),
            ScalarValue::Float64(r.best_offset_s),
            ScalarValue::Float64(r.best_score),
            ScalarValue::Int64(Some(r.frames as i64)),
            ScalarValue::Float64(Some(r.face_fraction)),
            ScalarValue::Float64(Some(r.speech_fraction)),
            ScalarValue::Utf8(r.error),
        ],
    )
}

/// `lip_sync(path [, start_s, end_s])`.
#[derive(Debug, Default)]
pub struct LipSyncOp;

impl VideoOperator for LipSyncOp {
    fn name(&self) -> &'static str {
        "lip_sync"
    }

    fn description(&self) -> &'static str {
        "How well mouth motion follows speech over the video or [start_s, end_s) (a heuristic over MTCNN mouth landmarks and Silero VAD)."
    }

    fn models(&self) -> &'static [&'static str] {
        &[PNET_MODEL, RNET_MODEL, ONET_MODEL, SILERO_MODEL]
    }

    fn args(&self) -> &'static [Arg] {
        const ARGS: &[Arg] = &[
            Arg::path(),
            Arg::optional_seconds("start_s"),
            Arg::optional_seconds("end_s"),
        ];
        ARGS
    }

    fn arities(&self) -> Vec<usize> {
        vec![1, 3]
    }

    fn return_type(&self) -> DataType {
        DataType::Struct(result_fields())
    }

    fn failed(&self, message: &str) -> Result<ScalarValue> {
        error_struct(&result_fields(), message)
    }

    fn evaluate(&self, batch: &Batch<'_>) -> Result<Vec<RowOutcome>> {
        let mtcnn = Mtcnn::of(batch.models()).map_err(UdfError::into_task_error)?;
        let vad = batch.model(SILERO_MODEL)?;
        Ok(batch.each_row(|row| {
            let outcome = lip_sync(&mtcnn, &vad, &batch.source(row)?, batch.range(row))?;
            result_value(outcome).map_err(|e| UdfError::Option(e.to_string()))
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn correlation_of_lines() {
        let up = (0..10).map(|i| (f64::from(i), 2.0 * f64::from(i) + 1.0));
        assert!((correlation(up).unwrap_or(0.0) - 1.0).abs() < 1e-12);
        let down = (0..10).map(|i| (f64::from(i), -f64::from(i)));
        assert!((correlation(down).unwrap_or(0.0) + 1.0).abs() < 1e-12);
        assert_eq!(correlation((0..10).map(|i| (f64::from(i), 3.0))), None);
    }

    #[test]
    fn smoothing_skips_gaps() {
        let v = [Some(1.0), None, Some(3.0), Some(5.0)];
        assert_eq!(smooth(&v, 3), vec![Some(1.0), None, Some(4.0), Some(4.0)]);
    }
}
