//! # framefusion-benches
//!
//! Benchmarks that report ratios against a baseline measured in the same run (the ffmpeg
//! CLI tools, PySceneDetect, the physical limit), never absolute numbers alone. Results,
//! with date and machine, are recorded in `benches/RESULTS.md`.
//!
//! Run them with `make bench` (or `cargo bench -p framefusion-benches`).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// `$FRAMEFUSION_HOME/corpus`, the sample corpus fetched by `scripts/setup.sh`.
pub fn corpus_dir() -> PathBuf {
    framefusion_engine::framefusion_home().join("corpus")
}

/// Builds a corpus of `n` files in `dir` by hard-linking the sample files in turn (the
/// same bytes for every contender; the page cache serves them all alike).
pub fn replicate_corpus(samples: &Path, dir: &Path, n: usize) -> std::io::Result<Vec<PathBuf>> {
    let mut sources: Vec<PathBuf> = std::fs::read_dir(samples)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    sources.sort();
    if sources.is_empty() {
        return Err(std::io::Error::other(format!(
            "no sample files in {}: run `make setup` first",
            samples.display()
        )));
    }
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let src = &sources[i % sources.len()];
        let ext = src.extension().and_then(|e| e.to_str()).unwrap_or("mp4");
        let dst = dir.join(format!("{i:05}.{ext}"));
        if std::fs::hard_link(src, &dst).is_err() {
            std::fs::copy(src, &dst)?;
        }
        out.push(dst);
    }
    Ok(out)
}

/// The best (shortest) of `runs` timings of `f`.
pub fn best_of<T>(runs: usize, mut f: impl FnMut() -> T) -> (Duration, T) {
    let mut best: Option<(Duration, T)> = None;
    for _ in 0..runs.max(1) {
        let start = Instant::now();
        let value = f();
        let elapsed = start.elapsed();
        if best.as_ref().is_none_or(|(b, _)| elapsed < *b) {
            best = Some((elapsed, value));
        }
    }
    best.unwrap_or_else(|| unreachable!("runs >= 1"))
}

/// The release `framefusion` binary next to this benchmark (`make bench` builds it).
pub fn framefusion_bin() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent()?.parent().map(|d| d.join("framefusion")))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "the release framefusion binary is missing: cargo build --release -p framefusion-cli"
            )
        })
}

/// What a measured process did.
#[derive(Debug, Clone)]
pub struct Measured {
    /// Wall-clock time.
    pub elapsed: Duration,
    /// Peak resident memory, KiB.
    pub peak_rss_kib: i64,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

/// Runs `cmd` to its end and measures its wall time and peak memory; panics when it fails.
///
/// The peak is the child's own high-water mark (`VmHWM` of `/proc/PID/status`), read
/// every 10 ms while it runs, so growth in its last 10 ms can be missed. wait4's
/// `ru_maxrss` is not used: Linux starts a child's figure at its parent's resident size
/// when it spawns (the exec records the old address space's high-water mark), so a
/// benchmark that holds 1 GiB of preloaded tensors would see every child peak at 1 GiB.
pub fn measure(cmd: &mut std::process::Command) -> Measured {
    use std::io::Read;
    use std::process::Stdio;
    let start = Instant::now();
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    // `spawn` returns after the exec: from here the status file describes the new program
    let pid = child.id();
    let running = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let poller = {
        let running = running.clone();
        std::thread::spawn(move || {
            let mut peak = 0;
            while running.load(std::sync::atomic::Ordering::Relaxed) {
                peak = peak.max(high_water_kib(pid).unwrap_or(0));
                std::thread::sleep(Duration::from_millis(10));
            }
            peak
        })
    };
    let (mut out, mut err) = (
        child.stdout.take().unwrap_or_else(|| unreachable!("piped")),
        child.stderr.take().unwrap_or_else(|| unreachable!("piped")),
    );
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = err.read_to_string(&mut text);
        text
    });
    let mut stdout = String::new();
    let _ = out.read_to_string(&mut stdout);
    let status = child
        .wait()
        .unwrap_or_else(|e| panic!("cannot wait for {cmd:?}: {e}"));
    let elapsed = start.elapsed();
    running.store(false, std::sync::atomic::Ordering::Relaxed);
    let peak_rss_kib = poller.join().unwrap_or(0);
    let stderr = reader.join().unwrap_or_default();
    assert!(status.success(), "{cmd:?} failed ({status}):\n{stderr}");
    Measured {
        elapsed,
        peak_rss_kib,
        stdout,
        stderr,
    }
}

/// The `VmHWM` line of `/proc/PID/status` (KiB): the high-water mark of `pid`'s resident
/// memory since its last exec; `None` once it has exited.
fn high_water_kib(pid: u32) -> Option<i64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The best of `runs` times of one `ffmpeg -threads 2` decode of `file` (video only),
/// the physical floor of anything that decodes every frame.
pub fn ffmpeg_decode(file: &Path, runs: usize) -> Duration {
    best_of(runs, || {
        let status = std::process::Command::new("ffmpeg")
            .args(["-v", "error", "-threads", "2", "-i"])
            .arg(file)
            .args(["-an", "-f", "null", "-"])
            .status()
            .unwrap_or_else(|e| panic!("ffmpeg: {e}"));
        assert!(status.success(), "ffmpeg failed on {}", file.display());
    })
    .0
}

/// Matches `ours` to `theirs` within one frame: (true positives, ours, theirs).
pub fn matched(ours: &[i64], theirs: &[i64]) -> (usize, usize, usize) {
    let mut used = vec![false; theirs.len()];
    let mut tp = 0;
    for &c in ours {
        if let Some(i) = (0..theirs.len()).find(|&i| !used[i] && (theirs[i] - c).abs() <= 1) {
            used[i] = true;
            tp += 1;
        }
    }
    (tp, ours.len(), theirs.len())
}

/// F1 of counts (true positives, found, expected); 1 when both are empty.
pub fn f1((tp, found, expected): (usize, usize, usize)) -> f64 {
    let precision = if found == 0 {
        1.0
    } else {
        tp as f64 / found as f64
    };
    let recall = if expected == 0 {
        1.0
    } else {
        tp as f64 / expected as f64
    };
    if precision + recall == 0.0 {
        0.0
    } else {
        2.0 * precision * recall / (precision + recall)
    }
}
