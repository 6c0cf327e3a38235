//! The `video.*` session options, a DataFusion config extension.
//!
//! ```sql
//! SET video.extensions = 'mp4,mov';
//! SET video.files_per_partition = 1;
//! ```

use datafusion::common::config::ConfigExtension;
use datafusion::common::extensions_options;

/// The file extensions a `VIDEO` table lists by default (case-insensitive).
pub const DEFAULT_VIDEO_EXTENSIONS: &str =
    "mp4,m4v,mov,mkv,webm,avi,wmv,asf,flv,f4v,mpg,mpeg,m2v,ts,m2ts,mts,3gp,3g2,ogv,mxf,vob,dv,y4m";

extensions_options! {
    /// Options of `VIDEO` tables and the video operators (`video.*`).
    pub struct VideoOptions {
        /// Comma-separated file extensions a `VIDEO` table lists when its `OPTIONS` name
        /// none; `*` lists every file. Read when the table is created.
        pub extensions: String, default = DEFAULT_VIDEO_EXTENSIONS.to_owned()
        /// Files per scan partition. 0 spreads the files evenly over
        /// `datafusion.execution.target_partitions`; a small number (1 on a cluster) makes
        /// many small tasks that keep every executor busy.
        pub files_per_partition: usize, default = 0
        /// Files probed per output batch (smaller batches show progress sooner).
        pub probe_batch_rows: usize, default = 16
    }
}

impl ConfigExtension for VideoOptions {
    const PREFIX: &'static str = "video";
}
