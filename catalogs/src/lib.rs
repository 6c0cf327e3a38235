//! # framefusion-catalogs
//!
//! Video corpora as SQL tables.
//!
//! - [`video`]: the `VIDEO` table type. `CREATE EXTERNAL TABLE t STORED AS VIDEO LOCATION
//!   '<folder or file>'` lists the folder recursively and yields one row per video file,
//!   with the columns of the videos table (see [`video::videos_schema`]), filled by probing
//!   in-process through ffmpeg. Files are spread over partitions so a corpus is probed in
//!   parallel; a projection that needs no probe column opens no file.
//! - [`frames`]: the `frames(location, options)` table function: sampled, resized frames.
//! - [`listing`]: the recursive listing behind it, which reports every entry it cannot
//!   read as an error row instead of dropping it.
//! - [`persistent`]: the persistent catalog (table definitions kept on disk, behind the
//!   [`persistent::CatalogStore`] trait).
//! - [`config`]: the typed `video.*` session options (`SET video.extensions = ...`).
//!
//! Bad input never fails a scan: a truncated, empty, non-video or unreadable file is a row
//! whose `probe_error` says why.

pub mod config;
pub mod error;
pub mod frame_scan;
pub mod frames;
pub mod listing;
pub mod persistent;
pub mod video;

pub use config::VideoOptions;
pub use error::CatalogError;
pub use video::{VideoFileSource, VideoTable, VideoTableFactory, video_scan};
