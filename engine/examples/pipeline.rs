//! A curation pipeline as a chain of DataFrame operations, written as a resumable
//! manifest: the videos of a folder, their shots, motion and quality per shot.
//!
//! ```text
//! cargo run -p framefusion-engine --example pipeline -- /data/raw /data/manifests/run-1
//! ```
//!
//! Run it again with the same output after a crash and it continues where it stopped.

use datafusion::error::Result;
use datafusion::prelude::{col, lit};
use framefusion_engine::manifest::{ManifestOptions, RunSummary};
use framefusion_engine::{DataFrameExt, SessionContextExt};

/// Reads the videos at `corpus`, keeps those longer than 2 s that probe cleanly, splits
/// them into shots, scores each shot and writes the manifest at `output`.
pub async fn pipeline(corpus: &str, output: &str) -> Result<RunSummary> {
    let ctx = framefusion_engine::new_context()?;
    ctx.read_videos(corpus)
        .await?
        .filter(
            col("probe_error")
                .is_null()
                .and(col("duration_s").gt(lit(2.0))),
        )?
        .select_columns(&["path", "duration_s", "width", "height"])?
        .detect_shots(None)?
        .with_motion()?
        .with_quality()?
        .write_manifest(&ManifestOptions::new(output))
        .await
}

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, corpus, output] = args.as_slice() else {
        eprintln!("usage: pipeline CORPUS OUTPUT");
        std::process::exit(2);
    };
    let summary = pipeline(corpus, output).await?;
    println!(
        "{} videos, {} rows ({} error) in {:.1} s -> {}",
        summary.videos, summary.rows, summary.error_rows, summary.elapsed_s, summary.output
    );
    Ok(())
}
