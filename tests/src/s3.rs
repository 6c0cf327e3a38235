//! A real S3-compatible server for tests: `s3s-fs` (built from crates.io by
//! `scripts/setup.sh`) serving a temporary folder on a free loopback port, with signature
//! checks on (an access key and secret), killed when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStoreExt, PutPayload};

use crate::cluster::free_port;

/// The access key the test server accepts.
pub const ACCESS_KEY: &str = "framefusion-test";
/// The secret key the test server accepts.
pub const SECRET_KEY: &str = "framefusion-test-secret";
/// The region the tests sign for.
pub const REGION: &str = "us-east-1";

/// A running `s3s-fs` server.
pub struct S3Server {
    child: Child,
    port: u16,
    root: tempfile::TempDir,
}

/// The `s3s-fs` binary installed by the setup step.
pub fn s3s_fs_bin() -> PathBuf {
    let bin = framefusion_engine::framefusion_home().join("tools/bin/s3s-fs");
    assert!(
        bin.is_file(),
        "the S3 test server is missing ({}): run `make setup` (scripts/setup.sh) first",
        bin.display()
    );
    bin
}

impl S3Server {
    /// Starts a server and waits until it accepts connections.
    pub fn start() -> Self {
        let root = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let port = free_port();
        let child = Command::new(s3s_fs_bin())
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
            .arg(root.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start s3s-fs: {e}"));
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "s3s-fs did not start on {port}");
            std::thread::sleep(Duration::from_millis(50));
        }
        Self { child, port, root }
    }

    /// The endpoint URL (`http://127.0.0.1:PORT`).
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The folder the server keeps its buckets in (each bucket a subfolder, each object a
    /// file).
    pub fn root(&self) -> &Path {
        self.root.path()
    }

    /// Creates a bucket (s3s-fs keeps each bucket as a folder of its root).
    pub fn create_bucket(&self, bucket: &str) {
        std::fs::create_dir_all(self.root.path().join(bucket))
            .unwrap_or_else(|e| panic!("cannot create bucket {bucket}: {e}"));
    }

    /// A client of `bucket` with the server's credentials.
    pub fn client(&self, bucket: &str) -> Arc<AmazonS3> {
        let store = AmazonS3Builder::new()
            .with_endpoint(self.endpoint())
            .with_allow_http(true)
            .with_region(REGION)
            .with_access_key_id(ACCESS_KEY)
            .with_secret_access_key(SECRET_KEY)
            .with_bucket_name(bucket)
            .build()
            .unwrap_or_else(|e| panic!("cannot build an S3 client: {e}"));
        Arc::new(store)
    }

    /// Uploads every file under `dir` (recursively) to `bucket` under `prefix` through the
    /// S3 API; returns how many files were uploaded.
    pub async fn upload_dir(&self, bucket: &str, prefix: &str, dir: &Path) -> usize {
        let store = self.client(bucket);
        let mut stack = vec![dir.to_path_buf()];
        let mut count = 0;
        while let Some(d) = stack.pop() {
            for entry in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{e}")) {
                let path = entry.unwrap_or_else(|e| panic!("{e}")).path();
                if path.is_dir() {
                    stack.push(path);
                    continue;
                }
                let Ok(bytes) = std::fs::read(&path) else {
                    continue; // broken links and the like stay local
                };
                let rel = path.strip_prefix(dir).unwrap_or(&path).to_string_lossy();
                let key = ObjectPath::from(format!("{prefix}{rel}"));
                store
                    .put(&key, PutPayload::from(bytes))
                    .await
                    .unwrap_or_else(|e| panic!("cannot upload {}: {e}", path.display()));
                count += 1;
            }
        }
        count
    }

    /// The `aws.*` table options that reach this server (for `OPTIONS (...)`).
    pub fn table_options(&self) -> String {
        format!(
            "'aws.endpoint' '{}', 'aws.region' '{REGION}', 'aws.access_key_id' '{ACCESS_KEY}', 'aws.secret_access_key' '{SECRET_KEY}'",
            self.endpoint()
        )
    }

    /// The same options in the `frames()` option syntax (`aws.KEY=VALUE,...`).
    pub fn frame_options(&self) -> String {
        format!(
            "aws.endpoint={},aws.region={REGION},aws.access_key_id={ACCESS_KEY},aws.secret_access_key={SECRET_KEY}",
            self.endpoint()
        )
    }

    /// The environment variables that reach this server.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint()),
            ("AWS_REGION", REGION.to_owned()),
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY.to_owned()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.to_owned()),
            ("AWS_ALLOW_HTTP", "true".to_owned()),
        ]
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
