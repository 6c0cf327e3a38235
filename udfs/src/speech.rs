//! `speech_activity(path [, start_s, end_s])`: speech in a video's sound track, with
//! Silero VAD v6 on ONNX Runtime.
//!
//! The track (or the range) is decoded, mixed to mono and resampled to 16 kHz; the model
//! scores windows of 512 samples (32 ms), each with the 64 samples before it as context and
//! the recurrent state carried over, as Silero's own ONNX wrapper does. Segments follow
//! Silero's `get_speech_timestamps` at its defaults: speech starts at a window scoring at
//! least 0.5, ends once windows stay under 0.35 for 100 ms, segments shorter than 250 ms
//! are dropped and each is padded by 30 ms (within the range). `speech_fraction` is the
//! segments' share of the range. A video without audio gives null.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Fields};
use datafusion::common::{Result as DfResult, ScalarValue};

use crate::UdfError;
use crate::media::audio::decode_audio;
use crate::media::source::VideoSource;
use crate::models::LoadedModel;
use crate::operator::{
    Arg, Batch, RowOutcome, VideoOperator, error_struct, list_value, struct_value,
};
use crate::storage::StorageOptions;

/// The model file in `onnx.model_dir` (installed by scripts/setup.sh).
pub const SILERO_MODEL: &str = "silero_vad.onnx";
const RATE: u32 = 16_000;
const WINDOW: usize = 512;
const CONTEXT: usize = 64;
const THRESHOLD: f32 = 0.5;
const NEG_THRESHOLD: f32 = THRESHOLD - 0.15;
const MIN_SPEECH_S: f64 = 0.25;
const MIN_SILENCE_S: f64 = 0.1;
const PAD_S: f64 = 0.03;

/// Speech probability of each 32 ms window of 16 kHz mono `samples`.
pub fn speech_probabilities(model: &LoadedModel, samples: &[f32]) -> Result<Vec<f32>, UdfError> {
    let err =
        |e: ort::Error| UdfError::Model(format!("Silero VAD '{}': {e}", model.path.display()));
    let mut state = vec![0f32; 2 * 128];
    let mut context = vec![0f32; CONTEXT];
    let mut probabilities = Vec::with_capacity(samples.len() / WINDOW + 1);
    let mut session = model.session();
    let started = std::time::Instant::now();
    for chunk in samples.chunks(WINDOW) {
        let mut window = context.clone();
        window.extend_from_slice(chunk);
        window.resize(CONTEXT + WINDOW, 0.0);
        context.copy_from_slice(&window[WINDOW..]);
        let input =
            ort::value::Tensor::from_array(([1usize, CONTEXT + WINDOW], window)).map_err(err)?;
        let st = ort::value::Tensor::from_array(([2usize, 1, 128], state.clone())).map_err(err)?;
        let sr = ort::value::Tensor::from_array(([1usize], vec![i64::from(RATE)])).map_err(err)?;
        let outputs = session
            .run(ort::inputs!["input" => input, "state" => st, "sr" => sr])
            .map_err(err)?;
        let (_, p) = outputs[0].try_extract_tensor::<f32>().map_err(err)?;
        probabilities.push(p.first().copied().unwrap_or(0.0));
        let (_, s) = outputs[1].try_extract_tensor::<f32>().map_err(err)?;
        let n = state.len();
        state.copy_from_slice(&s[..n]);
    }
    framefusion_media::metrics::inference_seconds(
        &crate::models::model_label(&model.path),
        started.elapsed().as_secs_f64(),
    );
    Ok(probabilities)
}

/// Speech segments (seconds from the start of the scored audio) of window probabilities,
/// as Silero's `get_speech_timestamps` at its defaults; `duration_s` bounds the padding.
pub fn segments(probabilities: &[f32], duration_s: f64) -> Vec<(f64, f64)> {
    let window_s = WINDOW as f64 / f64::from(RATE);
    let mut out: Vec<(f64, f64)> = Vec::new();
    let mut start: Option<f64> = None;
    let mut silence_from: Option<f64> = None;
    for (i, &p) in probabilities.iter().enumerate() {
        let t = i as f64 * window_s;
        if p >= THRESHOLD {
            silence_from = None;
            start.get_or_insert(t);
        } else if let Some(s) = start
            && p < NEG_THRESHOLD
        {
            let quiet = *silence_from.get_or_insert(t);
            if t + window_s - quiet >= MIN_SILENCE_S {
                if quiet - s >= MIN_SPEECH_S {
                    out.push((s, quiet));
                }
                start = None;
                silence_from = None;
            }
        }
    }
    if let Some(s) = start {
        let end = (probabilities.len() as f64 * window_s).min(duration_s);
        if end - s >= MIN_SPEECH_S {
            out.push((s, end));
        }
    }
    // pad, within the audio, and merge what the padding joins
    let mut padded: Vec<(f64, f64)> = Vec::with_capacity(out.len());
    for (s, e) in out {
        let (s, e) = ((s - PAD_S).max(0.0), (e + PAD_S).min(duration_s));
        match padded.last_mut() {
            Some(last) if s <= last.1 => last.1 = last.1.max(e),
            _ => padded.push((s, e)),
        }
    }
    padded
}

fn segment_fields() -> Fields {
    Fields::from(vec![
        Field::new("start_s", DataType::Float64, false),
        Field::new("end_s", DataType::Float64, false),
    ])
}

fn result_fields() -> Fields {
    Fields::from(vec![
        Field::new("speech_fraction", DataType::Float64, true),
        Field::new(
            "segments",
            DataType::List(Arc::new(Field::new_list_field(
                DataType::Struct(segment_fields()),
                true,
            ))),
            true,
        ),
        Field::new("error", DataType::Utf8, true),
    ])
}

/// What one row gives: no audio, or the result.
enum Outcome {
    NoAudio,
    Speech {
        fraction: f64,
        segments: Vec<(f64, f64)>,
    },
}

fn analyse(
    model: &LoadedModel,
    source: &VideoSource,
    range: Option<(f64, f64)>,
) -> Result<Outcome, UdfError> {
    let media = source.media_input(&StorageOptions::default())?;
    let Some(samples) = decode_audio(&media, range, RATE)? else {
        return Ok(Outcome::NoAudio);
    };
    let duration_s = samples.len() as f64 / f64::from(RATE);
    log::debug!(
        "speech_activity: {}: {duration_s:.3} s of audio",
        media.display
    );
    if samples.is_empty() {
        return Ok(Outcome::Speech {
            fraction: 0.0,
            segments: Vec::new(),
        });
    }
    let probabilities = speech_probabilities(model, &samples)?;
    let found = segments(&probabilities, duration_s);
    // (an empty f64 sum is -0.0)
    let speech: f64 = found.iter().map(|(s, e)| e - s).sum::<f64>() + 0.0;
    let offset = range.map_or(0.0, |(s, _)| s.max(0.0));
    Ok(Outcome::Speech {
        fraction: (speech / duration_s).min(1.0),
        segments: found
            .into_iter()
            .map(|(s, e)| (s + offset, e + offset))
            .collect(),
    })
}

fn outcome_value(outcome: Outcome) -> DfResult<ScalarValue> {
    match outcome {
        Outcome::NoAudio => ScalarValue::try_from(DataType::Struct(result_fields())),
        Outcome::Speech { fraction, segments } => {
            let items = segments
                .into_iter()
                .map(|(s, e)| {
                    struct_value(
                        &segment_fields(),
                        vec![ScalarValue::Float64(Some(s)), ScalarValue::Float64(Some(e))],
                    )
                })
                .collect::<DfResult<Vec<_>>>()?;
            struct_value(
                &result_fields(),
                vec![
                    ScalarValue::Float64(Some(fraction)),
                    list_value(items, &DataType::Struct(segment_fields())),
                    ScalarValue::Utf8(None),
                ],
            )
        }
    }
}

/// `speech_activity(path [, start_s, end_s])`.
#[derive(Debug, Default)]
pub struct SpeechActivity;

impl VideoOperator for SpeechActivity {
    fn name(&self) -> &'static str {
        "speech_activity"
    }

    fn description(&self) -> &'static str {
        "Speech in the sound track (Silero VAD) over the video or [start_s, end_s): the share of speech and its segments."
    }

    fn models(&self) -> &'static [&'static str] {
        &[SILERO_MODEL]
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

    fn failed(&self, message: &str) -> DfResult<ScalarValue> {
        error_struct(&result_fields(), message)
    }

    fn evaluate(&self, batch: &Batch<'_>) -> DfResult<Vec<RowOutcome>> {
        let model = batch.model(SILERO_MODEL)?;
        Ok(batch.each_row(|row| {
            let outcome = analyse(&model, &batch.source(row)?, batch.range(row))?;
            outcome_value(outcome).map_err(|e| UdfError::Option(e.to_string()))
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_follow_silero_rules() {
        let w = WINDOW as f64 / f64::from(RATE); // 32 ms
        // 1 s of silence, 1 s of speech, 1 s of silence
        let mut p = vec![0.0f32; 31];
        p.extend(vec![0.9f32; 31]);
        p.extend(vec![0.0f32; 31]);
        let s = segments(&p, 93.0 * w);
        assert_eq!(s.len(), 1);
        assert!((s[0].0 - (31.0 * w - PAD_S)).abs() < 1e-9, "{s:?}");
        assert!((s[0].1 - (62.0 * w + PAD_S)).abs() < 1e-9, "{s:?}");
        // a 64 ms blip is too short; a 64 ms dip does not split speech
        let mut p = vec![0.9f32; 2];
        p.extend(vec![0.0f32; 20]);
        p.extend(vec![0.9f32; 20]);
        p.extend(vec![0.0f32; 2]);
        p.extend(vec![0.9f32; 20]);
        let s = segments(&p, 64.0 * w);
        assert_eq!(s.len(), 1, "{s:?}");
        assert!((s[0].0 - (22.0 * w - PAD_S)).abs() < 1e-9, "{s:?}");
    }
}
