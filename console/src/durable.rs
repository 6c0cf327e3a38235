//! Durable console runs: recorded before they start, leased while they run, taken over
//! by a server when their lease expires.
//!
//! A run submitted to the console (or `POST /api/runs`) is written to the *run book*
//! under the first `--runs` location before it starts:
//!
//! ```text
//! <runs>/_console/runs/<id>/run.json          the job: SQL (with its SET and CREATE
//!                                              statements), target, output, user
//! <runs>/_console/runs/<id>/lease-<epoch>.json who runs it, until when
//! <runs>/_console/runs/<id>/done.json          how it ended (succeeded, failed, cancelled)
//! ```
//!
//! The server that runs it holds a lease: `lease-000001.json` is created with the run,
//! and renewed (rewritten with a later expiry) every third of the lease time while the
//! run goes on. A server that finds a run without `done.json` whose newest lease expired
//! takes it over by *creating* the next lease file (`lease-000002.json`): creation is
//! atomic (a hard link in a local folder; a conditional put, `If-None-Match: *`, on S3),
//! so of two servers racing for a run exactly one wins, and a server whose run was taken
//! over sees the newer lease at its next renewal and stops. The new owner cancels the old
//! owner's Ballista jobs still on the cluster (jobs are named after the run) and resumes
//! the run: the manifest's resume makes the result exact (each video committed once).
//!
//! The record holds the job as submitted, never a store's secret: a job whose options
//! carry credentials (`aws.secret_access_key`, a session token, an account key, ...) is
//! refused on a server with a run book; credentials stay in the server's environment or
//! its catalog. An S3 store without conditional writes makes the takeover fail loudly
//! (the lease cannot be created) rather than run a job twice.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use datafusion::error::{DataFusionError, Result};
use framefusion_engine::manifest::{ManifestLocation, ManifestStore};
use framefusion_media::source::Confinement;
use framefusion_media::storage::{S3Clients, StorageOptions};
use serde::{Deserialize, Serialize};

/// How long a lease lasts unless renewed (`serve --run-lease`).
pub const DEFAULT_LEASE: Duration = Duration::from_secs(30);

/// Where the run book lives under a `--runs` location.
const BOOK: &str = "_console/runs";

/// A recorded run: what a server needs to run it again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRecord {
    /// The console's id of the run.
    pub id: String,
    /// The job, as submitted.
    pub sql: String,
    /// `embedded` or a cluster's name.
    pub target: String,
    /// Where the manifest goes.
    pub output: String,
    /// Who submitted it.
    pub user: String,
    /// When it was submitted (Unix milliseconds).
    pub submitted_ms: u128,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct LeaseFile {
    owner: String,
    expires_ms: u128,
}

/// How a recorded run ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    /// `succeeded`, `failed` or `cancelled`.
    pub status: String,
    /// Why it stopped, when it did not succeed.
    pub message: Option<String>,
}

fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}

fn lease_name(id: &str, epoch: u64) -> String {
    format!("{id}/lease-{epoch:06}.json")
}

/// Option keys that hold a store's secret (see the module docs).
const SECRET_KEYS: &[&str] = &[
    "secret",
    "token",
    "password",
    "account_key",
    "sas_key",
    "service_account_key",
    "client_secret",
    "credential",
];

/// Why `sql` may not be recorded: an option that carries a secret.
pub fn secret_in(sql: &str) -> Option<String> {
    let lower = sql.to_ascii_lowercase();
    lower
        .split('\'')
        .skip(1)
        .step_by(2)
        .find(|quoted| {
            quoted.contains('.')
                && !quoted.contains(' ')
                && SECRET_KEYS.iter().any(|k| quoted.contains(k))
        })
        .map(str::to_owned)
}

/// The run book of a server (see the module docs).
#[derive(Debug)]
pub struct RunBook {
    store: ManifestStore,
    owner: String,
    lease: Duration,
}

/// A lease this server holds on a run.
#[derive(Debug, Clone)]
pub struct Held {
    /// The run.
    pub id: String,
    epoch: u64,
}

impl RunBook {
    /// The run book under the `--runs` location `root` (the server's own folder, read
    /// with the server's `clients`), leases held by `owner` for `lease`.
    pub fn open(root: &str, owner: String, lease: Duration, clients: &S3Clients) -> Result<Self> {
        let unconfined = Confinement::none().with_clients(clients.clone());
        let location = ManifestLocation::parse(root, &unconfined)?.child(BOOK);
        Ok(Self {
            store: ManifestStore::open(&location, &StorageOptions::default())?,
            owner,
            lease,
        })
    }

    /// How long a lease lasts.
    pub fn lease(&self) -> Duration {
        self.lease
    }

    /// Where the book is (for messages).
    pub fn display(&self) -> &str {
        self.store.display()
    }

    fn lease_file(&self) -> Result<Vec<u8>> {
        serde_json::to_vec(&LeaseFile {
            owner: self.owner.clone(),
            expires_ms: now_ms() + self.lease.as_millis(),
        })
        .map_err(|e| DataFusionError::Internal(format!("lease: {e}")))
    }

    /// Records a new run and takes its first lease, before it starts.
    pub async fn record(&self, record: &RunRecord) -> Result<Held> {
        let json = serde_json::to_vec_pretty(record)
            .map_err(|e| DataFusionError::Internal(format!("run record: {e}")))?;
        if !self
            .store
            .create(&format!("{}/run.json", record.id), json)
            .await?
        {
            return Err(DataFusionError::Execution(format!(
                "a run '{}' is already recorded in '{}'",
                record.id,
                self.display()
            )));
        }
        self.take(&record.id, 0).await?.ok_or_else(|| {
            DataFusionError::Execution(format!(
                "the new run '{}' was taken by another server",
                record.id
            ))
        })
    }

    /// Takes the lease after `epoch` on run `id`; `None` when another server took it.
    pub async fn take(&self, id: &str, epoch: u64) -> Result<Option<Held>> {
        let next = epoch + 1;
        let created = self
            .store
            .create(&lease_name(id, next), self.lease_file()?)
            .await?;
        Ok(created.then(|| Held {
            id: id.to_owned(),
            epoch: next,
        }))
    }

    /// Renews `held`: false when the run was taken over (a newer lease exists), and then
    /// this server must stop running it.
    pub async fn renew(&self, held: &Held) -> Result<bool> {
        let (newest, _) = self.newest_lease(&held.id).await?;
        if newest > held.epoch {
            return Ok(false);
        }
        self.store
            .write(&lease_name(&held.id, held.epoch), self.lease_file()?)
            .await?;
        Ok(true)
    }

    /// Records how the run of `held` ended: no server takes it over afterwards.
    pub async fn finish(&self, held: &Held, outcome: &Outcome) -> Result<()> {
        let json = serde_json::to_vec_pretty(outcome)
            .map_err(|e| DataFusionError::Internal(format!("outcome: {e}")))?;
        self.store
            .write(&format!("{}/done.json", held.id), json)
            .await
    }

    /// The newest lease of run `id`: its epoch (0: none) and content.
    async fn newest_lease(&self, id: &str) -> Result<(u64, Option<LeaseFile>)> {
        let epochs: Vec<u64> = self
            .store
            .list(Some(id))
            .await?
            .into_iter()
            .filter_map(|(name, _)| {
                name.rsplit('/')
                    .next()?
                    .strip_prefix("lease-")?
                    .strip_suffix(".json")?
                    .parse()
                    .ok()
            })
            .collect();
        let Some(&newest) = epochs.iter().max() else {
            return Ok((0, None));
        };
        let lease = self
            .store
            .read(&lease_name(id, newest))
            .await?
            .and_then(|bytes| serde_json::from_slice(&bytes).ok());
        Ok((newest, lease))
    }

    /// The recorded runs that did not end and whose lease expired: (record, the epoch of
    /// their newest lease), oldest first.
    pub async fn orphans(&self) -> Result<Vec<(RunRecord, u64)>> {
        let mut found = BTreeMap::new();
        for id in self.store.folders().await? {
            if id.starts_with(['_', '.'])
                || self.store.read(&format!("{id}/done.json")).await?.is_some()
            {
                continue;
            }
            let Some(bytes) = self.store.read(&format!("{id}/run.json")).await? else {
                continue;
            };
            let record: RunRecord = match serde_json::from_slice(&bytes) {
                Ok(r) => r,
                Err(e) => {
                    log::warn!(
                        "the run record '{}/{id}/run.json' is damaged: {e}",
                        self.display()
                    );
                    continue;
                }
            };
            let (epoch, lease) = self.newest_lease(&id).await?;
            let expired = lease.is_none_or(|l| l.expires_ms < now_ms());
            if expired {
                found.insert((record.submitted_ms, id), (record, epoch));
            }
        }
        Ok(found.into_values().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str) -> RunRecord {
        RunRecord {
            id: id.to_owned(),
            sql: "SELECT 1".to_owned(),
            target: "embedded".to_owned(),
            output: "/tmp/out".to_owned(),
            user: "ada".to_owned(),
            submitted_ms: 1,
        }
    }

    #[tokio::test]
    async fn one_server_takes_an_expired_run() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let root = dir.path().display().to_string();
        let short = Duration::from_millis(50);
        let first = RunBook::open(&root, "first".into(), short, &S3Clients::default())?;
        let held = first.record(&record("r1")).await?;
        assert!(first.renew(&held).await?);
        // a second server sees it held until the lease expires
        let second = RunBook::open(&root, "second".into(), DEFAULT_LEASE, &S3Clients::default())?;
        let third = RunBook::open(&root, "third".into(), DEFAULT_LEASE, &S3Clients::default())?;
        assert!(second.orphans().await?.is_empty());
        tokio::time::sleep(Duration::from_millis(120)).await;
        let orphans = second.orphans().await?;
        assert_eq!(orphans, vec![(record("r1"), 1)]);
        // two servers race for it: one wins
        let a = second.take("r1", 1).await?;
        let b = third.take("r1", 1).await?;
        assert!(
            a.is_some() != b.is_some(),
            "exactly one server takes the run"
        );
        // the first server learns it lost the run at its next renewal
        assert!(!first.renew(&held).await?);
        let Some(new) = a.or(b) else {
            panic!("nobody took the run")
        };
        assert!(second.orphans().await?.is_empty(), "the new lease holds");
        second
            .finish(
                &new,
                &Outcome {
                    status: "succeeded".into(),
                    message: None,
                },
            )
            .await?;
        tokio::time::sleep(Duration::from_millis(120)).await;
        assert!(
            third.orphans().await?.is_empty(),
            "a finished run is nobody's"
        );
        Ok(())
    }

    #[test]
    fn secrets_are_found_in_options() {
        assert_eq!(
            secret_in("CREATE EXTERNAL TABLE t STORED AS VIDEO LOCATION 's3://a/' OPTIONS ('aws.secret_access_key' 'x')").as_deref(),
            Some("aws.secret_access_key")
        );
        assert!(
            secret_in("SET onnx.device = 'cpu'; SELECT path FROM t WHERE path LIKE '%token%'")
                .is_none()
        );
        assert!(secret_in("OPTIONS ('aws.region' 'eu-west-1')").is_none());
    }
}
