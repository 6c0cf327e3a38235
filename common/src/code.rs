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
