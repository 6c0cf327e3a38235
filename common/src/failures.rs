//! The failure ledger of runs: every video of a run accounted for, however its query is
//! written.
//!
//! A video that fails (its probe, an operator's row) usually leaves a null behind, and a
//! natural query drops nulls: `unnest` of a null list gives no row, a `WHERE` on a null or
//! on `probe_error IS NULL` filters it out, a join does not match it. So a failure cannot
//! only travel in the query's rows. A manifest run gives each query it runs (one group of
//! videos) a *sink*, a name set as `framefusion.failure_sink` in the query's session
//! ([`RunOptions`]); whatever meets a video's own failure while the query runs reports a
//! [`Failure`] to that sink ([`report`]) before the row is done; when the query is over
//! the run takes the sink's failures ([`take`]) and writes an error row for each failed
//! video that its rows do not already mark.
//!
//! Where a report goes: into this process's ledger ([`accept`]), unless a [`Transport`]
//! is set ([`set_transport`]): a cluster's executors send their reports to the scheduler,
//! which keeps them in its ledger until the run takes them. A report that cannot be
//! delivered is an error for the caller to fail its task with (the scheduler retries the
//! task): a failure is never dropped. Failures nobody takes are forgotten after
//! [`KEEP`].

use std::collections::{BTreeSet, HashMap};
use std::sync::{LazyLock, Mutex, OnceLock};
use std::time::{Duration, Instant};

use datafusion_common::config::{ConfigExtension, ConfigOptions};
use serde::{Deserialize, Serialize};

use crate::code::ErrorCode;

/// One failure of one video.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Failure {
    /// The video, as the query named it (a `VIDEO` table's `path`).
    pub path: String,
    /// Where it failed: the operator's name, or `probe` for the `VIDEO` scan.
    pub operator: String,
    /// What kind of failure.
    pub code: ErrorCode,
    /// Why.
    pub message: String,
}

impl Failure {
    /// The failure of `path` in `operator` by `error`: its code and message.
    pub fn of(
        path: &str,
        operator: &str,
        error: &(impl crate::Coded + std::fmt::Display + ?Sized),
    ) -> Self {
        Self {
            path: path.to_owned(),
            operator: operator.to_owned(),
            code: error.code(),
            message: error.to_string(),
        }
    }

    /// The failure as a manifest's `error` says it: `operator: message`.
    pub fn describe(&self) -> String {
        format!("{}: {}", self.operator, self.message)
    }
}

datafusion_common::config_namespace! {
    /// Options of framefusion runs (`framefusion.*`).
    pub struct RunOptions {
        /// The failure ledger the failures of videos are reported to while a query runs: a
        /// manifest run sets it for each query it runs; empty (the default) reports
        /// nothing (failures are logged only).
        pub failure_sink: String, default = String::new()
        /// The locations the session may read and write media and tables at, separated by
        /// commas (local folders, `s3://bucket/prefix/`, `gs://`, `az://`); empty (the
        /// default) confines the session to nothing more than its process. A server sets
        /// it on the sessions of its clients, who cannot change it; it travels with a
        /// query to the executors of a cluster, which refuse what lies outside.
        pub allowed_roots: String, default = String::new()
        /// The folder (local, or an `s3://` prefix) generative operators keep each answer
        /// in as it arrives, so that a resumed run does not ask for it again: a manifest
        /// run sets its output's `_framefusion/answers/` (a server's clients cannot set
        /// it); empty (the default) keeps none.
        pub answers: String, default = String::new()
    }
}

crate::prefixed_extension!(RunOptions);

impl ConfigExtension for RunOptions {
    const PREFIX: &'static str = "framefusion";
}

impl RunOptions {
    /// The key of [`RunOptions::allowed_roots`], which a server's clients may not set.
    pub const ALLOWED_ROOTS_KEY: &'static str = "framefusion.allowed_roots";

    /// A session's allowed roots setting (empty: not confined by the session).
    pub fn allowed_roots_of(config: &ConfigOptions) -> String {
        config
            .extensions
            .get::<Self>()
            .map(|o| o.allowed_roots.clone())
            .unwrap_or_default()
    }

    /// The key of [`RunOptions::answers`], which only a run sets (a server's clients may
    /// not: it names where operators write).
    pub const ANSWERS_KEY: &'static str = "framefusion.answers";

    /// A session's answers folder setting (empty: answers are not kept).
    pub fn answers_of(config: &ConfigOptions) -> String {
        config
            .extensions
            .get::<Self>()
            .map(|o| o.answers.clone())
            .unwrap_or_default()
    }

    /// The sink of a session's settings (`None`: failures are not reported).
    pub fn sink_of(config: &ConfigOptions) -> Option<String> {
        config
            .extensions
            .get::<Self>()
            .map(|o| o.failure_sink.clone())
            .filter(|s| !s.is_empty())
    }
}

/// Whether `sink` is a valid sink name: letters, digits, `-`, `_` and `.`, at most 200
/// characters (it travels in URLs).
pub fn valid_sink(sink: &str) -> bool {
    !sink.is_empty()
        && sink.len() <= 200
        && sink
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Delivers reports to another process's ledger (an executor's scheduler).
pub trait Transport: Send + Sync {
    /// Delivers `failures` to `sink`, or says why it could not.
    fn send(&self, sink: &str, failures: &[Failure]) -> Result<(), String>;
}

/// How long failures nobody takes are kept.
pub const KEEP: Duration = Duration::from_secs(24 * 3600);

struct Kept {
    failures: BTreeSet<Failure>,
    at: Instant,
}

static TRANSPORT: OnceLock<Box<dyn Transport>> = OnceLock::new();
static LEDGER: LazyLock<Mutex<HashMap<String, Kept>>> = LazyLock::new(Default::default);

/// Sends this process's reports through `transport` from now on (once per process: an
/// executor at its start); false when one was set already.
pub fn set_transport(transport: Box<dyn Transport>) -> bool {
    TRANSPORT.set(transport).is_ok()
}

/// Reports `failures` to `sink`: into this process's ledger, or through the transport.
/// An error means they were not delivered: fail the task with it (transiently).
pub fn report(sink: &str, failures: Vec<Failure>) -> Result<(), String> {
    if failures.is_empty() {
        return Ok(());
    }
    if !valid_sink(sink) {
        return Err(format!(
            "framefusion.failure_sink = '{sink}' is not a sink name (letters, digits, '-', '_', '.')"
        ));
    }
    match TRANSPORT.get() {
        Some(transport) => transport.send(sink, &failures),
        None => {
            accept(sink, failures);
            Ok(())
        }
    }
}

/// Keeps `failures` of `sink` in this process's ledger (duplicates, from a retried task,
/// are kept once).
pub fn accept(sink: &str, failures: Vec<Failure>) {
    let mut ledger = LEDGER.lock().unwrap_or_else(|e| e.into_inner());
    ledger.retain(|_, kept| kept.at.elapsed() < KEEP);
    let kept = ledger.entry(sink.to_owned()).or_insert_with(|| Kept {
        failures: BTreeSet::new(),
        at: Instant::now(),
    });
    kept.at = Instant::now();
    kept.failures.extend(failures);
}

/// Takes the failures reported to `sink` from this process's ledger (they are gone from
/// it afterwards), in a stable order.
pub fn take(sink: &str) -> Vec<Failure> {
    let mut ledger = LEDGER.lock().unwrap_or_else(|e| e.into_inner());
    ledger
        .remove(sink)
        .map(|kept| kept.failures.into_iter().collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(path: &str) -> Failure {
        Failure {
            path: path.to_owned(),
            operator: "detect_shots".to_owned(),
            code: ErrorCode::BadMedia,
            message: "cannot probe".to_owned(),
        }
    }

    #[test]
    fn reports_are_kept_once_until_taken() {
        assert!(report("sink-a", vec![failure("a"), failure("b")]).is_ok());
        // a retried task reports the same failure again
        assert!(report("sink-a", vec![failure("a")]).is_ok());
        assert!(report("sink-b", vec![failure("c")]).is_ok());
        assert_eq!(take("sink-a"), vec![failure("a"), failure("b")]);
        assert!(take("sink-a").is_empty(), "taken failures are gone");
        assert_eq!(take("sink-b"), vec![failure("c")]);
        assert_eq!(
            failure("a").describe(),
            "detect_shots: cannot probe",
            "the manifest's error names the operator"
        );
    }

    #[test]
    fn sink_names_are_checked() {
        assert!(valid_sink("run-1a2b.attempt_3"));
        assert!(!valid_sink(""));
        assert!(!valid_sink("a/b"));
        assert!(report("a b", vec![failure("x")]).is_err());
        let mut config = ConfigOptions::new();
        config.extensions.insert(RunOptions::default());
        assert_eq!(RunOptions::sink_of(&config), None);
        assert!(config.set("framefusion.failure_sink", "s-1").is_ok());
        assert_eq!(RunOptions::sink_of(&config).as_deref(), Some("s-1"));
        assert!(config.set(RunOptions::ALLOWED_ROOTS_KEY, "/data").is_ok());
        // the entries carry the full key, so that a cluster's scheduler and executors set
        // them again from a client's settings
        let sent: Vec<(String, String)> = config
            .entries()
            .into_iter()
            .filter(|e| e.key.starts_with("framefusion."))
            .map(|e| (e.key, e.value.unwrap_or_default()))
            .collect();
        assert_eq!(
            sent,
            [
                ("framefusion.failure_sink".to_owned(), "s-1".to_owned()),
                ("framefusion.allowed_roots".to_owned(), "/data".to_owned()),
                ("framefusion.answers".to_owned(), String::new())
            ]
        );
        let mut there = ConfigOptions::new();
        there.extensions.insert(RunOptions::default());
        for (k, v) in &sent {
            assert!(there.set(k, v).is_ok());
        }
        assert_eq!(RunOptions::sink_of(&there).as_deref(), Some("s-1"));
        assert_eq!(RunOptions::allowed_roots_of(&there), "/data");
    }
}
