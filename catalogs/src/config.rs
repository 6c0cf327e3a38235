//! The `video.*` session options, a DataFusion config extension.
//!
//! ```sql
//! SET video.extensions = 'mp4,mov';
//! SET video.files_per_partition = 1;
//! ```

use datafusion::common::config::ConfigExtension;
use datafusion::common::config_namespace;

/// The file extensions a `VIDEO` table lists by default (case-insensitive).
pub const DEFAULT_VIDEO_EXTENSIONS: &str =
    "mp4,m4v,mov,mkv,webm,avi,wmv,asf,flv,f4v,mpg,mpeg,m2v,ts,m2ts,mts,3gp,3g2,ogv,mxf,vob,dv,y4m";

config_namespace! {
    /// Options of `VIDEO` tables and the video operators (`video.*`).
    pub struct VideoOptions {
        /// Comma-separated file extensions a `VIDEO` table lists when its `OPTIONS` name
        /// none; `*` lists every file. Read when the table is created.
        pub extensions: String, default = DEFAULT_VIDEO_EXTENSIONS.to_owned()
        /// Files per scan partition (a partition is a task on a cluster). 0 (auto) groups
        /// consecutive files into partitions of at most `video.partition_bytes` bytes, and
        /// into at least `datafusion.execution.target_partitions` partitions when there are
        /// enough files.
        pub files_per_partition: usize, default = 0
        /// Bytes of video per scan partition in auto mode (a larger file is a partition of
        /// its own): bounded tasks keep every executor busy and make a lost task cheap.
        pub partition_bytes: u64, default = 256 * 1024 * 1024
    }
}

framefusion_common::prefixed_extension!(VideoOptions);

impl ConfigExtension for VideoOptions {
    const PREFIX: &'static str = "video";
}
