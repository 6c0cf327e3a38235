//! # framefusion-common
//!
//! What every framefusion crate shares, and nothing of ffmpeg or ONNX Runtime:
//!
//! - [`code`]: the typed error codes every error of the workspace carries ([`ErrorCode`],
//!   [`Coded`]), which decide a Flight SQL status, an HTTP status, and whether a run records
//!   a video's error row or stops.
//! - [`failures`]: the failure ledger of runs: every failure of a video, wherever it is met
//!   (a scan's probe, an operator on an executor), reported to the ledger of the query's
//!   run, so that the process writing the manifest accounts for every video however the
//!   query is written.
//! - [`settings`]: settings whose entries reach every process of a cluster.
//! - [`metrics`]: the process's Prometheus metrics, named once.
//! - [`cpu`]: the one CPU budget of the process: the pool blocking work runs on, and the
//!   thread counts of decoders and ONNX Runtime derived from it.
//! - [`blocking`]: running blocking work from async code.
//! - [`shared`]: what a runtime's sessions and tasks share (object-store clients, caches),
//!   reached from a session's configuration without a process global.

pub mod blocking;
pub mod code;
pub mod cpu;
pub mod failures;
pub mod metrics;
pub mod settings;
pub mod shared;

pub use code::{Coded, ErrorCode};
/// DataFusion's common crate, for [`prefixed_extension!`](crate::prefixed_extension).
pub use datafusion_common;
