//! `framefusion run`: run a curation job and write its result as a resumable Parquet
//! manifest (see `framefusion_engine::manifest`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use framefusion_engine::SessionContextExt;
use framefusion_engine::manifest::{ManifestOptions, RunProgress, RunSummary, write_manifest};
use framefusion_media::storage::StorageOptions;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::CliError;

/// Arguments of `framefusion run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The job: SQL statements, the last one the query whose rows the manifest holds
    /// (earlier ones may create tables or SET options).
    #[arg(value_name = "JOB.sql")]
    job: PathBuf,

    /// Where the manifest goes: a local folder or s3://bucket/prefix. Running again with
    /// the same output continues the run recorded there.
    #[arg(short, long, value_name = "URI")]
    output: String,

    /// Run on the Ballista cluster whose scheduler is at this URL (df://host:port).
    #[arg(long, value_name = "URL")]
    cluster: Option<String>,

    /// Run again the videos an earlier attempt recorded with error rows (default: keep
    /// their error rows).
    #[arg(long)]
    retry_errors: bool,

    /// Videos per part file (a part is the unit of commit; default: twice the target
    /// partitions).
    #[arg(long, value_name = "N")]
    videos_per_part: Option<usize>,

    /// Parts in flight at once.
    #[arg(long, value_name = "N", default_value_t = 2)]
    concurrency: usize,

    /// The VIDEO table whose videos are the items, when the job reads several.
    #[arg(long, value_name = "TABLE")]
    source: Option<String>,

    /// Comma-separated columns that identify an item (default: path, plus start_s and
    /// end_s when the job returns them).
    #[arg(long, value_name = "COLUMNS", value_delimiter = ',')]
    key: Option<Vec<String>>,

    /// An object-store option for an s3:// output, aws.KEY=VALUE (repeatable); the AWS_*
    /// environment variables apply too.
    #[arg(long = "option", value_name = "aws.KEY=VALUE")]
    options: Vec<String>,

    #[command(flatten)]
    catalog: crate::catalog_args::CatalogArgs,

    /// No progress bar.
    #[arg(short, long)]
    quiet: bool,
}

/// Runs `framefusion run`.
pub async fn run(args: RunArgs) -> Result<(), CliError> {
    let script = std::fs::read_to_string(&args.job).map_err(|source| CliError::Io {
        context: format!("cannot read the job '{}'", args.job.display()),
        source,
    })?;
    let mut storage = StorageOptions::default();
    for option in &args.options {
        let (key, value) = option.split_once('=').ok_or_else(|| {
            CliError::Usage(format!("--option '{option}': write it as aws.KEY=VALUE"))
        })?;
        storage
            .insert(key, value)
            .map_err(|e| CliError::Usage(format!("--option '{option}': {e}")))?;
    }
    let ctx = framefusion_engine::connect(args.cluster.as_deref()).await?;
    args.catalog.attach(&ctx)?;
    let mut statements = ctx.parse_script(&script)?;
    let Some(query) = statements.pop_back() else {
        return Err(CliError::Usage("the job holds no SQL statement".to_owned()));
    };
    for statement in statements {
        ctx.execute_statement(statement).await?.collect().await?;
    }
    let plan = ctx.state().statement_to_plan(query).await?;
    if !framefusion_engine::manifest::is_query(&plan) {
        return Err(CliError::Usage(format!(
            "the last statement of '{}' must be a query (SELECT ...) whose rows the manifest holds",
            args.job.display()
        )));
    }

    let bar = progress_bar(args.quiet);
    let shown = bar.clone();
    let options = ManifestOptions {
        output: args.output.clone(),
        storage,
        retry_errors: args.retry_errors,
        videos_per_part: args.videos_per_part,
        concurrency: Some(args.concurrency),
        source: args.source.clone(),
        key: args.key.clone(),
        progress: Some(Arc::new(move |p: &RunProgress| show(&shown, p))),
    };
    let summary = write_manifest(ctx.state(), plan, &options).await;
    bar.finish_and_clear();
    println!("{}", describe(&summary?));
    Ok(())
}

fn progress_bar(quiet: bool) -> ProgressBar {
    let target = if quiet {
        ProgressDrawTarget::hidden()
    } else {
        ProgressDrawTarget::stderr_with_hz(4)
    };
    let bar = ProgressBar::with_draw_target(None, target);
    let style = ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} videos {msg}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar.enable_steady_tick(Duration::from_millis(250));
    bar
}

fn show(bar: &ProgressBar, p: &RunProgress) {
    bar.set_length(p.total as u64);
    bar.set_position((p.skipped + p.done) as u64);
    let eta = p
        .eta()
        .map_or_else(|| "ETA -".to_owned(), |d| format!("ETA {}s", d.as_secs()));
    bar.set_message(format!(
        "({} skipped, {} failed, {} without rows, {} rows) {:.2} videos/s {eta}",
        p.skipped,
        p.failed,
        p.no_rows,
        p.rows,
        p.videos_per_s()
    ));
}

fn describe(s: &RunSummary) -> String {
    format!(
        "{}: {} videos ({} run now, {} already done), {} rows ({} ok, {} error), {} parts -> {} in {:.1} s; {} videos failed, {} gave no rows",
        s.run_id,
        s.videos,
        s.processed,
        s.skipped,
        s.rows,
        s.ok_rows,
        s.error_rows,
        s.parts,
        s.output,
        s.elapsed_s,
        s.error_videos,
        s.no_row_videos
    )
}
