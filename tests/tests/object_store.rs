//! Object storage through the CLI: credentials from the usual AWS environment variables,
//! a persistent table over `s3://` that a new process still reads, the `probe()` UDF on an
//! object, and refused credentials that fail the statement and leave the catalog as it was.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Output;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use framefusion_tests::s3::S3Server;
use framefusion_tests::{corpus_dir, ok_rows, sql_with_catalog};

fn sql(catalog: &Path, env: &[(&str, String)], statements: &str) -> Output {
    sql_with_catalog(catalog, env, statements)
}

fn ok(out: &Output) -> Vec<serde_json::Value> {
    ok_rows(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_tables_with_environment_credentials() {
    let s3 = S3Server::start();
    s3.create_bucket("videos");
    assert_eq!(s3.upload_dir("videos", "raw/", &corpus_dir()).await, 6);
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let catalog = dir.path().join("catalog.json");
    let env: Vec<(&str, String)> = s3.env();

    ok(&sql(
        &catalog,
        &env,
        "CREATE EXTERNAL TABLE raw STORED AS VIDEO LOCATION 's3://videos/raw/'",
    ));
    // a new process reads it, probing every object over range reads
    let rows = ok(&sql(
        &catalog,
        &env,
        "SELECT count(*) AS n, count(probe_error) AS bad, sum(frame_count) AS frames FROM raw",
    ));
    assert_eq!(
        rows,
        vec![serde_json::json!({"n": 6, "bad": 1, "frames": 132 + 250 + 120 + 23 + 1323})]
    );
    // the probe() UDF reads an object with the environment's settings
    let rows = ok(&sql(
        &catalog,
        &env,
        "SELECT probe('s3://videos/raw/bikes.mp4')['width'] AS w, probe('s3://videos/raw/none.mp4')['probe_error'] IS NOT NULL AS missing",
    ));
    assert_eq!(rows, vec![serde_json::json!({"w": 640, "missing": true})]);

    // refused credentials: one line naming the location and the fix, nothing defined
    let mut wrong = env.clone();
    wrong.retain(|(k, _)| *k != "AWS_SECRET_ACCESS_KEY");
    wrong.push(("AWS_SECRET_ACCESS_KEY", "not-the-secret".to_owned()));
    let out = sql(
        &catalog,
        &wrong,
        "CREATE EXTERNAL TABLE other STORED AS VIDEO LOCATION 's3://videos/raw/'",
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("cannot read 's3://videos/raw/': access denied")
            && stderr.contains("AWS_SECRET_ACCESS_KEY"),
        "{stderr}"
    );
    let tables = ok(&sql(
        &catalog,
        &env,
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'",
    ));
    assert_eq!(tables, vec![serde_json::json!({"table_name": "raw"})]);

    // table definitions may carry credentials: the catalog file is the owner's alone
    ok(&sql(
        &catalog,
        &[],
        &format!(
            "CREATE EXTERNAL TABLE with_keys STORED AS VIDEO LOCATION 's3://videos/raw/bikes.mp4' OPTIONS ({})",
            s3.table_options()
        ),
    ));
    let rows = ok(&sql(&catalog, &[], "SELECT width FROM with_keys"));
    assert_eq!(rows, vec![serde_json::json!({"width": 640})]);
    let mode = std::fs::metadata(&catalog)
        .map(|m| m.permissions().mode() & 0o777)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(mode, 0o600);
}

/// A TCP proxy on a free loopback port in front of `upstream` that counts the bytes the
/// upstream sends back.
async fn counting_proxy(upstream: String) -> (String, Arc<AtomicU64>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
    let received = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&received);
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = tokio::net::TcpStream::connect(&upstream).await else {
                continue;
            };
            let counter = Arc::clone(&counter);
            tokio::spawn(async move {
                let (mut client_read, mut client_write) = client.into_split();
                let (mut server_read, mut server_write) = server.into_split();
                let up = tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
                    let _ = server_write.shutdown().await;
                });
                let mut buf = vec![0u8; 16 * 1024];
                while let Ok(n) = server_read.read(&mut buf).await {
                    if n == 0 || client_write.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                    counter.fetch_add(n as u64, Ordering::Relaxed);
                }
                up.abort();
            });
        }
    });
    (format!("http://127.0.0.1:{port}"), received)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probing_an_object_reads_a_small_part_of_it() {
    // a 9-minute video (the trailer looped 10 times) whose index sits at the end of the
    // file, as ffmpeg writes MP4 by default: probing must seek there, not read it all
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let big = dir.path().join("big.mp4");
    let trailer = corpus_dir().join("trailer_bbb.mp4").display().to_string();
    framefusion_tests::ffmpeg(&["-stream_loop", "9", "-i", &trailer, "-c", "copy"], &big);
    let size = std::fs::metadata(&big).map(|m| m.len()).unwrap_or(0);
    assert!(size > 50_000_000, "{size}");

    let s3 = S3Server::start();
    s3.create_bucket("videos");
    let upload = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    std::fs::rename(&big, upload.path().join("big.mp4")).unwrap_or_else(|e| panic!("{e}"));
    s3.upload_dir("videos", "", upload.path()).await;

    let (endpoint, received) = counting_proxy(s3.endpoint().replace("http://", "")).await;
    let mut env = s3.env();
    env.retain(|(k, _)| *k != "AWS_ENDPOINT_URL");
    env.push(("AWS_ENDPOINT_URL", endpoint));
    let catalog = dir.path().join("catalog.json");
    let rows = ok(&sql(
        &catalog,
        &env,
        "SELECT round(probe('s3://videos/big.mp4')['duration_s']) AS d, probe('s3://videos/big.mp4')['probe_error'] IS NULL AS clean",
    ));
    assert_eq!(rows, vec![serde_json::json!({"d": 551.0, "clean": true})]);
    let read = received.load(Ordering::Relaxed);
    eprintln!("probing a {size}-byte object read {read} bytes");
    assert!(read > 0 && read < size / 4, "read {read} of {size} bytes");
}
