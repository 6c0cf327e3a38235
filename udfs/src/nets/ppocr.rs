//! PP-OCRv4 text detection and recognition on ONNX Runtime, with RapidOCR's pre- and
//! post-processing: the network behind `text_area_ratio`, `text_boxes` and `ocr_text`.
//!
//! Pre-processing (RapidOCR's `DetPreProcess`, `limit_type=min`, 736): the frame is scaled
//! so its shorter side is at least 736, each side rounded to a multiple of 32 (OpenCV
//! bilinear), channels in BGR order, `(v / 255 - 0.5) / 0.5`. Post-processing (its
//! `DBPostProcess`: thresh 0.3, box_thresh 0.5, unclip_ratio 1.6, 2x2 dilation, fast
//! score): the probability map is thresholded and dilated, each 8-connected region's
//! bounding rectangle is kept when its shorter side is at least 3 and its mean probability
//! at least 0.5, grown by `area * 1.6 / perimeter` on every side (the DB "unclip") and
//! kept when its shorter side is then at least 5, and scaled back to the frame.
//! Recognition (`ocr_text`, RapidOCR's `TextRecognizer` with PP-OCRv4 rec): each box is
//! cropped (turned upright when it is 1.5 times taller than wide), scaled to height 48
//! keeping its aspect (width at least 320, padded), BGR, `(v / 255 - 0.5) / 0.5`; the CTC
//! output is decoded greedily (repeats merged, blanks dropped) over the character list in
//! the model's metadata, and lines scoring under 0.5 are dropped, as RapidOCR does.
//!
//! One difference: regions are boxed by their axis-aligned rectangle, not OpenCV's
//! minimum-area rotated rectangle, which is the same for horizontal text (captions,
//! subtitles) and larger for slanted text.

use crate::UdfError;
use crate::media::image::Rgb;
use crate::models::LoadedModel;

/// The text-detection model in `onnx.model_dir` (installed by scripts/setup.sh).
pub const DET_MODEL: &str = "ch_PP-OCRv4_det_infer.onnx";
/// The text-recognition model in `onnx.model_dir`.
pub const REC_MODEL: &str = "ch_PP-OCRv4_rec_infer.onnx";
const REC_HEIGHT: usize = 48;
const REC_MIN_WIDTH: usize = 320;
const TEXT_SCORE: f32 = 0.5;
const LIMIT_SIDE: f64 = 736.0;
const THRESH: f32 = 0.3;
const BOX_THRESH: f32 = 0.5;
const UNCLIP_RATIO: f32 = 1.6;
const MIN_SIZE: f32 = 3.0;
const MAX_CANDIDATES: usize = 1000;

/// A detected text box in frame pixels (axis-aligned), with its mean probability.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TextBox {
    /// Left.
    pub x0: f32,
    /// Top.
    pub y0: f32,
    /// Right.
    pub x1: f32,
    /// Bottom.
    pub y1: f32,
    /// Mean text probability inside the region.
    pub score: f32,
}

/// Python's `round` (halves to even), as RapidOCR rounds the input size.
fn round_half_even(x: f64) -> f64 {
    let r = x.round();
    if (x - x.trunc()).abs() == 0.5 && r % 2.0 != 0.0 {
        r - x.signum()
    } else {
        r
    }
}

/// How the detector's input is sized (`onnx.text_det_limit`): RapidOCR's `min:736` (the
/// shorter side at least 736 pixels, the default, as RapidOCR runs PP-OCRv4) or `max:N`
/// (the longer side at most N pixels: `max:960` is about half the pixels of a 720p frame
/// at `min:736`, for twice the speed; benches/RESULTS.md has the agreement).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DetLimit {
    /// Scale up so the shorter side is at least this many pixels.
    Min(u32),
    /// Scale down so the longer side is at most this many pixels.
    Max(u32),
}

impl Default for DetLimit {
    fn default() -> Self {
        DetLimit::Min(LIMIT_SIDE as u32)
    }
}

impl DetLimit {
    /// Parses `min:736` or `max:960` (a bare number is `min`).
    pub fn parse(text: &str) -> Result<Self, UdfError> {
        let t = text.trim().to_ascii_lowercase();
        let (kind, side) = t.split_once(':').unwrap_or(("min", t.as_str()));
        let side = side
            .trim()
            .parse::<u32>()
            .ok()
            .filter(|s| (32..=8192).contains(s));
        match (kind.trim(), side) {
            ("min", Some(side)) => Ok(DetLimit::Min(side)),
            ("max", Some(side)) => Ok(DetLimit::Max(side)),
            _ => Err(UdfError::Setup(format!(
                "onnx.text_det_limit = '{text}': use min:SIDE (RapidOCR's default, min:736) or max:SIDE (for example max:960), SIDE from 32 to 8192"
            ))),
        }
    }
}

impl std::fmt::Display for DetLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DetLimit::Min(s) => write!(f, "min:{s}"),
            DetLimit::Max(s) => write!(f, "max:{s}"),
        }
    }
}

/// The detector's input size for a `width` x `height` frame, as RapidOCR sizes it
/// (RapidOCR's default limit, `min:736`).
pub fn input_size(width: usize, height: usize) -> (usize, usize) {
    input_size_with(width, height, DetLimit::default())
}

/// The detector's input size for a `width` x `height` frame under `limit`: scaled as
/// RapidOCR's `DetPreProcess` does, each side rounded to a multiple of 32.
pub fn input_size_with(width: usize, height: usize, limit: DetLimit) -> (usize, usize) {
    let (w, h) = (width as f64, height as f64);
    let ratio = match limit {
        DetLimit::Min(side) if w.min(h) < f64::from(side) => f64::from(side) / w.min(h),
        DetLimit::Max(side) if w.max(h) > f64::from(side) => f64::from(side) / w.max(h),
        _ => 1.0,
    };
    let side = |v: f64| (round_half_even((v * ratio).trunc() / 32.0) * 32.0).max(32.0) as usize;
    (side(w), side(h))
}

/// Text boxes of an RGB frame.
pub fn detect_text(model: &LoadedModel, frame: &Rgb) -> Result<Vec<TextBox>, UdfError> {
    Ok(detect_text_batch(model, std::slice::from_ref(frame))?
        .pop()
        .unwrap_or_default())
}

/// Text boxes of frames of one size, in one inference call (RapidOCR's sizing).
pub fn detect_text_batch(
    model: &LoadedModel,
    frames: &[Rgb],
) -> Result<Vec<Vec<TextBox>>, UdfError> {
    detect_text_sized(model, frames, DetLimit::default())
}

/// Text boxes of frames of one size, in one inference call, the input sized by `limit`.
pub fn detect_text_sized(
    model: &LoadedModel,
    frames: &[Rgb],
    limit: DetLimit,
) -> Result<Vec<Vec<TextBox>>, UdfError> {
    let Some(first) = frames.first() else {
        return Ok(Vec::new());
    };
    if frames
        .iter()
        .any(|f| (f.width, f.height) != (first.width, first.height))
    {
        return Err(UdfError::Model(
            "text detection batches frames of one size".to_owned(),
        ));
    }
    let (iw, ih) = input_size_with(first.width, first.height, limit);
    let scaled: Vec<Vec<u8>> = frames
        .iter()
        .map(|f| f.resize_bilinear(iw, ih).data)
        .collect();
    let inputs: Vec<&[u8]> = scaled.iter().map(Vec::as_slice).collect();
    detect_scaled(model, &inputs, (iw, ih), (first.width, first.height))
}

/// Text boxes of RGB pictures already at the detector's input size `(iw, ih)`, in one
/// inference call, in the coordinates of `frame` (the frames' own size).
pub fn detect_scaled(
    model: &LoadedModel,
    pictures: &[&[u8]],
    (iw, ih): (usize, usize),
    frame: (usize, usize),
) -> Result<Vec<Vec<TextBox>>, UdfError> {
    let plane = iw * ih;
    // RapidOCR's normalisation, (v / 255 - 0.5) / 0.5, of every byte value
    let scale: [f32; 256] = std::array::from_fn(|v| (v as f32 / 255.0 - 0.5) / 0.5);
    let mut input = vec![0f32; pictures.len() * 3 * plane];
    for (picture, tensor) in pictures.iter().zip(input.chunks_exact_mut(3 * plane)) {
        let (b, gr) = tensor.split_at_mut(plane);
        let (g, r) = gr.split_at_mut(plane);
        // BGR planes, as OpenCV loads images for RapidOCR
        for ((px, ((b, g), r)), _) in picture
            .chunks_exact(3)
            .zip(b.iter_mut().zip(g.iter_mut()).zip(r.iter_mut()))
            .zip(0..plane)
        {
            *b = scale[usize::from(px[2])];
            *g = scale[usize::from(px[1])];
            *r = scale[usize::from(px[0])];
        }
    }
    let n = pictures.len() as i64;
    let (shape, pred) = model.run("x", vec![n, 3, ih as i64, iw as i64], input, None)?;
    let (mh, mw) = match shape.as_slice() {
        [b, _, h, w] if *b == n => (*h as usize, *w as usize),
        _ => {
            return Err(UdfError::Setup(format!(
                "text detection gave an output of shape {shape:?}, expected [{n}, 1, H, W]"
            )));
        }
    };
    Ok(pred
        .chunks_exact(mh * mw)
        .map(|map| boxes_from_map(map, mw, mh, frame.0, frame.1))
        .collect())
}

/// DB post-processing of a `w` x `h` probability map into boxes on a `dest_w` x `dest_h`
/// frame.
pub fn boxes_from_map(
    pred: &[f32],
    w: usize,
    h: usize,
    dest_w: usize,
    dest_h: usize,
) -> Vec<TextBox> {
    // threshold, then 2x2 dilation (OpenCV's anchor: a pixel is set when any of itself,
    // its left, upper and upper-left neighbours is)
    let raw: Vec<bool> = pred.iter().map(|&p| p > THRESH).collect();
    let mut mask = vec![false; w * h];
    for y in 0..h {
        for x in 0..w {
            let at = |xx: usize, yy: usize| raw[yy * w + xx];
            mask[y * w + x] = at(x, y)
                || (x > 0 && at(x - 1, y))
                || (y > 0 && at(x, y - 1))
                || (x > 0 && y > 0 && at(x - 1, y - 1));
        }
    }
    let mut seen = vec![false; w * h];
    let mut boxes = Vec::new();
    let mut stack = Vec::new();
    let mut regions = 0;
    for start in 0..w * h {
        if !mask[start] || seen[start] {
            continue;
        }
        regions += 1;
        if regions > MAX_CANDIDATES {
            break;
        }
        let (mut x0, mut y0, mut x1, mut y1) = (usize::MAX, usize::MAX, 0, 0);
        seen[start] = true;
        stack.push(start);
        while let Some(i) = stack.pop() {
            let (x, y) = (i % w, i / w);
            x0 = x0.min(x);
            x1 = x1.max(x);
            y0 = y0.min(y);
            y1 = y1.max(y);
            for dy in -1i64..=1 {
                for dx in -1i64..=1 {
                    let (nx, ny) = (x as i64 + dx, y as i64 + dy);
                    if nx < 0 || ny < 0 || nx >= w as i64 || ny >= h as i64 {
                        continue;
                    }
                    let j = ny as usize * w + nx as usize;
                    if mask[j] && !seen[j] {
                        seen[j] = true;
                        stack.push(j);
                    }
                }
            }
        }
        // the rectangle through the region's outer pixel centres (its contour)
        let (bw, bh) = ((x1 - x0) as f32, (y1 - y0) as f32);
        if bw.min(bh) < MIN_SIZE {
            continue;
        }
        let mut sum = 0f32;
        for y in y0..=y1 {
            sum += pred[y * w + x0..=y * w + x1].iter().sum::<f32>();
        }
        let score = sum / ((x1 - x0 + 1) * (y1 - y0 + 1)) as f32;
        if score < BOX_THRESH {
            continue;
        }
        let d = bw * bh * UNCLIP_RATIO / (2.0 * (bw + bh));
        if (bw + 2.0 * d).min(bh + 2.0 * d) < MIN_SIZE + 2.0 {
            continue;
        }
        let sx = dest_w as f32 / w as f32;
        let sy = dest_h as f32 / h as f32;
        let clip = |v: f32, max: usize| v.round().clamp(0.0, max as f32);
        boxes.push(TextBox {
            x0: clip((x0 as f32 - d) * sx, dest_w),
            y0: clip((y0 as f32 - d) * sy, dest_h),
            x1: clip((x1 as f32 + d) * sx, dest_w),
            y1: clip((y1 as f32 + d) * sy, dest_h),
            score,
        });
    }
    // RapidOCR drops boxes whose sides are 3 pixels or less in the frame
    boxes.retain(|b| b.x1 - b.x0 > 3.0 && b.y1 - b.y0 > 3.0);
    boxes
}

/// The share of a `w` x `h` frame the boxes cover (overlaps counted once).
pub fn covered_fraction(boxes: &[TextBox], w: usize, h: usize) -> f64 {
    if boxes.is_empty() || w == 0 || h == 0 {
        return 0.0;
    }
    let mut covered = vec![false; w * h];
    for b in boxes {
        let (x0, x1) = (b.x0 as usize, (b.x1 as usize).min(w));
        let (y0, y1) = (b.y0 as usize, (b.y1 as usize).min(h));
        for y in y0..y1 {
            covered[y * w + x0..y * w + x1.max(x0)].fill(true);
        }
    }
    covered.iter().filter(|&&c| c).count() as f64 / (w * h) as f64
}

/// The recogniser's characters: index 0 is the CTC blank, then the model's list, then a
/// space (as RapidOCR builds it).
fn characters(rec: &LoadedModel) -> Result<Vec<String>, UdfError> {
    static CACHE: std::sync::OnceLock<
        std::sync::Mutex<std::collections::HashMap<std::path::PathBuf, Vec<String>>>,
    > = std::sync::OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    let mut cache = cache.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(list) = cache.get(&rec.path) {
        return Ok(list.clone());
    }
    let listed = rec.custom_metadata("character").ok_or_else(|| {
        UdfError::Setup(format!(
            "'{}' carries no character list in its metadata: it is not a PP-OCR recognition model",
            rec.path.display()
        ))
    })?;
    let mut list = vec![String::new()];
    list.extend(listed.lines().map(str::to_owned));
    list.push(" ".to_owned());
    cache.insert(rec.path.clone(), list.clone());
    Ok(list)
}

fn crop(frame: &Rgb, b: &TextBox) -> Rgb {
    let (x0, y0) = (b.x0 as usize, b.y0 as usize);
    let w = (b.x1 - b.x0) as usize;
    let h = (b.y1 - b.y0) as usize;
    let (w, h) = (
        w.min(frame.width - x0.min(frame.width)),
        h.min(frame.height - y0.min(frame.height)),
    );
    let mut data = Vec::with_capacity(w * h * 3);
    for y in y0..y0 + h {
        let row = (y * frame.width + x0) * 3;
        data.extend_from_slice(&frame.data[row..row + w * 3]);
    }
    let cropped = Rgb {
        width: w,
        height: h,
        data,
    };
    if h as f64 >= 1.5 * w as f64 {
        // upright: rotate 90 degrees counter-clockwise (numpy's rot90)
        let mut data = Vec::with_capacity(w * h * 3);
        for x in (0..w).rev() {
            for y in 0..h {
                let at = (y * w + x) * 3;
                data.extend_from_slice(&cropped.data[at..at + 3]);
            }
        }
        return Rgb {
            width: h,
            height: w,
            data,
        };
    }
    cropped
}

/// The text on a cropped line and its score (mean probability of the kept characters).
pub fn recognize(rec: &LoadedModel, line: &Rgb) -> Result<(String, f32), UdfError> {
    if line.width == 0 || line.height == 0 {
        return Ok((String::new(), 0.0));
    }
    let chars = characters(rec)?;
    let ratio = line.width as f64 / line.height as f64;
    let width =
        ((REC_HEIGHT as f64 * ratio.max(REC_MIN_WIDTH as f64 / REC_HEIGHT as f64)) as usize).max(1);
    let resized_w = ((REC_HEIGHT as f64 * ratio).ceil() as usize).clamp(1, width);
    let scaled = line.resize_bilinear(resized_w, REC_HEIGHT);
    let plane = REC_HEIGHT * width;
    let mut input = vec![0f32; 3 * plane];
    for y in 0..REC_HEIGHT {
        for x in 0..resized_w {
            let px = &scaled.data[(y * resized_w + x) * 3..][..3];
            for (c, &v) in [px[2], px[1], px[0]].iter().enumerate() {
                input[c * plane + y * width + x] = (f32::from(v) / 255.0 - 0.5) / 0.5;
            }
        }
    }
    let (shape, probs) = rec.run(
        "x",
        vec![1, 3, REC_HEIGHT as i64, width as i64],
        input,
        None,
    )?;
    let (steps, classes) = match shape.as_slice() {
        [_, t, c] => (*t as usize, *c as usize),
        _ => {
            return Err(UdfError::Setup(format!(
                "text recognition gave an output of shape {shape:?}, expected [1, T, C]"
            )));
        }
    };
    let mut text = String::new();
    let mut scores = Vec::new();
    let mut previous = usize::MAX;
    for t in 0..steps {
        let row = &probs[t * classes..(t + 1) * classes];
        let (best, p) =
            row.iter().enumerate().fold(
                (0, f32::MIN),
                |acc, (i, &p)| if p > acc.1 { (i, p) } else { acc },
            );
        if best != 0
            && best != previous
            && let Some(c) = chars.get(best)
        {
            text.push_str(c);
            scores.push(p);
        }
        previous = best;
    }
    let score = if scores.is_empty() {
        0.0
    } else {
        scores.iter().sum::<f32>() / scores.len() as f32
    };
    Ok((text, score))
}

/// The text lines of a frame in reading order (top to bottom; left to right within 10
/// pixels of height, as RapidOCR sorts), with their boxes and scores.
pub fn read_text(
    det: &LoadedModel,
    rec: &LoadedModel,
    frame: &Rgb,
) -> Result<Vec<(TextBox, String, f32)>, UdfError> {
    let mut boxes = detect_text(det, frame)?;
    boxes.sort_by(|a, b| {
        (a.y0, a.x0)
            .partial_cmp(&(b.y0, b.x0))
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    for i in 0..boxes.len().saturating_sub(1) {
        for j in (0..=i).rev() {
            if (boxes[j + 1].y0 - boxes[j].y0).abs() < 10.0 && boxes[j + 1].x0 < boxes[j].x0 {
                boxes.swap(j, j + 1);
            } else {
                break;
            }
        }
    }
    let mut lines = Vec::new();
    for b in boxes {
        let (text, score) = recognize(rec, &crop(frame, &b))?;
        if score >= TEXT_SCORE && !text.is_empty() {
            lines.push((b, text, score));
        }
    }
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_sizes_follow_rapidocr() {
        // 1280x720: shorter side 720 < 736 -> ratio 1.0222 -> 1308x736 -> 1312x736
        assert_eq!(input_size(1280, 720), (1312, 736));
        assert_eq!(input_size(640, 272), (1728, 736));
        assert_eq!(input_size(1920, 1080), (1920, 1088));
    }

    #[test]
    fn one_region_becomes_one_unclipped_box() {
        let (w, h) = (64, 32);
        let mut pred = vec![0f32; w * h];
        for y in 10..20 {
            for x in 10..50 {
                pred[y * w + x] = 0.9;
            }
        }
        let boxes = boxes_from_map(&pred, w, h, w, h);
        assert_eq!(boxes.len(), 1);
        let b = boxes[0];
        // dilation adds a pixel right and down: 40x10 region, extents 40 and 10
        let d: f32 = 40.0 * 10.0 * 1.6 / (2.0 * 50.0);
        assert_eq!((b.x0, b.y0), ((10.0 - d).round(), (10.0 - d).round()));
        assert_eq!((b.x1, b.y1), ((50.0 + d).round(), (20.0 + d).round()));
        assert!(covered_fraction(&boxes, w, h) > 0.4);
    }
}
