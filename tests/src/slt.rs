//! sqllogictest adapter: runs `.slt` files against a framefusion `SessionContext`.
//!
//! Values print as Arrow's display formatting, `NULL` for nulls; every column type is
//! reported as `Any`, so `query` lines may use any type letters. Files can use
//! `control substitution on` and the variables the caller passes (`$CORPUS`, the sample
//! corpus folder; `$S3_OPTIONS`, the `aws.*` options of the test S3 server).

use std::path::Path;

use async_trait::async_trait;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::error::DataFusionError;
use datafusion::prelude::SessionContext;
use framefusion_engine::SessionContextExt;
use sqllogictest::{DBOutput, DefaultColumnType};

/// An engine error, as the one line a user would see.
#[derive(Debug)]
pub struct SltError(pub String);

impl std::fmt::Display for SltError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SltError {}

impl From<DataFusionError> for SltError {
    fn from(e: DataFusionError) -> Self {
        SltError(framefusion_engine::user_message(&e))
    }
}

/// One sqllogictest connection: a framefusion session.
pub struct FrameFusionDb {
    ctx: SessionContext,
}

impl FrameFusionDb {
    /// A connection over `ctx`.
    pub fn new(ctx: SessionContext) -> Self {
        Self { ctx }
    }
}

/// Formats batches as sqllogictest rows: display strings, `NULL` for nulls.
pub fn format_rows(batches: &[RecordBatch]) -> Result<Vec<Vec<String>>, DataFusionError> {
    let options = FormatOptions::default().with_null("NULL");
    let mut rows = Vec::new();
    for batch in batches {
        let formatters = batch
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
            .collect::<Result<Vec<_>, _>>()?;
        for row in 0..batch.num_rows() {
            rows.push(
                formatters
                    .iter()
                    .map(|f| f.value(row).to_string())
                    .collect(),
            );
        }
    }
    Ok(rows)
}

#[async_trait]
impl sqllogictest::AsyncDB for FrameFusionDb {
    type Error = SltError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<Self::ColumnType>, Self::Error> {
        let df = self.ctx.run_script(sql).await?;
        let columns = df.schema().fields().len();
        let batches = df.collect().await?;
        if columns == 0 {
            return Ok(DBOutput::StatementComplete(0));
        }
        Ok(DBOutput::Rows {
            types: vec![DefaultColumnType::Any; columns],
            rows: format_rows(&batches)?,
        })
    }

    async fn shutdown(&mut self) {}

    fn engine_name(&self) -> &str {
        "framefusion"
    }

    async fn sleep(dur: std::time::Duration) {
        tokio::time::sleep(dur).await;
    }
}

/// Runs one `.slt` file with a fresh session from `make_ctx` per connection; `vars` are
/// the `$NAME` substitutions the file may use.
pub async fn run_file<F, Fut>(
    path: &Path,
    vars: &[(String, String)],
    make_ctx: F,
) -> Result<(), String>
where
    F: Fn() -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = Result<SessionContext, DataFusionError>> + Send + 'static,
{
    let mut runner = sqllogictest::Runner::new(move || {
        let make_ctx = make_ctx.clone();
        async move {
            make_ctx()
                .await
                .map(FrameFusionDb::new)
                .map_err(SltError::from)
        }
    });
    runner.with_column_validator(|_, _| true);
    for (name, value) in vars {
        runner.set_var(name.clone(), value.clone());
    }
    runner
        .run_file_async(path)
        .await
        .map_err(|e| e.display(true).to_string())
}
