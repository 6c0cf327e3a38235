//! The error type of this crate.

use datafusion::error::DataFusionError;

/// Errors raised while defining or listing video tables.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// The table's location does not exist or cannot be read.
    #[error("location '{location}' {reason}")]
    Location {
        /// The location as the user wrote it.
        location: String,
        /// What is wrong with it, and what to do.
        reason: String,
    },
    /// An option in `OPTIONS (...)` or `SET video.*` is unknown or has a bad value.
    #[error("{0}")]
    Option(String),
    /// The catalog store failed.
    #[error("{0}")]
    Store(String),
    /// The media layer refused the location.
    #[error(transparent)]
    Media(#[from] framefusion_media::MediaError),
}

impl From<CatalogError> for DataFusionError {
    fn from(e: CatalogError) -> Self {
        DataFusionError::External(Box::new(e))
    }
}

/// The error that fails a task for a media failure: an I/O error for a transient one
/// (Ballista's scheduler retries those), the media error otherwise.
pub fn task_error(e: framefusion_media::MediaError) -> DataFusionError {
    if e.is_transient() {
        DataFusionError::IoError(std::io::Error::other(e.to_string()))
    } else {
        DataFusionError::External(Box::new(CatalogError::Media(e)))
    }
}
