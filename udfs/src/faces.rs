//! Faces: `face_boxes(path, at_s)` and `face_stats(path, start_s, end_s [, fps])`, over
//! MTCNN ([`crate::nets::mtcnn`]): the Arrow shape of faces, the decode-pass consumer of
//! `face_stats` (faces of sampled frames, batched through the network) and the operators.

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
pub use crate::features::{FaceSamples, FrameFaces};
use crate::media::image::Rgb;
use crate::models::{Batcher, Models, OnnxOptions};
pub use crate::nets::mtcnn::{
    Face, MODELS as MTCNN_MODELS, Mtcnn, ONET_MODEL, PNET_MODEL, RNET_MODEL, iou,
};
use crate::operator::{
    Arg, Batch, FeatureConsumer, RowOutcome, VideoOperator, error_struct, list_value, struct_value,
};
use crate::storage::StorageOptions;

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
        mtcnn.pnet().device,
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
        Feature::Faces(Arc::new(FaceSamples(self.samples)))
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

    fn models(&self) -> &'static [&'static str] {
        MTCNN_MODELS
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
        let mtcnn = Mtcnn::of(batch.models()).map_err(UdfError::into_task_error)?;
        let item = DataType::Struct(face_fields());
        let rows = batch.rows();
        // frames of many rows per inference call (one row at a time on the CPU)
        let found = crate::models::infer_rows(
            rows.len(),
            options.frames_per_call(mtcnn.pnet()),
            |i| {
                let row = rows[i];
                let at = batch.number(1, row).unwrap_or_default();
                Some(batch.source(row).and_then(|source| {
                    crate::error::retry_transient(|| crate::media::decode::rgb_at(&source, at))
                        .map_err(UdfError::from)
                }))
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

    fn models(&self) -> &'static [&'static str] {
        MTCNN_MODELS
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
        models: &Models,
        config: &ConfigOptions,
    ) -> Result<Box<dyn FeatureConsumer>, UdfError> {
        let options = OnnxOptions::from_config(config);
        let mtcnn = Mtcnn::of(models)?;
        let Need::Faces { fps, .. } = demand.need else {
            return Err(UdfError::Setup(format!(
                "face_stats computes no {}",
                demand.need.kind()
            )));
        };
        let fps = fps.get();
        let batch = options.frames_per_call(mtcnn.pnet());
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
        Ok(batch.each_row(|row| {
            let (start_s, end_s) = batch.range(row).unwrap_or_default();
            let fps = batch.number(3, row).unwrap_or(FACE_FPS);
            let source = batch.source(row)?;
            let feature = crate::analysis::features(
                &source,
                &StorageOptions::default(),
                Some((start_s, end_s)),
                &faces_demand(fps, &options),
                batch.pass,
                batch.config,
            )?;
            let samples = feature.faces()?;
            stats_value(&samples.range(start_s, end_s)).map_err(|e| UdfError::Option(e.to_string()))
        }))
    }
}
