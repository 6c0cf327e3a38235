//! User models: any ONNX file registered as a SQL function.
//!
//! ```sql
//! CREATE FUNCTION aesthetic(VARCHAR, DOUBLE) RETURNS DOUBLE LANGUAGE onnx
//! AS 'model=aesthetic.onnx size=224x224 mean=0.485/0.456/0.406 std=0.229/0.224/0.225 output=score';
//!
//! SELECT path, aesthetic(path, 1.5) FROM raw;
//! ```
//!
//! The function takes a video and a time in seconds; it decodes the frame shown at that
//! time (the rows of one video together: times a few seconds apart are read in one decode
//! pass, not a seek each), scales it to `size` (exact width x height, bilinear), turns RGB bytes into floats
//! (`value / scale`, then `(value - mean) / std` per channel), lays them out as `layout`
//! (`nchw`, the default, or `nhwc`), batches the frames of up to `onnx.batch_size` rows into
//! one inference call and returns the output `output` (default: the model's first): its
//! first value per row for `RETURNS DOUBLE`/`REAL`, or all of the row's values for
//! `RETURNS REAL[]`/`DOUBLE[]` (the default). A row whose video or frame cannot be read is
//! null (the reason is logged); a model that is missing or does not take the frames it is
//! given fails the query with a message that says what the model expects.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{Array, ArrayRef, Float32Builder, Float64Builder, ListBuilder};
use datafusion::arrow::datatypes::{DataType, Field};
use datafusion::common::{Result, ScalarValue, exec_err, plan_err};
use datafusion::execution::context::{FunctionFactory, RegisterFunction, SessionState};
use datafusion::logical_expr::{
    ColumnarValue, CreateFunction, Expr, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
    Volatility,
};
use serde::{Deserialize, Serialize};

use super::{LoadedModel, OnnxOptions};
use crate::UdfError;
use crate::args::{Arg, coerce_call};
use crate::media::decode::Resize;
use crate::media::source::Confinement;
use crate::storage::StorageOptions;

/// How a registered model is fed and read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelSpec {
    /// The model file (a name in `onnx.model_dir`, or a path).
    pub model: String,
    /// Input width.
    pub width: u32,
    /// Input height.
    pub height: u32,
    /// Divisor applied to the 0-255 bytes first.
    pub scale: f32,
    /// Per-channel mean subtracted (after scaling), R, G, B.
    pub mean: [f32; 3],
    /// Per-channel standard deviation divided by, R, G, B.
    pub std: [f32; 3],
    /// `true` for NHWC, `false` for NCHW.
    pub nhwc: bool,
    /// The input to feed (default: the model's first).
    pub input: Option<String>,
    /// The output to return (default: the model's first).
    pub output: Option<String>,
    /// The text it was parsed from.
    pub text: String,
}

fn option_error(message: String) -> datafusion::error::DataFusionError {
    framefusion_common::code::external(UdfError::Option(message))
}

impl ModelSpec {
    /// Parses `model=... size=WxH [scale=255] [mean=a/b/c] [std=a/b/c] [layout=nchw|nhwc]
    /// [input=name] [output=name]` (separated by spaces or commas).
    pub fn parse(text: &str) -> Result<Self> {
        let mut spec = Self {
            model: String::new(),
            width: 0,
            height: 0,
            scale: 255.0,
            mean: [0.0; 3],
            std: [1.0; 3],
            nhwc: false,
            input: None,
            output: None,
            text: text.to_owned(),
        };
        let triple = |key: &str, v: &str| -> Result<[f32; 3]> {
            let parts: Vec<f32> = v
                .split('/')
                .map(|p| p.trim().parse::<f32>())
                .collect::<std::result::Result<_, _>>()
                .map_err(|_| option_error(format!("{key}={v}: give three numbers as a/b/c")))?;
            match parts.as_slice() {
                [a, b, c] => Ok([*a, *b, *c]),
                [a] => Ok([*a; 3]),
                _ => Err(option_error(format!(
                    "{key}={v}: give three numbers as a/b/c"
                ))),
            }
        };
        for item in text.split([' ', ',', '\n', '\t']).filter(|s| !s.is_empty()) {
            let (key, value) = item.split_once('=').ok_or_else(|| {
                option_error(format!("'{item}' in the model spec is not key=value"))
            })?;
            match key.trim().to_ascii_lowercase().as_str() {
                "model" => spec.model = value.to_owned(),
                "size" => {
                    let (w, h) = value
                        .split_once(['x', 'X'])
                        .and_then(|(w, h)| Some((w.parse().ok()?, h.parse().ok()?)))
                        .ok_or_else(|| option_error(format!("size={value}: write WIDTHxHEIGHT")))?;
                    (spec.width, spec.height) = (w, h);
                }
                "scale" => {
                    spec.scale = value
                        .parse()
                        .map_err(|_| option_error(format!("scale={value}: not a number")))?;
                }
                "mean" => spec.mean = triple("mean", value)?,
                "std" => spec.std = triple("std", value)?,
                "layout" => {
                    spec.nhwc = match value.to_ascii_lowercase().as_str() {
                        "nchw" => false,
                        "nhwc" => true,
                        _ => return Err(option_error(format!("layout={value}: use nchw or nhwc"))),
                    }
                }
                "input" => spec.input = Some(value.to_owned()),
                "output" => spec.output = Some(value.to_owned()),
                other => {
                    return Err(option_error(format!(
                        "unknown model option '{other}'; the options are model, size, scale, mean, std, layout, input, output"
                    )));
                }
            }
        }
        if spec.model.is_empty() || spec.width == 0 || spec.height == 0 {
            return Err(option_error(
                "a model spec needs model=FILE and size=WIDTHxHEIGHT".to_owned(),
            ));
        }
        if spec.std.contains(&0.0) || spec.scale == 0.0 {
            return Err(option_error("std and scale must not be 0".to_owned()));
        }
        Ok(spec)
    }

    /// The frame as the model's input values.
    pub(crate) fn tensor(&self, rgb: &[u8]) -> Vec<f32> {
        let plane = (self.width * self.height) as usize;
        let mut out = vec![0f32; plane * 3];
        for (p, px) in rgb.chunks_exact(3).enumerate().take(plane) {
            for (c, &byte) in px.iter().enumerate() {
                let v = (f32::from(byte) / self.scale - self.mean[c]) / self.std[c];
                let at = if self.nhwc { p * 3 + c } else { c * plane + p };
                out[at] = v;
            }
        }
        out
    }

    pub(crate) fn shape(&self, n: usize) -> Vec<i64> {
        let (h, w) = (i64::from(self.height), i64::from(self.width));
        let n = i64::try_from(n).unwrap_or(i64::MAX);
        if self.nhwc {
            vec![n, h, w, 3]
        } else {
            vec![n, 3, h, w]
        }
    }

    /// Checks the model takes what this spec feeds it.
    pub(crate) fn check(&self, model: &LoadedModel) -> std::result::Result<String, UdfError> {
        let input = match &self.input {
            Some(name) => model.inputs.iter().find(|p| &p.name == name),
            None => model.inputs.first(),
        }
        .ok_or_else(|| {
            UdfError::Setup(format!(
                "model '{}' has no input {} (inputs: {})",
                model.path.display(),
                self.input.as_deref().unwrap_or("at all"),
                model
                    .inputs
                    .iter()
                    .map(|p| p.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?;
        let fed = self.shape(1);
        let fits = input.shape.len() == fed.len()
            && input
                .shape
                .iter()
                .zip(&fed)
                .skip(1)
                .all(|(want, got)| *want < 0 || want == got);
        if !fits {
            return Err(UdfError::Setup(format!(
                "model '{}' input '{}' has shape {:?} but this function feeds {:?} (N x ...); fix size= or layout= in CREATE FUNCTION",
                model.path.display(),
                input.name,
                input.shape,
                fed
            )));
        }
        Ok(input.name.clone())
    }
}

/// The decoded, scaled frames of `path` at `times`, each time's own result: one pass over
/// the span of times close together ([`crate::media::decode::frames_at`]), not a seek per
/// row. The outer error is the video's (it cannot be found, opened or decoded).
fn frames_at(
    spec: &ModelSpec,
    confinement: &Confinement,
    path: &str,
    times: &[f64],
) -> std::result::Result<Vec<std::result::Result<Vec<u8>, UdfError>>, UdfError> {
    let media = confinement
        .source(path)?
        .media_input(&StorageOptions::default())?;
    let frames =
        crate::media::decode::frames_at(&media, times, Resize::Exact(spec.width, spec.height))?;
    Ok(frames
        .into_iter()
        .map(|f| f.map(|f| f.rgb).map_err(UdfError::from))
        .collect())
}

/// The bytes of frames (at a model's input size) a user model reads of one video at once.
const FRAMES_HELD_BYTES: usize = 64 << 20;

/// A registered model as a scalar function `name(path, at_s)`.
#[derive(Debug, Clone)]
pub struct OnnxModelUdf {
    name: String,
    spec: ModelSpec,
    returns: DataType,
    signature: Signature,
}

impl PartialEq for OnnxModelUdf {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
            && self.spec.text == other.spec.text
            && self.returns == other.returns
    }
}

impl Eq for OnnxModelUdf {}

impl std::hash::Hash for OnnxModelUdf {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.name.hash(state);
        self.spec.text.hash(state);
    }
}

/// What travels to cluster nodes to rebuild a registered model function.
#[derive(Debug, Serialize, Deserialize)]
struct Wire {
    name: String,
    spec: String,
    returns_list: bool,
    returns_f32: bool,
}

impl OnnxModelUdf {
    /// Its model options, as `CREATE FUNCTION ... AS '...'` gave them.
    pub fn spec_text(&self) -> &str {
        &self.spec.text
    }

    /// Whether it returns a list of floats (`REAL[]` or `DOUBLE[]`).
    pub fn returns_list(&self) -> bool {
        matches!(self.returns, DataType::List(_))
    }

    /// The function `name` over `spec`, returning `returns` (a float, or a list of floats).
    pub fn new(name: &str, spec: ModelSpec, returns: DataType) -> Result<Self> {
        match &returns {
            DataType::Float32 | DataType::Float64 => {}
            DataType::List(f) if matches!(f.data_type(), DataType::Float32 | DataType::Float64) => {
            }
            other => {
                return plan_err!(
                    "an ONNX function returns DOUBLE, REAL, DOUBLE[] or REAL[], not {other}"
                );
            }
        }
        Ok(Self {
            name: name.to_owned(),
            spec,
            returns,
            // it reads a video and runs a model: never evaluated while planning
            signature: Signature::user_defined(Volatility::Volatile),
        })
    }

    /// The bytes that rebuild this function elsewhere ([`OnnxModelUdf::decode`]).
    pub fn encode(&self) -> Vec<u8> {
        let list = matches!(self.returns, DataType::List(_));
        let f32 = match &self.returns {
            DataType::List(f) => f.data_type() == &DataType::Float32,
            t => t == &DataType::Float32,
        };
        serde_json::to_vec(&Wire {
            name: self.name.clone(),
            spec: self.spec.text.clone(),
            returns_list: list,
            returns_f32: f32,
        })
        .unwrap_or_default()
    }

    /// Rebuilds a function from [`OnnxModelUdf::encode`]'s bytes (None: not one).
    pub fn decode(bytes: &[u8]) -> Option<Result<Self>> {
        let wire: Wire = serde_json::from_slice(bytes).ok()?;
        let element = if wire.returns_f32 {
            DataType::Float32
        } else {
            DataType::Float64
        };
        let returns = if wire.returns_list {
            DataType::List(Arc::new(Field::new_list_field(element, true)))
        } else {
            element
        };
        Some(ModelSpec::parse(&wire.spec).and_then(|spec| Self::new(&wire.name, spec, returns)))
    }
}

fn model_err(e: UdfError) -> datafusion::error::DataFusionError {
    framefusion_common::code::external(e)
}

impl ScalarUDFImpl for OnnxModelUdf {
    fn name(&self) -> &str {
        &self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        const ARGS: &[Arg] = &[Arg::path(), Arg::seconds("at_s")];
        coerce_call(&self.name, ARGS, &[2], arg_types)
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(self.returns.clone())
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let n = args.number_rows;
        let [path, at] = args.args.as_slice() else {
            return exec_err!("{}(path, at_s) takes two arguments", self.name);
        };
        let paths = crate::args::strings(path, n, &format!("{}: path", self.name))?;
        let times = crate::args::floats(at, n, &format!("{}: at_s", self.name))?;
        let options = OnnxOptions::from_config(&args.config_options);
        let confinement =
            crate::error::session_confinement(&args.config_options).map_err(model_err)?;
        let model =
            super::model(&options.model_path(&self.spec.model), &options).map_err(model_err)?;
        let input = self.spec.check(&model).map_err(model_err)?;
        // a model with a fixed batch of 1 runs frame by frame
        let batch = match model
            .inputs
            .iter()
            .find(|p| p.name == input)
            .and_then(|p| p.shape.first())
        {
            Some(1) => 1,
            _ => options.batch_size.max(1),
        };
        let mut per_row: Vec<Option<Vec<f32>>> = vec![None; n];
        // a row whose frame cannot be read is null and reported to the run's failure
        // ledger, as an operator's (transient failures are retried, then fail the task;
        // setup failures fail the query)
        let mut failures = Vec::new();
        framefusion_media::cpu::budget().run(|| -> Result<()> {
            let mut pending: Vec<(usize, Vec<f32>)> = Vec::new();
            let mut flush = |pending: &mut Vec<(usize, Vec<f32>)>| -> Result<()> {
                if pending.is_empty() {
                    return Ok(());
                }
                let rows = pending.len();
                let data: Vec<f32> = pending
                    .iter()
                    .flat_map(|(_, t)| t.iter().copied())
                    .collect();
                let (_, values) = model
                    .run(
                        &input,
                        self.spec.shape(rows),
                        data,
                        self.spec.output.as_deref(),
                    )
                    .map_err(model_err)?;
                let each = values.len() / rows;
                for (k, (row, _)) in pending.drain(..).enumerate() {
                    per_row[row] = Some(values[k * each..(k + 1) * each].to_vec());
                }
                Ok(())
            };
            // the rows of each video, read together in chunks (the frames of one chunk are
            // held at the model's size at once: at most FRAMES_HELD_BYTES, or one batch)
            let mut videos: Vec<(&str, Vec<usize>)> = Vec::new();
            let mut index: HashMap<&str, usize> = HashMap::new();
            for row in (0..n).filter(|&r| !paths.is_null(r) && !times.is_null(r)) {
                let path = paths.value(row);
                let at = *index.entry(path).or_insert_with(|| {
                    videos.push((path, Vec::new()));
                    videos.len() - 1
                });
                videos[at].1.push(row);
            }
            // a video's or a row's own failure: logged, reported, the rows null
            let mut fail = |path: &str, e: &UdfError| {
                log::warn!("{}: {e}", self.name);
                failures.push(framefusion_common::failures::Failure::of(
                    path, &self.name, e,
                ));
            };
            let frame_bytes = (self.spec.width as usize * self.spec.height as usize * 3).max(1);
            let chunk_rows = (FRAMES_HELD_BYTES / frame_bytes).max(batch);
            for (path, rows) in videos {
                for chunk in rows.chunks(chunk_rows) {
                    let at: Vec<f64> = chunk.iter().map(|&r| times.value(r)).collect();
                    let frames = match crate::error::retry_transient(|| {
                        frames_at(&self.spec, &confinement, path, &at)
                    }) {
                        Ok(frames) => frames,
                        Err(e) if e.fails_the_query() => return Err(e.into_task_error()),
                        Err(e) => {
                            fail(path, &e);
                            continue;
                        }
                    };
                    for (&row, frame) in chunk.iter().zip(frames) {
                        match frame {
                            Ok(rgb) => pending.push((row, self.spec.tensor(&rgb))),
                            Err(e) if e.fails_the_query() => return Err(e.into_task_error()),
                            Err(e) => fail(path, &e),
                        }
                        if pending.len() >= batch {
                            flush(&mut pending)?;
                        }
                    }
                }
            }
            flush(&mut pending)
        })?;
        crate::error::report_failures(&args.config_options, failures)?;
        let array: ArrayRef = match &self.returns {
            DataType::List(f) if f.data_type() == &DataType::Float32 => {
                let mut b = ListBuilder::new(Float32Builder::new());
                for v in per_row {
                    match v {
                        Some(v) => {
                            b.values().append_slice(&v);
                            b.append(true);
                        }
                        None => b.append(false),
                    }
                }
                Arc::new(b.finish())
            }
            DataType::List(_) => {
                let mut b = ListBuilder::new(Float64Builder::new());
                for v in per_row {
                    match v {
                        Some(v) => {
                            for x in v {
                                b.values().append_value(f64::from(x));
                            }
                            b.append(true);
                        }
                        None => b.append(false),
                    }
                }
                Arc::new(b.finish())
            }
            DataType::Float32 => Arc::new(
                per_row
                    .iter()
                    .map(|v| v.as_ref().and_then(|v| v.first().copied()))
                    .collect::<datafusion::arrow::array::Float32Array>(),
            ),
            _ => Arc::new(
                per_row
                    .iter()
                    .map(|v| v.as_ref().and_then(|v| v.first().map(|x| f64::from(*x))))
                    .collect::<datafusion::arrow::array::Float64Array>(),
            ),
        };
        debug_assert_eq!(array.len(), n);
        Ok(ColumnarValue::Array(array))
    }
}

/// `CREATE FUNCTION name(VARCHAR, DOUBLE) [RETURNS type] LANGUAGE onnx AS 'spec'`.
#[derive(Debug, Default)]
pub struct OnnxFunctionFactory;

#[async_trait]
impl FunctionFactory for OnnxFunctionFactory {
    async fn create(
        &self,
        state: &SessionState,
        statement: CreateFunction,
    ) -> Result<RegisterFunction> {
        let language = statement
            .params
            .language
            .as_ref()
            .map(|l| l.value.to_ascii_lowercase());
        if language.as_deref() != Some("onnx") {
            return plan_err!(
                "CREATE FUNCTION supports LANGUAGE onnx (an ONNX model as a function); got {}",
                language.unwrap_or_else(|| "no LANGUAGE".to_owned())
            );
        }
        let body = match &statement.params.function_body {
            Some(Expr::Literal(
                ScalarValue::Utf8(Some(s))
                | ScalarValue::Utf8View(Some(s))
                | ScalarValue::LargeUtf8(Some(s)),
                _,
            )) => s.clone(),
            _ => {
                return plan_err!(
                    "write the model spec as a string: AS 'model=FILE size=WxH [mean=..] [std=..] [output=..]'"
                );
            }
        };
        let spec = ModelSpec::parse(&body)?;
        let returns = statement.return_type.clone().unwrap_or_else(|| {
            DataType::List(Arc::new(Field::new_list_field(DataType::Float32, true)))
        });
        let udf = OnnxModelUdf::new(&statement.name, spec, returns)?;
        // load and check the model now: a wrong file or shape fails the CREATE, not a query
        let options = OnnxOptions::from_config(state.config_options());
        let model =
            super::model(&options.model_path(&udf.spec.model), &options).map_err(model_err)?;
        udf.spec.check(&model).map_err(model_err)?;
        Ok(RegisterFunction::Scalar(Arc::new(
            ScalarUDF::new_from_impl(udf),
        )))
    }
}
