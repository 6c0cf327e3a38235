//! `embed_clip(path, start_s, end_s, options)`: a clip's embedding from an ONNX image
//! embedder (a CLIP or SigLIP vision tower, a copy-detection model exported to one file).
//!
//! The clip's `frames=N` frames (default 4) are taken evenly spaced over `[start_s,
//! end_s)`: frame `i` is the first frame at or after `start_s + i * (end_s - start_s) / N`
//! (the start of its Nth of the clip, as `caption` takes them; a time past the video's last
//! frame repeats the clip's last frame). Each is scaled to the model's input size and
//! normalised as `CREATE FUNCTION ... LANGUAGE onnx` does it (the same options: `model=`,
//! `size=WxH`, `scale=`, `mean=`, `std=`, `layout=`, `input=`, `output=`), the frames of a
//! batch's rows go through the model together (`onnx.batch_size` per call on CUDA, one on
//! the CPU), and the clip's vectors are averaged and L2-normalised: a `REAL[]` whose
//! cosine similarity to another clip's is its dot product.
//!
//! The frames of one video's rows are read in one decode pass per run of nearby times
//! (`framefusion_media::decode::frames_at`), not a seek each; this pass is the operator's
//! own, not the query's shared one. The model is chosen per call (its options), so the
//! scaffold loads it (`VideoOperator::models_for`) and a cluster runs the call on its GPU
//! pool. A row whose video or frames cannot be read is that row's failure (null, reported
//! to the run); a missing model or a model that does not take the frames fails the query.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, Float32Builder, ListBuilder};
use datafusion::arrow::datatypes::{DataType, Field};
use datafusion::common::config::ConfigOptions;
use datafusion::common::{Result, ScalarValue};

use crate::UdfError;
use crate::media::decode::Resize;
use crate::models::OnnxOptions;
use crate::models::user::ModelSpec;
use crate::operator::{Arg, Batch, RowOutcome, VideoOperator};
use crate::storage::StorageOptions;

/// Frames per clip when the options do not say.
pub const DEFAULT_FRAMES: usize = 4;

/// At most this many frames per clip.
pub const MAX_FRAMES: usize = 256;

/// The bytes of scaled frames held at once per video (frames are read in chunks).
const FRAMES_HELD_BYTES: usize = 64 << 20;

/// What a call's options ask: the model and how it is fed, and how many frames per clip.
#[derive(Debug, Clone)]
pub struct EmbedSpec {
    /// The model and its input.
    pub model: ModelSpec,
    /// Frames per clip.
    pub frames: usize,
}

impl EmbedSpec {
    /// Parses `frames=N` and the model options of `CREATE FUNCTION ... LANGUAGE onnx`.
    pub fn parse(text: &str) -> std::result::Result<Self, UdfError> {
        let mut frames = DEFAULT_FRAMES;
        let mut rest = Vec::new();
        for item in text.split([' ', ',', '\n', '\t']).filter(|s| !s.is_empty()) {
            match item.split_once('=') {
                Some((key, value)) if key.trim().eq_ignore_ascii_case("frames") => {
                    frames = value
                        .trim()
                        .parse::<usize>()
                        .ok()
                        .filter(|n| (1..=MAX_FRAMES).contains(n))
                        .ok_or_else(|| {
                            UdfError::Option(format!(
                                "embed_clip: frames={value}: give a whole number from 1 to {MAX_FRAMES}"
                            ))
                        })?;
                }
                Some((key, name)) if key.trim().eq_ignore_ascii_case("function") => {
                    // a literal's function=NAME is resolved while the query is planned
                    return Err(UdfError::Option(format!(
                        "embed_clip: function={name} must be given in literal options (it is resolved when the query is planned); or give the model's options (model=FILE size=WxH ...)"
                    )));
                }
                _ => rest.push(item),
            }
        }
        let model = ModelSpec::parse(&rest.join(" ")).map_err(|e| {
            let reason = match e.find_root() {
                datafusion::error::DataFusionError::External(inner) => inner.to_string(),
                other => other.to_string(),
            };
            UdfError::Option(format!("embed_clip: {reason}"))
        })?;
        Ok(Self { model, frames })
    }

    /// The model file as the scaffold loads it: absolute (a name alone lies in
    /// `onnx.model_dir`).
    fn model_file(&self, config: &ConfigOptions) -> String {
        let path = OnnxOptions::from_config(config).model_path(&self.model.model);
        std::path::absolute(&path)
            .unwrap_or(path)
            .display()
            .to_string()
    }

    /// The times of the frames of clip `[start_s, end_s)`.
    pub fn times(&self, start_s: f64, end_s: f64) -> Vec<f64> {
        crate::caption::clip_times(start_s, end_s, self.frames)
    }
}

/// `embed_clip(path, start_s, end_s, options)`: see the module docs.
#[derive(Debug, Default)]
pub struct EmbedClip;

impl VideoOperator for EmbedClip {
    fn name(&self) -> &'static str {
        "embed_clip"
    }

    fn description(&self) -> &'static str {
        "A clip's embedding: an ONNX image embedder over N evenly spaced frames, averaged and L2-normalised."
    }

    fn args(&self) -> &'static [Arg] {
        const ARGS: &[Arg] = &[
            Arg::path(),
            Arg::seconds("start_s"),
            Arg::seconds("end_s"),
            Arg::options("options"),
        ];
        ARGS
    }

    fn arities(&self) -> Vec<usize> {
        vec![4]
    }

    fn return_type(&self) -> DataType {
        DataType::List(Arc::new(Field::new_list_field(DataType::Float32, true)))
    }

    fn runs_model(&self) -> bool {
        true
    }

    fn models_for(&self, config: &ConfigOptions, options: Option<&str>) -> Vec<String> {
        // options that do not parse name no model: the rows say why
        options
            .and_then(|o| EmbedSpec::parse(o).ok())
            .map(|spec| vec![spec.model_file(config)])
            .unwrap_or_default()
    }

    fn resolve_options(
        &self,
        options: &str,
        registry: &dyn datafusion::execution::FunctionRegistry,
    ) -> std::result::Result<Option<String>, UdfError> {
        let mut name = None;
        let mut rest = Vec::new();
        for item in options
            .split([' ', ',', '\n', '\t'])
            .filter(|s| !s.is_empty())
        {
            match item.split_once('=') {
                Some((key, value)) if key.trim().eq_ignore_ascii_case("function") => {
                    name = Some(value.trim());
                }
                _ => rest.push(item),
            }
        }
        let Some(name) = name else {
            return Ok(None);
        };
        let udf = registry.udf(name).map_err(|_| {
            UdfError::Setup(format!(
                "embed_clip: function={name}: no such function; register the embedder first (CREATE FUNCTION {name}(VARCHAR, DOUBLE) RETURNS REAL[] LANGUAGE onnx AS '...')"
            ))
        })?;
        let user = (udf.inner().as_ref() as &dyn std::any::Any)
            .downcast_ref::<crate::models::user::OnnxModelUdf>()
            .filter(|u| u.returns_list())
            .ok_or_else(|| {
                UdfError::Setup(format!(
                    "embed_clip: function={name} is not an embedder: give a function registered with RETURNS REAL[] LANGUAGE onnx"
                ))
            })?;
        rest.push(user.spec_text());
        Ok(Some(rest.join(" ")))
    }

    fn evaluate(&self, batch: &Batch<'_>) -> Result<Vec<RowOutcome>> {
        let mut outcomes: HashMap<usize, RowOutcome> = HashMap::new();
        // the rows of each options text, then of each video
        let mut calls: BTreeMap<&str, BTreeMap<&str, Vec<usize>>> = BTreeMap::new();
        for &row in batch.rows() {
            let Some(options) = batch.text(3, row) else {
                outcomes.insert(
                    row,
                    Err(UdfError::Option(
                        "embed_clip: no options; give at least model=FILE size=WxH".to_owned(),
                    )),
                );
                continue;
            };
            calls
                .entry(options)
                .or_default()
                .entry(batch.path(row))
                .or_default()
                .push(row);
        }
        for (options, videos) in calls {
            let spec = match EmbedSpec::parse(options) {
                Ok(spec) => spec,
                Err(e) => return Err(e.into_task_error()),
            };
            let model = batch.model(&spec.model_file(batch.config))?;
            let input = spec
                .model
                .check(&model)
                .map_err(UdfError::into_task_error)?;
            let per_call = match model
                .inputs
                .iter()
                .find(|p| p.name == input)
                .and_then(|p| p.shape.first())
            {
                Some(1) => 1,
                _ => OnnxOptions::from_config(batch.config).frames_per_call(&model),
            };
            for rows in videos.into_values() {
                embed_video(batch, &spec, &model, &input, per_call, &rows, &mut outcomes)?;
            }
        }
        Ok(batch
            .rows()
            .iter()
            .map(|row| {
                outcomes.remove(row).unwrap_or_else(|| {
                    Err(UdfError::Option(
                        "embed_clip: the row was not computed".to_owned(),
                    ))
                })
            })
            .collect())
    }
}

/// Embeds the clips of `rows` (all of one video) into `outcomes`. An error
/// returned fails the query (the model); a video's or a row's own failure is its rows'.
#[allow(clippy::too_many_arguments)]
fn embed_video(
    batch: &Batch<'_>,
    spec: &EmbedSpec,
    model: &crate::models::LoadedModel,
    input: &str,
    per_call: usize,
    rows: &[usize],
    outcomes: &mut HashMap<usize, RowOutcome>,
) -> Result<()> {
    let (width, height) = (spec.model.width, spec.model.height);
    let frame_bytes = (width as usize * height as usize * 3).max(1);
    let chunk_rows = (FRAMES_HELD_BYTES / (frame_bytes * spec.frames)).max(1);
    let media = match batch
        .source(rows[0])
        .and_then(|s| Ok(s.media_input(&StorageOptions::default())?))
    {
        Ok(media) => media,
        Err(e) if e.fails_the_query() => return Err(e.into_task_error()),
        Err(e) => {
            for &row in rows {
                outcomes.insert(row, Err(UdfError::Option(e.to_string())));
            }
            return Ok(());
        }
    };
    for chunk in rows.chunks(chunk_rows) {
        let mut times = Vec::with_capacity(chunk.len() * spec.frames);
        for &row in chunk {
            let (start_s, end_s) = batch.range(row).unwrap_or_default();
            times.extend(spec.times(start_s, end_s));
        }
        let frames = crate::error::retry_transient(|| -> std::result::Result<_, UdfError> {
            Ok(crate::media::decode::frames_at(
                &media,
                &times,
                Resize::Exact(width, height),
            )?)
        });
        let frames = match frames {
            Ok(frames) => frames,
            Err(e) if e.fails_the_query() => return Err(e.into_task_error()),
            Err(e) => {
                for &row in chunk {
                    outcomes.insert(row, Err(UdfError::Option(e.to_string())));
                }
                continue;
            }
        };
        // each row's tensors, or its first frame's failure
        let mut tensors: Vec<(usize, Vec<f32>)> = Vec::new();
        let mut frames = frames.into_iter();
        for &row in chunk {
            let mut data: Vec<f32> = Vec::with_capacity(spec.frames * frame_bytes);
            let mut failed = None;
            let mut last: Option<Vec<f32>> = None;
            for frame in frames.by_ref().take(spec.frames) {
                match (frame, &last) {
                    (Ok(f), _) => {
                        let tensor = spec.model.tensor(&f.rgb);
                        data.extend_from_slice(&tensor);
                        last = Some(tensor);
                    }
                    // past the video's last frame: the clip's last frame again
                    (Err(_), Some(previous)) => data.extend_from_slice(previous),
                    (Err(e), None) => {
                        failed.get_or_insert(UdfError::from(e));
                    }
                }
            }
            match failed {
                Some(e) if e.fails_the_query() => return Err(e.into_task_error()),
                Some(e) => {
                    outcomes.insert(row, Err(e));
                }
                None => tensors.push((row, data)),
            }
        }
        let vectors = run_frames(spec, model, input, per_call, &tensors)
            .map_err(UdfError::into_task_error)?;
        for ((row, _), vector) in tensors.iter().zip(vectors) {
            outcomes.insert(*row, Ok(list_value(vector)));
        }
    }
    Ok(())
}

/// The pooled, normalised embedding of each row's frames (`tensors`: each row's frames'
/// input values, `spec.frames` frames each), running the model `per_call` frames at once.
fn run_frames(
    spec: &EmbedSpec,
    model: &crate::models::LoadedModel,
    input: &str,
    per_call: usize,
    tensors: &[(usize, Vec<f32>)],
) -> std::result::Result<Vec<Vec<f32>>, UdfError> {
    let frame_values = spec.model.width as usize * spec.model.height as usize * 3;
    let all: Vec<f32> = tensors
        .iter()
        .flat_map(|(_, t)| t.iter().copied())
        .collect();
    let total = all.len() / frame_values.max(1);
    let mut per_frame: Vec<Vec<f32>> = Vec::with_capacity(total);
    for start in (0..total).step_by(per_call.max(1)) {
        let n = per_call.max(1).min(total - start);
        let data = all[start * frame_values..(start + n) * frame_values].to_vec();
        let (_, values) = model.run(
            input,
            spec.model.shape(n),
            data,
            spec.model.output.as_deref(),
        )?;
        let each = values.len() / n.max(1);
        if each == 0 {
            return Err(UdfError::Setup(format!(
                "model '{}' gave no values for a frame",
                model.path.display()
            )));
        }
        per_frame.extend(values.chunks(each).map(<[f32]>::to_vec));
    }
    Ok(per_frame.chunks(spec.frames).map(pooled).collect())
}

/// The mean of `vectors`, L2-normalised (a zero mean stays zero).
fn pooled(vectors: &[Vec<f32>]) -> Vec<f32> {
    let dim = vectors.first().map_or(0, Vec::len);
    let mut mean = vec![0f64; dim];
    for v in vectors {
        for (m, x) in mean.iter_mut().zip(v) {
            *m += f64::from(*x);
        }
    }
    let n = vectors.len().max(1) as f64;
    mean.iter_mut().for_each(|m| *m /= n);
    let norm = mean.iter().map(|m| m * m).sum::<f64>().sqrt();
    mean.iter()
        .map(|m| if norm > 0.0 { (m / norm) as f32 } else { 0.0 })
        .collect()
}

fn list_value(vector: Vec<f32>) -> ScalarValue {
    let mut b = ListBuilder::new(Float32Builder::new());
    b.values().append_slice(&vector);
    b.append(true);
    let array: ArrayRef = Arc::new(b.finish());
    ScalarValue::try_from_array(&array, 0).unwrap_or(ScalarValue::Null)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_and_times() {
        let spec = EmbedSpec::parse("model=clip.onnx size=224x224 frames=4")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(spec.frames, 4);
        assert_eq!(spec.times(0.0, 4.0), vec![0.0, 1.0, 2.0, 3.0]);
        assert!(EmbedSpec::parse("model=clip.onnx size=224x224 frames=0").is_err());
        assert!(EmbedSpec::parse("size=224x224").is_err(), "no model");
        assert!(EmbedSpec::parse("function=f").is_err());
        let p = pooled(&[vec![3.0, 0.0], vec![1.0, 0.0]]);
        assert_eq!(p, vec![1.0, 0.0]);
        let p = pooled(&[vec![1.0, 1.0]]);
        assert!((p[0] - std::f32::consts::FRAC_1_SQRT_2).abs() < 1e-7);
    }
}
