//! Fault injection for resilience tests: transient failures on demand.
//!
//! When `FRAMEFUSION_FAULT_BUDGET` names a folder, each media operation first tries to
//! take one token (delete one file) from it; when it gets one, the operation fails with a
//! transient error instead of running. A test fills the folder with N files to inject
//! exactly N faults across every process that shares the folder (client, executors). The
//! variable is unset in normal use, and then this check costs one environment lookup.

use crate::MediaError;

/// Environment variable naming the fault budget folder.
pub const FAULT_BUDGET_ENV: &str = "FRAMEFUSION_FAULT_BUDGET";

/// Fails transiently for `path` when a fault token can be taken.
pub fn check(path: &str) -> Result<(), MediaError> {
    let Some(dir) = std::env::var_os(FAULT_BUDGET_ENV) else {
        return Ok(());
    };
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Ok(());
    };
    for entry in entries.flatten() {
        // removing is atomic: of racing processes, exactly one takes each token
        if std::fs::remove_file(entry.path()).is_ok() {
            return Err(MediaError::Probe {
                path: path.to_owned(),
                message: "injected transient fault (FRAMEFUSION_FAULT_BUDGET)".to_owned(),
                transient: true,
            });
        }
    }
    Ok(())
}
