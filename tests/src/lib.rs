//! Shared helpers of the framefusion integration tests: where the sample assets are,
//! how to run the reference tools (ffprobe) and the `framefusion` binary, and the
//! sqllogictest adapter for the engine.
//!
//! The assets come from `scripts/setup.sh` (run by `make test`); a test that needs them
//! fails with a message naming that command when they are missing.

pub mod chat;
pub mod cloud;
pub mod cluster;
pub mod flight;
pub mod s3;
pub mod slt;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The sample corpus folder, checked to hold the sample files.
pub fn corpus_dir() -> PathBuf {
    let dir = framefusion_engine::framefusion_home().join("corpus");
    assert!(
        dir.join("bikes.mp4").is_file() && dir.join("sample.mkv").is_file(),
        "the sample corpus is missing from {}: run `make setup` (scripts/setup.sh) first",
        dir.display()
    );
    dir
}

/// One sample file of the corpus.
pub fn sample(name: &str) -> PathBuf {
    corpus_dir().join(name)
}

/// The `framefusion` binary built next to this test binary (`cargo build -p
/// framefusion-cli`; `make test` builds it), or `$FRAMEFUSION_BIN`.
pub fn framefusion_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("FRAMEFUSION_BIN") {
        return PathBuf::from(bin);
    }
    let exe = std::env::current_exe().unwrap_or_default();
    // target/<profile>/deps/<test> -> target/<profile>/framefusion
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .map(|dir| dir.join("framefusion"))
        .unwrap_or_default();
    assert!(
        bin.is_file(),
        "the framefusion binary is missing at {}: build it with `cargo build -p framefusion-cli` (make test does)",
        bin.display()
    );
    bin
}

/// A `framefusion` command with its own, empty catalog file (so tests neither see nor
/// change the user's catalog, nor each other's); set `FRAMEFUSION_CATALOG` on it to share one.
pub fn framefusion_command() -> Command {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let dir = DIR.get_or_init(|| tempfile::tempdir().unwrap_or_else(|e| panic!("{e}")));
    let catalog = dir.path().join(format!(
        "catalog-{}.json",
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let mut cmd = Command::new(framefusion_bin());
    cmd.env("FRAMEFUSION_CATALOG", catalog);
    cmd
}

/// Runs `framefusion` with `args` (and its own catalog, see [`framefusion_command`]).
pub fn run_framefusion(args: &[&str]) -> Output {
    no_bug_report(
        framefusion_command()
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", framefusion_bin().display())),
    )
}

/// `out`, after checking that the CLI did not print DataFusion's request to report a bug
/// (every CLI run of the test helpers is checked: no user mistake may read as a bug in
/// DataFusion).
pub fn no_bug_report(out: Output) -> Output {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("bug in DataFusion") && !stderr.contains("Internal error"),
        "the CLI printed an internal error: {stderr}"
    );
    out
}

/// `ffprobe -show_format -show_streams` of `path` as JSON, or `None` when ffprobe
/// itself cannot read the file.
pub fn ffprobe(path: &Path) -> Option<serde_json::Value> {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_format",
            "-show_streams",
            "-of",
            "json",
        ])
        .arg(path)
        .output()
        .unwrap_or_else(|e| panic!("cannot run ffprobe (installed by `make setup`): {e}"));
    if !out.status.success() {
        return None;
    }
    serde_json::from_slice(&out.stdout).ok()
}

/// Parses JSON lines (as `framefusion sql --format json` prints them).
pub fn json_lines(text: &[u8]) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(text)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}")))
        .collect()
}

/// Runs `sql` (one or more statements) on a fresh embedded session and collects the result
/// of the last one.
pub async fn query(sql: &str) -> Vec<datafusion::arrow::array::RecordBatch> {
    use framefusion_engine::SessionContextExt;
    let ctx = framefusion_engine::new_context().unwrap_or_else(|e| panic!("{e}"));
    ctx.run_script(sql)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .collect()
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// The Python of the reference tools' virtualenv (PySceneDetect, ...), made by
/// `scripts/setup.sh`.
pub fn python() -> PathBuf {
    venv_bin("python")
}

/// A program of the reference tools' virtualenv (`python`, `kubectl`, ...), installed by
/// `scripts/setup.sh`.
pub fn venv_bin(name: &str) -> PathBuf {
    let bin = framefusion_engine::framefusion_home()
        .join("venv/bin")
        .join(name);
    assert!(
        bin.is_file(),
        "the reference tools' {name} is missing ({}): run `make setup` (scripts/setup.sh) first",
        bin.display()
    );
    bin
}

/// Runs `script` (`python -c`) with the reference tools' Python and `args`; returns its
/// standard output, or panics with its standard error naming `what` failed.
pub fn run_python(what: &str, script: &str, args: &[&std::ffi::OsStr]) -> String {
    let out = Command::new(python())
        .args(["-c", script])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every frame `decode_frames_with` gives for the video at `file` (sampled, resized, within
/// `range`), panicking on an error.
pub fn decode(
    file: &Path,
    sampling: framefusion_udfs::media::decode::Sampling,
    resize: framefusion_udfs::media::decode::Resize,
    range: Option<(f64, f64)>,
) -> Vec<framefusion_udfs::media::decode::DecodedFrame> {
    use framefusion_udfs::media::decode::{Extras, decode_frames_with};
    let media = framefusion_udfs::media::source::VideoSource::parse(&file.display().to_string())
        .and_then(|s| s.media_input(&Default::default()))
        .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let mut out = Vec::new();
    decode_frames_with(
        &media,
        sampling,
        resize,
        true,
        Extras {
            range,
            motion_vectors: false,
        },
        |f| {
            out.push(f);
            std::ops::ControlFlow::Continue(())
        },
    )
    .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    out
}

/// Runs `ffmpeg -v error -y ARGS OUT`, panicking when it fails.
pub fn ffmpeg(args: &[&str], out: &Path) {
    let status = Command::new("ffmpeg")
        .args(["-v", "error", "-y"])
        .args(args)
        .arg(out)
        .status();
    assert!(
        status.is_ok_and(|s| s.success()),
        "ffmpeg failed for {}",
        out.display()
    );
}

/// Writes `seconds` of moving test pattern, `side` x `side` pixels at `fps`, stored
/// losslessly in RGB (so that ffmpeg's frames and framefusion's are the same bytes), to
/// `dir/pattern.mkv`.
pub fn lossless_pattern(dir: &Path, side: usize, fps: f64, seconds: f64) -> PathBuf {
    let path = dir.join("pattern.mkv");
    ffmpeg(
        &[
            "-f",
            "lavfi",
            "-i",
            &format!("testsrc2=size={side}x{side}:rate={fps}:duration={seconds}"),
            "-c:v",
            "libx264rgb",
            "-qp",
            "0",
            "-pix_fmt",
            "rgb24",
        ],
        &path,
    );
    path
}

/// Runs `framefusion sql STATEMENTS --format json` with the catalog file `catalog` and the
/// extra environment `env`.
pub fn sql_with_catalog(catalog: &Path, env: &[(&str, String)], statements: &str) -> Output {
    let mut cmd = Command::new(framefusion_bin());
    for (k, v) in env {
        cmd.env(k, v);
    }
    no_bug_report(
        cmd.args(["sql", "--catalog"])
            .arg(catalog)
            .args([statements, "--format", "json"])
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", framefusion_bin().display())),
    )
}

/// Runs `framefusion sql STATEMENTS --no-catalog --format json`, on `cluster` when given,
/// with the object-store settings of `env` only: the test process's own `AWS_ENDPOINT_URL`,
/// `GOOGLE_*` and `AZURE_*` variables are left out.
pub fn sql_with_stores(env: &[(&str, String)], cluster: Option<&str>, statements: &str) -> Output {
    let mut cmd = Command::new(framefusion_bin());
    for (key, _) in std::env::vars() {
        if key == "AWS_ENDPOINT_URL" || key.starts_with("GOOGLE_") || key.starts_with("AZURE_") {
            cmd.env_remove(key);
        }
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.args(["sql", "--no-catalog", "--format", "json"]);
    if let Some(url) = cluster {
        cmd.args(["--cluster", url]);
    }
    no_bug_report(
        cmd.arg(statements)
            .output()
            .unwrap_or_else(|e| panic!("cannot run framefusion: {e}")),
    )
}

/// The JSON rows of a successful `framefusion` run (panics with its stderr otherwise).
pub fn ok_rows(out: &Output) -> Vec<serde_json::Value> {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    json_lines(&out.stdout)
}

/// The second column of `sql`'s rows (a script run in `ctx`), as text, in order.
pub async fn second_column(
    ctx: &datafusion::prelude::SessionContext,
    sql: &str,
) -> datafusion::common::Result<Vec<Option<String>>> {
    use datafusion::arrow::array::{Array, AsArray};
    use framefusion_engine::SessionContextExt;
    let batches = ctx.run_script(sql).await?.collect().await?;
    Ok(batches
        .iter()
        .flat_map(|b| {
            let c = b.column(1).as_string::<i32>().clone();
            (0..b.num_rows()).map(move |r| c.is_valid(r).then(|| c.value(r).to_owned()))
        })
        .collect())
}

/// The `texts` a reference loop printed (`{"texts": [...], ...}`).
pub fn printed_texts(printed: &str) -> Vec<String> {
    let out: serde_json::Value =
        serde_json::from_str(printed.trim()).unwrap_or_else(|e| panic!("{printed}: {e}"));
    out["texts"]
        .as_array()
        .map(|t| {
            t.iter()
                .map(|s| s.as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Why the script `sql` fails in `ctx` (planning or execution), or empty when it does not.
pub async fn query_error(ctx: &datafusion::prelude::SessionContext, sql: &str) -> String {
    use framefusion_engine::SessionContextExt;
    match ctx.run_script(sql).await {
        Ok(df) => df.collect().await.err().map(|e| e.to_string()),
        Err(e) => Some(e.to_string()),
    }
    .unwrap_or_default()
}
