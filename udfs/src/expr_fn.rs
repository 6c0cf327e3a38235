//! The video operators as DataFusion expressions, for the DataFrame API:
//!
//! ```ignore
//! use datafusion::prelude::*;
//! use framefusion_udfs::expr_fn::*;
//! let shots = ctx
//!     .table("raw").await?
//!     .select(vec![col("path"), detect_shots(col("path"), None).alias("shots")])?
//!     .unnest_columns(&["shots"])?;
//! ```
//!
//! Every operator, including one added without a builder here, is also a call by its
//! type through [`OperatorCall`]: `shots::DetectShots.call(vec![col("path")])`.

use std::sync::Arc;

use datafusion::logical_expr::{Expr, ScalarUDF};
use datafusion::prelude::lit;

use crate::signals::{HammingDistanceUdf, SignalView};
use crate::{VideoOperator, VideoUdf, cut_udf, faces, lipsync, previews, probe_udf, shots};
use crate::{signals, speech, text};

/// A call of an operator as an expression, by the operator's type, not its name: a call
/// of an operator that does not exist does not compile (a name would become NULL).
pub trait OperatorCall: VideoOperator + Sized + 'static {
    /// `self(args...)`; the arguments are checked when the plan is built, as in SQL.
    fn call(self, args: Vec<Expr>) -> Expr {
        VideoUdf::new(Arc::new(self)).into_udf().call(args)
    }
}

impl<T: VideoOperator + 'static> OperatorCall for T {}

fn call(op: impl OperatorCall, args: Vec<Expr>) -> Expr {
    op.call(args)
}

/// `probe(path)`.
pub fn probe(path: Expr) -> Expr {
    call(probe_udf::Probe, vec![path])
}

/// `detect_shots(path [, options])`.
pub fn detect_shots(path: Expr, options: Option<&str>) -> Expr {
    let mut args = vec![path];
    args.extend(options.map(lit));
    call(shots::DetectShots, args)
}

/// `clip_signals(path, start_s, end_s)`.
pub fn clip_signals(path: Expr, start_s: Expr, end_s: Expr) -> Expr {
    call(signals::ClipSignalsOp, vec![path, start_s, end_s])
}

/// `motion_score(path, start_s, end_s)`.
pub fn motion_score(path: Expr, start_s: Expr, end_s: Expr) -> Expr {
    call(SignalView::motion(), vec![path, start_s, end_s])
}

/// `clip_quality(path, start_s, end_s)`.
pub fn clip_quality(path: Expr, start_s: Expr, end_s: Expr) -> Expr {
    call(SignalView::quality(), vec![path, start_s, end_s])
}

/// `clip_phash(path, start_s, end_s)`.
pub fn clip_phash(path: Expr, start_s: Expr, end_s: Expr) -> Expr {
    call(SignalView::phash(), vec![path, start_s, end_s])
}

/// `hamming_distance(a, b)`.
pub fn hamming_distance(a: Expr, b: Expr) -> Expr {
    Arc::new(ScalarUDF::from(HammingDistanceUdf::default())).call(vec![a, b])
}

/// `cut_clip(path, start_s, end_s, dest_prefix [, mode])`.
pub fn cut_clip(
    path: Expr,
    start_s: Expr,
    end_s: Expr,
    dest_prefix: &str,
    mode: Option<&str>,
) -> Expr {
    let mut args = vec![path, start_s, end_s, lit(dest_prefix)];
    args.extend(mode.map(lit));
    call(cut_udf::CutClip, args)
}

/// `speech_activity(path [, start_s, end_s])`.
pub fn speech_activity(path: Expr, range: Option<(Expr, Expr)>) -> Expr {
    let mut args = vec![path];
    if let Some((s, e)) = range {
        args.extend([s, e]);
    }
    call(speech::SpeechActivity, args)
}

/// `text_area_ratio(path, start_s, end_s)`.
pub fn text_area_ratio(path: Expr, start_s: Expr, end_s: Expr) -> Expr {
    call(text::TextAreaRatio, vec![path, start_s, end_s])
}

/// `ocr_text(path, at_s)`.
pub fn ocr_text(path: Expr, at_s: Expr) -> Expr {
    call(text::OcrText, vec![path, at_s])
}

/// `text_boxes(path, at_s)`.
pub fn text_boxes(path: Expr, at_s: Expr) -> Expr {
    call(text::TextBoxes, vec![path, at_s])
}

/// `thumbnail(path, at_s [, size])`.
pub fn thumbnail(path: Expr, at_s: Expr, size: Option<u32>) -> Expr {
    let mut args = vec![path, at_s];
    args.extend(size.map(|s| lit(f64::from(s))));
    call(previews::Thumbnail, args)
}

/// `contact_sheet(path, start_s, end_s [, options])`.
pub fn contact_sheet(path: Expr, start_s: Expr, end_s: Expr, options: Option<&str>) -> Expr {
    let mut args = vec![path, start_s, end_s];
    args.extend(options.map(lit));
    call(previews::ContactSheet, args)
}

/// `face_stats(path, start_s, end_s [, fps])`.
pub fn face_stats(path: Expr, start_s: Expr, end_s: Expr, fps: Option<Expr>) -> Expr {
    let mut args = vec![path, start_s, end_s];
    args.extend(fps);
    call(faces::FaceStats, args)
}

/// `face_boxes(path, at_s)`.
pub fn face_boxes(path: Expr, at_s: Expr) -> Expr {
    call(faces::FaceBoxes, vec![path, at_s])
}

/// `lip_sync(path [, start_s, end_s])`.
pub fn lip_sync(path: Expr, range: Option<(Expr, Expr)>) -> Expr {
    let mut args = vec![path];
    if let Some((s, e)) = range {
        args.extend([s, e]);
    }
    call(lipsync::LipSyncOp, args)
}

#[cfg(test)]
mod tests {
    use datafusion::prelude::col;

    use super::*;

    #[test]
    fn an_operator_is_called_by_its_type() {
        let by_type = probe_udf::Probe.call(vec![col("path")]);
        let Expr::ScalarFunction(f) = &by_type else {
            panic!("not a function call: {by_type}");
        };
        assert_eq!(f.name(), "probe");
        assert_eq!(by_type, probe(col("path")));
        assert_eq!(
            shots::DetectShots
                .call(vec![col("path"), lit("threshold=20")])
                .to_string(),
            "detect_shots(path, Utf8(\"threshold=20\"))"
        );
    }
}
