//! Media primitives over the ffmpeg libraries.
//!
//! Everything here is synchronous and CPU- or disk-bound: run it on a blocking thread
//! (`tokio::task::spawn_blocking`), never on an async I/O thread.

pub mod audio;
pub mod cut;
pub mod decode;
pub mod fault;
pub mod image;
pub mod probe;
pub mod source;

use std::sync::OnceLock;

pub use video_rs::ffmpeg;

use crate::UdfError;

/// Environment variable that sets the ffmpeg log level (`quiet`, `error`, `warning`,
/// `info`, `debug`). The default is `quiet`: per-file problems surface as error rows and
/// messages, not as ffmpeg's own log lines on stderr.
pub const FFMPEG_LOG_ENV: &str = "FRAMEFUSION_FFMPEG_LOG";

/// Initialises the ffmpeg libraries once per process (idempotent, thread-safe).
pub fn init() -> Result<(), UdfError> {
    static INIT: OnceLock<Result<(), String>> = OnceLock::new();
    INIT.get_or_init(|| {
        ffmpeg::init().map_err(|e| e.to_string())?;
        let level = std::env::var(FFMPEG_LOG_ENV).unwrap_or_default();
        let level = match level.to_ascii_lowercase().as_str() {
            "error" => ffmpeg::log::Level::Error,
            "warning" | "warn" => ffmpeg::log::Level::Warning,
            "info" => ffmpeg::log::Level::Info,
            "debug" => ffmpeg::log::Level::Debug,
            "trace" => ffmpeg::log::Level::Trace,
            _ => ffmpeg::log::Level::Quiet,
        };
        ffmpeg::log::set_level(level);
        Ok(())
    })
    .clone()
    .map_err(UdfError::Init)
}

/// Runs `f`, turning a panic inside the ffmpeg bindings into an error for `path`, so a
/// hostile file can fail its own row but never the process.
pub(crate) fn guard<T>(path: &str, f: impl FnOnce() -> Result<T, UdfError>) -> Result<T, UdfError> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(result) => result,
        Err(panic) => {
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".to_owned());
            Err(UdfError::Probe {
                path: path.to_owned(),
                message: format!("the ffmpeg bindings failed on this file ({message})"),
                transient: false,
            })
        }
    }
}
