//! # framefusion-udfs
//!
//! The video operators, exposed as DataFusion UDFs, over the media I/O of
//! `framefusion-media` (re-exported here as [`media`], with its [`storage`] and
//! [`blocking`] modules).
//!
//! - [`operator`]: the scaffold every operator is written in ([`VideoOperator`], made a
//!   UDF by [`VideoUdf`]): signatures checked at planning, arguments parsed, rows run on
//!   the CPU pool, one per-row failure rule.
//! - [`analysis`] and [`plan`]: one decode per video per query: a planner rule gives each
//!   operator call the demands of its query on the video, and the first call runs one pass
//!   computing them all; [`features`] are its typed per-frame results.
//! - [`probe_udf`]: the `probe(path)` scalar function.
//! - [`shots`]: `detect_shots(path [, options])`, PySceneDetect's detectors.
//! - [`signals`]: the clip signals, `clip_signals` (motion, quality, perceptual hash of a range, one decode)
//!   and its views `motion_score`, `clip_quality`, `clip_phash`; `hamming_distance`.
//! - [`speech`]: `speech_activity(path [, start_s, end_s])`, Silero VAD on the sound track.
//! - [`text`]: `text_area_ratio(path, start_s, end_s)` and `ocr_text(path, at_s)`, `text_boxes(path, at_s)`, PP-OCRv4.
//! - [`faces`]: `face_stats(path, start_s, end_s [, fps])` and `face_boxes(path, at_s)`, MTCNN.
//! - [`lipsync`]: `lip_sync(path [, start_s, end_s])`, mouth motion against speech (a heuristic).
//! - [`models`]: the ONNX model runtime and user models (`CREATE FUNCTION ... LANGUAGE onnx`).
//! - [`nets`]: the networks the operators run (MTCNN, PP-OCRv4), apart from the operators.
//! - [`previews`]: `thumbnail(path, at_s [, size])` and `contact_sheet(path, start_s, end_s [, options])`, JPEG pictures.
//! - [`cut_udf`]: `cut_clip(path, start_s, end_s, dest_prefix [, mode])`, idempotent.
//! - [`caption`]: `caption(path, start_s, end_s [, options])`, a clip's caption from a
//!   vision-language model served by an OpenAI-compatible server ([`chat`]) or generated
//!   in-process from an exported captioner ([`generate`]).
//! - [`translate`]: `translate(text [, options])`, a text's translation by a server or an
//!   exported seq2seq translator run in-process ([`generate`]).
//! - [`embed`]: `embed_clip(path, start_s, end_s, options)`, a clip's embedding from an ONNX
//!   image embedder.
//! - [`expr_fn`]: every operator as an `Expr` builder for the DataFrame API.
//! - [`register_all`]: registers every UDF of this crate on a DataFusion function
//!   registry, the one entry point the engine (embedded or on Ballista) calls.
//!
//! CPU-heavy work (opening containers, decoding, inference) never runs on async I/O
//! threads: the scaffold runs it on the process's CPU pool (`framefusion_media::cpu`).

pub mod analysis;
pub mod answers;
mod args;
pub mod caption;
pub mod chat;
pub mod cut_udf;
pub mod embed;
pub mod error;
pub mod expr_fn;
pub mod faces;
pub mod features;
pub mod generate;
mod generative;
pub mod lipsync;
pub mod models;
pub mod nets;
pub mod operator;
pub mod plan;
pub mod previews;
pub mod probe_udf;
pub mod shots;
pub mod signals;
pub mod speech;
pub mod text;
pub mod translate;

use std::collections::HashSet;
use std::sync::{Arc, LazyLock};

pub use framefusion_media as media;
pub use framefusion_media::{blocking, storage};

use datafusion::execution::FunctionRegistry;
use datafusion::logical_expr::ScalarUDF;

pub use cut_udf::fnv1a;
pub use error::UdfError;
pub use operator::{VideoOperator, VideoUdf};
pub use plan::VideoPassRule;

/// Whether the operator named `name` runs a neural network
/// ([`VideoOperator::runs_model`]).
pub fn operator_runs_model(name: &str) -> bool {
    static MODEL_OPERATORS: LazyLock<HashSet<&'static str>> = LazyLock::new(|| {
        operators()
            .iter()
            .filter(|op| op.runs_model())
            .map(|op| op.name())
            .collect()
    });
    MODEL_OPERATORS.contains(name)
}

/// Whether calls of `udf` run a neural network: a model-backed video operator (or a call
/// whose decode pass computes for one), or a user model (`CREATE FUNCTION ... LANGUAGE
/// onnx`). A cluster places the query stages that call one on its GPU executors.
pub fn runs_model(udf: &ScalarUDF) -> bool {
    let inner = udf.inner().as_ref() as &dyn std::any::Any;
    if let Some(video) = inner.downcast_ref::<VideoUdf>() {
        return video.runs_model();
    }
    inner.is::<models::user::OnnxModelUdf>()
}

/// Whether a call of `udf` with these arguments (`literals[i]`: argument `i`'s value when
/// it is a literal) runs a neural network in `config`'s session: [`runs_model`], narrowed
/// by the call's literal options for an operator that chooses its model per call
/// ([`VideoOperator::models_for`]).
pub fn call_runs_model(
    udf: &ScalarUDF,
    literals: &[Option<datafusion::common::ScalarValue>],
    config: &datafusion::common::config::ConfigOptions,
) -> bool {
    let inner = udf.inner().as_ref() as &dyn std::any::Any;
    match inner.downcast_ref::<VideoUdf>() {
        Some(video) => video.call_runs_model(literals, config),
        None => runs_model(udf),
    }
}

/// What a run records of a call of the operator named `name` with these arguments
/// (`literals[i]`: argument `i`'s value when it is a literal) in `config`'s session
/// ([`VideoOperator::provenance`]); empty for other functions.
pub fn provenance(
    name: &str,
    literals: &[Option<datafusion::common::ScalarValue>],
    config: &datafusion::common::config::ConfigOptions,
) -> std::collections::BTreeMap<String, String> {
    let Some(op) = operators().into_iter().find(|op| op.name() == name) else {
        return Default::default();
    };
    let options = op
        .options_arg()
        .and_then(|i| literals.get(i)?.as_ref())
        .and_then(operator::literal_text)
        .flatten();
    op.provenance(config, options).into_iter().collect()
}

/// `config` with the operators' settings namespaces (`onnx.*`, `caption.*`): one place,
/// so an operator with settings of its own adds them here, beside its registration line.
pub fn with_settings(
    config: datafusion::prelude::SessionConfig,
) -> datafusion::prelude::SessionConfig {
    config
        .with_option_extension(models::OnnxOptions::default())
        .with_option_extension(caption::CaptionOptions::default())
        .with_option_extension(translate::TranslateOptions::default())
}

/// The version of framefusion's operators (recorded with a manifest's rows).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Every video operator, in registration order: adding an operator is one line here.
pub fn operators() -> Vec<Arc<dyn VideoOperator>> {
    vec![
        Arc::new(probe_udf::Probe),
        Arc::new(shots::DetectShots),
        Arc::new(signals::ClipSignalsOp),
        Arc::new(signals::SignalView::motion()),
        Arc::new(signals::SignalView::quality()),
        Arc::new(signals::SignalView::phash()),
        Arc::new(cut_udf::CutClip),
        Arc::new(speech::SpeechActivity),
        Arc::new(text::TextAreaRatio),
        Arc::new(faces::FaceBoxes),
        Arc::new(faces::FaceStats),
        Arc::new(lipsync::LipSyncOp),
        Arc::new(text::OcrText),
        Arc::new(text::TextBoxes),
        Arc::new(previews::Thumbnail),
        Arc::new(previews::ContactSheet),
        Arc::new(embed::EmbedClip),
        Arc::new(caption::Caption),
        Arc::new(translate::Translate),
    ]
}

/// The UDF of the operator named `name`.
pub fn operator_udf(name: &str) -> Option<Arc<ScalarUDF>> {
    operators()
        .into_iter()
        .find(|op| op.name() == name)
        .map(|op| VideoUdf::new(op).into_udf())
}

/// Every scalar UDF this crate provides, in registration order.
pub fn scalar_udfs() -> Vec<Arc<ScalarUDF>> {
    let mut udfs: Vec<Arc<ScalarUDF>> = operators()
        .into_iter()
        .map(|op| VideoUdf::new(op).into_udf())
        .collect();
    udfs.push(Arc::new(ScalarUDF::from(
        signals::HammingDistanceUdf::default(),
    )));
    udfs
}

/// Registers every framefusion UDF on `registry` (a `SessionContext`, a `SessionState`,
/// or a Ballista executor's function registry).
pub fn register_all(registry: &mut dyn FunctionRegistry) -> datafusion::error::Result<()> {
    for udf in scalar_udfs() {
        registry.register_udf(udf)?;
    }
    Ok(())
}

const PASS_TAG: &[u8] = b"framefusion:video_op:v1\n";

#[derive(serde::Serialize, serde::Deserialize)]
struct PassWire {
    name: String,
    pass: analysis::PassSpec,
}

/// The bytes that carry a video operator call's decode-pass demands between processes
/// (client, scheduler, executors); `None` for a UDF that travels by name alone.
pub fn encode_udf(udf: &ScalarUDF) -> Option<Vec<u8>> {
    let video = (udf.inner().as_ref() as &dyn std::any::Any).downcast_ref::<VideoUdf>()?;
    let pass = video.pass()?;
    let mut buf = PASS_TAG.to_vec();
    serde_json::to_writer(
        &mut buf,
        &PassWire {
            name: video.operator().name().to_owned(),
            pass: pass.as_ref().clone(),
        },
    )
    .ok()?;
    Some(buf)
}

/// The UDF [`encode_udf`] encoded; `None` for other bytes.
pub fn decode_udf(bytes: &[u8]) -> Option<datafusion::error::Result<Arc<ScalarUDF>>> {
    let json = bytes.strip_prefix(PASS_TAG)?;
    Some((|| {
        let wire: PassWire = serde_json::from_slice(json).map_err(|e| {
            datafusion::error::DataFusionError::Plan(format!(
                "cannot decode a video operator sent by another framefusion process ({e}); are client, scheduler and executors the same framefusion version?"
            ))
        })?;
        let op = operators()
            .into_iter()
            .find(|op| op.name() == wire.name)
            .ok_or_else(|| {
                datafusion::error::DataFusionError::Plan(format!(
                    "unknown video operator '{}' (another framefusion version?)",
                    wire.name
                ))
            })?;
        Ok(VideoUdf::new(op)
            .with_pass(Some(Arc::new(wire.pass)))
            .into_udf())
    })())
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    /// docs/sql-reference.md documents every registered function with the syntax its
    /// operator declares, and heads no function that is not registered.
    #[test]
    fn the_sql_reference_and_the_registry_agree() {
        let reference = include_str!("../../docs/sql-reference.md");
        let functions = reference
            .split_once("\n## Functions")
            .map(|(_, f)| f)
            .unwrap_or_else(|| panic!("docs/sql-reference.md has no Functions section"));
        // the reference wraps its lines: compare with single spaces
        let flat = functions.split_whitespace().collect::<Vec<_>>().join(" ");
        let mut registered = HashSet::new();
        for udf in super::scalar_udfs() {
            let doc = udf
                .documentation()
                .unwrap_or_else(|| panic!("{} has no documentation", udf.name()));
            assert!(
                !doc.description.is_empty(),
                "{} has no description",
                udf.name()
            );
            assert!(
                flat.contains(&format!("`{}`", doc.syntax_example)),
                "docs/sql-reference.md does not document `{}` (the registered function's syntax)",
                doc.syntax_example
            );
            registered.insert(udf.name().to_owned());
        }
        let mut headed = 0;
        for line in functions.lines().filter(|l| l.starts_with("### `")) {
            // table functions, user functions and framefusion-dedup's functions are
            // registered elsewhere
            if line.contains("(table function)")
                || line.contains("CREATE FUNCTION")
                || line.contains("(dedup ")
            {
                continue;
            }
            let name = line["### `".len()..].split('(').next().unwrap_or_default();
            assert!(
                registered.contains(name),
                "docs/sql-reference.md documents `{name}`, which is not registered"
            );
            headed += 1;
        }
        assert!(headed >= 10, "{headed} functions headed in the reference");
    }
}
