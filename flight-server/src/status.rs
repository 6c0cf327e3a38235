//! The one mapping of engine errors to gRPC status codes: the error's typed code
//! (`framefusion_engine::error::error_code`, which reads types, never messages), one gRPC
//! code per [`ErrorCode`].
//!
//! | engine error | code |
//! |---|---|
//! | SQL syntax, planning, schema, configuration (bad SQL, unknown column, bad option); a file that is not a readable video | `InvalidArgument` |
//! | a table, file, bucket or prefix that does not exist | `NotFound` |
//! | a location outside the server's allowed roots; a store refusing the credentials | `PermissionDenied` |
//! | a feature DataFusion or framefusion does not have | `Unimplemented` |
//! | memory or other resource limits | `ResourceExhausted` |
//! | I/O and object-store failures (the store or a cluster node unreachable) | `Unavailable` |
//! | a query cancelled by its client | `Cancelled` |
//! | the setup cannot run the query (a missing ONNX Runtime library or model, an invalid setting or option value) | `FailedPrecondition` |
//! | everything else (execution failures, internal errors, bugs) | `Internal` |
//!
//! The message is the engine's one-line user message, which names the input and the fix.

use datafusion::error::DataFusionError;
use framefusion_engine::error::{ErrorCode, error_code};
use tonic::{Code, Status};

/// The gRPC status of an engine error.
pub fn status(error: &DataFusionError) -> Status {
    Status::new(code(error), framefusion_engine::user_message(error))
}

/// The gRPC code of an engine error (see the module table).
pub fn code(error: &DataFusionError) -> Code {
    grpc(error_code(error))
}

/// The gRPC code of an [`ErrorCode`].
pub fn grpc(code: ErrorCode) -> Code {
    match code {
        ErrorCode::InvalidArgument | ErrorCode::BadMedia => Code::InvalidArgument,
        ErrorCode::NotFound => Code::NotFound,
        ErrorCode::PermissionDenied => Code::PermissionDenied,
        ErrorCode::Unauthenticated => Code::Unauthenticated,
        ErrorCode::Unavailable => Code::Unavailable,
        ErrorCode::ResourceExhausted => Code::ResourceExhausted,
        ErrorCode::Unimplemented => Code::Unimplemented,
        ErrorCode::Cancelled => Code::Cancelled,
        ErrorCode::Setup => Code::FailedPrecondition,
        ErrorCode::Internal => Code::Internal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use framefusion_engine::error::EngineError;
    use framefusion_media::MediaError;

    #[test]
    fn codes_come_from_types() {
        let missing = DataFusionError::from(EngineError::TableNotFound("t".into()));
        assert_eq!(code(&missing), Code::NotFound);
        // a message that reads like another code does not change it
        assert_eq!(
            code(&DataFusionError::Plan(
                "table 'x' not found: permission denied".into()
            )),
            Code::InvalidArgument
        );
        let denied = framefusion_media::error::external(MediaError::NotAllowed {
            uri: "/etc".into(),
            roots: "/data".into(),
        });
        assert_eq!(code(&denied), Code::PermissionDenied);
        let wrapped = DataFusionError::Context("planning".into(), Box::new(denied));
        assert_eq!(code(&wrapped), Code::PermissionDenied);
        assert_eq!(
            code(&DataFusionError::IoError(std::io::Error::other("reset"))),
            Code::Unavailable
        );
        assert_eq!(
            code(&DataFusionError::Execution(
                "cancelled, does not exist".into()
            )),
            Code::Internal
        );
        assert_eq!(
            code(&DataFusionError::NotImplemented("x".into())),
            Code::Unimplemented
        );
        let unreachable = DataFusionError::from(EngineError::Unreachable {
            url: "df://x:1".into(),
            message: "refused".into(),
        });
        assert_eq!(code(&unreachable), Code::Unavailable);
        let store = DataFusionError::ObjectStore(Box::new(object_store::Error::NotFound {
            path: "a".into(),
            source: "gone".into(),
        }));
        assert_eq!(code(&store), Code::NotFound);
    }
}
