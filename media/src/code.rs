//! The codes of media errors ([`Coded`] for [`MediaError`]), I/O and object-store errors;
//! the codes themselves are `framefusion_common::code`'s.

pub use framefusion_common::code::{Coded, ErrorCode};

use crate::MediaError;

impl Coded for MediaError {
    fn code(&self) -> ErrorCode {
        match self {
            MediaError::NotAllowed { .. } => ErrorCode::PermissionDenied,
            MediaError::Option(_) | MediaError::UnsupportedUri { .. } => ErrorCode::InvalidArgument,
            MediaError::Probe {
                transient: true, ..
            } => ErrorCode::Unavailable,
            MediaError::Storage { code, .. } => *code,
            MediaError::Probe { .. } | MediaError::Decode { .. } => ErrorCode::BadMedia,
            MediaError::Init(_) => ErrorCode::Setup,
        }
    }
}

/// The code of an I/O error: a missing file is [`ErrorCode::NotFound`], a refused one
/// [`ErrorCode::PermissionDenied`], one worth retrying [`ErrorCode::Unavailable`].
pub fn io_code(e: &std::io::Error) -> ErrorCode {
    match e.kind() {
        std::io::ErrorKind::NotFound => ErrorCode::NotFound,
        std::io::ErrorKind::PermissionDenied => ErrorCode::PermissionDenied,
        _ if crate::error::io_is_transient(e) => ErrorCode::Unavailable,
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
