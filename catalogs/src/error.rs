//! The error type of this crate.

use datafusion::error::DataFusionError;
use framefusion_media::error::{Coded, ErrorCode};

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

/// An error type this crate does not know, as a crate above it codes it.
pub type CodeHook<'a> =
    &'a dyn Fn(&(dyn std::error::Error + Send + Sync + 'static)) -> Option<ErrorCode>;

/// The code of an engine error, from its type alone: DataFusion's variants, and inside
/// [`DataFusionError::External`] the media and catalog errors, I/O and object-store errors,
/// nested DataFusion errors, and whatever `above` codes (the error types of the crates
/// above this one; `framefusion_engine::error::error_code` passes its own). No message is
/// read.
pub fn code_of(error: &DataFusionError, above: CodeHook<'_>) -> ErrorCode {
    let external =
        |inner: &(dyn std::error::Error + Send + Sync + 'static)| external_code(inner, above);
    match error {
        DataFusionError::Context(_, inner) | DataFusionError::Diagnostic(_, inner) => {
            return code_of(inner, above);
        }
        DataFusionError::Shared(inner) => return code_of(inner, above),
        DataFusionError::Collection(errors) => {
            return errors
                .first()
                .map_or(ErrorCode::Internal, |e| code_of(e, above));
        }
        DataFusionError::External(inner) => {
            if let Some(code) = external(inner.as_ref()) {
                return code;
            }
        }
        _ => {}
    }
    match error.find_root() {
        DataFusionError::SQL(..)
        | DataFusionError::SchemaError(..)
        | DataFusionError::Configuration(_)
        | DataFusionError::Plan(_) => ErrorCode::InvalidArgument,
        DataFusionError::NotImplemented(_) | DataFusionError::Substrait(_) => {
            ErrorCode::Unimplemented
        }
        DataFusionError::ResourcesExhausted(_) => ErrorCode::ResourceExhausted,
        // a task's I/O error is a transient failure (transient media errors become these
        // so that Ballista retries them)
        DataFusionError::IoError(e) => match framefusion_media::error::io_code(e) {
            ErrorCode::NotFound => ErrorCode::NotFound,
            ErrorCode::PermissionDenied => ErrorCode::PermissionDenied,
            _ => ErrorCode::Unavailable,
        },
        DataFusionError::ObjectStore(e) => framefusion_media::error::object_store_code(e),
        DataFusionError::External(inner) => external(inner.as_ref()).unwrap_or(ErrorCode::Internal),
        _ => ErrorCode::Internal,
    }
}

/// The code of an error inside [`DataFusionError::External`], when its type is known.
fn external_code(
    error: &(dyn std::error::Error + Send + Sync + 'static),
    above: CodeHook<'_>,
) -> Option<ErrorCode> {
    if let Some(e) = error.downcast_ref::<framefusion_media::MediaError>() {
        return Some(e.code());
    }
    if let Some(e) = error.downcast_ref::<CatalogError>() {
        return Some(e.code());
    }
    if let Some(e) = error.downcast_ref::<DataFusionError>() {
        return Some(code_of(e, above));
    }
    if let Some(e) = error.downcast_ref::<std::io::Error>() {
        return Some(match framefusion_media::error::io_code(e) {
            ErrorCode::Internal => ErrorCode::Unavailable,
            code => code,
        });
    }
    if let Some(e) = error.downcast_ref::<object_store::Error>() {
        return Some(framefusion_media::error::object_store_code(e));
    }
    above(error)
}
