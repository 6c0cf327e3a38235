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

use std::sync::Arc;

use datafusion::logical_expr::{Expr, ScalarUDF};
use datafusion::prelude::lit;

use crate::cut_udf::CutClipUdf;
use crate::probe_udf::ProbeUdf;
use crate::shots::DetectShotsUdf;
use crate::signals::{ClipSignalsUdf, HammingDistanceUdf, SignalViewUdf};

fn call(udf: impl datafusion::logical_expr::ScalarUDFImpl + 'static, args: Vec<Expr>) -> Expr {
    Arc::new(ScalarUDF::new_from_impl(udf)).call(args)
}

/// `probe(path)`.
pub fn probe(path: Expr) -> Expr {
    call(ProbeUdf::new(), vec![path])
}

/// `detect_shots(path [, options])`.
pub fn detect_shots(path: Expr, options: Option<&str>) -> Expr {
    let mut args = vec![path];
    args.extend(options.map(lit));
    call(DetectShotsUdf::default(), args)
}

/// `clip_signals(path, start_s, end_s)`.
pub fn clip_signals(path: Expr, start_s: Expr, end_s: Expr) -> Expr {
    call(ClipSignalsUdf::default(), vec![path, start_s, end_s])
}

/// `motion_score(path, start_s, end_s)`.
pub fn motion_score(path: Expr, start_s: Expr, end_s: Expr) -> Expr {
    call(SignalViewUdf::motion(), vec![path, start_s, end_s])
}

/// `clip_quality(path, start_s, end_s)`.
pub fn clip_quality(path: Expr, start_s: Expr, end_s: Expr) -> Expr {
    call(SignalViewUdf::quality(), vec![path, start_s, end_s])
}

/// `clip_phash(path, start_s, end_s)`.
pub fn clip_phash(path: Expr, start_s: Expr, end_s: Expr) -> Expr {
    call(SignalViewUdf::phash(), vec![path, start_s, end_s])
}

/// `hamming_distance(a, b)`.
pub fn hamming_distance(a: Expr, b: Expr) -> Expr {
    call(HammingDistanceUdf::default(), vec![a, b])
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
    call(CutClipUdf::default(), args)
}

/// `speech_activity(path [, start_s, end_s])`.
pub fn speech_activity(path: Expr, range: Option<(Expr, Expr)>) -> Expr {
    let mut args = vec![path];
    if let Some((s, e)) = range {
        args.extend([s, e]);
    }
    call(crate::speech::SpeechActivityUdf::default(), args)
}

/// `face_stats(path, start_s, end_s [, fps])`.
pub fn face_stats(path: Expr, start_s: Expr, end_s: Expr, fps: Option<Expr>) -> Expr {
    let mut args = vec![path, start_s, end_s];
    args.extend(fps);
    call(crate::faces::FaceStatsUdf::default(), args)
}

/// `face_boxes(path, at_s)`.
pub fn face_boxes(path: Expr, at_s: Expr) -> Expr {
    call(crate::faces::FaceBoxesUdf::default(), vec![path, at_s])
}

/// `lip_sync(path [, start_s, end_s])`.
pub fn lip_sync(path: Expr, range: Option<(Expr, Expr)>) -> Expr {
    let mut args = vec![path];
    if let Some((s, e)) = range {
        args.extend([s, e]);
    }
    call(crate::lipsync::LipSyncUdf::default(), args)
}
