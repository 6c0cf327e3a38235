//! [`SessionContextExt`]: framefusion's additions to DataFusion's `SessionContext`.

use std::collections::VecDeque;

use async_trait::async_trait;
use datafusion::dataframe::DataFrame;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{DdlStatement, LogicalPlan, LogicalPlanBuilder};
use datafusion::prelude::SessionContext;
use datafusion::sql::parser::Statement;

/// framefusion's additions to [`SessionContext`].
#[async_trait]
pub trait SessionContextExt {
    /// Parses a script of `;`-separated statements with the session's SQL dialect. A syntax
    /// error anywhere fails the whole script before any statement runs.
    fn parse_script(&self, sql: &str) -> Result<VecDeque<Statement>>;

    /// Plans and runs one parsed statement. DDL (`CREATE EXTERNAL TABLE`, `SET`, ...) takes
    /// effect before this returns; a query returns its (lazy) result.
    async fn execute_statement(&self, statement: Statement) -> Result<DataFrame>;

    /// Runs every statement of a script in order and returns the result of the last one.
    async fn run_script(&self, sql: &str) -> Result<DataFrame>;

    /// Registers a `VIDEO` table `name` over `location`
    /// (`CREATE EXTERNAL TABLE name STORED AS VIDEO LOCATION 'location'`).
    async fn register_videos(&self, name: &str, location: &str) -> Result<()>;
}

#[async_trait]
impl SessionContextExt for SessionContext {
    fn parse_script(&self, sql: &str) -> Result<VecDeque<Statement>> {
        let dialect = self.state().config_options().sql_parser.dialect.to_string();
        framefusion_sql::parse_script(sql, &dialect)
            .map_err(|e| DataFusionError::External(Box::new(e)))
    }

    async fn execute_statement(&self, statement: Statement) -> Result<DataFrame> {
        let plan = self.state().statement_to_plan(statement).await?;
        // Re-running the very statement that defined an existing table is a no-op, so a
        // script that registers its tables can run again against a persistent catalog.
        if let LogicalPlan::Ddl(DdlStatement::CreateExternalTable(cmd)) = &plan
            && !cmd.or_replace
            && let Ok(existing) = self.table_provider(cmd.name.clone()).await
            && existing
                .get_table_definition()
                .is_some_and(|d| Some(d) == cmd.definition.as_deref())
        {
            return Ok(DataFrame::new(
                self.state(),
                LogicalPlanBuilder::empty(false).build()?,
            ));
        }
        self.execute_logical_plan(plan).await
    }

    async fn run_script(&self, sql: &str) -> Result<DataFrame> {
        let mut last = None;
        for statement in self.parse_script(sql)? {
            last = Some(self.execute_statement(statement).await?);
        }
        last.ok_or_else(|| DataFusionError::Plan("no SQL statement given".to_owned()))
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
}
