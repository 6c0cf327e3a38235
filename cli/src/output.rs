//! Writing query results: a pretty table, CSV, JSON lines or Parquet, streamed batch by
//! batch (the table is the one format that needs every row before it prints), and running
//! a script of statements into them ([`run_script`], for `framefusion sql` and the shell).

use std::fs::File;
use std::io::Write;
use std::path::PathBuf;

use clap::ValueEnum;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::util::display::FormatOptions;
use datafusion::arrow::util::pretty::{
    pretty_format_batches_with_options, pretty_format_batches_with_schema,
};
use datafusion::arrow::{csv, json};
use datafusion::dataframe::DataFrame;
use datafusion::prelude::SessionContext;
use framefusion_engine::SessionContextExt;
use futures::StreamExt;
use parquet::arrow::ArrowWriter;

use crate::CliError;

/// Output formats of `framefusion sql`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// An aligned text table.
    Table,
    /// CSV with a header row.
    Csv,
    /// One JSON object per row (JSON lines).
    Json,
    /// Parquet (needs --output).
    Parquet,
}

/// Where a result goes.
#[derive(Debug)]
pub enum Sink {
    /// Standard output.
    Stdout,
    /// A file, created or replaced.
    File(PathBuf),
    /// Nowhere: the statement runs, its rows are dropped.
    Discard,
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> CliError {
    let context = context.into();
    move |source| CliError::Io { context, source }
}

/// Runs `df` and writes its rows to `sink` in `format`; `progress` (the shell's spinner)
/// is cleared before the first line is written.
pub async fn write(
    df: DataFrame,
    format: Format,
    sink: Sink,
    progress: Option<&indicatif::ProgressBar>,
) -> Result<(), CliError> {
    let schema = df.schema().inner().clone();
    let mut stream = df.execute_stream().await?;
    let clear = || {
        if let Some(bar) = progress {
            bar.finish_and_clear();
        }
    };
    if format != Format::Table {
        clear(); // rows are written as they come
    }
    let (out, name): (Box<dyn Write + Send>, String) = match &sink {
        Sink::Stdout => (
            Box::new(std::io::BufWriter::new(std::io::stdout())),
            "standard output".to_owned(),
        ),
        Sink::File(path) => {
            let file =
                File::create(path).map_err(io(format!("cannot create '{}'", path.display())))?;
            (
                Box::new(std::io::BufWriter::new(file)),
                format!("'{}'", path.display()),
            )
        }
        Sink::Discard => {
            while let Some(batch) = stream.next().await {
                batch?;
            }
            return Ok(());
        }
    };
    let write_err = |e: &dyn std::fmt::Display| CliError::Io {
        context: format!("cannot write to {name}"),
        source: std::io::Error::other(e.to_string()),
    };
    match format {
        Format::Table => {
            let mut batches: Vec<RecordBatch> = Vec::new();
            while let Some(batch) = stream.next().await {
                batches.push(batch?);
            }
            clear();
            let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
            let table = if batches.is_empty() {
                pretty_format_batches_with_schema(schema, &batches).map(|t| t.to_string())
            } else {
                let options = FormatOptions::default().with_null("NULL");
                pretty_format_batches_with_options(&batches, &options).map(|t| t.to_string())
            }
            .map_err(|e| write_err(&e))?;
            let mut out = out;
            writeln!(out, "{table}").map_err(io(format!("cannot write to {name}")))?;
            writeln!(out, "{rows} row{}", if rows == 1 { "" } else { "s" })
                .map_err(io(format!("cannot write to {name}")))?;
            out.flush().map_err(io(format!("cannot write to {name}")))?;
        }
        Format::Csv => {
            let mut writer = csv::WriterBuilder::new().with_header(true).build(out);
            while let Some(batch) = stream.next().await {
                writer.write(&batch?).map_err(|e| write_err(&e))?;
            }
            writer
                .into_inner()
                .flush()
                .map_err(io(format!("cannot write to {name}")))?;
        }
        Format::Json => {
            let mut writer = json::LineDelimitedWriter::new(out);
            while let Some(batch) = stream.next().await {
                writer.write(&batch?).map_err(|e| write_err(&e))?;
            }
            writer.finish().map_err(|e| write_err(&e))?;
            writer
                .into_inner()
                .flush()
                .map_err(io(format!("cannot write to {name}")))?;
        }
        Format::Parquet => {
            let mut writer = ArrowWriter::try_new(out, schema, None).map_err(|e| write_err(&e))?;
            while let Some(batch) = stream.next().await {
                writer.write(&batch?).map_err(|e| write_err(&e))?;
            }
            writer.close().map_err(|e| write_err(&e))?;
        }
    }
    Ok(())
}

/// Runs the statements of `script` in order, writing each result (the last one's to
/// `output` when given); `progress` is the shell's spinner, cleared before output.
pub async fn run_script(
    ctx: &SessionContext,
    script: &str,
    format: Format,
    output: Option<PathBuf>,
    progress: Option<&indicatif::ProgressBar>,
) -> Result<(), CliError> {
    let statements = ctx.parse_script(script)?;
    let count = statements.len();
    for (i, statement) in statements.into_iter().enumerate() {
        let df = ctx.execute_statement(statement).await?;
        if df.schema().fields().is_empty() {
            continue; // DDL and SET return no columns
        }
        let last = i + 1 == count;
        let sink = match (&output, last) {
            (Some(path), true) => Sink::File(path.clone()),
            (Some(_), false) => Sink::Discard,
            (None, _) => Sink::Stdout,
        };
        write(df, format, sink, progress).await?;
    }
    Ok(())
}
