//! [`SessionContextExt`] and [`DataFrameExt`]: framefusion's additions to DataFusion's
//! `SessionContext` and `DataFrame`.

use std::collections::VecDeque;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::dataframe::DataFrame;
use datafusion::error::{DataFusionError, Result};
use datafusion::functions::core::expr_fn::get_field;
use datafusion::logical_expr::Expr;
use datafusion::logical_expr::{DdlStatement, LogicalPlan, LogicalPlanBuilder};
use datafusion::prelude::SessionContext;
use datafusion::prelude::col;
use datafusion::sql::parser::Statement;
use framefusion_catalogs::VideoOptions;
use framefusion_catalogs::listing::ExtensionFilter;
use framefusion_catalogs::video::VideoTable;
use framefusion_udfs::expr_fn;

use crate::manifest::{ManifestOptions, RunSummary};

/// framefusion's additions to [`SessionContext`].
#[async_trait]
pub trait SessionContextExt {
    /// Parses a script of `;`-separated statements with the session's SQL dialect. A syntax
    /// error anywhere fails the whole script before any statement runs.
    fn parse_script(&self, sql: &str) -> Result<VecDeque<Statement>>;

    /// Plans one parsed statement; a table it reads that does not exist is
    /// [`crate::error::EngineError::TableNotFound`] (code `NotFound`).
    async fn plan_statement(&self, statement: Statement) -> Result<LogicalPlan>;

    /// Plans and runs one parsed statement. DDL (`CREATE EXTERNAL TABLE`, `SET`, ...) takes
    /// effect before this returns; a query returns its (lazy) result.
    async fn execute_statement(&self, statement: Statement) -> Result<DataFrame>;

    /// Runs a planned statement, as [`SessionContextExt::execute_statement`] does.
    async fn execute_plan(&self, plan: LogicalPlan) -> Result<DataFrame>;

    /// Runs every statement of a script in order, each before the last to its end, and
    /// returns the (lazy) result of the last one.
    async fn run_script(&self, sql: &str) -> Result<DataFrame>;

    /// Registers a `VIDEO` table `name` over `location`
    /// (`CREATE EXTERNAL TABLE name STORED AS VIDEO LOCATION 'location'`).
    async fn register_videos(&self, name: &str, location: &str) -> Result<()>;

    /// The videos at `location` (a folder, file or `s3://` prefix, listed with the
    /// session's `video.extensions`) as a DataFrame of the videos table, without
    /// registering a table.
    async fn read_videos(&self, location: &str) -> Result<DataFrame>;
}

#[async_trait]
impl SessionContextExt for SessionContext {
    fn parse_script(&self, sql: &str) -> Result<VecDeque<Statement>> {
        let dialect = self.state().config_options().sql_parser.dialect.to_string();
        framefusion_sql::parse_script(sql, &dialect).map_err(framefusion_common::code::external)
    }

    async fn plan_statement(&self, statement: Statement) -> Result<LogicalPlan> {
        let state = self.state();
        let references = crate::error::read_references(&state, &statement);
        state
            .statement_to_plan(statement)
            .await
            .map_err(|e| crate::error::with_missing_table(&state, &references, e))
    }

    async fn execute_statement(&self, statement: Statement) -> Result<DataFrame> {
        let plan = self.plan_statement(statement).await?;
        self.execute_plan(plan).await
    }

    async fn execute_plan(&self, plan: LogicalPlan) -> Result<DataFrame> {
        // Re-running the very statement that defined an existing table is a no-op, so a
        // script that registers its tables can run again against a persistent catalog.
        if let LogicalPlan::Ddl(DdlStatement::CreateExternalTable(cmd)) = &plan
            && !cmd.or_replace
            && let Ok(existing) = self.table_provider(cmd.name.clone()).await
            && existing.get_table_definition().is_some_and(|d| {
                Some(d) == cmd.definition.as_deref()
                    || cmd.definition.as_deref().is_some_and(|given| {
                        d == framefusion_catalogs::video::definition_with_options(
                            given,
                            &cmd.options,
                        )
                    })
            })
        {
            return Ok(DataFrame::new(
                self.state(),
                LogicalPlanBuilder::empty(false).build()?,
            ));
        }
        // another definition under a taken name: a typed error (DataFusion's says it in
        // text only), so clients get an invalid-argument code rather than an internal one
        if let LogicalPlan::Ddl(DdlStatement::CreateExternalTable(cmd)) = &plan
            && !cmd.or_replace
            && !cmd.if_not_exists
            && self.table_exist(cmd.name.clone())?
        {
            return Err(crate::error::EngineError::TableExists(cmd.name.to_string()).into());
        }
        // the stores of a table's or COPY's aws.* options, for this session and the
        // processes of its cluster
        crate::stores::register_plan_stores(self, &plan)?;
        self.execute_logical_plan(plan).await
    }

    async fn run_script(&self, sql: &str) -> Result<DataFrame> {
        let mut statements = self.parse_script(sql)?;
        let last = statements
            .pop_back()
            .ok_or_else(|| DataFusionError::Plan("no SQL statement given".to_owned()))?;
        // every statement before the last runs to its end (a COPY or INSERT in the middle
        // of a script writes; a query's rows are dropped)
        for statement in statements {
            self.execute_statement(statement).await?.collect().await?;
        }
        self.execute_statement(last).await
    }

    async fn register_videos(&self, name: &str, location: &str) -> Result<()> {
        let quoted_name = format!("\"{}\"", name.replace('"', "\"\""));
        let quoted_location = format!("'{}'", location.replace('\'', "''"));
        self.run_script(&format!(
            "CREATE EXTERNAL TABLE {quoted_name} STORED AS VIDEO LOCATION {quoted_location}"
        ))
        .await
        .map(drop)
    }

    async fn read_videos(&self, location: &str) -> Result<DataFrame> {
        let extensions = self
            .state()
            .config_options()
            .extensions
            .get::<VideoOptions>()
            .map(|o| o.extensions.clone())
            .unwrap_or_else(|| VideoOptions::default().extensions);
        let external = |e: framefusion_catalogs::CatalogError| DataFusionError::from(e);
        let filter = ExtensionFilter::parse(&extensions).map_err(external)?;
        let confinement = framefusion_media::source::Confinement::of(self.state().config_options())
            .map_err(|e| external(e.into()))?;
        let table = VideoTable::try_new(vec![location.to_owned()], filter, &confinement)
            .map_err(external)?;
        table
            .check_remote(confinement.clients())
            .await
            .map_err(external)?;
        self.read_table(Arc::new(table))
    }
}

/// framefusion's additions to [`DataFrame`]: a curation pipeline as a chain.
///
/// ```ignore
/// let summary = ctx
///     .read_videos("/data/raw").await?
///     .filter(col("duration_s").gt(lit(2.0)))?
///     .detect_shots(None)?
///     .with_motion()?
///     .with_quality()?
///     .write_manifest(&ManifestOptions::new("/data/manifests/run-1"))
///     .await?;
/// ```
#[async_trait]
pub trait DataFrameExt: Sized {
    /// One row per shot of each video (`path` column): the input's columns plus
    /// `start_frame`, `end_frame`, `start_s` and `end_s`, from
    /// `detect_shots(path [, options])`. A video without shots (or that cannot be
    /// decoded) gives no row.
    fn detect_shots(self, options: Option<&str>) -> Result<DataFrame>;

    /// Adds `motion`: `motion_score(path, start_s, end_s)`.
    fn with_motion(self) -> Result<DataFrame>;

    /// Adds `quality`: `clip_quality(path, start_s, end_s)` (a struct of sharpness,
    /// brightness, contrast, black and frozen fractions).
    fn with_quality(self) -> Result<DataFrame>;

    /// Adds `phash`: `clip_phash(path, start_s, end_s)`.
    fn with_phash(self) -> Result<DataFrame>;

    /// Runs the pipeline and writes its rows as a resumable manifest (see
    /// [`crate::manifest`]).
    async fn write_manifest(self, options: &ManifestOptions) -> Result<RunSummary>;
}

fn clip_args() -> (Expr, Expr, Expr) {
    (col("path"), col("start_s"), col("end_s"))
}

#[async_trait]
impl DataFrameExt for DataFrame {
    fn detect_shots(self, options: Option<&str>) -> Result<DataFrame> {
        const SHOT: &str = "__framefusion_shot";
        let mut columns: Vec<Expr> = self
            .schema()
            .columns()
            .into_iter()
            .filter(|c| c.name != SHOT)
            .map(Expr::Column)
            .collect();
        let shots = self
            .with_column(SHOT, expr_fn::detect_shots(col("path"), options))?
            .unnest_columns(&[SHOT])?;
        for field in ["start_frame", "end_frame", "start_s", "end_s"] {
            columns.push(get_field(col(SHOT), field).alias(field));
        }
        shots.select(columns)
    }

    fn with_motion(self) -> Result<DataFrame> {
        let (p, s, e) = clip_args();
        self.with_column("motion", expr_fn::motion_score(p, s, e))
    }

    fn with_quality(self) -> Result<DataFrame> {
        let (p, s, e) = clip_args();
        self.with_column("quality", expr_fn::clip_quality(p, s, e))
    }

    fn with_phash(self) -> Result<DataFrame> {
        let (p, s, e) = clip_args();
        self.with_column("phash", expr_fn::clip_phash(p, s, e))
    }

    async fn write_manifest(self, options: &ManifestOptions) -> Result<RunSummary> {
        let (state, plan) = self.into_parts();
        crate::manifest::write_manifest(state, plan, options).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_copy_before_the_last_statement_writes() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let out = dir.path().join("x.csv");
        let ctx = crate::new_context()?;
        let rows = ctx
            .run_script(&format!(
                "COPY (SELECT 1 AS a) TO '{}' STORED AS CSV; SELECT 2 AS b",
                out.display()
            ))
            .await?
            .collect()
            .await?;
        assert_eq!(rows.iter().map(|b| b.num_rows()).sum::<usize>(), 1);
        assert_eq!(std::fs::read_to_string(&out)?, "a\n1\n");
        Ok(())
    }
}
