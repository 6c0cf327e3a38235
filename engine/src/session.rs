//! Building framefusion sessions: embedded, or as a client of a Ballista cluster.

use std::sync::Arc;

use ballista::extension::SessionContextExt as _;
use ballista_core::extension::SessionConfigExt;
use datafusion::error::Result;
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::session_state::SessionState;
use datafusion::prelude::{SessionConfig, SessionContext};
use framefusion_catalogs::frames::FramesFunction;
use framefusion_catalogs::video::VIDEO_FILE_TYPE;
use framefusion_catalogs::{VideoOptions, VideoTableFactory};
use framefusion_common::shared::Shared;

use framefusion_udfs::VideoPassRule;
use framefusion_udfs::models::user::OnnxFunctionFactory;

use crate::codec::{FrameFusionLogicalCodec, FrameFusionPhysicalCodec};

/// The session configuration framefusion uses embedded: DataFusion's defaults with
/// framefusion's changes: the information schema (`SHOW TABLES`, `DESCRIBE`), no
/// round-robin repartitioning (video work is spread by files), and framefusion's
/// `video.*`, `onnx.*`, `caption.*`, `framefusion.*` and store settings, and a runtime of its own
/// ([`Shared`] handles: store clients, feature cache).
pub fn session_config() -> SessionConfig {
    framefusion_defaults(SessionConfig::new())
}

/// What framefusion changes in DataFusion's defaults, embedded and on a cluster:
/// - the information schema (`SHOW TABLES`, `DESCRIBE`) and the `video.*` options;
/// - no round-robin repartitioning: video work is spread by files (scan partitions), and
///   spreading one file's frame batches over more partitions let DataFusion buffer them
///   without bound (peak memory grew with the video's length: 2.3 GiB for a 9-minute
///   720p file at 1 fps, 175 MiB without).
fn framefusion_defaults(config: SessionConfig) -> SessionConfig {
    framefusion_udfs::with_settings(config)
        .with_information_schema(true)
        .with_round_robin_repartition(false)
        .with_option_extension(VideoOptions::default())
        .with_option_extension(crate::stores::StoreSettings::default())
        .with_option_extension(framefusion_common::failures::RunOptions::default())
        .with_option_extension(Shared::new())
}

/// `config` in the runtime whose handles are `shared` (its sessions share store clients
/// and the feature cache).
pub fn sharing(config: SessionConfig, shared: &Shared) -> SessionConfig {
    config.with_option_extension(shared.clone())
}

/// The session configuration of cluster sessions (client, scheduler and executors alike):
/// Ballista's, plus framefusion's options and extension codecs.
pub fn ballista_session_config() -> SessionConfig {
    framefusion_defaults(SessionConfig::new_with_ballista())
        .with_ballista_logical_extension_codec(Arc::new(FrameFusionLogicalCodec::default()))
        .with_ballista_physical_extension_codec(Arc::new(FrameFusionPhysicalCodec::default()))
}

/// A session state with framefusion's table types and functions, over `config`.
pub fn session_state(config: SessionConfig) -> Result<SessionState> {
    let runtime = crate::stores::runtime(&config)?;
    let mut state = SessionStateBuilder::new()
        .with_default_features()
        .with_config(config)
        .with_runtime_env(runtime)
        .with_table_factory(VIDEO_FILE_TYPE.to_owned(), Arc::new(VideoTableFactory))
        .with_function_factory(Some(Arc::new(OnnxFunctionFactory)))
        .with_optimizer_rule(Arc::new(VideoPassRule))
        .build();
    crate::stores::install(&mut state);
    framefusion_udfs::register_all(&mut state)?;
    framefusion_dedup::register_all(&mut state)?;
    state.register_udtf("frames", Arc::new(FramesFunction));
    Ok(state)
}

/// The scheduler's session state: Ballista's default one plus framefusion's functions
/// (the scheduler plans the physical plan, so it must resolve every UDF by name).
pub fn scheduler_session_state(config: SessionConfig) -> Result<SessionState> {
    let runtime = crate::stores::runtime(&config)?;
    let state = ballista_core::utils::default_session_builder(config)?;
    let mut state = SessionStateBuilder::new_from_existing(state)
        .with_runtime_env(runtime)
        .with_optimizer_rule(Arc::new(VideoPassRule))
        .build();
    crate::stores::install(&mut state);
    framefusion_udfs::register_all(&mut state)?;
    framefusion_dedup::register_all(&mut state)?;
    Ok(state)
}

/// An embedded (in-process) framefusion session with the default configuration.
pub fn new_context() -> Result<SessionContext> {
    new_context_in(&Shared::new())
}

/// An embedded session in the runtime whose handles are `shared` (a server's sessions).
pub fn new_context_in(shared: &Shared) -> Result<SessionContext> {
    Ok(SessionContext::new_with_state(session_state(sharing(
        session_config(),
        shared,
    ))?))
}

/// A session whose queries run on the Ballista cluster whose scheduler is at `url`
/// (`df://host:port`). DDL such as `CREATE EXTERNAL TABLE` runs in this process; queries
/// are planned by the scheduler and run on the executors.
pub async fn remote_context(url: &str) -> Result<SessionContext> {
    remote_context_in(url, &Shared::new()).await
}

/// A cluster session whose own work (DDL, listings, manifests) runs in the runtime whose
/// handles are `shared`.
pub async fn remote_context_in(url: &str, shared: &Shared) -> Result<SessionContext> {
    let config = sharing(ballista_session_config(), shared)
        .with_extension(Arc::new(crate::error::ClusterUrl(url.to_owned())));
    let state = session_state(config)?;
    let mut ctx = SessionContext::remote_with_state(url, state)
        .await
        .map_err(|e| crate::error::EngineError::Unreachable {
            url: url.to_owned(),
            message: crate::user_message(&e),
        })?;
    // Ballista's upgrade replaces the scalar functions with its defaults: add ours back.
    framefusion_udfs::register_all(&mut ctx)?;
    framefusion_dedup::register_all(&mut ctx)?;
    Ok(ctx)
}

/// An embedded session, or a cluster session when `cluster` names a scheduler.
pub async fn connect(cluster: Option<&str>) -> Result<SessionContext> {
    connect_in(cluster, &Shared::new()).await
}

/// [`connect`], in the runtime whose handles are `shared` (the sessions of one server).
pub async fn connect_in(cluster: Option<&str>, shared: &Shared) -> Result<SessionContext> {
    match cluster {
        Some(url) => remote_context_in(url, shared).await,
        None => new_context_in(shared),
    }
}
