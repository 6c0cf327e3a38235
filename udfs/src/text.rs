//! Burned-in text (captions, subtitles, titles): `text_area_ratio(path, start_s, end_s)`,
//! `text_boxes(path, at_s)` and `ocr_text(path, at_s)` over PP-OCRv4
//! ([`crate::nets::ppocr`]): the Arrow shape of boxes, the decode-pass consumer of
//! `text_area_ratio` (text coverage of sampled frames, batched through the detector) and
//! the operators.

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
use crate::analysis::{Demand, Feature, Frames, Need};
pub use crate::features::{TextSample, TextSamples};
use crate::media::decode::rgb_at;
use crate::models::{Batcher, LoadedModel, Models, OnnxOptions};
pub use crate::nets::ppocr::*;
use crate::operator::{
    Arg, Batch, FeatureConsumer, RowOutcome, VideoOperator, list_value, struct_value,
};
use crate::storage::StorageOptions;

/// `ocr_text(path, at_s)`: the text burned into the frame shown at `at_s`, one line per
/// detected box in reading order (an empty string when there is none; null when the video
/// cannot be read).
#[derive(Debug, Default)]
pub struct OcrText;

const AT_ARGS: &[Arg] = &[Arg::path(), Arg::seconds("at_s")];

impl VideoOperator for OcrText {
    fn name(&self) -> &'static str {
        "ocr_text"
    }

    fn description(&self) -> &'static str {
        "The text PP-OCRv4 reads in the frame shown at at_s."
    }

    fn models(&self) -> &'static [&'static str] {
        &[DET_MODEL, REC_MODEL]
    }

    fn args(&self) -> &'static [Arg] {
        AT_ARGS
    }

    fn return_type(&self) -> DataType {
        DataType::Utf8
    }

    fn evaluate(&self, batch: &Batch<'_>) -> Result<Vec<RowOutcome>> {
        let (det, rec) = (batch.model(DET_MODEL)?, batch.model(REC_MODEL)?);
        Ok(batch.each_row(|row| {
            let at = batch.number(1, row).unwrap_or_default();
            let frame = rgb_at(&batch.source(row)?, at)?;
            let lines = read_text(&det, &rec, &frame)?;
            Ok(ScalarValue::Utf8(Some(
                lines
                    .into_iter()
                    .map(|(_, t, _)| t)
                    .collect::<Vec<_>>()
                    .join("\n"),
            )))
        }))
    }
}

fn box_fields() -> Fields {
    ["x0", "y0", "x1", "y1", "score"]
        .iter()
        .map(|n| Field::new(*n, DataType::Float32, false))
        .collect()
}

fn boxes_type() -> DataType {
    DataType::List(Arc::new(Field::new_list_field(
        DataType::Struct(box_fields()),
        true,
    )))
}

fn boxes_value(boxes: &[TextBox]) -> Result<ScalarValue> {
    let items = boxes
        .iter()
        .map(|b| {
            struct_value(
                &box_fields(),
                [b.x0, b.y0, b.x1, b.y1, b.score]
                    .into_iter()
                    .map(|v| ScalarValue::Float32(Some(v)))
                    .collect(),
            )
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(list_value(items, &DataType::Struct(box_fields())))
}

/// `text_boxes(path, at_s)`: the text boxes of the frame shown at `at_s` (frame pixels,
/// axis-aligned, with their scores); null when the video cannot be read.
#[derive(Debug, Default)]
pub struct TextBoxes;

impl VideoOperator for TextBoxes {
    fn name(&self) -> &'static str {
        "text_boxes"
    }

    fn description(&self) -> &'static str {
        "The text boxes PP-OCRv4 detects in the frame shown at at_s, with their scores."
    }

    fn models(&self) -> &'static [&'static str] {
        &[DET_MODEL]
    }

    fn args(&self) -> &'static [Arg] {
        AT_ARGS
    }

    fn return_type(&self) -> DataType {
        boxes_type()
    }

    fn evaluate(&self, batch: &Batch<'_>) -> Result<Vec<RowOutcome>> {
        let options = OnnxOptions::from_config(batch.config);
        let det = batch.model(DET_MODEL)?;
        let rows = batch.rows();
        // frames of many rows per inference call (one row at a time on the CPU)
        let found = crate::models::infer_rows(
            rows.len(),
            options.frames_per_call(&det),
            |i| {
                let row = rows[i];
                let at = batch.number(1, row).unwrap_or_default();
                Some(batch.source(row).and_then(|source| {
                    crate::error::retry_transient(|| rgb_at(&source, at)).map_err(UdfError::from)
                }))
            },
            |frames| detect_text_batch(&det, frames),
        );
        Ok(found
            .into_iter()
            .map(|outcome| match outcome {
                Some(Ok(boxes)) => boxes_value(&boxes).map_err(|e| UdfError::Option(e.to_string())),
                Some(Err(e)) => Err(e),
                None => Err(UdfError::Option("no frame".to_owned())),
            })
            .collect())
    }
}

impl TextSamples {
    /// The mean share of the frame covered by text over the samples of `[start_s, end_s)`
    /// (0 when none is sampled there).
    pub fn ratio(&self, start_s: f64, end_s: f64) -> f64 {
        let (sum, slots) = self
            .0
            .iter()
            .filter(|s| s.pts_s >= start_s - 1e-9 && s.pts_s < end_s - 1e-9)
            .fold((0.0, 0usize), |(sum, n), s| {
                (sum + s.fraction * s.slots as f64, n + s.slots)
            });
        if slots == 0 { 0.0 } else { sum / slots as f64 }
    }
}

/// The sampling rate of `text_area_ratio`.
const TEXT_FPS: f64 = 1.0;

/// Detects text on the frames sampled at [`TEXT_FPS`] during a decode pass: each sampled
/// frame is converted by swscale to RGB at its own size, then resized to the detector's
/// input size as OpenCV does ([`framefusion_media::image::resize_rgb`]), and inference runs
/// in batches on a thread of its own ([`crate::models::Batcher`]), overlapping the
/// preparation of the next frames.
struct TextConsumer {
    limit: DetLimit,
    sampler: Option<SlotSampler>,
    size: Option<((usize, usize), PictureSpec)>,
    batcher: Batcher<TextItem, TextSample>,
    samples: Vec<TextSample>,
}

impl TextConsumer {
    fn sample(
        &mut self,
        frame: &Decoded,
        slots: usize,
        pictures: &Pictures,
    ) -> Result<(), MediaError> {
        if slots == 0 {
            return Ok(());
        }
        let (frame_size, spec) = *self.size.get_or_insert_with(|| {
            // RapidOCR's pixels: the frame in RGB at its own size, then OpenCV's bilinear
            // resize to the input size (swscale's bilinear straight from YUV differs at
            // large scales: on bikes.mp4, 640x272 scaled to 1728x736, a clip's ratio
            // moved from 0.42 to 0.22)
            let (w, h) = (frame.width() as usize, frame.height() as usize);
            (
                (w, h),
                PictureSpec {
                    width: w as u32,
                    height: h as u32,
                    format: PictureFormat::Rgb24,
                    filter: Filter::Bicubic,
                    matrix: framefusion_media::pass::Matrix::Tagged,
                },
            )
        });
        let input = input_size_with(frame_size.0, frame_size.1, self.limit);
        let picture = pictures.get(frame, spec)?;
        let picture = Arc::new(Picture {
            data: framefusion_media::image::resize_rgb(
                &picture.data,
                (picture.width, picture.height),
                input,
            ),
            width: input.0,
            height: input.1,
            format: PictureFormat::Rgb24,
        });
        let sample = TextSample {
            pts_s: frame.pts_s,
            slots,
            fraction: 0.0,
        };
        self.batcher
            .push((sample, picture, frame_size))
            .map_err(|e| MediaError::Option(e.to_string()))
    }
}

/// One sampled frame on its way to inference: the sample, the frame at the detector's
/// input size, and the frame's own size (the boxes' coordinates).
type TextItem = (TextSample, Arc<Picture>, (usize, usize));

/// Inference of batches of [`TextItem`]s with `model`, created with the consumer (see
/// [`Batcher`] on the inference thread's priority).
fn text_batcher(model: Arc<LoadedModel>, batch: usize) -> Batcher<TextItem, TextSample> {
    Batcher::new(model.device, batch, move |items: Vec<TextItem>| {
        let pictures: Vec<&[u8]> = items.iter().map(|(_, p, _)| p.data.as_slice()).collect();
        let (size, frame) = items
            .first()
            .map_or(((0, 0), (0, 0)), |(_, p, f)| ((p.width, p.height), *f));
        let boxes = detect_scaled(&model, &pictures, size, frame)?;
        Ok(items
            .iter()
            .zip(boxes)
            .map(|((s, _, _), b)| TextSample {
                fraction: covered_fraction(&b, frame.0, frame.1),
                ..*s
            })
            .collect())
    })
}

impl FrameConsumer for TextConsumer {
    fn name(&self) -> &str {
        "text detection at 1 fps (text_area_ratio)"
    }

    fn start(&mut self, stream: &StreamInfo) -> Result<(), MediaError> {
        self.sampler = Some(SlotSampler::new(TEXT_FPS, stream.time_base, stream.origin));
        Ok(())
    }

    fn frame(
        &mut self,
        frame: &Decoded,
        previous: Option<&Decoded>,
        pictures: &Pictures,
    ) -> Result<(), MediaError> {
        let slots = self.sampler.as_mut().map_or(0, |s| s.push(frame.ts));
        match previous {
            Some(previous) => self.sample(previous, slots, pictures),
            None => Ok(()),
        }
    }

    fn finish(
        &mut self,
        last: Option<&Decoded>,
        end_ts: Option<i64>,
        pictures: &Pictures,
    ) -> Result<(), MediaError> {
        let slots = self.sampler.as_mut().map_or(0, |s| s.finish(end_ts));
        if let Some(last) = last {
            self.sample(last, slots, pictures)?;
        }
        self.samples = self
            .batcher
            .finish()
            .map_err(|e| MediaError::Option(e.to_string()))?;
        Ok(())
    }
}

impl FeatureConsumer for TextConsumer {
    fn into_feature(self: Box<Self>) -> Feature {
        Feature::Text(Arc::new(TextSamples(self.samples)))
    }
}

/// The demand of `text_area_ratio` under the session's settings.
fn text_demand(options: &OnnxOptions) -> Result<Demand, UdfError> {
    let limit = DetLimit::parse(&options.text_det_limit)?;
    Ok(Demand {
        frames: Frames::sampled(TEXT_FPS),
        ..Demand::new(Need::Text {
            limit: limit.to_string(),
            model: options.model_path(DET_MODEL).display().to_string(),
            device: options.device.clone(),
        })
    })
}

const TEXT_AREA_RATIO: &str = "text_area_ratio";

/// `text_area_ratio(path, start_s, end_s)`: the mean share of the frame covered by text
/// over frames sampled at 1 fps in the range (null when the video cannot be read).
#[derive(Debug, Default)]
pub struct TextAreaRatio;

impl VideoOperator for TextAreaRatio {
    fn name(&self) -> &'static str {
        TEXT_AREA_RATIO
    }

    fn description(&self) -> &'static str {
        "The mean share of the picture covered by text (PP-OCRv4 detection) over frames sampled from [start_s, end_s)."
    }

    fn models(&self) -> &'static [&'static str] {
        &[DET_MODEL]
    }

    fn args(&self) -> &'static [Arg] {
        const ARGS: &[Arg] = &[Arg::path(), Arg::seconds("start_s"), Arg::seconds("end_s")];
        ARGS
    }

    fn return_type(&self) -> DataType {
        DataType::Float64
    }

    fn demands(&self, _args: &[Expr], config: &ConfigOptions) -> Vec<Demand> {
        text_demand(&OnnxOptions::from_config(config))
            .into_iter()
            .collect()
    }

    fn consumer(
        &self,
        demand: &Demand,
        models: &Models,
        config: &ConfigOptions,
    ) -> Result<Box<dyn FeatureConsumer>, UdfError> {
        let options = OnnxOptions::from_config(config);
        let model = models.get(DET_MODEL)?;
        let Need::Text { limit, .. } = &demand.need else {
            return Err(UdfError::Setup(format!(
                "text_area_ratio computes no {}",
                demand.need.kind()
            )));
        };
        let limit = DetLimit::parse(limit)?;
        Ok(Box::new(TextConsumer {
            batcher: text_batcher(Arc::clone(&model), options.frames_per_call(&model)),
            limit,
            sampler: None,
            size: None,
            samples: Vec::new(),
        }))
    }

    fn evaluate(&self, batch: &Batch<'_>) -> Result<Vec<RowOutcome>> {
        let options = OnnxOptions::from_config(batch.config);
        let demand = text_demand(&options)
            .map_err(|e| datafusion::error::DataFusionError::Plan(e.to_string()))?;
        Ok(batch.each_row(|row| {
            let (start_s, end_s) = batch.range(row).unwrap_or_default();
            if !(start_s.is_finite() && end_s.is_finite() && start_s >= 0.0 && end_s > start_s) {
                return Err(UdfError::Option(format!(
                    "text_area_ratio: the range [{start_s}, {end_s}) is empty or invalid; give 0 <= start_s < end_s"
                )));
            }
            let source = batch.source(row)?;
            let feature = crate::analysis::features(
                &source,
                &StorageOptions::default(),
                Some((start_s, end_s)),
                &demand,
                batch.pass,
                batch.config,
            )?;
            let samples = feature.text()?;
            Ok(ScalarValue::Float64(Some(samples.ratio(start_s, end_s))))
        }))
    }
}
