//! The error type of this crate.

use datafusion::error::DataFusionError;
use framefusion_media::error::{Coded, ErrorCode, external};

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
        /// What kind of failure.
        code: ErrorCode,
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
    /// A table of the persistent catalog that cannot be rebuilt now.
    #[error(
        "table '{name}' is in the catalog but cannot be opened: {reason}; DROP TABLE {name} or restore its location"
    )]
    Unavailable {
        /// The table.
        name: String,
        /// Why it cannot be opened.
        reason: String,
        /// The code of that failure.
        code: ErrorCode,
    },
}

impl Coded for CatalogError {
    fn code(&self) -> ErrorCode {
        match self {
            CatalogError::Location { code, .. } => *code,
            CatalogError::Option(_) => ErrorCode::InvalidArgument,
            CatalogError::Store(_) => ErrorCode::Internal,
            CatalogError::Media(e) => e.code(),
            CatalogError::Unavailable { code, .. } => *code,
        }
    }
}

impl From<CatalogError> for DataFusionError {
    fn from(e: CatalogError) -> Self {
        external(e)
    }
}

/// The error that fails a task for a media failure: an I/O error for a transient one
/// (Ballista's scheduler retries those), the media error otherwise.
pub fn task_error(e: framefusion_media::MediaError) -> DataFusionError {
    if e.is_transient() {
        DataFusionError::IoError(std::io::Error::other(e.to_string()))
    } else {
        external(CatalogError::Media(e))
    }
}

/// The code of an error (`framefusion_common::code::code_of`: every error of the
/// workspace carries its code).
pub use framefusion_common::code::code_of;
