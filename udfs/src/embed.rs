//! `embed_clip(path, start_s, end_s, options)`: a clip's embedding from an ONNX image
//! embedder (a CLIP or SigLIP vision tower, a copy-detection model exported to one file).
//!
//! The clip's `frames=N` frames (default 4) are taken evenly spaced over `[start_s,
//! end_s)`: frame `i` is the first frame at or after `start_s + i * (end_s - start_s) / N`
//! (the start of its Nth of the clip, as `caption` takes them; a time past the video's last
//! frame repeats the clip's last frame). Each is scaled to the model's input size and
//! normalised as `CREATE FUNCTION ... LANGUAGE onnx` does it (the same options: `model=`,
//! `size=WxH`, `scale=`, `mean=`, `std=`, `layout=`, `input=`, `output=`), or, with
//! `folder=DIR` (a transformers.js export: `vision_model.onnx` and
//! `preprocessor_config.json`), scaled, centre-cropped and normalised as its image
//! processor says ([`Embedder`]); the frames of a batch's rows go through the model
//! together (`onnx.batch_size` per call on CUDA, one on the CPU), and the clip's vectors
//! are averaged and L2-normalised: a `REAL[]` (with `dim=N`, a fixed-size list of N)
//! whose cosine similarity to another clip's is its dot product.
//!
//! The frames of one video's rows are read in one decode pass per run of nearby times
//! (`framefusion_media::decode::frames_at`), not a seek each; this pass is the operator's
//! own, not the query's shared one. The model is chosen per call (its options), so the
//! scaffold loads it (`VideoOperator::models_for`) and a cluster runs the call on its GPU
//! pool. A row whose video or frames cannot be read is that row's failure (null, reported
//! to the run); a missing model or a model that does not take the frames fails the query.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, FixedSizeListBuilder, Float32Builder, ListBuilder};
use datafusion::arrow::datatypes::{DataType, Field};
use datafusion::common::config::ConfigOptions;
use datafusion::common::{Result, ScalarValue};

use crate::UdfError;
use crate::media::decode::{DecodedFrame, Resize};
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
    pub model: EmbedModel,
    /// Frames per clip.
    pub frames: usize,
    /// The embedding's length when the options fix it (`dim=N`): the call returns a
    /// fixed-size list, and a model whose vectors have another length fails the query.
    pub dim: Option<usize>,
}

/// Where the embedder is and how frames are prepared for it.
#[derive(Debug, Clone)]
pub enum EmbedModel {
    /// One model file, fed as `CREATE FUNCTION ... LANGUAGE onnx` feeds a frame.
    File(ModelSpec),
    /// A transformers.js (or Optimum) folder: `vision_model.onnx` (or
    /// `onnx/vision_model.onnx`) prepared as its `preprocessor_config.json` says.
    Folder {
        /// The folder (a path, or a name under `onnx.model_dir`).
        folder: String,
        /// The input to feed (default: the model's first).
        input: Option<String>,
        /// The output to read (default: `image_embeds` when the model has it, else its
        /// first).
        output: Option<String>,
    },
}

/// An embedder ready to feed: its file, the frame size the decoder scales to, the centre
/// crop, and the model spec (size, normalisation, layout) of the cropped frames.
#[derive(Debug, Clone)]
pub struct Embedder {
    /// The model file, absolute.
    pub file: String,
    /// How the decoder scales frames.
    pub resize: Resize,
    /// The centre crop of the scaled frame (width, height), if any.
    pub crop: Option<(u32, u32)>,
    /// The model's input (the cropped frame's size) and normalisation.
    pub spec: ModelSpec,
}

/// The image processor's settings of an embedder folder (`preprocessor_config.json`).
#[derive(Debug, Clone, serde::Deserialize)]
struct ImageProcessor {
    #[serde(default = "yes")]
    do_resize: bool,
    size: Option<ProcessorSize>,
    #[serde(default)]
    do_center_crop: bool,
    crop_size: Option<ProcessorSize>,
    #[serde(default = "yes")]
    do_rescale: bool,
    #[serde(default = "rescale")]
    rescale_factor: f32,
    #[serde(default = "yes")]
    do_normalize: bool,
    image_mean: Option<Vec<f32>>,
    image_std: Option<Vec<f32>>,
}

/// A size as image processors write it: a number (the shortest edge, or a square crop)
/// or `{"shortest_edge": S}` or `{"height": H, "width": W}`.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(untagged)]
enum ProcessorSize {
    One(u32),
    Shortest { shortest_edge: u32 },
    Exact { height: u32, width: u32 },
}

fn yes() -> bool {
    true
}
fn rescale() -> f32 {
    1.0 / 255.0
}

impl ImageProcessor {
    /// How frames are scaled, cropped and normalised for the model at `file`.
    fn embedder(
        self,
        folder: &std::path::Path,
        file: String,
        input: Option<String>,
        output: Option<String>,
    ) -> std::result::Result<Embedder, UdfError> {
        let bad = |what: &str| {
            UdfError::Setup(format!(
                "embed_clip: the folder '{}': preprocessor_config.json {what}",
                folder.display()
            ))
        };
        let resize = match (self.do_resize, &self.size) {
            (false, _) => Resize::Original,
            (true, Some(ProcessorSize::One(s) | ProcessorSize::Shortest { shortest_edge: s })) => {
                Resize::ShortestSide(*s)
            }
            (true, Some(ProcessorSize::Exact { height, width })) => Resize::Exact(*width, *height),
            (true, None) => return Err(bad("has no size")),
        };
        let crop = match (self.do_center_crop, &self.crop_size) {
            (false, _) => None,
            (true, Some(ProcessorSize::One(s))) => Some((*s, *s)),
            (true, Some(ProcessorSize::Exact { height, width })) => Some((*width, *height)),
            (true, _) => {
                return Err(bad(
                    "asks a centre crop without a crop_size {height, width}",
                ));
            }
        };
        let (width, height) = match (crop, resize) {
            (Some(c), _) => c,
            (None, Resize::Exact(w, h)) => (w, h),
            _ => {
                return Err(bad(
                    "gives no fixed input size (a size {height, width} or a crop)",
                ));
            }
        };
        let triple = |v: Option<Vec<f32>>, default: f32| match v.as_deref() {
            None => Ok([default; 3]),
            Some([a, b, c]) => Ok([*a, *b, *c]),
            Some(_) => Err(bad("has an image_mean or image_std that is not 3 numbers")),
        };
        let (mean, std) = if self.do_normalize {
            (triple(self.image_mean, 0.5)?, triple(self.image_std, 0.5)?)
        } else {
            ([0.0; 3], [1.0; 3])
        };
        let scale = if self.do_rescale && self.rescale_factor > 0.0 {
            1.0 / self.rescale_factor
        } else {
            1.0
        };
        if std.contains(&0.0) {
            return Err(bad("has an image_std of 0"));
        }
        Ok(Embedder {
            spec: ModelSpec {
                model: file.clone(),
                width,
                height,
                scale,
                mean,
                std,
                nhwc: false,
                input,
                output,
                text: String::new(),
            },
            file,
            resize,
            crop,
        })
    }
}

/// The model file of an embedder folder: `vision_model.onnx`, or transformers.js's
/// `onnx/vision_model.onnx`.
fn folder_model(folder: &std::path::Path) -> std::path::PathBuf {
    let top = folder.join("vision_model.onnx");
    let nested = folder.join("onnx").join("vision_model.onnx");
    if !top.exists() && nested.exists() {
        nested
    } else {
        top
    }
}

impl EmbedSpec {
    /// Parses `frames=N` and the model options of `CREATE FUNCTION ... LANGUAGE onnx`.
    pub fn parse(text: &str) -> std::result::Result<Self, UdfError> {
        let mut frames = DEFAULT_FRAMES;
        let mut dim = None;
        let mut folder = None;
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
                Some((key, value)) if key.trim().eq_ignore_ascii_case("dim") => {
                    dim = Some(
                        value
                            .trim()
                            .parse::<usize>()
                            .ok()
                            .filter(|n| (1..=i32::MAX as usize).contains(n))
                            .ok_or_else(|| {
                                UdfError::Option(format!(
                                    "embed_clip: dim={value}: give the embedding's length, a positive whole number"
                                ))
                            })?,
                    );
                }
                Some((key, value)) if key.trim().eq_ignore_ascii_case("folder") => {
                    folder = Some(value.trim().to_owned());
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
        if let Some(folder) = folder {
            let (mut input, mut output) = (None, None);
            for item in rest {
                match item.split_once('=') {
                    Some(("input", v)) => input = Some(v.to_owned()),
                    Some(("output", v)) => output = Some(v.to_owned()),
                    _ => {
                        return Err(UdfError::Option(format!(
                            "embed_clip: '{item}' with folder=: a folder's preprocessor_config.json says how frames are fed; give only frames=, input= or output="
                        )));
                    }
                }
            }
            return Ok(Self {
                model: EmbedModel::Folder {
                    folder,
                    input,
                    output,
                },
                frames,
                dim,
            });
        }
        let model = ModelSpec::parse(&rest.join(" ")).map_err(|e| {
            let reason = match e.find_root() {
                datafusion::error::DataFusionError::External(inner) => inner.to_string(),
                other => other.to_string(),
            };
            UdfError::Option(format!("embed_clip: {reason}"))
        })?;
        Ok(Self {
            model: EmbedModel::File(model),
            frames,
            dim,
        })
    }

    /// The model file as the scaffold loads it: absolute (a name alone lies in
    /// `onnx.model_dir`).
    fn model_file(&self, config: &ConfigOptions) -> String {
        let onnx = OnnxOptions::from_config(config);
        let path = match &self.model {
            EmbedModel::File(spec) => onnx.model_path(&spec.model),
            EmbedModel::Folder { folder, .. } => folder_model(&onnx.model_path(folder)),
        };
        std::path::absolute(&path)
            .unwrap_or(path)
            .display()
            .to_string()
    }

    /// The embedder these options name, ready to feed (a folder's settings read from its
    /// `preprocessor_config.json`).
    pub fn embedder(&self, config: &ConfigOptions) -> std::result::Result<Embedder, UdfError> {
        let file = self.model_file(config);
        match &self.model {
            EmbedModel::File(spec) => Ok(Embedder {
                file,
                resize: Resize::Exact(spec.width, spec.height),
                crop: None,
                spec: spec.clone(),
            }),
            EmbedModel::Folder {
                folder,
                input,
                output,
            } => {
                let folder = OnnxOptions::from_config(config).model_path(folder);
                let path = folder.join("preprocessor_config.json");
                let text = std::fs::read_to_string(&path).map_err(|e| {
                    UdfError::Setup(format!(
                        "embed_clip: cannot read '{}' ({e}); folder= names a transformers.js or Optimum export of an image embedder (vision_model.onnx and preprocessor_config.json)",
                        path.display()
                    ))
                })?;
                let processor: ImageProcessor = serde_json::from_str(&text).map_err(|e| {
                    UdfError::Setup(format!(
                        "embed_clip: '{}' is not valid ({e})",
                        path.display()
                    ))
                })?;
                processor.embedder(&folder, file, input.clone(), output.clone())
            }
        }
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

    fn return_type_for(&self, options: Option<&str>) -> DataType {
        match options
            .and_then(|o| EmbedSpec::parse(o).ok())
            .and_then(|s| s.dim)
        {
            Some(dim) => DataType::FixedSizeList(
                Arc::new(Field::new_list_field(DataType::Float32, true)),
                dim as i32,
            ),
            None => self.return_type(),
        }
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
            let mut embedder = spec
                .embedder(batch.config)
                .map_err(UdfError::into_task_error)?;
            let model = batch.model(&embedder.file)?;
            if matches!(spec.model, EmbedModel::Folder { output: None, .. })
                && model.outputs.iter().any(|p| p.name == "image_embeds")
            {
                embedder.spec.output = Some("image_embeds".to_owned());
            }
            let input = embedder
                .spec
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
                let call = Call {
                    frames: spec.frames,
                    dim: spec.dim,
                    embedder: &embedder,
                    model: &model,
                    input: &input,
                    per_call,
                };
                embed_video(batch, &call, &rows, &mut outcomes)?;
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

/// One call's embedder, loaded, and how it is fed.
struct Call<'a> {
    frames: usize,
    dim: Option<usize>,
    embedder: &'a Embedder,
    model: &'a crate::models::LoadedModel,
    input: &'a str,
    /// Frames per model run.
    per_call: usize,
}

/// The centre `crop` (width, height) of `frame`, as Hugging Face's `center_crop` takes it
/// (offsets rounded down), or why the frame is too small for it.
fn centre_crop(frame: &DecodedFrame, crop: (u32, u32)) -> std::result::Result<Vec<u8>, UdfError> {
    let (w, h) = (frame.width as usize, frame.height as usize);
    let (cw, ch) = (crop.0 as usize, crop.1 as usize);
    if cw > w || ch > h {
        return Err(UdfError::Option(format!(
            "embed_clip: a {w}x{h} frame is smaller than the {cw}x{ch} crop"
        )));
    }
    let (left, top) = ((w - cw) / 2, (h - ch) / 2);
    let mut out = Vec::with_capacity(cw * ch * 3);
    for row in top..top + ch {
        let at = (row * w + left) * 3;
        out.extend_from_slice(&frame.rgb[at..at + cw * 3]);
    }
    Ok(out)
}

/// Embeds the clips of `rows` (all of one video) into `outcomes`. An error
/// returned fails the query (the model); a video's or a row's own failure is its rows'.
fn embed_video(
    batch: &Batch<'_>,
    call: &Call<'_>,
    rows: &[usize],
    outcomes: &mut HashMap<usize, RowOutcome>,
) -> Result<()> {
    let spec = &call.embedder.spec;
    let frames_per_clip = call.frames;
    let frame_bytes = (spec.width as usize * spec.height as usize * 3).max(1);
    let chunk_rows = (FRAMES_HELD_BYTES / (frame_bytes * frames_per_clip)).max(1);
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
        let mut times = Vec::with_capacity(chunk.len() * frames_per_clip);
        for &row in chunk {
            let (start_s, end_s) = batch.range(row).unwrap_or_default();
            times.extend(crate::caption::clip_times(start_s, end_s, frames_per_clip));
        }
        let frames = crate::error::retry_transient(|| -> std::result::Result<_, UdfError> {
            Ok(crate::media::decode::frames_at(
                &media,
                &times,
                call.embedder.resize,
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
            let mut data: Vec<f32> = Vec::with_capacity(frames_per_clip * frame_bytes);
            let mut failed = None;
            let mut last: Option<Vec<f32>> = None;
            for frame in frames.by_ref().take(frames_per_clip) {
                match (frame, &last) {
                    (Ok(f), _) => {
                        let pixels = match call.embedder.crop {
                            Some(crop) => match centre_crop(&f, crop) {
                                Ok(pixels) => pixels,
                                Err(e) => {
                                    failed.get_or_insert(e);
                                    continue;
                                }
                            },
                            None => f.rgb,
                        };
                        let tensor = spec.tensor(&pixels);
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
        let vectors = run_frames(call, &tensors).map_err(UdfError::into_task_error)?;
        for ((row, _), vector) in tensors.iter().zip(vectors) {
            if let Some(dim) = call.dim
                && vector.len() != dim
            {
                return Err(UdfError::Setup(format!(
                    "embed_clip: model '{}' gives vectors of {} values, not dim={dim}; give its length or leave dim= out",
                    call.model.path.display(),
                    vector.len()
                ))
                .into_task_error());
            }
            outcomes.insert(*row, Ok(list_value(vector, call.dim.is_some())));
        }
    }
    Ok(())
}

/// The pooled, normalised embedding of each row's frames (`tensors`: each row's frames'
/// input values, `call.frames` frames each), running the model `per_call` frames at once.
fn run_frames(
    call: &Call<'_>,
    tensors: &[(usize, Vec<f32>)],
) -> std::result::Result<Vec<Vec<f32>>, UdfError> {
    let (spec, model, per_call) = (&call.embedder.spec, call.model, call.per_call);
    let frame_values = spec.width as usize * spec.height as usize * 3;
    let all: Vec<f32> = tensors
        .iter()
        .flat_map(|(_, t)| t.iter().copied())
        .collect();
    let total = all.len() / frame_values.max(1);
    let mut per_frame: Vec<Vec<f32>> = Vec::with_capacity(total);
    for start in (0..total).step_by(per_call.max(1)) {
        let n = per_call.max(1).min(total - start);
        let data = all[start * frame_values..(start + n) * frame_values].to_vec();
        let (_, values) = model.run(call.input, spec.shape(n), data, spec.output.as_deref())?;
        let each = values.len() / n.max(1);
        if each == 0 {
            return Err(UdfError::Setup(format!(
                "model '{}' gave no values for a frame",
                model.path.display()
            )));
        }
        per_frame.extend(values.chunks(each).map(<[f32]>::to_vec));
    }
    Ok(per_frame.chunks(call.frames).map(pooled).collect())
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

/// A list value of `vector`: a fixed-size list of its length when `fixed`.
fn list_value(vector: Vec<f32>, fixed: bool) -> ScalarValue {
    let array: ArrayRef = if fixed {
        let mut b = FixedSizeListBuilder::new(Float32Builder::new(), vector.len() as i32);
        b.values().append_slice(&vector);
        b.append(true);
        Arc::new(b.finish())
    } else {
        let mut b = ListBuilder::new(Float32Builder::new());
        b.values().append_slice(&vector);
        b.append(true);
        Arc::new(b.finish())
    };
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
