//! The error type of this crate, and the one per-row failure rule of every operator.
//!
//! A *permanent* failure belongs to the input (a truncated file, a file that is not a
//! video, a missing file): it is the row's own, and the query goes on. A *transient*
//! failure belongs to the moment (an I/O error, a timeout, a busy resource): operators
//! retry it a few times ([`retry_transient`]) and then fail the task with an I/O error
//! ([`UdfError::into_task_error`]), the kind of error Ballista's scheduler retries on
//! another attempt, possibly on another executor.

use datafusion::error::DataFusionError;
pub use framefusion_media::error::{
    ATTEMPTS, Coded, ErrorCode, MediaError, Transient, errno_is_transient, io_is_transient,
    retry_transient,
};
use framefusion_media::source::Confinement;

/// Errors raised by the operators of `framefusion-udfs`.
#[derive(Debug, thiserror::Error)]
pub enum UdfError {
    /// The media layer failed (open, probe, decode, storage, a refused location).
    #[error(transparent)]
    Media(#[from] MediaError),
    /// Inference failed on a video's frames.
    #[error("{0}")]
    Model(String),
    /// An argument of one row that is not valid (its range), or an internal failure.
    #[error("{0}")]
    Option(String),
    /// The setup cannot run the query: the ONNX Runtime library or a model file is
    /// missing, a model does not load or does not fit, a setting or an option value is
    /// not valid. It fails the query ([`ErrorCode::Setup`]).
    #[error("{0}")]
    Setup(String),
}

impl Transient for UdfError {
    fn is_transient(&self) -> bool {
        matches!(self, UdfError::Media(e) if e.is_transient())
    }
}

impl UdfError {
    /// The per-row rule of the video functions: a transient failure fails the task (the
    /// scheduler retries it), a setup failure the query; any other is the row's own:
    /// logged (naming `function`), and the row gets null (`None`).
    pub fn row<T>(
        function: &str,
        outcome: Result<T, UdfError>,
    ) -> datafusion::error::Result<Option<T>> {
        match outcome {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.fails_the_query() => Err(e.into_task_error()),
            Err(e) => {
                log::warn!("{function}: {e}");
                Ok(None)
            }
        }
    }

    /// Whether retrying the same operation may succeed.
    pub fn is_transient(&self) -> bool {
        Transient::is_transient(self)
    }

    /// Whether the failure is not one row's own: transient (the task fails and is
    /// retried) or of the setup (the query fails).
    pub fn fails_the_query(&self) -> bool {
        self.is_transient() || self.code() == ErrorCode::Setup
    }

    /// The error that fails a task: an I/O error for a transient failure (retried by the
    /// scheduler), an external error otherwise.
    pub fn into_task_error(self) -> DataFusionError {
        if self.is_transient() {
            DataFusionError::IoError(std::io::Error::other(self.to_string()))
        } else {
            framefusion_common::code::external(self)
        }
    }
}

impl Coded for UdfError {
    fn code(&self) -> ErrorCode {
        match self {
            UdfError::Media(e) => e.code(),
            // a model that is missing or does not load is the deployment's problem
            UdfError::Model(_) => ErrorCode::Internal,
            UdfError::Option(_) => ErrorCode::InvalidArgument,
            UdfError::Setup(_) => ErrorCode::Setup,
        }
    }
}

impl From<UdfError> for DataFusionError {
    fn from(e: UdfError) -> Self {
        e.into_task_error()
    }
}

/// Reports the failures of videos to the failure ledger of the query's run, when it has
/// one (`framefusion.failure_sink`; `framefusion_common::failures`). A report that cannot
/// be delivered fails the task as an I/O error, which a cluster's scheduler retries: a
/// failure is never dropped.
pub fn report_failures(
    config: &datafusion::common::config::ConfigOptions,
    failures: Vec<framefusion_common::failures::Failure>,
) -> datafusion::error::Result<()> {
    let Some(sink) = framefusion_common::failures::RunOptions::sink_of(config) else {
        return Ok(());
    };
    framefusion_common::failures::report(&sink, failures).map_err(|e| {
        datafusion::error::DataFusionError::IoError(std::io::Error::other(format!(
            "cannot report failures of videos to the run's failure ledger: {e}"
        )))
    })
}

/// The session's confinement ([`Confinement::of`]): where its queries may read and write
/// media. A setting that names no valid root here fails the query (it is the
/// deployment's, not a row's).
pub fn session_confinement(
    config: &datafusion::common::config::ConfigOptions,
) -> Result<Confinement, UdfError> {
    Confinement::of(config).map_err(|e| {
        UdfError::Setup(format!(
            "the session's allowed roots (framefusion.allowed_roots) cannot be used here: {e}"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe_err(transient: bool) -> UdfError {
        UdfError::Media(MediaError::Probe {
            path: "x".into(),
            message: "m".into(),
            transient,
        })
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
        assert!(!UdfError::Model("m".into()).is_transient());
        assert!(UdfError::Setup("no library".into()).fails_the_query());
        assert!(!UdfError::Model("bad frame".into()).fails_the_query());
        assert!(!probe_err(false).fails_the_query());
        assert!(probe_err(true).fails_the_query());
    }
}
