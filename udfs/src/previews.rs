//! Pictures of a video for people to look at: `thumbnail(path, at_s [, size])`, one frame
//! as a JPEG, and `contact_sheet(path, start_s, end_s [, options])`, a JPEG grid of frames
//! sampled evenly over a range, each labelled with its time.
//!
//! Frames are decoded by the media layer's decoder, as `frames` and the other operators
//! decode them (`framefusion_media::decode`), converted to RGB in the frame's own colour
//! tags, and encoded by ffmpeg's MJPEG encoder (`framefusion_media::jpeg`). Both return
//! Binary (the JPEG file's bytes), which `COPY` and manifest runs write out like any
//! column.
//!
//! Which frames a sheet shows: the range is cut into `frames` equal parts and each tile is
//! the first frame whose timestamp is at or after the middle of its part (a frame shown
//! over a tile's part, never the boundary frame of a neighbouring shot), the same frame
//! `thumbnail` and `ffmpeg -ss T -i FILE -frames:v 1` give for that time. Its label is that
//! frame's own timestamp in seconds. Tiles past the end of the video repeat its last
//! frame (with its time). The frames of a short range are read in one decode; where the
//! tiles are more than [`SEEK_GAP_S`] apart each is read after a seek instead.

use datafusion::arrow::datatypes::DataType;
use datafusion::common::{Result, ScalarValue};
use std::ops::ControlFlow;

use crate::UdfError;
use crate::media::decode::{DecodedFrame, Extras, Resize, Sampling, decode_frames_with, frame_at};
use crate::media::image::Rgb;
use crate::media::jpeg::{DEFAULT_QUALITY, encode_jpeg};
use crate::media::source::{MediaInput, VideoSource};
use crate::operator::{Arg, Batch, RowOutcome, VideoOperator};
use crate::storage::StorageOptions;

/// The longest side of a `thumbnail` without a size, in pixels.
pub const THUMBNAIL_SIZE: u32 = 320;
/// Tiles further apart than this many seconds are each read after a seek (one decode of
/// the range otherwise).
pub const SEEK_GAP_S: f64 = 4.0;
/// Pixels between tiles and around the sheet.
const GAP: usize = 4;
/// The grey between tiles.
const BACKGROUND: u8 = 24;

/// The options of `contact_sheet`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SheetOptions {
    /// Tiles (frames) on the sheet.
    pub frames: usize,
    /// Tiles per row (default: the square root of `frames`, rounded up).
    pub columns: Option<usize>,
    /// Longest side of a tile, in pixels.
    pub size: u32,
    /// Whether each tile shows its time.
    pub labels: bool,
    /// JPEG quantiser, 1 (best) to 31 (smallest), as ffmpeg's `-q:v`.
    pub quality: u8,
}

impl Default for SheetOptions {
    fn default() -> Self {
        Self {
            frames: 9,
            columns: None,
            size: 240,
            labels: true,
            quality: DEFAULT_QUALITY,
        }
    }
}

impl SheetOptions {
    /// Parses `frames=16,columns=4,size=320,labels=false,quality=2` (any subset).
    pub fn parse(spec: &str) -> Result<Self, UdfError> {
        let mut options = Self::default();
        let bad = |part: &str, why: &str| {
            UdfError::Setup(format!(
                "bad contact_sheet option '{part}': {why}; write options such as 'frames=9' (1 to 100), 'columns=3', 'size=240' (a tile's longest side, 16 to 1920 pixels), 'labels=false', 'quality=4' (1 best to 31 smallest), separated by commas"
            ))
        };
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let Some((key, value)) = part.split_once('=') else {
                return Err(bad(part, "expected key=value"));
            };
            let (key, value) = (key.trim().to_ascii_lowercase(), value.trim());
            let int = |lo: usize, hi: usize| {
                value
                    .parse::<usize>()
                    .ok()
                    .filter(|v| (lo..=hi).contains(v))
                    .ok_or_else(|| bad(part, &format!("expected a whole number from {lo} to {hi}")))
            };
            match key.as_str() {
                "frames" => options.frames = int(1, 100)?,
                "columns" => options.columns = Some(int(1, 100)?),
                "size" => options.size = int(16, 1920)? as u32,
                "quality" => options.quality = int(1, 31)? as u8,
                "labels" => {
                    options.labels = match value.to_ascii_lowercase().as_str() {
                        "true" | "yes" | "1" => true,
                        "false" | "no" | "0" => false,
                        _ => return Err(bad(part, "labels is true or false")),
                    }
                }
                _ => return Err(bad(part, "unknown option")),
            }
        }
        Ok(options)
    }

    fn columns(&self) -> usize {
        self.columns
            .unwrap_or_else(|| (self.frames as f64).sqrt().ceil() as usize)
            .clamp(1, self.frames)
    }
}

/// The times a sheet of `n` tiles over `[start_s, end_s)` samples: the middle of each of
/// `n` equal parts.
pub fn sheet_times(start_s: f64, end_s: f64, n: usize) -> Vec<f64> {
    let step = (end_s - start_s) / n as f64;
    (0..n).map(|i| start_s + (i as f64 + 0.5) * step).collect()
}

fn open(source: &VideoSource) -> Result<MediaInput, UdfError> {
    Ok(source.media_input(&StorageOptions::default())?)
}

/// The frames a sheet shows at `times` (ascending), sized by `resize`: one per time.
fn sheet_frames(
    media: &MediaInput,
    times: &[f64],
    resize: Resize,
) -> Result<Vec<DecodedFrame>, UdfError> {
    let (Some(&first), Some(&last)) = (times.first(), times.last()) else {
        return Ok(Vec::new());
    };
    let gap = times.windows(2).map(|w| w[1] - w[0]).fold(0.0, f64::max);
    let mut frames: Vec<DecodedFrame> = Vec::with_capacity(times.len());
    if gap > SEEK_GAP_S {
        for &t in times {
            match frame_at(media, t, resize) {
                Ok(frame) => frames.push(frame),
                // past the end: the last frame the video has
                Err(e) => match frames.last().cloned() {
                    Some(last) => frames.push(last),
                    None => return Err(e.into()),
                },
            }
        }
        return Ok(frames);
    }
    // one decode from the first time on; each time takes the first frame at or after it
    let mut previous: Option<DecodedFrame> = None;
    decode_frames_with(
        media,
        Sampling::All,
        resize,
        true,
        Extras {
            range: Some((first.max(0.0), f64::INFINITY)),
            motion_vectors: false,
        },
        |frame| {
            while frames.len() < times.len() && frame.pts_s >= times[frames.len()] - 1e-9 {
                frames.push(frame.clone());
            }
            if frames.len() == times.len() || frame.pts_s > last {
                return ControlFlow::Break(());
            }
            previous = Some(frame);
            ControlFlow::Continue(())
        },
    )?;
    if frames.len() < times.len() {
        let Some(end) = frames.last().cloned().or(previous) else {
            return Err(UdfError::Option(format!(
                "'{}' has no frame at or after {first:.3} s (the range is past the end of the video)",
                media.display
            )));
        };
        frames.resize(times.len(), end);
    }
    Ok(frames)
}

/// The contact sheet of `frames` as an RGB picture: tiles left to right, top to bottom,
/// labelled with their times when `labels`.
pub fn compose_sheet(frames: &[DecodedFrame], columns: usize, labels: bool) -> Rgb {
    let columns = columns.clamp(1, frames.len().max(1));
    let rows = frames.len().div_ceil(columns).max(1);
    let tw = frames.iter().map(|f| f.width as usize).max().unwrap_or(0);
    let th = frames.iter().map(|f| f.height as usize).max().unwrap_or(0);
    let even = |v: usize| v + v % 2;
    let width = even(columns * (tw + GAP) + GAP);
    let height = even(rows * (th + GAP) + GAP);
    let mut sheet = Rgb {
        width,
        height,
        data: vec![BACKGROUND; width * height * 3],
    };
    for (i, frame) in frames.iter().enumerate() {
        let (x0, y0) = (
            GAP + (i % columns) * (tw + GAP),
            GAP + (i / columns) * (th + GAP),
        );
        let (fw, fh) = (frame.width as usize, frame.height as usize);
        for (y, line) in frame.rgb.chunks_exact(fw * 3).take(fh).enumerate() {
            let at = ((y0 + y) * width + x0) * 3;
            sheet.data[at..at + fw * 3].copy_from_slice(line);
        }
        if labels {
            let text = format!("{:.2}s", frame.pts_s);
            let scale = if fw >= 120 { 2 } else { 1 };
            draw_label(&mut sheet, x0, y0 + fh, &text, scale);
        }
    }
    sheet
}

/// Draws `text` in white on a black box whose bottom-left corner is `(x, bottom)`, with
/// the public-domain 8x8 bitmap font of `font8x8` scaled by `scale`.
fn draw_label(picture: &mut Rgb, x: usize, bottom: usize, text: &str, scale: usize) {
    let glyph = 8 * scale;
    let (w, h) = (text.len() * glyph + 2 * scale, glyph + 2 * scale);
    let top = bottom.saturating_sub(h);
    let mut put = |px: usize, py: usize, value: u8| {
        if px < picture.width && py < picture.height {
            let at = (py * picture.width + px) * 3;
            picture.data[at..at + 3].fill(value);
        }
    };
    for py in top..bottom {
        for px in x..x + w {
            put(px, py, 0);
        }
    }
    for (i, c) in text.chars().enumerate() {
        let rows = font8x8::legacy::BASIC_LEGACY
            .get(c as usize)
            .copied()
            .unwrap_or_default();
        for (gy, bits) in rows.iter().enumerate() {
            for gx in 0..8 {
                if bits >> gx & 1 == 1 {
                    for (dy, dx) in (0..scale).flat_map(|dy| (0..scale).map(move |dx| (dy, dx))) {
                        put(
                            x + scale + i * glyph + gx * scale + dx,
                            top + scale + gy * scale + dy,
                            255,
                        );
                    }
                }
            }
        }
    }
}

/// `thumbnail(path, at_s [, size])`: the frame at `at_s` (the first at or after it) as a
/// JPEG whose longest side is `size` pixels (default [`THUMBNAIL_SIZE`]; never enlarged).
#[derive(Debug, Default)]
pub struct Thumbnail;

impl VideoOperator for Thumbnail {
    fn name(&self) -> &'static str {
        "thumbnail"
    }

    fn description(&self) -> &'static str {
        "A JPEG of the frame shown at at_s, its longer side size pixels (default 320)."
    }

    fn args(&self) -> &'static [Arg] {
        const ARGS: &[Arg] = &[Arg::path(), Arg::seconds("at_s"), Arg::number("size")];
        ARGS
    }

    fn arities(&self) -> Vec<usize> {
        vec![2, 3]
    }

    fn return_type(&self) -> DataType {
        DataType::Binary
    }

    fn evaluate(&self, batch: &Batch<'_>) -> Result<Vec<RowOutcome>> {
        Ok(batch.each_row(|row| {
            let at = batch.number(1, row).unwrap_or_default();
            let size = match batch.number(2, row) {
                None => THUMBNAIL_SIZE,
                Some(s) if (16.0..=4096.0).contains(&s) => s.round() as u32,
                Some(s) => {
                    return Err(UdfError::Setup(format!(
                        "thumbnail size must be from 16 to 4096 pixels (the longest side), not {s}"
                    )));
                }
            };
            let frame = frame_at(&open(&batch.source(row)?)?, at, Resize::LongestSide(size))?;
            let jpeg = encode_jpeg(&Rgb::from(frame), DEFAULT_QUALITY)?;
            Ok(ScalarValue::Binary(Some(jpeg)))
        }))
    }
}

/// `contact_sheet(path, start_s, end_s [, options])`: see the module docs.
#[derive(Debug, Default)]
pub struct ContactSheet;

impl VideoOperator for ContactSheet {
    fn name(&self) -> &'static str {
        "contact_sheet"
    }

    fn description(&self) -> &'static str {
        "A JPEG grid of frames evenly spaced over [start_s, end_s)."
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
        vec![3, 4]
    }

    fn return_type(&self) -> DataType {
        DataType::Binary
    }

    fn evaluate(&self, batch: &Batch<'_>) -> Result<Vec<RowOutcome>> {
        Ok(batch.each_row(|row| {
            let options = SheetOptions::parse(batch.text(3, row).unwrap_or_default())?;
            let (start, end) = batch.range(row).unwrap_or_default();
            if !(start.is_finite() && end.is_finite() && end > start && start >= 0.0) {
                return Err(UdfError::Option(format!(
                    "contact_sheet needs 0 <= start_s < end_s, not [{start}, {end})"
                )));
            }
            let times = sheet_times(start, end, options.frames);
            let frames = sheet_frames(
                &open(&batch.source(row)?)?,
                &times,
                Resize::LongestSide(options.size),
            )?;
            let sheet = compose_sheet(&frames, options.columns(), options.labels);
            Ok(ScalarValue::Binary(Some(encode_jpeg(
                &sheet,
                options.quality,
            )?)))
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_and_times() {
        let o = SheetOptions::parse("frames=4, size=100,labels=no,quality=2").expect("parses");
        assert_eq!(
            (o.frames, o.size, o.labels, o.quality, o.columns()),
            (4, 100, false, 2, 2)
        );
        assert_eq!(
            SheetOptions::parse("").expect("defaults"),
            SheetOptions::default()
        );
        assert_eq!(SheetOptions::default().columns(), 3);
        for bad in [
            "frames=0",
            "frames=x",
            "size=5",
            "labels=maybe",
            "colour=red",
            "frames",
        ] {
            let e = SheetOptions::parse(bad).expect_err(bad).to_string();
            assert!(
                e.contains("contact_sheet option") && e.contains("frames=9"),
                "{e}"
            );
        }
        assert_eq!(sheet_times(10.0, 14.0, 4), vec![10.5, 11.5, 12.5, 13.5]);
    }

    #[test]
    fn tiles_land_in_their_cells_with_labels() {
        let tile = |v: u8, t: f64| DecodedFrame {
            index: 0,
            pts_s: t,
            is_keyframe: false,
            width: 160,
            height: 90,
            rgb: vec![v; 160 * 90 * 3],
            motion: None,
        };
        let frames = [tile(100, 0.5), tile(150, 1.5), tile(200, 2.5)];
        let sheet = compose_sheet(&frames, 2, true);
        assert_eq!((sheet.width, sheet.height), (2 * 164 + 4, 2 * 94 + 4));
        let at = |x: usize, y: usize| sheet.data[(y * sheet.width + x) * 3];
        // tile centres, the gap, the empty fourth cell
        assert_eq!(at(4 + 80, 4 + 20), 100);
        assert_eq!(at(168 + 80, 4 + 20), 150);
        assert_eq!(at(4 + 80, 98 + 20), 200);
        assert_eq!(at(2, 2), BACKGROUND);
        assert_eq!(at(168 + 80, 98 + 45), BACKGROUND);
        // the label box at the tile's bottom-left: black with white strokes
        let label: Vec<u8> = (4..4 + 60).map(|x| at(x, 4 + 90 - 9)).collect();
        assert!(label.contains(&0) && label.contains(&255), "{label:?}");
        assert!(!compose_sheet(&frames, 2, false).data.contains(&255));
    }
}
