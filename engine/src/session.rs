//! Building framefusion sessions.

use std::sync::Arc;

use datafusion::error::Result;
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::session_state::SessionState;
use datafusion::prelude::{SessionConfig, SessionContext};
use framefusion_catalogs::video::VIDEO_FILE_TYPE;
use framefusion_catalogs::{VideoOptions, VideoTableFactory};

/// The session configuration framefusion uses: DataFusion's defaults, the information
/// schema (`SHOW TABLES`, `DESCRIBE`), and the `video.*` options.
pub fn session_config() -> SessionConfig {
    SessionConfig::new()
        .with_information_schema(true)
        .with_option_extension(VideoOptions::default())
}

/// A session state with framefusion's table types and functions, over `config`.
pub fn session_state(config: SessionConfig) -> Result<SessionState> {
    let mut state = SessionStateBuilder::new()
        .with_default_features()
        .with_config(config)
        .with_table_factory(VIDEO_FILE_TYPE.to_owned(), Arc::new(VideoTableFactory))
        .build();
    framefusion_udfs::register_all(&mut state)?;
    Ok(state)
}

/// An embedded (in-process) framefusion session with the default configuration.
pub fn new_context() -> Result<SessionContext> {
    Ok(SessionContext::new_with_state(session_state(
        session_config(),
    )?))
}
