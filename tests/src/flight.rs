//! A `framefusion serve` process on a free loopback port, killed when dropped, and Rust
//! Flight SQL clients for it.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use arrow_flight::sql::client::FlightSqlServiceClient;
use tonic::transport::{Channel, Endpoint};

use crate::framefusion_bin;

/// The user and password every test server knows.
pub const USER: (&str, &str) = ("ana", "s3cret");
/// The static token every test server accepts.
pub const STATIC_TOKEN: &str = "static-test-token";

/// A running server.
pub struct FlightServer {
    child: Child,
    /// `host:port`.
    pub addr: String,
    /// Its catalog file.
    pub catalog: PathBuf,
    /// `host:port` of its HTTP endpoint, when started with `--http`.
    pub http: Option<String>,
    _dir: tempfile::TempDir,
}

impl FlightServer {
    /// Starts `framefusion serve` allowed to use `root`, with `extra` arguments, and waits
    /// for its "listening" line.
    pub fn start(root: &Path, extra: &[&str]) -> Self {
        Self::start_with_env(root, extra, &[])
    }

    /// [`FlightServer::start`] with extra environment variables (object-store credentials).
    pub fn start_with_env(root: &Path, extra: &[&str], env: &[(&str, String)]) -> Self {
        Self::start_logging(root, extra, env, Stdio::inherit())
    }

    /// [`FlightServer::start_with_env`] with its log (standard error) going to `log`.
    pub fn start_logging(
        root: &Path,
        extra: &[&str],
        env: &[(&str, String)],
        log: impl Into<Stdio>,
    ) -> Self {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let catalog = dir.path().join("catalog.json");
        let mut child = Command::new(framefusion_bin())
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .args(["serve", "--bind", "127.0.0.1:0"])
            .args(["--user", &format!("{}:{}", USER.0, USER.1)])
            .args(["--token", STATIC_TOKEN])
            .arg("--allow-root")
            .arg(root)
            .arg("--catalog")
            .arg(&catalog)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start framefusion serve: {e}"));
        let stdout = child.stdout.take().unwrap_or_else(|| panic!("no stdout"));
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            // the HTTP endpoint's line (with --http), then the Flight SQL server's
            let mut reader = BufReader::new(stdout);
            loop {
                let mut line = String::new();
                let end = !matches!(reader.read_line(&mut line), Ok(n) if n > 0);
                let last = end || !line.contains("http://");
                let _ = tx.send(line);
                if last {
                    break;
                }
            }
        });
        let mut http = None;
        let line = loop {
            let line = rx
                .recv_timeout(Duration::from_secs(30))
                .unwrap_or_else(|_| panic!("framefusion serve did not report its address"));
            match line.trim().rsplit_once("http://") {
                Some((_, addr)) if !line.contains("grpc") => http = Some(addr.to_owned()),
                _ => break line,
            }
        };
        let addr = line
            .trim()
            .rsplit("://")
            .next()
            .filter(|a| a.contains(':'))
            .unwrap_or_else(|| panic!("unexpected first line from framefusion serve: {line}"))
            .to_owned();
        Self {
            child,
            addr,
            catalog,
            http,
            _dir: dir,
        }
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.addr
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or(0)
    }

    /// A client without credentials.
    pub async fn anonymous(&self) -> FlightSqlServiceClient<Channel> {
        let channel = Endpoint::from_shared(format!("http://{}", self.addr))
            .unwrap_or_else(|e| panic!("{e}"))
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await
            .unwrap_or_else(|e| panic!("cannot connect to {}: {e}", self.addr));
        FlightSqlServiceClient::new(channel)
    }

    /// A client logged in with the test user (a session of its own).
    pub async fn client(&self) -> FlightSqlServiceClient<Channel> {
        let mut client = self.anonymous().await;
        client
            .handshake(USER.0, USER.1)
            .await
            .unwrap_or_else(|e| panic!("handshake failed: {e}"));
        client
    }
}

impl Drop for FlightServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// CPU time (user + system) a process has used, in clock ticks (1/100 s on Linux).
pub fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // fields after the command name (which may hold spaces) start after ") "
    let rest = stat.rsplit(") ").next().unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 here
    let get = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    get(11) + get(12)
}

/// The body of `GET http://{addr}{path}`, panicking on a status other than 200.
pub fn http_get(addr: &str, path: &str) -> String {
    let (status, body) = http_request(addr, "GET", path, &[], "");
    assert_eq!(status, 200, "GET {path}: {body}");
    body
}

/// `METHOD http://{addr}{path}` with `headers` and `body` (HTTP/1.0, no keep-alive): the
/// status and the body.
pub fn http_request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    try_http_request(addr, method, path, headers, body)
        .unwrap_or_else(|e| panic!("{method} http://{addr}{path}: {e}"))
}

/// [`http_request`], or the error when nothing answers (a server still starting).
pub fn try_http_request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> std::io::Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(120)))?;
    let mut request = format!(
        "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes())?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no HTTP status in {head:?}")))?;
    Ok((status, body.to_owned()))
}

/// The value of the sample `series` (a metric's name and labels, as the text format writes
/// them) at `GET /metrics` on `addr`; `None` when nothing answers or no sample matches.
pub fn metric_sample(addr: &str, series: &str) -> Option<f64> {
    let (_, body) = try_http_request(addr, "GET", "/metrics", &[], "").ok()?;
    body.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse::<f64>().ok())
}
