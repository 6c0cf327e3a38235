//! The error type of this crate, and which failures are transient.
//!
//! A *permanent* failure belongs to the input (a truncated file, a file that is not a
//! video, a missing file): it becomes the row's error and the query goes on. A *transient*
//! failure belongs to the moment (an I/O error, a timeout, a busy resource): retrying may
//! succeed, so operators retry it a few times ([`retry_transient`]) and then fail the task
//! with an I/O error ([`UdfError::into_task_error`]), the kind of error Ballista's
//! scheduler retries on another attempt, possibly on another executor.

use std::time::Duration;

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
    /// A model (or the ONNX Runtime library) is missing, does not load or does not fit.
    #[error("{0}")]
    Model(String),
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
    },
    /// An option (of a table, a function or a store) that is not valid.
    #[error("{0}")]
    Option(String),
}

impl UdfError {
    /// The per-row rule of the video functions: a transient failure fails the task (the
    /// scheduler retries it); any other is the row's own: logged (naming `function`), and
    /// the row gets null (`None`).
    pub fn row<T>(
        function: &str,
        outcome: Result<T, UdfError>,
    ) -> datafusion::error::Result<Option<T>> {
        match outcome {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.is_transient() => Err(e.into_task_error()),
            Err(e) => {
                log::warn!("{function}: {e}");
                Ok(None)
            }
        }
    }

    /// Whether retrying the same operation may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            UdfError::Probe {
                transient: true,
                ..
            } | UdfError::Storage {
                transient: true,
                ..
            }
        )
    }

    /// The error that fails a task: an I/O error for a transient failure (retried by the
    /// scheduler), an external error otherwise.
    pub fn into_task_error(self) -> DataFusionError {
        if self.is_transient() {
            DataFusionError::IoError(std::io::Error::other(self.to_string()))
        } else {
            DataFusionError::External(Box::new(self))
        }
    }
}

impl From<UdfError> for DataFusionError {
    fn from(e: UdfError) -> Self {
        e.into_task_error()
    }
}

/// Whether an I/O error is worth retrying.
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

/// Whether an errno reported by ffmpeg is worth retrying.
pub fn errno_is_transient(errno: i32) -> bool {
    io_is_transient(&std::io::Error::from_raw_os_error(errno))
}

/// Attempts made by [`retry_transient`] before giving up.
pub const ATTEMPTS: u32 = 3;

/// Runs `f` up to [`ATTEMPTS`] times while it fails transiently, with a short growing
/// pause between attempts; returns the first success or permanent failure, or the last
/// transient failure.
pub fn retry_transient<T>(mut f: impl FnMut() -> Result<T, UdfError>) -> Result<T, UdfError> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn probe_err(transient: bool) -> UdfError {
        UdfError::Probe {
            path: "x".into(),
            message: "m".into(),
            transient,
        }
    }

    #[test]
    fn transient_errors_become_io_errors() {
        assert!(matches!(
            probe_err(true).into_task_error(),
            DataFusionError::IoError(_)
        ));
        assert!(matches!(
            probe_err(false).into_task_error(),
            DataFusionError::External(_)
        ));
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
