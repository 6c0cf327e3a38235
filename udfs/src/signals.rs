//! Clip signals: motion, quality and a perceptual hash of a time range, from one decode.
//!
//! `clip_signals(path, start_s, end_s)` decodes the frames whose timestamps fall in
//! `[start_s, end_s)` once (seeking to the keyframe before `start_s`), their luma (the Y
//! plane at full range, 0-255) scaled so the longer side is 256 pixels, and computes:
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
//! simplifier rewrites each into a field of `clip_signals(...)`. The statistics of every
//! frame are computed during the video's decode pass ([`FrameStats`], one pass per video
//! per query: [`crate::analysis`]) and a clip's signals are their aggregation over its
//! range, so several signals of a clip, and the signals of every shot of a video after
//! `detect_shots`, cost one decode ([`clip_decodes`] counts, and tests check).

use std::sync::{Arc, LazyLock};

use datafusion::arrow::array::{Array, Int32Builder, Int64Array};
use datafusion::arrow::datatypes::{DataType, Field, Fields};
use datafusion::common::config::ConfigOptions;
use datafusion::common::{Result, ScalarValue, exec_err};
use datafusion::logical_expr::{
    ColumnarValue, Documentation, Expr, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};
use framefusion_media::MediaError;
use framefusion_media::pass::{
    Decoded, Filter, FrameConsumer, PictureFormat, PictureSpec, Pictures,
};

use crate::UdfError;
use crate::analysis::{Demand, Feature, Need, PassSpec};
pub use crate::features::{FrameStats, SignalFrames};
use crate::media::source::VideoSource;
use crate::operator::{
    Arg, Batch, FeatureConsumer, RowOutcome, VideoOperator, VideoUdf, error_struct, struct_value,
};
use crate::storage::StorageOptions;

/// The longer side frames are analysed at.
const ANALYSIS_SIDE: u32 = 256;

/// How many decode passes this process has run over the video at `uri` (for any
/// operator; see [`framefusion_media::pass::passes`]): a query asking several signals of
/// a clip, or the signals of every shot after `detect_shots`, decodes it once.
pub fn clip_decodes(uri: &str) -> u64 {
    let display = VideoSource::parse(uri)
        .and_then(|s| s.media_input(&StorageOptions::default()))
        .map_or_else(|_| uri.to_owned(), |m| m.display);
    framefusion_media::pass::passes(&display)
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

impl FrameStats {
    /// The statistics of a luma plane (and of its difference to the previous one).
    pub fn of(
        gray: &[u8],
        width: usize,
        height: usize,
        previous: Option<&[u8]>,
        frame: &Decoded,
    ) -> Self {
        let n = gray.len().max(1) as f64;
        let mean = gray.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
        let var = gray
            .iter()
            .map(|&v| (f64::from(v) - mean).powi(2))
            .sum::<f64>()
            / n;
        let dark = gray.iter().filter(|&&v| v <= 25).count() as f64;
        Self {
            pts_s: frame.pts_s,
            is_keyframe: frame.is_keyframe,
            motion: frame.motion,
            mean,
            std: var.sqrt(),
            laplacian: laplacian_variance(gray, width, height),
            black: dark / n >= 0.98,
            diff_prev: previous.map(|p| crate::media::image::mean_abs_diff(p, gray)),
            phash: frame_phash(gray, width, height),
        }
    }
}

impl SignalFrames {
    /// The signals of the frames of `[start_s, end_s)`.
    pub fn clip(&self, start_s: f64, end_s: f64) -> ClipSignals {
        let mut acc = Accumulator::default();
        for frame in self
            .0
            .iter()
            .filter(|f| f.pts_s >= start_s - 1e-9 && f.pts_s < end_s - 1e-9)
        {
            acc.push(frame);
        }
        acc.finish()
    }
}

/// Aggregates the statistics of a clip's frames.
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
    last_pts: Option<f64>,
    frame_period: Option<f64>,
    last_anchor: Option<f64>,
}

impl Accumulator {
    fn push(&mut self, frame: &FrameStats) {
        let pts_s = frame.pts_s;
        if let Some(last) = self.last_pts
            && pts_s > last
        {
            let step = pts_s - last;
            self.frame_period = Some(self.frame_period.map_or(step, |p| p.min(step)));
        }
        self.brightness += frame.mean;
        self.contrast += frame.std;
        self.sharpness += frame.laplacian;
        if frame.black {
            self.black += 1;
        }
        // the first frame of the clip has no previous one in it
        if self.last_pts.is_some()
            && let Some(diff) = frame.diff_prev
        {
            self.diffs += diff;
            if diff < 0.5 {
                self.frozen += 1;
            }
        }
        self.last_pts = Some(pts_s);
        // a P-frame's vectors span the frames since the previous I- or P-frame: divide by
        // that distance to get motion per frame (B-frames' vectors, whose reference
        // distances are not exported, are not used)
        if let Some(m) = frame.motion.filter(|m| m.predicted)
            && let (Some(anchor), Some(period)) = (self.last_anchor, self.frame_period)
        {
            let distance = ((pts_s - anchor) / period).round().max(1.0);
            self.mv_frames += 1;
            self.mv_mean += m.mean / distance;
            self.mv_global += m.global / distance;
            self.mv_residual += m.residual / distance;
        }
        if frame.is_keyframe || frame.motion.is_some_and(|m| m.predicted) {
            self.last_anchor = Some(pts_s);
        }
        self.hash_votes.resize(64, 0);
        for (bit, vote) in self.hash_votes.iter_mut().enumerate() {
            *vote += if frame.phash >> bit & 1 == 1 { 1 } else { -1 };
        }
        self.frames += 1;
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
    // integer sums: exact, and several times faster than floating point per pixel
    let (mut sum, mut sum_sq, mut n) = (0i64, 0i64, 0i64);
    for y in 1..height - 1 {
        let (up, row, down) = (
            &gray[(y - 1) * width..y * width],
            &gray[y * width..(y + 1) * width],
            &gray[(y + 1) * width..(y + 2) * width],
        );
        for x in 1..width - 1 {
            let l = i64::from(row[x - 1])
                + i64::from(row[x + 1])
                + i64::from(up[x])
                + i64::from(down[x])
                - 4 * i64::from(row[x]);
            sum += l;
            sum_sq += l * l;
            n += 1;
        }
    }
    let n = n as f64;
    let mean = sum as f64 / n;
    sum_sq as f64 / n - mean * mean
}

/// pHash of one luma plane: 32x32 area average, 2-D DCT-II, the 8x8 lowest frequencies
/// (DC excluded from the median) against their median.
fn frame_phash(gray: &[u8], width: usize, height: usize) -> u64 {
    const N: usize = 32;
    static COS: LazyLock<[[f64; N]; 8]> = LazyLock::new(|| {
        let mut table = [[0f64; N]; 8];
        for (u, row) in table.iter_mut().enumerate() {
            for (x, c) in row.iter_mut().enumerate() {
                *c = ((2 * x + 1) as f64 * u as f64 * std::f64::consts::PI / (2 * N) as f64).cos();
            }
        }
        table
    });
    let mut small = [[0f64; N]; N];
    for (y, row) in small.iter_mut().enumerate() {
        let (y0, y1) = (
            y * height / N,
            ((y + 1) * height / N).max(y * height / N + 1),
        );
        for (x, cell) in row.iter_mut().enumerate() {
            let (x0, x1) = (x * width / N, ((x + 1) * width / N).max(x * width / N + 1));
            let (mut sum, mut count) = (0u64, 0u64);
            for yy in y0..y1.min(height) {
                for xx in x0..x1.min(width) {
                    sum += u64::from(gray[yy * width + xx]);
                    count += 1;
                }
            }
            *cell = if count > 0 {
                sum as f64 / count as f64
            } else {
                0.0
            };
        }
    }
    let cos = &*COS;
    // separable: rows first (8 frequencies per row), then columns
    let mut rows = [[0f64; 8]; N];
    for (y, row) in small.iter().enumerate() {
        for u in 0..8 {
            rows[y][u] = row.iter().zip(&cos[u]).map(|(p, c)| p * c).sum();
        }
    }
    let mut coeffs = [0f64; 64];
    for v in 0..8 {
        for u in 0..8 {
            coeffs[v * 8 + u] = (0..N).map(|y| rows[y][u] * cos[v][y]).sum();
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

/// The picture the signals are computed on: the luma plane, full range, scaled by swscale
/// so that the longer side is 256 pixels. (Until 2026-11-30 it was the grey of an RGB
/// conversion, as OpenCV's `cvtColor`: the same within rounding for BT.601 pictures, but
/// RGB's clipping made it about 1.3 levels darker, and converting and scaling the chroma
/// took a third of a pass's CPU; the luma alone halves swscale's work.)
fn analysis_picture(width: u32, height: u32) -> PictureSpec {
    let (w, h) = crate::media::decode::Resize::LongestSide(ANALYSIS_SIDE).target(width, height);
    PictureSpec {
        width: w,
        height: h,
        format: PictureFormat::Gray8,
        filter: Filter::Bicubic,
        matrix: framefusion_media::pass::Matrix::Tagged,
    }
}

/// Computes [`SignalFrames`] during a decode pass.
#[derive(Debug, Default)]
struct SignalConsumer {
    spec: Option<PictureSpec>,
    previous: Option<Arc<framefusion_media::pass::Picture>>,
    frames: Vec<FrameStats>,
}

impl FrameConsumer for SignalConsumer {
    fn name(&self) -> &str {
        "luma statistics and motion vectors (clip_signals)"
    }

    fn frame(
        &mut self,
        frame: &Decoded,
        _previous: Option<&Decoded>,
        pictures: &Pictures,
    ) -> Result<(), MediaError> {
        let spec = *self
            .spec
            .get_or_insert_with(|| analysis_picture(frame.width(), frame.height()));
        let picture = pictures.get(frame, spec)?;
        self.frames.push(FrameStats::of(
            &picture.data,
            picture.width,
            picture.height,
            self.previous.as_ref().map(|p| p.data.as_slice()),
            frame,
        ));
        self.previous = Some(picture);
        Ok(())
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

impl FeatureConsumer for SignalConsumer {
    fn into_feature(self: Box<Self>) -> Feature {
        Feature::Signals(Arc::new(SignalFrames(self.frames)))
    }
}

/// The demand of the clip signals: per-frame statistics with motion vectors.
fn signals_demand() -> Demand {
    Demand {
        motion_vectors: true,
        ..Demand::new(Need::Signals {
            side: ANALYSIS_SIDE,
        })
    }
}

/// Computes the signals of `[start_s, end_s)` of a video (from the query's decode pass
/// when `pass` has one for it, else from a pass of its own).
pub fn clip_signals(
    source: &VideoSource,
    storage: &StorageOptions,
    start_s: f64,
    end_s: f64,
    pass: Option<&Arc<PassSpec>>,
    config: &ConfigOptions,
) -> Result<ClipSignals, UdfError> {
    if !(start_s.is_finite() && end_s.is_finite() && start_s >= 0.0 && end_s > start_s) {
        return Err(UdfError::Option(format!(
            "the range [{start_s}, {end_s}) is empty or invalid; give 0 <= start_s < end_s"
        )));
    }
    let feature = crate::analysis::features(
        source,
        storage,
        Some((start_s, end_s)),
        &signals_demand(),
        pass,
        config,
    )?;
    Ok(feature.signals()?.clip(start_s, end_s))
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

fn signals_value(s: &ClipSignals) -> Result<ScalarValue> {
    struct_value(
        &signal_fields(),
        vec![
            ScalarValue::Int64(Some(s.frames)),
            ScalarValue::Float64(s.motion_score),
            ScalarValue::Float64(s.camera_motion),
            ScalarValue::Float64(s.object_motion),
            ScalarValue::Utf8(s.motion_source.map(str::to_owned)),
            ScalarValue::Float64(s.sharpness),
            ScalarValue::Float64(s.brightness),
            ScalarValue::Float64(s.contrast),
            ScalarValue::Float64(s.black_fraction),
            ScalarValue::Float64(s.frozen_fraction),
            ScalarValue::Int64(s.phash),
            ScalarValue::Utf8(None),
        ],
    )
}

const NAME: &str = "clip_signals";

const RANGE_ARGS: &[Arg] = &[Arg::path(), Arg::seconds("start_s"), Arg::seconds("end_s")];

/// Evaluates the signals of every row's clip.
fn evaluate_signals(
    batch: &Batch<'_>,
    value: impl Fn(&ClipSignals) -> Result<ScalarValue>,
) -> Vec<RowOutcome> {
    batch.each_row(|row| {
        let (start_s, end_s) = batch.range(row).unwrap_or_default();
        let source = batch.source(row)?;
        let signals = clip_signals(
            &source,
            &StorageOptions::default(),
            start_s,
            end_s,
            batch.pass,
            batch.config,
        )?;
        value(&signals).map_err(|e| UdfError::Option(e.to_string()))
    })
}

/// `clip_signals(path, start_s, end_s)`: see the module docs.
#[derive(Debug, Default)]
pub struct ClipSignalsOp;

impl VideoOperator for ClipSignalsOp {
    fn name(&self) -> &'static str {
        NAME
    }

    fn description(&self) -> &'static str {
        "Motion, quality signals and a perceptual hash of the frames of [start_s, end_s), from one decode."
    }

    fn args(&self) -> &'static [Arg] {
        RANGE_ARGS
    }

    fn return_type(&self) -> DataType {
        DataType::Struct(signal_fields())
    }

    fn demands(&self, _args: &[Expr], _config: &ConfigOptions) -> Vec<Demand> {
        vec![signals_demand()]
    }

    fn consumer(
        &self,
        _demand: &Demand,
        _models: &crate::models::Models,
        _config: &ConfigOptions,
    ) -> Result<Box<dyn FeatureConsumer>, UdfError> {
        Ok(Box::<SignalConsumer>::default())
    }

    fn failed(&self, message: &str) -> Result<ScalarValue> {
        error_struct(&signal_fields(), message)
    }

    fn evaluate(&self, batch: &Batch<'_>) -> Result<Vec<RowOutcome>> {
        Ok(evaluate_signals(batch, signals_value))
    }
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
#[derive(Debug)]
pub struct SignalView {
    view: View,
}

impl SignalView {
    /// `motion_score(path, start_s, end_s)`.
    pub fn motion() -> Self {
        Self { view: View::Motion }
    }

    /// `clip_quality(path, start_s, end_s)`.
    pub fn quality() -> Self {
        Self {
            view: View::Quality,
        }
    }

    /// `clip_phash(path, start_s, end_s)`.
    pub fn phash() -> Self {
        Self { view: View::Phash }
    }

    fn value(&self, s: &ClipSignals) -> Result<ScalarValue> {
        Ok(match self.view {
            View::Motion => ScalarValue::Float64(s.motion_score),
            View::Phash => ScalarValue::Int64(s.phash),
            View::Quality => struct_value(
                &quality_fields(),
                [
                    s.sharpness,
                    s.brightness,
                    s.contrast,
                    s.black_fraction,
                    s.frozen_fraction,
                ]
                .into_iter()
                .map(ScalarValue::Float64)
                .collect(),
            )?,
        })
    }
}

fn quality_fields() -> Fields {
    QUALITY_FIELDS
        .iter()
        .map(|n| Field::new(*n, DataType::Float64, true))
        .collect()
}

impl VideoOperator for SignalView {
    fn name(&self) -> &'static str {
        match self.view {
            View::Motion => "motion_score",
            View::Quality => "clip_quality",
            View::Phash => "clip_phash",
        }
    }

    fn description(&self) -> &'static str {
        match self.view {
            View::Motion => "The motion score of [start_s, end_s): clip_signals' motion_score.",
            View::Quality => {
                "The quality signals of [start_s, end_s): clip_signals' sharpness, brightness, contrast, black and frozen fractions."
            }
            View::Phash => "The perceptual hash of [start_s, end_s): clip_signals' phash.",
        }
    }

    fn args(&self) -> &'static [Arg] {
        RANGE_ARGS
    }

    fn return_type(&self) -> DataType {
        match self.view {
            View::Motion => DataType::Float64,
            View::Quality => DataType::Struct(quality_fields()),
            View::Phash => DataType::Int64,
        }
    }

    fn demands(&self, _args: &[Expr], _config: &ConfigOptions) -> Vec<Demand> {
        vec![signals_demand()]
    }

    fn simplify(&self, args: Vec<Expr>, pass: Option<&Arc<PassSpec>>) -> Option<Expr> {
        let udf = VideoUdf::new(Arc::new(ClipSignalsOp)).with_pass(pass.cloned());
        let signals = udf.into_udf().call(args);
        Some(match self.view {
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
        })
    }

    fn evaluate(&self, batch: &Batch<'_>) -> Result<Vec<RowOutcome>> {
        // reached only when the optimizer did not run (e.g. a physical plan built by hand)
        Ok(evaluate_signals(batch, |s| self.value(s)))
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

    fn documentation(&self) -> Option<&Documentation> {
        static DOC: std::sync::LazyLock<Documentation> = std::sync::LazyLock::new(|| {
            Documentation::builder(
                crate::operator::DOC_SECTION,
                "The number of bits in which two 64-bit hashes differ (0-64), as clip_phash's.",
                "hamming_distance(a, b)",
            )
            .with_argument("a", "an integer (a hash)")
            .with_argument("b", "an integer (a hash)")
            .build()
        });
        Some(&DOC)
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
