//! A session's allowed roots (`framefusion.allowed_roots`): a value the session carries,
//! not the process's. Embedded, tables, `frames`, operators and user models refuse
//! locations outside them while another session of the same process is not confined; on a
//! cluster the value travels with the query and the executors' operators refuse rows
//! outside it. (A Flight SQL server's clients cannot change it: `flight.rs`.)

use std::path::Path;

use datafusion::arrow::array::{Array, AsArray};
use datafusion::prelude::SessionContext;
use framefusion_engine::SessionContextExt;
use framefusion_tests::cluster::TestCluster;
use framefusion_tests::corpus_dir;

/// `allowed/bikes.mp4` and `secret/x.mp4` under a fresh folder.
fn two_folders() -> tempfile::TempDir {
    let work = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    for (dir, name) in [("allowed", "bikes.mp4"), ("secret", "x.mp4")] {
        std::fs::create_dir_all(work.path().join(dir)).unwrap_or_else(|e| panic!("{e}"));
        std::fs::copy(
            corpus_dir().join("bikes.mp4"),
            work.path().join(dir).join(name),
        )
        .unwrap_or_else(|e| panic!("{e}"));
    }
    work
}

/// `probe_error` of `probe(path)` for each path, computed from table rows (so on a
/// cluster the calls run on the executors).
async fn probe_errors(ctx: &SessionContext, paths: &[&Path]) -> Vec<Option<String>> {
    let values = paths
        .iter()
        .map(|p| format!("('{}')", p.display()))
        .collect::<Vec<_>>()
        .join(", ");
    let batches = ctx
        .run_script(&format!(
            "SELECT p, probe(p)['probe_error'] AS e FROM (VALUES {values}) AS t(p) ORDER BY p"
        ))
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .collect()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let mut out = Vec::new();
    for batch in &batches {
        let errors = batch.column(1).as_string::<i32>();
        for row in 0..batch.num_rows() {
            out.push((!errors.is_null(row)).then(|| errors.value(row).to_owned()));
        }
    }
    out
}

async fn set_roots(ctx: &SessionContext, roots: &Path) {
    ctx.run_script(&format!(
        "SET framefusion.allowed_roots = '{}'",
        roots.display()
    ))
    .await
    .unwrap_or_else(|e| panic!("{e}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sessions_roots_confine_that_session_only() {
    let work = two_folders();
    let (allowed, secret) = (work.path().join("allowed"), work.path().join("secret"));
    let inside = allowed.join("bikes.mp4");
    let outside = secret.join("x.mp4");
    let confined = framefusion_engine::new_context().unwrap_or_else(|e| panic!("{e}"));
    set_roots(&confined, &allowed).await;
    let free = framefusion_engine::new_context().unwrap_or_else(|e| panic!("{e}"));

    // operators: the row outside says why, the row inside is read
    let errors = probe_errors(&confined, &[&inside, &outside]).await;
    assert_eq!(errors[0], None, "{errors:?}");
    assert!(
        errors[1]
            .as_deref()
            .is_some_and(|e| e.contains("outside the locations")),
        "{errors:?}"
    );
    // another session of the same process is not confined
    assert_eq!(
        probe_errors(&free, &[&inside, &outside]).await,
        vec![None, None]
    );

    // tables and frames outside are refused; inside they are defined
    for sql in [
        format!(
            "CREATE EXTERNAL TABLE s STORED AS VIDEO LOCATION '{}'",
            secret.display()
        ),
        format!(
            "SELECT count(*) FROM frames('{}', 'keyframes')",
            outside.display()
        ),
    ] {
        let refused = match confined.run_script(&sql).await {
            Ok(df) => df.collect().await.err(),
            Err(e) => Some(e),
        };
        let message = refused.map(|e| e.to_string()).unwrap_or_default();
        assert!(
            message.contains("outside the locations"),
            "{sql}: {message}"
        );
        free.run_script(&sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .collect()
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    confined
        .run_script(&format!(
            "CREATE EXTERNAL TABLE a STORED AS VIDEO LOCATION '{}'",
            allowed.display()
        ))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    // a link inside the allowed folder that points out of it is listed, not opened
    std::os::unix::fs::symlink(&secret, allowed.join("link")).unwrap_or_else(|e| panic!("{e}"));
    let batches = confined
        .run_script("SELECT path, probe_error FROM a ORDER BY path")
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .collect()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let rows = framefusion_tests::slt::format_rows(&batches).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert!(rows[0][1] == "NULL", "{rows:?}");
    assert!(
        rows[1][0].contains("/link/") && rows[1][1].contains("outside the locations"),
        "{rows:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sessions_roots_travel_to_the_executors() {
    let work = two_folders();
    let allowed = work.path().join("allowed");
    let inside = allowed.join("bikes.mp4");
    let outside = work.path().join("secret/x.mp4");
    let cluster = TestCluster::start(2, 1, 10).await;
    let ctx = framefusion_engine::remote_context(&cluster.url())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    // not confined: both rows are read on the executors
    assert_eq!(
        probe_errors(&ctx, &[&inside, &outside]).await,
        vec![None, None]
    );
    set_roots(&ctx, &allowed).await;
    let errors = probe_errors(&ctx, &[&inside, &outside]).await;
    assert_eq!(errors[0], None, "{errors:?}");
    assert!(
        errors[1]
            .as_deref()
            .is_some_and(|e| e.contains("outside the locations")),
        "the executors refuse the row outside the session's roots: {errors:?}"
    );
}
