//! Clip signals: motion, quality and a perceptual hash of a time range, from one decode.
//!
//! `clip_signals(path, start_s, end_s)` decodes the frames whose timestamps fall in
//! `[start_s, end_s)` once (seeking to the keyframe before `start_s`), scaled so the longer
//! side is 256 pixels, and computes:
//!
//! - **motion** (`motion_score`, `camera_motion`, `object_motion`, `motion_source`): from
//!   the codec's motion vectors where it exports them (H.264, MPEG-2/4; as NeMo Curator
//!   does): the mean vector length over predicted frames, the median vector's length
//!   (motion most blocks share: the camera's), and the mean length of the vectors minus the
//!   median (objects moving against the camera), all in percent of the picture width per
//!   frame; `motion_source = 'motion_vectors'`. Otherwise from frame differences: the
//!   mean absolute luma difference of consecutive frames in percent of full scale, with no
//!   camera/object split; `motion_source = 'frame_difference'`.
//! - **quality**: `sharpness` (variance of the 4-neighbour Laplacian of the luma, as
//!   OpenCV's `Laplacian(ksize=1).var()`, averaged over frames), `brightness` (mean luma,
//!   0-255), `contrast` (standard deviation of the luma), `black_fraction` (frames with at
//!   least 98% of pixels at luma <= 25, as ffmpeg's `blackdetect` defaults) and
//!   `frozen_fraction` (frames whose mean absolute difference to the previous one is under
//!   0.5 of 255).
//! - **phash**: a 64-bit perceptual hash: per frame, the 8x8 lowest frequencies of the DCT of
//!   the 32x32 area-averaged luma against their median (DC excluded); the clip's bit is the
//!   majority of its frames' bits. `hamming_distance(a, b)` counts differing bits: 0 is
//!   identical content, up to about 10 of 64 is a near-duplicate (re-encode, resize, small
//!   crop), unrelated clips differ by about 32.
//!
//! `motion_score`, `clip_quality` and `clip_phash` are views of `clip_signals`: the
//! simplifier rewrites each into a field of `clip_signals(...)`. A projection evaluates its
//! expressions one after the other, so several views of one clip would each call
//! `clip_signals`: the first call decodes the clip and computes every signal, and keeps the
//! small result (a few numbers) in a process-wide cache for five minutes (4096 clips at
//! most, keyed by URI, range, store options and, for a local file, its size and
//! modification time); the other calls find it there. So a clip is decoded once per query
//! however many of its signals the query asks ([`clip_decodes`] counts, and a test checks).

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::sync::{Arc, LazyLock, Mutex};

use datafusion::arrow::array::{
    Array, ArrayRef, Float64Array, Float64Builder, Int32Builder, Int64Array, Int64Builder,
    StringArray, StringBuilder, StructArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Fields};
use datafusion::common::{Result, ScalarValue, exec_err};
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::simplify::{ExprSimplifyResult, SimplifyContext};
use datafusion::logical_expr::{
    ColumnarValue, Expr, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};

use crate::UdfError;
use crate::error::retry_transient;
use crate::media::decode::{Extras, FrameMotion, Resize, Sampling, decode_frames_with};
use crate::media::source::VideoSource;
use crate::storage::StorageOptions;

/// The longer side frames are analysed at.
const ANALYSIS_SIDE: u32 = 256;

static CLIP_DECODES: LazyLock<Mutex<HashMap<String, u64>>> = LazyLock::new(Default::default);

/// How many times this process has decoded (a range of) the video at `uri` for
/// `clip_signals`: a query asking several signals of a clip decodes it once.
pub fn clip_decodes(uri: &str) -> u64 {
    CLIP_DECODES
        .lock()
        .map(|m| m.get(uri).copied().unwrap_or(0))
        .unwrap_or(0)
}

/// The signals of one clip.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClipSignals {
    /// Frames analysed.
    pub frames: i64,
    /// Mean motion, percent of the picture width per frame (or of full scale, from frame
    /// differences).
    pub motion_score: Option<f64>,
    /// Camera (shared) motion, from motion vectors only.
    pub camera_motion: Option<f64>,
    /// Object motion against the camera's, from motion vectors only.
    pub object_motion: Option<f64>,
    /// `motion_vectors` or `frame_difference`.
    pub motion_source: Option<&'static str>,
    /// Variance of the Laplacian of the luma.
    pub sharpness: Option<f64>,
    /// Mean luma.
    pub brightness: Option<f64>,
    /// Standard deviation of the luma.
    pub contrast: Option<f64>,
    /// Fraction of black frames.
    pub black_fraction: Option<f64>,
    /// Fraction of frames identical to the previous one.
    pub frozen_fraction: Option<f64>,
    /// 64-bit perceptual hash.
    pub phash: Option<i64>,
}

/// Per-frame luma statistics.
#[derive(Debug, Default)]
struct Accumulator {
    frames: usize,
    sharpness: f64,
    brightness: f64,
    contrast: f64,
    black: usize,
    frozen: usize,
    diffs: f64,
    mv_frames: usize,
    mv_mean: f64,
    mv_global: f64,
    mv_residual: f64,
    hash_votes: Vec<i32>,
    previous: Option<Vec<u8>>,
    last_pts: Option<f64>,
    frame_period: Option<f64>,
    last_anchor: Option<f64>,
}

/// One analysed frame.
struct Analysed {
    gray: Vec<u8>,
    width: usize,
    height: usize,
    pts_s: f64,
    is_keyframe: bool,
    motion: Option<FrameMotion>,
}

impl Accumulator {
    fn push(&mut self, frame: Analysed) {
        let Analysed {
            gray,
            width,
            height,
            pts_s,
            is_keyframe,
            motion,
        } = frame;
        if let Some(last) = self.last_pts
            && pts_s > last
        {
            let step = pts_s - last;
            self.frame_period = Some(self.frame_period.map_or(step, |p| p.min(step)));
        }
        self.last_pts = Some(pts_s);
        let n = gray.len().max(1) as f64;
        let mean = gray.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
        let var = gray
            .iter()
            .map(|&v| (f64::from(v) - mean).powi(2))
            .sum::<f64>()
            / n;
        self.brightness += mean;
        self.contrast += var.sqrt();
        self.sharpness += laplacian_variance(&gray, width, height);
        let dark = gray.iter().filter(|&&v| v <= 25).count() as f64;
        if dark / n >= 0.98 {
            self.black += 1;
        }
        if let Some(prev) = &self.previous {
            let diff = crate::media::image::mean_abs_diff(prev, &gray);
            self.diffs += diff;
            if diff < 0.5 {
                self.frozen += 1;
            }
        }
        // a P-frame's vectors span the frames since the previous I- or P-frame: divide by
        // that distance to get motion per frame (B-frames' vectors, whose reference
        // distances are not exported, are not used)
        if let Some(m) = motion.filter(|m| m.predicted)
            && let (Some(anchor), Some(period)) = (self.last_anchor, self.frame_period)
        {
            let distance = ((pts_s - anchor) / period).round().max(1.0);
            self.mv_frames += 1;
            self.mv_mean += m.mean / distance;
            self.mv_global += m.global / distance;
            self.mv_residual += m.residual / distance;
        }
        if is_keyframe || motion.is_some_and(|m| m.predicted) {
            self.last_anchor = Some(pts_s);
        }
        let hash = frame_phash(&gray, width, height);
        self.hash_votes.resize(64, 0);
        for (bit, vote) in self.hash_votes.iter_mut().enumerate() {
            *vote += if hash >> bit & 1 == 1 { 1 } else { -1 };
        }
        self.frames += 1;
        self.previous = Some(gray);
    }

    fn finish(self) -> ClipSignals {
        if self.frames == 0 {
            return ClipSignals::default();
        }
        let f = self.frames as f64;
        let (motion_score, camera, object, source) = if self.mv_frames > 0 {
            let m = self.mv_frames as f64;
            (
                Some(self.mv_mean / m),
                Some(self.mv_global / m),
                Some(self.mv_residual / m),
                "motion_vectors",
            )
        } else {
            let pairs = (self.frames - 1).max(1) as f64;
            (
                Some(self.diffs / pairs / 255.0 * 100.0),
                None,
                None,
                "frame_difference",
            )
        };
        let phash = self
            .hash_votes
            .iter()
            .enumerate()
            .fold(0u64, |h, (bit, &v)| if v > 0 { h | 1 << bit } else { h });
        ClipSignals {
            frames: self.frames as i64,
            motion_score,
            camera_motion: camera,
            object_motion: object,
            motion_source: Some(source),
            sharpness: Some(self.sharpness / f),
            brightness: Some(self.brightness / f),
            contrast: Some(self.contrast / f),
            black_fraction: Some(self.black as f64 / f),
            frozen_fraction: Some(if self.frames > 1 {
                self.frozen as f64 / (self.frames - 1) as f64
            } else {
                0.0
            }),
            phash: Some(phash as i64),
        }
    }
}

/// Variance of the 4-neighbour Laplacian over the interior pixels.
fn laplacian_variance(gray: &[u8], width: usize, height: usize) -> f64 {
    if width < 3 || height < 3 {
        return 0.0;
    }
    let px = |x: usize, y: usize| f64::from(gray[y * width + x]);
    let (mut sum, mut sum_sq, mut n) = (0.0, 0.0, 0.0);
    for y in 1..height - 1 {
        for x in 1..width - 1 {
            let l = px(x - 1, y) + px(x + 1, y) + px(x, y - 1) + px(x, y + 1) - 4.0 * px(x, y);
            sum += l;
            sum_sq += l * l;
            n += 1.0;
        }
    }
    let mean = sum / n;
    sum_sq / n - mean * mean
}

/// pHash of one luma plane: 32x32 area average, 2-D DCT-II, the 8x8 lowest frequencies
/// (DC excluded from the median) against their median.
fn frame_phash(gray: &[u8], width: usize, height: usize) -> u64 {
    const N: usize = 32;
    let mut small = [[0f64; N]; N];
    for (y, row) in small.iter_mut().enumerate() {
        let (y0, y1) = (
            y * height / N,
            ((y + 1) * height / N).max(y * height / N + 1),
        );
        for (x, cell) in row.iter_mut().enumerate() {
            let (x0, x1) = (x * width / N, ((x + 1) * width / N).max(x * width / N + 1));
            let (mut sum, mut count) = (0.0, 0.0);
            for yy in y0..y1.min(height) {
                for xx in x0..x1.min(width) {
                    sum += f64::from(gray[yy * width + xx]);
                    count += 1.0;
                }
            }
            *cell = if count > 0.0 { sum / count } else { 0.0 };
        }
    }
    let cos: Vec<Vec<f64>> = (0..8)
        .map(|u| {
            (0..N)
                .map(|x| {
                    ((2 * x + 1) as f64 * u as f64 * std::f64::consts::PI / (2 * N) as f64).cos()
                })
                .collect()
        })
        .collect();
    let mut coeffs = [0f64; 64];
    for v in 0..8 {
        for u in 0..8 {
            let mut s = 0.0;
            for (y, row) in small.iter().enumerate() {
                let cy = cos[v][y];
                for (x, &p) in row.iter().enumerate() {
                    s += p * cos[u][x] * cy;
                }
            }
            coeffs[v * 8 + u] = s;
        }
    }
    let mut rest: Vec<f64> = coeffs[1..].to_vec();
    rest.sort_by(f64::total_cmp);
    let median = rest[rest.len() / 2];
    coeffs
        .iter()
        .enumerate()
        .fold(0u64, |h, (i, &c)| if c > median { h | 1 << i } else { h })
}

/// How long a computed result is reused, and how many are kept.
const RESULT_TTL: std::time::Duration = std::time::Duration::from_secs(300);
const RESULT_CAPACITY: usize = 4096;

/// A clip's identity for the result cache: the URI, the range, the store options, and
/// for a local file its size and modification time (a changed file is a new clip).
type ResultKey = (String, u64, u64, StorageOptions, Option<(u64, u128)>);

/// Recent results by clip, and the order they came in (oldest first, for eviction).
type Results = (
    HashMap<ResultKey, (std::time::Instant, ClipSignals)>,
    std::collections::VecDeque<ResultKey>,
);

/// Results of recent clips. The views of a clip (`motion_score`, `clip_quality`,
/// `clip_phash`) are separate expressions that a projection evaluates one after the other;
/// the first computes every signal in one decode and the others find the result here.
static RESULTS: LazyLock<Mutex<Results>> = LazyLock::new(Default::default);

fn result_key(
    source: &VideoSource,
    storage: &StorageOptions,
    start_s: f64,
    end_s: f64,
) -> ResultKey {
    (
        source.uri(),
        start_s.to_bits(),
        end_s.to_bits(),
        storage.clone(),
        source.local_stamp(),
    )
}

/// Computes the signals of `[start_s, end_s)` of a video, or returns the result computed
/// for the same clip in the last few minutes.
pub fn clip_signals(
    source: &VideoSource,
    storage: &StorageOptions,
    start_s: f64,
    end_s: f64,
) -> Result<ClipSignals, UdfError> {
    let key = result_key(source, storage, start_s, end_s);
    if let Ok(results) = RESULTS.lock()
        && let Some((at, signals)) = results.0.get(&key)
        && at.elapsed() < RESULT_TTL
    {
        return Ok(signals.clone());
    }
    let signals = compute_signals(source, storage, start_s, end_s)?;
    if let Ok(mut results) = RESULTS.lock() {
        let (map, order) = &mut *results;
        if map
            .insert(key.clone(), (std::time::Instant::now(), signals.clone()))
            .is_none()
        {
            order.push_back(key);
        }
        while order.len() > RESULT_CAPACITY {
            if let Some(old) = order.pop_front() {
                map.remove(&old);
            }
        }
    }
    Ok(signals)
}

fn compute_signals(
    source: &VideoSource,
    storage: &StorageOptions,
    start_s: f64,
    end_s: f64,
) -> Result<ClipSignals, UdfError> {
    if !(start_s.is_finite() && end_s.is_finite() && start_s >= 0.0 && end_s > start_s) {
        return Err(UdfError::Option(format!(
            "the range [{start_s}, {end_s}) is empty or invalid; give 0 <= start_s < end_s"
        )));
    }
    let input = source.media_input(storage)?;
    if let Ok(mut counts) = CLIP_DECODES.lock() {
        *counts.entry(source.uri()).or_default() += 1;
    }
    let mut acc = Accumulator::default();
    let extras = Extras {
        range: Some((start_s, end_s)),
        motion_vectors: true,
    };
    decode_frames_with(
        &input,
        Sampling::All,
        Resize::LongestSide(ANALYSIS_SIDE),
        true,
        extras,
        |frame| {
            let rgb = crate::media::image::Rgb {
                width: frame.width as usize,
                height: frame.height as usize,
                data: frame.rgb,
            };
            acc.push(Analysed {
                gray: rgb.gray(),
                width: rgb.width,
                height: rgb.height,
                pts_s: frame.pts_s,
                is_keyframe: frame.is_keyframe,
                motion: frame.motion,
            });
            ControlFlow::Continue(())
        },
    )?;
    Ok(acc.finish())
}

/// The fields of the `clip_signals` struct.
pub fn signal_fields() -> Fields {
    Fields::from(vec![
        Field::new("frames", DataType::Int64, true),
        Field::new("motion_score", DataType::Float64, true),
        Field::new("camera_motion", DataType::Float64, true),
        Field::new("object_motion", DataType::Float64, true),
        Field::new("motion_source", DataType::Utf8, true),
        Field::new("sharpness", DataType::Float64, true),
        Field::new("brightness", DataType::Float64, true),
        Field::new("contrast", DataType::Float64, true),
        Field::new("black_fraction", DataType::Float64, true),
        Field::new("frozen_fraction", DataType::Float64, true),
        Field::new("phash", DataType::Int64, true),
        Field::new("error", DataType::Utf8, true),
    ])
}

/// The quality fields, in `clip_quality`'s struct.
const QUALITY_FIELDS: [&str; 5] = [
    "sharpness",
    "brightness",
    "contrast",
    "black_fraction",
    "frozen_fraction",
];

#[derive(Default)]
struct SignalColumns {
    frames: Int64Builder,
    motion: [Float64Builder; 3],
    source: StringBuilder,
    quality: [Float64Builder; 5],
    phash: Int64Builder,
    error: StringBuilder,
}

impl SignalColumns {
    fn append(&mut self, outcome: &Result<ClipSignals, UdfError>) {
        let s = outcome.as_ref().ok().cloned().unwrap_or_default();
        self.frames
            .append_option(outcome.is_ok().then_some(s.frames));
        let motion = [s.motion_score, s.camera_motion, s.object_motion];
        for (b, v) in self.motion.iter_mut().zip(motion) {
            b.append_option(v);
        }
        self.source.append_option(s.motion_source);
        let quality = [
            s.sharpness,
            s.brightness,
            s.contrast,
            s.black_fraction,
            s.frozen_fraction,
        ];
        for (b, v) in self.quality.iter_mut().zip(quality) {
            b.append_option(v);
        }
        self.phash.append_option(s.phash);
        self.error
            .append_option(outcome.as_ref().err().map(ToString::to_string));
    }

    fn finish(mut self) -> Result<StructArray> {
        let mut columns: Vec<ArrayRef> = vec![Arc::new(self.frames.finish())];
        columns.extend(
            self.motion
                .iter_mut()
                .map(|b| Arc::new(b.finish()) as ArrayRef),
        );
        columns.push(Arc::new(self.source.finish()));
        columns.extend(
            self.quality
                .iter_mut()
                .map(|b| Arc::new(b.finish()) as ArrayRef),
        );
        columns.push(Arc::new(self.phash.finish()));
        columns.push(Arc::new(self.error.finish()));
        Ok(StructArray::try_new(signal_fields(), columns, None)?)
    }
}

/// Casts the three `(path, start_s, end_s)` arguments to arrays.
fn range_args(
    args: &[ColumnarValue],
    rows: usize,
    name: &str,
) -> Result<(StringArray, Float64Array, Float64Array)> {
    let [path, start, end] = args else {
        return exec_err!("{name}(path, start_s, end_s) takes three arguments");
    };
    Ok((
        crate::args::strings(path, rows, &format!("{name}: path"))?,
        crate::args::floats(start, rows, &format!("{name}: start_s"))?,
        crate::args::floats(end, rows, &format!("{name}: end_s"))?,
    ))
}

/// `clip_signals(path, start_s, end_s)`: see the module docs.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct ClipSignalsUdf {
    signature: Signature,
}

impl Default for ClipSignalsUdf {
    fn default() -> Self {
        Self {
            signature: Signature::any(3, Volatility::Stable),
        }
    }
}

impl ScalarUDFImpl for ClipSignalsUdf {
    fn name(&self) -> &str {
        "clip_signals"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Struct(signal_fields()))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let (paths, starts, ends) = range_args(&args.args, args.number_rows, self.name())?;
        let mut columns = SignalColumns::default();
        crate::blocking::run_blocking(|| -> Result<()> {
            for i in 0..args.number_rows {
                if paths.is_null(i) || starts.is_null(i) || ends.is_null(i) {
                    columns.append(&Err(UdfError::Option(
                        "clip_signals: path, start_s and end_s must not be null".to_owned(),
                    )));
                    continue;
                }
                let outcome = retry_transient(|| {
                    let source = VideoSource::parse(paths.value(i))?;
                    clip_signals(
                        &source,
                        &StorageOptions::default(),
                        starts.value(i),
                        ends.value(i),
                    )
                });
                match outcome {
                    // a transient failure fails the task, which the scheduler retries
                    Err(e) if e.is_transient() => return Err(e.into_task_error()),
                    outcome => columns.append(&outcome),
                }
            }
            Ok(())
        })?;
        Ok(ColumnarValue::Array(Arc::new(columns.finish()?)))
    }
}

/// The `clip_signals(...)` call over `args`.
fn signals_call(args: Vec<Expr>) -> Expr {
    Expr::ScalarFunction(ScalarFunction::new_udf(
        Arc::new(ScalarUDF::from(ClipSignalsUdf::default())),
        args,
    ))
}

fn field(expr: Expr, name: &str) -> Expr {
    datafusion::functions::core::expr_fn::get_field(expr, name)
}

/// What a view of `clip_signals` returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum View {
    Motion,
    Quality,
    Phash,
}

/// `motion_score`, `clip_quality`, `clip_phash`: fields of `clip_signals`, rewritten into
/// it by the optimizer (see the module docs).
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct SignalViewUdf {
    view: View,
    signature: Signature,
}

impl SignalViewUdf {
    fn new(view: View) -> Self {
        Self {
            view,
            signature: Signature::any(3, Volatility::Stable),
        }
    }

    /// `motion_score(path, start_s, end_s)`.
    pub fn motion() -> Self {
        Self::new(View::Motion)
    }

    /// `clip_quality(path, start_s, end_s)`.
    pub fn quality() -> Self {
        Self::new(View::Quality)
    }

    /// `clip_phash(path, start_s, end_s)`.
    pub fn phash() -> Self {
        Self::new(View::Phash)
    }
}

fn quality_fields() -> Fields {
    QUALITY_FIELDS
        .iter()
        .map(|n| Field::new(*n, DataType::Float64, true))
        .collect()
}

impl ScalarUDFImpl for SignalViewUdf {
    fn name(&self) -> &str {
        match self.view {
            View::Motion => "motion_score",
            View::Quality => "clip_quality",
            View::Phash => "clip_phash",
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(match self.view {
            View::Motion => DataType::Float64,
            View::Quality => DataType::Struct(quality_fields()),
            View::Phash => DataType::Int64,
        })
    }

    fn simplify(&self, args: Vec<Expr>, _info: &SimplifyContext) -> Result<ExprSimplifyResult> {
        let signals = signals_call(args);
        Ok(ExprSimplifyResult::Simplified(match self.view {
            View::Motion => field(signals, "motion_score"),
            View::Phash => field(signals, "phash"),
            View::Quality => datafusion::functions::core::expr_fn::named_struct(
                QUALITY_FIELDS
                    .iter()
                    .flat_map(|n| {
                        [
                            Expr::Literal(ScalarValue::Utf8(Some((*n).to_owned())), None),
                            field(signals.clone(), n),
                        ]
                    })
                    .collect(),
            ),
        }))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        // reached only when the optimizer did not run (e.g. a physical plan built by hand)
        let signals = ClipSignalsUdf::default().invoke_with_args(args)?;
        let ColumnarValue::Array(array) = signals else {
            return exec_err!("{}: clip_signals returned a scalar", self.name());
        };
        let Some(all) = array.as_any().downcast_ref::<StructArray>() else {
            return exec_err!("{}: clip_signals returned no struct", self.name());
        };
        let column = |name: &str| all.column_by_name(name).cloned();
        Ok(ColumnarValue::Array(match self.view {
            View::Motion => column("motion_score")
                .unwrap_or_else(|| Arc::new(Float64Array::new_null(all.len()))),
            View::Phash => {
                column("phash").unwrap_or_else(|| Arc::new(Int64Array::new_null(all.len())))
            }
            View::Quality => Arc::new(StructArray::try_new(
                quality_fields(),
                QUALITY_FIELDS
                    .iter()
                    .map(|n| {
                        column(n).unwrap_or_else(|| Arc::new(Float64Array::new_null(all.len())))
                    })
                    .collect(),
                None,
            )?),
        }))
    }
}

/// `hamming_distance(a, b)`: the number of differing bits of two 64-bit hashes.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct HammingDistanceUdf {
    signature: Signature,
}

impl Default for HammingDistanceUdf {
    fn default() -> Self {
        Self {
            signature: Signature::uniform(2, vec![DataType::Int64], Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for HammingDistanceUdf {
    fn name(&self) -> &str {
        "hamming_distance"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Int32)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let [a, b] = args.args.as_slice() else {
            return exec_err!("hamming_distance(a, b) takes two arguments");
        };
        let n = args.number_rows;
        let (a, b) = (a.to_array(n)?, b.to_array(n)?);
        let (Some(a), Some(b)) = (
            a.as_any().downcast_ref::<Int64Array>(),
            b.as_any().downcast_ref::<Int64Array>(),
        ) else {
            return exec_err!("hamming_distance(a, b): both arguments must be 64-bit integers");
        };
        let mut out = Int32Builder::with_capacity(n);
        for i in 0..n {
            if a.is_null(i) || b.is_null(i) {
                out.append_null();
            } else {
                out.append_value((a.value(i) ^ b.value(i)).count_ones() as i32);
            }
        }
        Ok(ColumnarValue::Array(Arc::new(out.finish())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn laplacian_of_flat_and_checkered_planes() {
        assert_eq!(laplacian_variance(&[7; 25], 5, 5), 0.0);
        let checker: Vec<u8> = (0..25).map(|i| if i % 2 == 0 { 0 } else { 255 }).collect();
        assert!(laplacian_variance(&checker, 5, 5) > 1000.0);
    }

    #[test]
    fn phash_is_stable_under_small_changes_and_differs_otherwise() {
        let (w, h) = (64, 64);
        let pattern = |fx: f64, fy: f64| -> Vec<u8> {
            (0..w * h)
                .map(|i| {
                    let (x, y) = ((i % w) as f64, (i / w) as f64);
                    (128.0 + 60.0 * (x / fx).sin() * (y / fy).cos() + 0.5 * x) as u8
                })
                .collect()
        };
        let gradient = pattern(5.0, 7.0);
        let brighter: Vec<u8> = gradient.iter().map(|v| v.saturating_add(3)).collect();
        let other = pattern(3.0, 11.0);
        let (a, b, c) = (
            frame_phash(&gradient, w, h),
            frame_phash(&brighter, w, h),
            frame_phash(&other, w, h),
        );
        assert!((a ^ b).count_ones() <= 4, "{}", (a ^ b).count_ones());
        assert!((a ^ c).count_ones() >= 16, "{}", (a ^ c).count_ones());
    }
}
