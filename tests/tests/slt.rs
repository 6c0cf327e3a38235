//! The sqllogictest conformance suite (`sql/slt/*.slt`), run twice: on the embedded
//! engine and on a real local cluster (a scheduler and 2 executor processes). Both runs
//! check the same expected results, so they must agree with each other. A real
//! S3-compatible server (s3s-fs) holding a copy of the sample corpus serves the `s3://`
//! queries.

use std::path::PathBuf;

use framefusion_tests::cluster::TestCluster;
use framefusion_tests::s3::S3Server;
use framefusion_tests::{corpus_dir, slt};

fn slt_files() -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../sql/slt");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "slt"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no .slt files in {}", dir.display());
    files
}

/// A test S3 server with the corpus uploaded to `s3://corpus/samples/`, and the
/// substitutions the `.slt` files use.
async fn fixtures() -> (S3Server, Vec<(String, String)>) {
    let corpus = corpus_dir();
    let s3 = S3Server::start();
    s3.create_bucket("corpus");
    let uploaded = s3.upload_dir("corpus", "samples/", &corpus).await;
    assert!(uploaded >= 6, "uploaded only {uploaded} files");
    let vars = vec![
        ("CORPUS".to_owned(), corpus.display().to_string()),
        ("S3_OPTIONS".to_owned(), s3.table_options()),
        ("S3_ENDPOINT".to_owned(), s3.endpoint()),
        ("S3_FRAME_OPTIONS".to_owned(), s3.frame_options()),
    ];
    (s3, vars)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_suite_embedded() {
    let (_s3, vars) = fixtures().await;
    let mut failures = Vec::new();
    for file in slt_files() {
        if let Err(e) =
            slt::run_file(&file, &vars, || async { framefusion_engine::new_context() }).await
        {
            failures.push(format!("{}:\n{e}", file.display()));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_suite_on_a_cluster() {
    let (_s3, vars) = fixtures().await;
    let cluster = TestCluster::start(2, 1, 10).await;
    let mut failures = Vec::new();
    for file in slt_files() {
        let url = cluster.url();
        let make = move || {
            let url = url.clone();
            async move { framefusion_engine::remote_context(&url).await }
        };
        if let Err(e) = slt::run_file(&file, &vars, make).await {
            failures.push(format!("{}:\n{e}", file.display()));
        }
    }
    assert!(
        failures.is_empty(),
        "{}\n{}",
        failures.join("\n\n"),
        cluster.logs()
    );
}
