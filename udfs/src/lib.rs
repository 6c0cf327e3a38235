//! # framefusion-udfs
//!
//! Media primitives over ffmpeg (through `video-rs` and the `ffmpeg-next` bindings it
//! re-exports) and the video operators built on them, exposed as DataFusion UDFs.
//!
//! - [`media`]: probing (container and stream facts, as `ffprobe` reports them), and,
//!   as later operators land, decoding, sampling, seeking and encoding.
//! - [`probe_udf`]: the `probe(path)` scalar function.
//! - [`shots`]: `detect_shots(path [, options])`, PySceneDetect's detectors.
//! - [`signals`]: the clip signals, `clip_signals` (motion, quality, perceptual hash of a range, one decode)
//!   and its views `motion_score`, `clip_quality`, `clip_phash`; `hamming_distance`.
//! - [`speech`]: `speech_activity(path [, start_s, end_s])`, Silero VAD on the sound track.
//! - [`text`]: `text_area_ratio(path, start_s, end_s)` and `ocr_text(path, at_s)`, `text_boxes(path, at_s)`, PP-OCRv4.
//! - [`faces`]: `face_stats(path, start_s, end_s [, fps])` and `face_boxes(path, at_s)`, MTCNN.
//! - [`lipsync`]: `lip_sync(path [, start_s, end_s])`, mouth motion against speech (a heuristic).
//! - [`models`]: the ONNX model runtime and user models (`CREATE FUNCTION ... LANGUAGE onnx`).
//! - [`cut_udf`]: `cut_clip(path, start_s, end_s, dest_prefix [, mode])`, idempotent.
//! - [`expr_fn`]: every operator as an `Expr` builder for the DataFrame API.
//! - [`storage`]: `s3://` locations, their stores and presigned read URLs.
//! - [`register_all`]: registers every UDF of this crate on a DataFusion function
//!   registry, the one entry point the engine (embedded or on Ballista) calls.
//!
//! CPU-heavy work (opening containers, decoding) never runs on async I/O threads: callers
//! run it on blocking threads, and every function here is synchronous.

mod args;
pub mod blocking;
pub mod cut_udf;
pub mod error;
pub mod expr_fn;
pub mod faces;
pub mod lipsync;
pub mod media;
pub mod models;
pub mod probe_udf;
pub mod shots;
pub mod signals;
pub mod speech;
pub mod storage;
pub mod text;

use std::sync::Arc;

use datafusion::execution::FunctionRegistry;
use datafusion::logical_expr::ScalarUDF;

pub use cut_udf::fnv1a;
pub use error::UdfError;

/// The version of framefusion's operators (recorded with a manifest's rows).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Every scalar UDF this crate provides, in registration order.
pub fn scalar_udfs() -> Vec<Arc<ScalarUDF>> {
    vec![
        Arc::new(ScalarUDF::from(probe_udf::ProbeUdf::new())),
        Arc::new(ScalarUDF::from(shots::DetectShotsUdf::default())),
        Arc::new(ScalarUDF::from(signals::ClipSignalsUdf::default())),
        Arc::new(ScalarUDF::from(signals::SignalViewUdf::motion())),
        Arc::new(ScalarUDF::from(signals::SignalViewUdf::quality())),
        Arc::new(ScalarUDF::from(signals::SignalViewUdf::phash())),
        Arc::new(ScalarUDF::from(signals::HammingDistanceUdf::default())),
        Arc::new(ScalarUDF::from(cut_udf::CutClipUdf::default())),
        Arc::new(ScalarUDF::from(speech::SpeechActivityUdf::default())),
        Arc::new(ScalarUDF::from(text::TextAreaRatioUdf::default())),
        Arc::new(ScalarUDF::from(faces::FaceBoxesUdf::default())),
        Arc::new(ScalarUDF::from(faces::FaceStatsUdf::default())),
        Arc::new(ScalarUDF::from(lipsync::LipSyncUdf::default())),
        Arc::new(ScalarUDF::from(text::OcrTextUdf::default())),
        Arc::new(ScalarUDF::from(text::TextBoxesUdf::default())),
    ]
}

/// Registers every framefusion UDF on `registry` (a `SessionContext`, a `SessionState`,
/// or a Ballista executor's function registry).
pub fn register_all(registry: &mut dyn FunctionRegistry) -> datafusion::error::Result<()> {
    for udf in scalar_udfs() {
        registry.register_udf(udf)?;
    }
    Ok(())
}
