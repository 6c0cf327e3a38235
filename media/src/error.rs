//! The error type of this crate, and which failures are transient.
//!
//! A *permanent* failure belongs to the input (a truncated file, a file that is not a
//! video, a missing file): it becomes the row's error and the query goes on. A *transient*
//! failure belongs to the moment (an I/O error, a timeout, a busy resource): retrying may
//! succeed, so callers retry it a few times ([`retry_transient`]) and then fail the task
//! with an I/O error, the kind of error Ballista's scheduler retries on another attempt,
//! possibly on another executor.

use std::time::Duration;

pub use framefusion_common::code::{
    Coded, CodedError, ErrorCode, external, io_code, io_is_transient, object_store_code,
};

/// Errors raised by the media primitives: sources and object storage, probe, decode, cut.
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    /// ffmpeg could not open or understand a file.
    #[error("cannot probe '{path}': {message}")]
    Probe {
        /// The file that failed.
        path: String,
        /// What ffmpeg (or our checks) reported.
        message: String,
        /// Whether retrying may succeed.
        transient: bool,
    },
    /// Decoding a file failed.
    #[error("cannot decode '{path}': {message}")]
    Decode {
        /// The file that failed.
        path: String,
        /// What went wrong.
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
    /// A location outside the roots this process is confined to.
    #[error("'{uri}' is outside the locations this server may read or write ({roots})")]
    NotAllowed {
        /// The location as given.
        uri: String,
        /// The allowed roots.
        roots: String,
    },
    /// The ffmpeg libraries failed to initialise.
    #[error("ffmpeg failed to initialise: {0}")]
    Init(String),
    /// An object store refused or failed a request.
    #[error("cannot read '{uri}': {message}")]
    Storage {
        /// The object or prefix.
        uri: String,
        /// What failed, and what to check.
        message: String,
        /// Whether retrying may succeed.
        transient: bool,
        /// What kind of failure ([`ErrorCode::Unavailable`] when transient).
        code: ErrorCode,
    },
    /// An option (of a table, a function or a store) that is not valid.
    #[error("{0}")]
    Option(String),
}

/// Errors that tell whether retrying the same operation may succeed.
pub trait Transient: std::fmt::Display {
    /// Whether retrying may succeed.
    fn is_transient(&self) -> bool;
}

impl Transient for MediaError {
    fn is_transient(&self) -> bool {
        matches!(
            self,
            MediaError::Probe {
                transient: true,
                ..
            } | MediaError::Storage {
                transient: true,
                ..
            }
        )
    }
}

impl MediaError {
    /// A failure reading `uri` from its storage: [`ErrorCode::Unavailable`] when retrying
    /// may succeed, else the file's own ([`ErrorCode::BadMedia`]).
    pub fn read_failure(uri: &str, message: String, transient: bool) -> Self {
        MediaError::Storage {
            uri: uri.to_owned(),
            message,
            transient,
            code: if transient {
                ErrorCode::Unavailable
            } else {
                ErrorCode::BadMedia
            },
        }
    }

    /// Whether retrying the same operation may succeed.
    pub fn is_transient(&self) -> bool {
        Transient::is_transient(self)
    }
}

/// Whether an errno reported by ffmpeg is worth retrying.
pub fn errno_is_transient(errno: i32) -> bool {
    io_is_transient(&std::io::Error::from_raw_os_error(errno))
}

/// Attempts made by [`retry_transient`] before giving up.
pub const ATTEMPTS: u32 = 3;

/// Runs `f` up to [`ATTEMPTS`] times while it fails transiently, with a short growing
/// pause between attempts; returns the first success or permanent failure, or the last
/// transient failure.
pub fn retry_transient<T, E: Transient>(mut f: impl FnMut() -> Result<T, E>) -> Result<T, E> {
    let mut attempt = 1;
    loop {
        match f() {
            Err(e) if e.is_transient() && attempt < ATTEMPTS => {
                log::warn!("{e} (transient, attempt {attempt} of {ATTEMPTS})");
                std::thread::sleep(Duration::from_millis(50 * u64::from(attempt)));
                attempt += 1;
            }
            other => return other,
        }
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    fn probe_err(transient: bool) -> MediaError {
        MediaError::Probe {
            path: "x".into(),
            message: "m".into(),
            transient,
        }
    }

    #[test]
    fn transient_classification() {
        assert!(probe_err(true).is_transient());
        assert!(!probe_err(false).is_transient());
        assert!(errno_is_transient(5));
        assert!(!errno_is_transient(2)); // ENOENT is the input's fault
        assert!(!io_is_transient(&std::io::Error::from(
            std::io::ErrorKind::PermissionDenied
        )));
    }

    #[test]
    fn retries_only_transient_failures() {
        let mut calls = 0;
        let r: Result<(), _> = retry_transient(|| {
            calls += 1;
            Err(probe_err(false))
        });
        assert!(r.is_err());
        assert_eq!(calls, 1);
        let mut calls = 0;
        let r = retry_transient(|| {
            calls += 1;
            if calls < 3 {
                Err(probe_err(true))
            } else {
                Ok(calls)
            }
        });
        assert_eq!(r.ok(), Some(3));
        let mut calls = 0;
        let r: Result<(), _> = retry_transient(|| {
            calls += 1;
            Err(probe_err(true))
        });
        assert!(r.is_err_and(|e| e.is_transient()));
        assert_eq!(calls, ATTEMPTS);
    }
}
