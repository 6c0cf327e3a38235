//! The one mapping of engine errors to gRPC status codes.
//!
//! | engine error | code |
//! |---|---|
//! | SQL syntax, planning, schema, configuration (bad SQL, unknown column, bad option) | `InvalidArgument` |
//! | a table, file, bucket or prefix that does not exist | `NotFound` |
//! | a location outside the server's allowed roots | `PermissionDenied` |
//! | a feature DataFusion or framefusion does not have | `Unimplemented` |
//! | memory or other resource limits | `ResourceExhausted` |
//! | I/O and object-store failures (the store or a cluster node unreachable) | `Unavailable` |
//! | a query cancelled by its client | `Cancelled` |
//! | everything else (execution failures, internal errors, bugs) | `Internal` |
//!
//! The message is the engine's one-line user message, which names the input and the fix.

use datafusion::error::DataFusionError;
use framefusion_catalogs::CatalogError;
use framefusion_media::MediaError;
use framefusion_udfs::UdfError;
use tonic::{Code, Status};

/// The gRPC status of an engine error.
pub fn status(error: &DataFusionError) -> Status {
    Status::new(code(error), framefusion_engine::user_message(error))
}

/// The gRPC code of an engine error (see the module table).
pub fn code(error: &DataFusionError) -> Code {
    // a refused location is refused whichever layer reported it (a table of the catalog
    // that cannot be opened, a scan, an operator)
    if framefusion_engine::user_message(error).contains(NOT_ALLOWED) {
        return Code::PermissionDenied;
    }
    if framefusion_engine::error::is_argument_error(error) {
        return Code::InvalidArgument;
    }
    match error.find_root() {
        DataFusionError::SQL(..)
        | DataFusionError::SchemaError(..)
        | DataFusionError::Configuration(_) => Code::InvalidArgument,
        DataFusionError::Plan(message) => {
            if is_not_found(message) {
                Code::NotFound
            } else {
                Code::InvalidArgument
            }
        }
        DataFusionError::NotImplemented(_) | DataFusionError::Substrait(_) => Code::Unimplemented,
        DataFusionError::ResourcesExhausted(_) => Code::ResourceExhausted,
        DataFusionError::IoError(_) | DataFusionError::ObjectStore(_) => Code::Unavailable,
        DataFusionError::External(inner) => external_code(inner.as_ref()),
        DataFusionError::Execution(message) => {
            if is_not_found(message) {
                Code::NotFound
            } else if message.contains("cancelled") {
                Code::Cancelled
            } else {
                Code::Internal
            }
        }
        DataFusionError::ArrowError(..)
        | DataFusionError::ParquetError(_)
        | DataFusionError::Internal(_)
        | DataFusionError::ExecutionJoin(_)
        | DataFusionError::Ffi(_) => Code::Internal,
        // find_root unwraps these; a leftover one is still the engine's own failure
        DataFusionError::Context(_, inner) | DataFusionError::Diagnostic(_, inner) => code(inner),
        DataFusionError::Shared(inner) => code(inner),
        DataFusionError::Collection(errors) => errors.first().map_or(Code::Internal, code),
    }
}

/// How [`MediaError::NotAllowed`] reads, wherever it surfaces as text.
const NOT_ALLOWED: &str = "is outside the locations this server may read or write";

fn is_not_found(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    (m.contains("table '") && m.contains("not found"))
        || m.contains("does not exist")
        || m.contains("no such")
}

/// The media error inside an operator's or a table's error, if there is one.
fn media_error<'a>(
    error: &'a (dyn std::error::Error + Send + Sync + 'static),
) -> Option<&'a MediaError> {
    if let Some(media) = error.downcast_ref::<MediaError>() {
        return Some(media);
    }
    match (
        error.downcast_ref::<UdfError>(),
        error.downcast_ref::<CatalogError>(),
    ) {
        (Some(UdfError::Media(media)), _) | (_, Some(CatalogError::Media(media))) => Some(media),
        _ => None,
    }
}

fn external_code(error: &(dyn std::error::Error + Send + Sync + 'static)) -> Code {
    if let Some(media) = media_error(error) {
        return match media {
            MediaError::NotAllowed { .. } => Code::PermissionDenied,
            MediaError::Storage { transient, .. } if *transient => Code::Unavailable,
            MediaError::Option(_) | MediaError::UnsupportedUri { .. } => Code::InvalidArgument,
            _ => Code::Internal,
        };
    }
    if let Some(UdfError::Option(_)) = error.downcast_ref::<UdfError>() {
        return Code::InvalidArgument;
    }
    if error.downcast_ref::<std::io::Error>().is_some() {
        return Code::Unavailable;
    }
    let text = error.to_string();
    if is_not_found(&text) {
        Code::NotFound
    } else if text.contains("unknown option") || text.contains("syntax error") {
        Code::InvalidArgument
    } else {
        Code::Internal
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes() {
        let plan = DataFusionError::Plan("table 'datafusion.public.nope' not found".into());
        assert_eq!(code(&plan), Code::NotFound);
        assert_eq!(
            code(&DataFusionError::Plan("No field named x".into())),
            Code::InvalidArgument
        );
        let denied = DataFusionError::External(Box::new(MediaError::NotAllowed {
            uri: "/etc".into(),
            roots: "/data".into(),
        }));
        assert_eq!(code(&denied), Code::PermissionDenied);
        let wrapped = DataFusionError::Context("planning".into(), Box::new(denied));
        assert_eq!(code(&wrapped), Code::PermissionDenied);
        assert_eq!(
            code(&DataFusionError::IoError(std::io::Error::other("reset"))),
            Code::Unavailable
        );
        assert_eq!(
            code(&DataFusionError::Internal("bug".into())),
            Code::Internal
        );
        assert_eq!(
            code(&DataFusionError::NotImplemented("x".into())),
            Code::Unimplemented
        );
    }
}
