//! # framefusion-media
//!
//! Media I/O over the ffmpeg libraries (through `video-rs` and the `ffmpeg-next` bindings
//! it re-exports), with no ONNX Runtime and no DataFusion: what the table providers, the
//! operators, the server and the command line share.
//!
//! - [`source`] and [`storage`]: where a video's bytes come from (local files, `s3://`
//!   objects read by range, presigned URLs), and the locations a process is confined to.
//! - [`probe`]: container and stream facts, as `ffprobe` reports them, and their Arrow
//!   columns.
//! - [`decode`]: the one decode engine: a decode pass of a video ([`pass`]) feeding every
//!   consumer a query has for it, each with the pictures it asks for (size, format)
//!   converted once from the decoder's YUV; and frames sampled (every frame, N per second,
//!   keyframes) and resized as `ffmpeg`'s `fps` and `scale` filters do.
//! - [`audio`]: the sound track, decoded, mixed to mono and resampled.
//! - [`cut`]: clips cut by stream copy or re-encoded.
//! - [`colour`]: YUV to RGB with the matrix and range a frame is tagged with, as ffmpeg.
//! - [`image`]: small image operations with OpenCV's arithmetic (resizes, HSV, luma).
//! - [`jpeg`]: JPEG encoding through ffmpeg's MJPEG encoder (the previews).
//! - [`error`]: [`MediaError`], which failures are transient, and their retry.
//! - [`code`]: the typed error codes every error of the workspace carries.
//! - [`cpu`], [`metrics`] and [`blocking`]: `framefusion-common`'s (re-exported): the
//!   process's CPU budget and pool, its metrics, running blocking work from async code.
//! - [`fault`]: transient faults on demand, for resilience tests.
//!
//! Everything here is synchronous and CPU- or disk-bound: run it on a blocking thread
//! (`tokio::task::spawn_blocking`), never on an async I/O thread.

pub mod audio;
pub(crate) mod centre;
pub mod code;
pub mod colour;
pub mod cut;
pub mod decode;
pub mod error;
pub mod fault;
pub mod image;
pub mod jpeg;
pub mod probe;
pub mod probe_columns;
pub mod source;
pub mod storage;

use std::sync::OnceLock;

pub use decode::pass;
pub use error::MediaError;
/// The process's CPU budget, metrics and blocking helper live in `framefusion-common`.
pub use framefusion_common::{blocking, cpu, metrics};
pub use video_rs::ffmpeg;

/// Environment variable that sets the ffmpeg log level (`quiet`, `error`, `warning`,
/// `info`, `debug`). The default is `quiet`: per-file problems surface as error rows and
/// messages, not as ffmpeg's own log lines on stderr.
pub const FFMPEG_LOG_ENV: &str = "FRAMEFUSION_FFMPEG_LOG";

/// Initialises the ffmpeg libraries once per process (idempotent, thread-safe).
pub fn init() -> Result<(), MediaError> {
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
    .map_err(MediaError::Init)
}

/// Runs `f`, turning a panic inside the ffmpeg bindings into an error for `path`, so a
/// hostile file can fail its own row but never the process.
pub(crate) fn guard<T>(
    path: &str,
    f: impl FnOnce() -> Result<T, MediaError>,
) -> Result<T, MediaError> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(result) => result,
        Err(panic) => {
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".to_owned());
            Err(MediaError::Probe {
                path: path.to_owned(),
                message: format!("the ffmpeg bindings failed on this file ({message})"),
                transient: false,
            })
        }
    }
}

/// `$FRAMEFUSION_HOME`, where setup caches the corpus, models and libraries and where the
/// catalog lives; default `~/.cache/framefusion`.
pub fn framefusion_home() -> std::path::PathBuf {
    std::env::var_os("FRAMEFUSION_HOME")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                .join(".cache/framefusion")
        })
}
