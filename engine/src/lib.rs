//! # framefusion-engine
//!
//! The one place that assembles a framefusion session.
//!
//! - [`session`]: a DataFusion `SessionContext` with everything framefusion adds: the
//!   `VIDEO` table type, every UDF (through `framefusion_udfs::register_all`), and the
//!   typed `video.*` options (a DataFusion config extension, settable with `SET`).
//! - [`SessionContextExt`]: what framefusion adds to `SessionContext`: running scripts of
//!   several statements, registering a corpus in one call.
//! - [`error`]: one-line, user-facing messages for any engine error.

pub mod error;
pub mod ext;
pub mod session;

pub use error::user_message;
pub use ext::SessionContextExt;
pub use session::{new_context, session_config, session_state};
