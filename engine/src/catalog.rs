//! The persistent catalog in a session: `datafusion.public` kept in a
//! [`CatalogStore`].

use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::catalog::TableProvider;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::session_state::SessionState;
use datafusion::logical_expr::{CreateExternalTable, DdlStatement, LogicalPlan};
use datafusion::prelude::SessionContext;
use framefusion_catalogs::persistent::{CatalogStore, FileCatalogStore, PersistentSchemaProvider};

/// Environment variable naming the catalog file (default `$FRAMEFUSION_HOME/catalog.json`).
pub const CATALOG_ENV: &str = "FRAMEFUSION_CATALOG";

/// The default catalog file: `$FRAMEFUSION_CATALOG`, else `$FRAMEFUSION_HOME/catalog.json`
/// (`FRAMEFUSION_HOME` defaults to `~/.cache/framefusion`).
pub fn default_catalog_path() -> PathBuf {
    if let Some(path) = std::env::var_os(CATALOG_ENV) {
        return PathBuf::from(path);
    }
    crate::framefusion_home().join("catalog.json")
}

/// Makes `ctx`'s default schema (`datafusion.public`) persistent in the catalog file at
/// `path`: external tables created there are kept, and seen by every later session.
pub fn attach_file_catalog(ctx: &SessionContext, path: &Path) -> Result<()> {
    attach_catalog(ctx, Arc::new(FileCatalogStore::new(path)))
}

/// Makes `ctx`'s default schema persistent in `store`.
pub fn attach_catalog(ctx: &SessionContext, store: Arc<dyn CatalogStore>) -> Result<()> {
    let provider = Arc::new(PersistentSchemaProvider::new(store));
    let state = Arc::downgrade(&ctx.state_ref());
    provider.set_builder(Arc::new(move |definition: String| {
        let live = state.upgrade();
        Box::pin(async move {
            let live =
                live.ok_or_else(|| DataFusionError::Internal("the session is gone".to_owned()))?;
            let snapshot = live.read().clone();
            // planning may be under way with the session's lock held elsewhere: a busy
            // lock leaves the settings as they are (the environment still serves)
            let record = |cmd: &CreateExternalTable| match live.try_write() {
                Some(mut live) => crate::stores::record_table_stores(&mut live, cmd),
                None => {
                    log::debug!("session busy: store options of a catalog table not recorded");
                    Ok(())
                }
            };
            rebuild_table(&snapshot, &definition, &record).await
        })
    }));
    let options = ctx.state().config_options().catalog.clone();
    let catalog = ctx.catalog(&options.default_catalog).ok_or_else(|| {
        DataFusionError::Internal(format!("no catalog named {}", options.default_catalog))
    })?;
    catalog.register_schema(&options.default_schema, provider)?;
    Ok(())
}

/// Plans a stored `CREATE EXTERNAL TABLE` statement and builds its table with the
/// session's table factory for its file type, after `record` has recorded the store
/// options of its location in the live session (for its cluster's processes).
async fn rebuild_table(
    state: &SessionState,
    definition: &str,
    record: &(dyn Fn(&CreateExternalTable) -> Result<()> + Sync),
) -> Result<Arc<dyn TableProvider>> {
    let dialect = state.config_options().sql_parser.dialect.to_string();
    let statement = framefusion_sql::parse_script(definition, &dialect)
        .map_err(framefusion_common::code::external)?
        .pop_front()
        .ok_or_else(|| DataFusionError::Plan("empty table definition".to_owned()))?;
    match state.statement_to_plan(statement).await? {
        LogicalPlan::Ddl(DdlStatement::CreateExternalTable(cmd)) => {
            record(&cmd)?;
            let factory = state
                .table_factories()
                .get(&cmd.file_type.to_uppercase())
                .ok_or_else(|| {
                    DataFusionError::Plan(format!(
                        "no table type {} in this session",
                        cmd.file_type
                    ))
                })?;
            factory.create(state, &cmd).await
        }
        other => Err(DataFusionError::Plan(format!(
            "the catalog holds a statement that is not CREATE EXTERNAL TABLE: {}",
            other.display()
        ))),
    }
}
