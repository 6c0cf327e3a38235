//! `framefusion sql`: run statements on the embedded engine.

use std::path::PathBuf;

use clap::Args;

use crate::CliError;
use crate::output::Format;

/// Arguments of `framefusion sql`.
#[derive(Debug, Args)]
pub struct SqlArgs {
    /// SQL to run: one or more statements separated by `;`. Without SQL (and without
    /// -f), an interactive shell opens.
    #[arg(value_name = "SQL", conflicts_with = "file")]
    sql: Option<String>,

    /// Read the statements from a file (`-` for standard input); may be repeated, files
    /// run in order.
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    file: Vec<PathBuf>,

    /// Output format of query results.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,

    /// Run on the Ballista cluster whose scheduler is at this URL (df://host:port)
    /// instead of the embedded engine.
    #[arg(long, value_name = "URL")]
    cluster: Option<String>,

    #[command(flatten)]
    catalog: crate::catalog_args::CatalogArgs,

    /// Write the result of the last statement that returns rows to this file instead of
    /// standard output (required for parquet).
    #[arg(short, long, value_name = "PATH")]
    output: Option<PathBuf>,
}

/// Runs `framefusion sql`: the statements given, or the interactive shell when none are.
pub async fn run(args: SqlArgs) -> Result<(), CliError> {
    let script = if args.sql.is_none() && args.file.is_empty() {
        None
    } else {
        Some(read_script(&args)?)
    };
    if args.format == Format::Parquet && args.output.is_none() {
        return Err(CliError::Usage(
            "--format parquet needs --output PATH".to_owned(),
        ));
    }
    // Like datafusion-cli, a query may name a file directly: SELECT * FROM 'out.parquet'.
    let ctx = framefusion_engine::stores::enable_url_tables(
        framefusion_engine::connect(args.cluster.as_deref()).await?,
    );
    args.catalog.attach(&ctx)?;
    match script {
        Some(script) => {
            crate::output::run_script(&ctx, &script, args.format, args.output, None).await
        }
        None => crate::shell::run(&ctx, args.format).await,
    }
}

fn read_script(args: &SqlArgs) -> Result<String, CliError> {
    if let Some(sql) = &args.sql {
        return Ok(sql.clone());
    }
    let mut script = String::new();
    for file in &args.file {
        let text = if file.as_os_str() == "-" {
            std::io::read_to_string(std::io::stdin())
        } else {
            std::fs::read_to_string(file)
        }
        .map_err(|source| CliError::Io {
            context: format!("cannot read SQL file '{}'", file.display()),
            source,
        })?;
        script.push_str(&text);
        // a file's last statement needs no trailing semicolon
        script.push_str("\n;\n");
    }
    Ok(script)
}
