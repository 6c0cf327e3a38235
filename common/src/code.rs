//! Typed error codes: what kind of failure an error is, carried by every error type of the
//! workspace ([`Coded`]), so that the Flight SQL status, the HTTP status and a manifest
//! run's decision to stop or record a row and go on read the code, never the message.
//!
//! | code | meaning | gRPC | HTTP | a manifest run |
//! |---|---|---|---|---|
//! | [`ErrorCode::InvalidArgument`] | bad SQL, a bad option or argument | `InvalidArgument` | 400 | the video's error row |
//! | [`ErrorCode::NotFound`] | a table, file, bucket or object that does not exist | `NotFound` | 404 | the video's error row |
//! | [`ErrorCode::PermissionDenied`] | a location outside the allowed roots; a store refusing the credentials | `PermissionDenied` | 403 | the video's error row |
//! | [`ErrorCode::Unauthenticated`] | no valid credentials for the server | `Unauthenticated` | 401 | stops |
//! | [`ErrorCode::Unavailable`] | a store, cluster or node that does not answer; transient I/O | `Unavailable` | 503 | stops (resume later) |
//! | [`ErrorCode::ResourceExhausted`] | memory or another limit | `ResourceExhausted` | 503 | stops |
//! | [`ErrorCode::Unimplemented`] | a feature the engine does not have | `Unimplemented` | 501 | the video's error row |
//! | [`ErrorCode::Cancelled`] | cancelled by its client | `Cancelled` | 499 | stops |
//! | [`ErrorCode::BadMedia`] | a file that is not a readable video (damaged, unsupported) | `InvalidArgument` | 422 | the video's error row |
//! | [`ErrorCode::Setup`] | the deployment or the session cannot run the query: a missing ONNX Runtime library or model file, a model that does not fit, an invalid setting or option value | `FailedPrecondition` | 500 | stops (fix the setup, then resume) |
//! | [`ErrorCode::Internal`] | anything else: an execution failure, a bug | `Internal` | 500 | the video's error row |
//!
//! A video's own failures (its bytes, its codec, its range: `bad_media`, `not_found`, ...)
//! are per row; a `setup` failure is the same for every video, so it fails the query
//! wherever it is met, and a run stops on it without marking any video done.

use std::error::Error;

use datafusion_common::DataFusionError;

/// The kind of a failure (see the module docs).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Bad SQL, a bad option or argument.
    InvalidArgument,
    /// A table, file, bucket or object that does not exist.
    NotFound,
    /// A location outside the allowed roots; a store refusing the credentials.
    PermissionDenied,
    /// No valid credentials for the server.
    Unauthenticated,
    /// A store, cluster or node that does not answer; transient I/O.
    Unavailable,
    /// Memory or another resource limit.
    ResourceExhausted,
    /// A feature the engine does not have.
    Unimplemented,
    /// Cancelled by its client.
    Cancelled,
    /// A file that is not a readable video (damaged, unsupported codec).
    BadMedia,
    /// The setup cannot run the query: a missing library or model, an invalid setting or
    /// option value (the same for every video: it fails the query).
    Setup,
    /// Anything else.
    Internal,
}

impl ErrorCode {
    /// The code's name, as the JSON API and logs show it (`not_found`).
    pub fn name(self) -> &'static str {
        match self {
            ErrorCode::InvalidArgument => "invalid_argument",
            ErrorCode::NotFound => "not_found",
            ErrorCode::PermissionDenied => "permission_denied",
            ErrorCode::Unauthenticated => "unauthenticated",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::ResourceExhausted => "resource_exhausted",
            ErrorCode::Unimplemented => "unimplemented",
            ErrorCode::Cancelled => "cancelled",
            ErrorCode::BadMedia => "bad_media",
            ErrorCode::Setup => "setup",
            ErrorCode::Internal => "internal",
        }
    }

    /// The HTTP status of the code.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::InvalidArgument => 400,
            ErrorCode::Unauthenticated => 401,
            ErrorCode::PermissionDenied => 403,
            ErrorCode::NotFound => 404,
            ErrorCode::BadMedia => 422,
            ErrorCode::Cancelled => 499,
            ErrorCode::Internal | ErrorCode::Setup => 500,
            ErrorCode::Unimplemented => 501,
            ErrorCode::Unavailable | ErrorCode::ResourceExhausted => 503,
        }
    }

    /// Whether a manifest run stops on it (the machinery failed: resume later) rather than
    /// recording the video's error row and going on.
    pub fn stops_a_run(self) -> bool {
        matches!(
            self,
            ErrorCode::Unauthenticated
                | ErrorCode::Unavailable
                | ErrorCode::ResourceExhausted
                | ErrorCode::Cancelled
                | ErrorCode::Setup
        )
    }
}

/// An error that knows its [`ErrorCode`].
pub trait Coded {
    /// The code.
    fn code(&self) -> ErrorCode;
}

/// An error of the workspace with its code, as it travels inside DataFusion: every
/// crate's errors become one ([`external`]) when they enter a DataFusion result, so that
/// [`code_of`] finds the code of any of them by one downcast, knowing none of their
/// types. It shows as the error it holds.
#[derive(Debug)]
pub struct CodedError {
    code: ErrorCode,
    error: Box<dyn Error + Send + Sync>,
}

impl CodedError {
    /// `error`, with its own code.
    pub fn new<E: Coded + Error + Send + Sync + 'static>(error: E) -> Self {
        Self {
            code: error.code(),
            error: Box::new(error),
        }
    }

    /// `error` (of a type that knows no code), with `code`.
    pub fn with_code(code: ErrorCode, error: impl Into<Box<dyn Error + Send + Sync>>) -> Self {
        Self {
            code,
            error: error.into(),
        }
    }

    /// The error it holds.
    pub fn error(&self) -> &(dyn Error + Send + Sync + 'static) {
        self.error.as_ref()
    }
}

impl std::fmt::Display for CodedError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.error.fmt(f)
    }
}

impl Error for CodedError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.error.source()
    }
}

impl Coded for CodedError {
    fn code(&self) -> ErrorCode {
        self.code
    }
}

/// `error` as a DataFusion error that carries its code ([`CodedError`]).
pub fn external<E: Coded + Error + Send + Sync + 'static>(error: E) -> DataFusionError {
    DataFusionError::External(Box::new(CodedError::new(error)))
}

/// The code of a DataFusion error, from types alone (no message is read): the outermost
/// [`CodedError`] in its chain of sources, else what its root is (DataFusion's variants;
/// inside [`DataFusionError::External`] an I/O or object-store error). Errors of other
/// types are [`ErrorCode::Internal`].
pub fn code_of(error: &DataFusionError) -> ErrorCode {
    let mut level: Option<&(dyn Error + 'static)> = Some(error);
    while let Some(e) = level {
        if let Some(coded) = e.downcast_ref::<CodedError>() {
            return coded.code;
        }
        level = e.source();
    }
    if let DataFusionError::Collection(errors) = error {
        return errors.first().map_or(ErrorCode::Internal, code_of);
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
        DataFusionError::IoError(e) => task_io_code(e),
        DataFusionError::ObjectStore(e) => object_store_code(e),
        DataFusionError::External(inner) => {
            if let Some(e) = inner.downcast_ref::<std::io::Error>() {
                task_io_code(e)
            } else if let Some(e) = inner.downcast_ref::<object_store::Error>() {
                object_store_code(e)
            } else {
                ErrorCode::Internal
            }
        }
        _ => ErrorCode::Internal,
    }
}

/// The code of an I/O error that failed a task: a missing or forbidden file as such, any
/// other I/O error transient (transient media errors become I/O errors so that Ballista
/// retries them).
fn task_io_code(e: &std::io::Error) -> ErrorCode {
    match io_code(e) {
        ErrorCode::Internal => ErrorCode::Unavailable,
        code => code,
    }
}

/// Whether an I/O error is worth retrying (a network or device hiccup).
pub fn io_is_transient(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        Interrupted
            | TimedOut
            | WouldBlock
            | ResourceBusy
            | ConnectionReset
            | ConnectionRefused
            | ConnectionAborted
            | BrokenPipe
            | NetworkDown
            | NetworkUnreachable
            | HostUnreachable
            | StaleNetworkFileHandle
    ) || e.raw_os_error() == Some(5) // EIO
}

/// The code of an I/O error, by its kind.
pub fn io_code(e: &std::io::Error) -> ErrorCode {
    match e.kind() {
        std::io::ErrorKind::NotFound => ErrorCode::NotFound,
        std::io::ErrorKind::PermissionDenied => ErrorCode::PermissionDenied,
        _ if io_is_transient(e) => ErrorCode::Unavailable,
        _ => ErrorCode::Internal,
    }
}

/// The code of an object-store error, by its variant.
pub fn object_store_code(e: &object_store::Error) -> ErrorCode {
    use object_store::Error as E;
    match e {
        E::NotFound { .. } => ErrorCode::NotFound,
        E::PermissionDenied { .. } | E::Unauthenticated { .. } => ErrorCode::PermissionDenied,
        E::NotSupported { .. } | E::NotImplemented { .. } => ErrorCode::Unimplemented,
        E::InvalidPath { .. } | E::UnknownConfigurationKey { .. } => ErrorCode::InvalidArgument,
        E::AlreadyExists { .. } | E::Precondition { .. } | E::NotModified { .. } => {
            ErrorCode::Internal
        }
        _ => ErrorCode::Unavailable,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[derive(Debug)]
    struct Missing;

    impl std::fmt::Display for Missing {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("no such model")
        }
    }

    impl Error for Missing {}

    impl Coded for Missing {
        fn code(&self) -> ErrorCode {
            ErrorCode::Setup
        }
    }

    #[test]
    fn codes_are_found_by_type_through_any_wrapping() {
        let coded = || external(Missing);
        assert_eq!(code_of(&coded()), ErrorCode::Setup);
        assert_eq!(coded().to_string(), "External error: no such model");
        let wrapped = DataFusionError::Context("running".into(), Box::new(coded()));
        assert_eq!(code_of(&wrapped), ErrorCode::Setup);
        let shared = DataFusionError::Shared(Arc::new(coded()));
        assert_eq!(code_of(&shared), ErrorCode::Setup);
        let nested = DataFusionError::External(Box::new(coded()));
        assert_eq!(code_of(&nested), ErrorCode::Setup);
        assert_eq!(
            code_of(&DataFusionError::Collection(vec![coded()])),
            ErrorCode::Setup
        );
        // the types every crate meets
        assert_eq!(
            code_of(&DataFusionError::Plan("x".into())),
            ErrorCode::InvalidArgument
        );
        assert_eq!(
            code_of(&DataFusionError::IoError(std::io::Error::other("reset"))),
            ErrorCode::Unavailable
        );
        let gone = std::io::Error::from(std::io::ErrorKind::NotFound);
        assert_eq!(
            code_of(&DataFusionError::External(Box::new(gone))),
            ErrorCode::NotFound
        );
        // an error of a type that carries no code
        let unknown = DataFusionError::External(Box::new(std::fmt::Error));
        assert_eq!(code_of(&unknown), ErrorCode::Internal);
    }
}
