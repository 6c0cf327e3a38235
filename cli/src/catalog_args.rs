//! The catalog options every command that opens a session shares.

use std::path::PathBuf;

use clap::Args;
use datafusion::prelude::SessionContext;

use crate::CliError;

/// `--catalog PATH` / `--no-catalog`.
#[derive(Debug, Clone, Args)]
pub struct CatalogArgs {
    /// The catalog file that keeps table definitions between runs and processes
    /// (default: $FRAMEFUSION_HOME/catalog.json).
    #[arg(
        long,
        value_name = "PATH",
        env = "FRAMEFUSION_CATALOG",
        conflicts_with = "no_catalog"
    )]
    catalog: Option<PathBuf>,

    /// Keep tables for this run (or session) only: no catalog file.
    #[arg(long)]
    no_catalog: bool,
}

impl CatalogArgs {
    /// The catalog file, unless --no-catalog.
    pub fn path(&self) -> Option<PathBuf> {
        (!self.no_catalog).then(|| {
            self.catalog
                .clone()
                .unwrap_or_else(framefusion_engine::catalog::default_catalog_path)
        })
    }

    /// Attaches the catalog file (if any) to `ctx`.
    pub fn attach(&self, ctx: &SessionContext) -> Result<(), CliError> {
        if let Some(path) = self.path() {
            framefusion_engine::catalog::attach_file_catalog(ctx, &path)?;
        }
        Ok(())
    }
}
