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
