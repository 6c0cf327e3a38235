//! The failure ledger of runs on a cluster (`framefusion_common::failures`).
//!
//! A run's failures of videos are met where its rows are computed: on a cluster, in the
//! executors. Each executor sends its reports to its scheduler
//! ([`report_to_scheduler`]: `POST /api/framefusion/failures/{sink}` on the scheduler's
//! port, beside Ballista's REST API), before the row that failed is done; a report that
//! does not arrive fails the task, which the scheduler retries. The scheduler keeps them
//! in its process's ledger ([`routes`]) until the run takes them
//! (`DELETE /api/framefusion/failures/{sink}` answers them and forgets them; [`take`]).
//! Embedded, the reports stay in the process and [`take`] reads them there.

use std::time::Duration;

use axum::Json;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use datafusion::error::{DataFusionError, Result};
use datafusion::prelude::SessionConfig;
use framefusion_common::failures::{self, Failure, Transport, valid_sink};

use crate::error::ClusterUrl;

/// The path of the ledger on a scheduler's port (`/{sink}` follows).
pub const LEDGER_PATH: &str = "/api/framefusion/failures";

/// How long a report or a take may take before it counts as failed.
const TIMEOUT: Duration = Duration::from_secs(30);
/// Attempts of a report before it fails the task.
const ATTEMPTS: u32 = 3;

/// The ledger's routes on a scheduler's port: `POST` keeps a sink's failures, `DELETE`
/// answers them and forgets them.
pub fn routes() -> axum::Router {
    axum::Router::new().route(
        &format!("{LEDGER_PATH}/{{sink}}"),
        post(keep).delete(hand_over),
    )
}

async fn keep(Path(sink): Path<String>, Json(reported): Json<Vec<Failure>>) -> Response {
    if !valid_sink(&sink) {
        return (StatusCode::BAD_REQUEST, "not a sink name").into_response();
    }
    failures::accept(&sink, reported);
    StatusCode::NO_CONTENT.into_response()
}

async fn hand_over(Path(sink): Path<String>) -> Response {
    if !valid_sink(&sink) {
        return (StatusCode::BAD_REQUEST, "not a sink name").into_response();
    }
    Json(failures::take(&sink)).into_response()
}

/// Sends this process's reports to the ledger of the scheduler at `host:port` (an
/// executor, at its start).
pub fn report_to_scheduler(host: &str, port: u16) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("framefusion-ledger")
        .enable_all()
        .build()
        .map_err(DataFusionError::IoError)?;
    let transport = SchedulerLedger {
        base: format!("http://{host}:{port}{LEDGER_PATH}"),
        client: client()?,
        runtime,
    };
    if !failures::set_transport(Box::new(transport)) {
        log::debug!("the failure ledger's transport was set already");
    }
    Ok(())
}

fn client() -> Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(TIMEOUT)
        .build()
        .map_err(|e| DataFusionError::External(Box::new(e)))
}

/// Reports sent to a scheduler's ledger over HTTP. A report is sent from whichever thread
/// met the failure (a CPU pool thread, a blocking thread, an async worker): the request
/// runs on this transport's own runtime, and the caller waits for its answer.
struct SchedulerLedger {
    base: String,
    client: reqwest::Client,
    runtime: tokio::runtime::Runtime,
}

impl Transport for SchedulerLedger {
    fn send(&self, sink: &str, failures: &[Failure]) -> std::result::Result<(), String> {
        let url = format!("{}/{sink}", self.base);
        let client = self.client.clone();
        let body = failures.to_vec();
        let (tx, rx) = std::sync::mpsc::channel();
        self.runtime.spawn(async move {
            let mut outcome = Err(String::new());
            for attempt in 1..=ATTEMPTS {
                outcome = client
                    .post(&url)
                    .json(&body)
                    .send()
                    .await
                    .and_then(reqwest::Response::error_for_status)
                    .map(|_| ())
                    .map_err(|e| format!("{url}: {e}"));
                if outcome.is_ok() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
            }
            let _ = tx.send(outcome);
        });
        rx.recv()
            .map_err(|_| "the ledger's transport stopped".to_owned())?
    }
}

/// Takes the failures reported to `sink` while a query of the session `config` ran: from
/// this process (embedded) or from the cluster's scheduler.
pub async fn take(config: &SessionConfig, sink: &str) -> Result<Vec<Failure>> {
    let Some(cluster) = config.get_extension::<ClusterUrl>() else {
        return Ok(failures::take(sink));
    };
    let url = url::Url::parse(&cluster.0)
        .ok()
        .and_then(|u| Some(format!("{}:{}", u.host_str()?, u.port().unwrap_or(50050))))
        .ok_or_else(|| {
            DataFusionError::Configuration(format!("'{}' is not a cluster URL", cluster.0))
        })?;
    let url = format!("http://{url}{LEDGER_PATH}/{sink}");
    let unavailable = |e: String| {
        DataFusionError::IoError(std::io::Error::other(format!(
            "cannot take the run's failures from the scheduler ({url}): {e}"
        )))
    };
    let response = client()?
        .delete(&url)
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(|e| unavailable(e.to_string()))?;
    response
        .json::<Vec<Failure>>()
        .await
        .map_err(|e| unavailable(e.to_string()))
}
