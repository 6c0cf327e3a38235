//! # framefusion-engine
//!
//! The one place that assembles a framefusion session.
//!
//! - [`session`]: a DataFusion `SessionContext` with everything framefusion adds: the
//!   `VIDEO` table type, every UDF (through `framefusion_udfs::register_all`), and the
//!   typed `video.*` options (a DataFusion config extension, settable with `SET`);
//!   embedded ([`new_context`]) or as a client of a Ballista cluster ([`remote_context`]).
//! - [`catalog`]: the persistent catalog (table definitions that outlive the process).
//! - [`cluster`]: Ballista scheduler and executor processes that carry all of the above.
//! - [`placement`]: executor pools (`cpu`, `gpu`) and the scheduler policy that sends the
//!   stages that run a model to the GPU pool; pending work per pool for autoscalers.
//! - [`codec`]: the extension codecs that carry framefusion's tables and plan nodes
//!   between client, scheduler and executors.
//! - [`SessionContextExt`]: what framefusion adds to `SessionContext`: running scripts of
//!   several statements, registering a corpus in one call.
//! - [`manifest`]: Parquet manifests of curation runs that resume where a killed run
//!   stopped, every video of a run accounted for.
//! - [`ledger`]: the failure ledger of runs on a cluster: executors report the failures of
//!   videos to their scheduler, runs take them from it.
//! - [`stores`]: the object stores of every table kind (`s3://` from `aws.*` options or
//!   the environment).
//! - [`error`]: one-line, user-facing messages for any engine error.

pub mod catalog;
pub mod cluster;
pub mod codec;
pub mod error;
pub mod ext;
pub mod ledger;
pub mod manifest;
pub mod placement;
pub mod session;
pub mod stores;
pub mod task_metrics;

pub use error::user_message;
pub use ext::{DataFrameExt, SessionContextExt};
pub use session::{
    connect, connect_in, new_context, new_context_in, remote_context, remote_context_in,
    session_config, session_state,
};

/// `$FRAMEFUSION_HOME`, where setup caches the corpus, models and libraries and where the
/// catalog lives; default `~/.cache/framefusion`.
pub use framefusion_media::framefusion_home;
