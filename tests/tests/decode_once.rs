//! One decode per video per query: the curation job (shots, then per shot motion,
//! sharpness and text coverage) decodes each video once, embedded and on a cluster, and
//! gives the same values as each operator computing its own clip alone.

use std::path::{Path, PathBuf};

use datafusion::arrow::array::RecordBatch;
use framefusion_engine::SessionContextExt;
use framefusion_tests::cluster::TestCluster;
use framefusion_tests::sample;
use framefusion_tests::slt::format_rows;

const JOB: &str = include_str!("../../examples/shots_text.sql");

/// A corpus of two short sample videos under names of its own (so the decode counts of
/// this test are its own).
fn corpus() -> (tempfile::TempDir, Vec<PathBuf>) {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let files: Vec<PathBuf> = ["bikes.mp4", "carphone_pristine.mp4"]
        .iter()
        .map(|name| {
            let dst = dir.path().join(format!("once-{name}"));
            std::fs::copy(sample(name), &dst).unwrap_or_else(|e| panic!("{e}"));
            dst
        })
        .collect();
    (dir, files)
}

fn sorted(batches: &[RecordBatch]) -> Vec<Vec<String>> {
    let mut rows = format_rows(batches).unwrap_or_else(|e| panic!("{e}"));
    rows.sort();
    rows
}

async fn run_job(ctx: &datafusion::prelude::SessionContext, dir: &Path) -> Vec<Vec<String>> {
    ctx.register_videos("raw", &dir.display().to_string())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let batches = ctx
        .run_script(JOB)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .collect()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    sorted(&batches)
}

/// The job's values with every operator on its own (no shared pass): the clips of `rows`
/// given as literals, so no `detect_shots` runs, one query per clip and signal.
async fn alone(rows: &[Vec<String>]) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for row in rows {
        let (path, start, end) = (&row[0], &row[1], &row[2]);
        let mut values = vec![path.clone(), start.clone(), end.clone()];
        for call in [
            format!("motion_score('{path}', {start}, {end})"),
            format!("clip_quality('{path}', {start}, {end})['sharpness']"),
            format!("text_area_ratio('{path}', {start}, {end})"),
        ] {
            let ctx = framefusion_engine::new_context().unwrap_or_else(|e| panic!("{e}"));
            let batches = ctx
                .run_script(&format!("SELECT {call}"))
                .await
                .unwrap_or_else(|e| panic!("{e}"))
                .collect()
                .await
                .unwrap_or_else(|e| panic!("{call}: {e}"));
            values.extend(sorted(&batches).remove(0));
        }
        out.push(values);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_curation_job_decodes_each_video_once() {
    let (dir, files) = corpus();
    let passes = |f: &Path| framefusion_udfs::media::pass::passes(&f.display().to_string());
    let before: Vec<u64> = files.iter().map(|f| passes(f)).collect();
    let ctx = framefusion_engine::new_context().unwrap_or_else(|e| panic!("{e}"));
    let rows = run_job(&ctx, dir.path()).await;
    let after: Vec<u64> = files.iter().map(|f| passes(f)).collect();
    for ((file, b), a) in files.iter().zip(&before).zip(&after) {
        assert_eq!(
            a - b,
            1,
            "{}: {} decode passes for shots, motion, sharpness and text",
            file.display(),
            a - b
        );
    }
    // bikes has 6 shots, carphone one
    assert_eq!(rows.len(), 7, "{rows:?}");
    assert!(
        rows.iter().all(|r| r.iter().all(|v| v != "NULL")),
        "{rows:?}"
    );
    // the shared pass gives what each operator computes on its own
    assert_eq!(alone(&rows).await, rows);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_curation_job_decodes_each_video_once_on_a_cluster() {
    let (dir, files) = corpus();
    let embedded = run_job(
        &framefusion_engine::new_context().unwrap_or_else(|e| panic!("{e}")),
        dir.path(),
    )
    .await;
    let cluster = TestCluster::start(2, 1, 30).await;
    let ctx = framefusion_engine::remote_context(&cluster.url())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let on_cluster = run_job(&ctx, dir.path()).await;
    assert_eq!(
        on_cluster, embedded,
        "the same answer embedded and on a cluster"
    );
    let logs = cluster.executor_logs();
    for file in &files {
        let line = format!("decode pass of {}", file.display());
        let passes = logs.lines().filter(|l| l.contains(&line)).count();
        assert_eq!(
            passes,
            1,
            "{}: {passes} decode passes on the executors\n{}",
            file.display(),
            cluster.logs()
        );
    }
}
