//! The error type of this crate.

use datafusion::error::DataFusionError;

/// Errors raised by the media primitives and UDFs of `framefusion-udfs`.
#[derive(Debug, thiserror::Error)]
pub enum UdfError {
    /// ffmpeg could not open or understand a file.
    #[error("cannot probe '{path}': {message}")]
    Probe {
        /// The file that failed.
        path: String,
        /// What ffmpeg (or our checks) reported.
        message: String,
    },
    /// A URI whose scheme this build cannot read.
    #[error("cannot read '{uri}': {reason}")]
    UnsupportedUri {
        /// The URI as given.
        uri: String,
        /// Why, and what to use instead.
        reason: String,
    },
    /// The ffmpeg libraries failed to initialise.
    #[error("ffmpeg failed to initialise: {0}")]
    Init(String),
}

impl From<UdfError> for DataFusionError {
    fn from(e: UdfError) -> Self {
        DataFusionError::External(Box::new(e))
    }
}
