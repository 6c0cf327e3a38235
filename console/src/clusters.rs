//! The clusters a console submits to, as their Ballista schedulers describe them: the
//! scheduler's REST API (`/api/executors`, `/api/jobs`) on the port of its `df://` URL.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// An executor registered with a scheduler.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Executor {
    /// The executor's id.
    pub id: String,
    /// Where it serves its Flight (shuffle) endpoint.
    pub host: String,
    /// Its port.
    pub port: u16,
    /// Task slots (vcores).
    pub slots: u32,
    /// When its last heartbeat arrived (milliseconds since the Unix epoch).
    pub last_heartbeat_ms: Option<u64>,
}

/// A job the scheduler knows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    /// The job's id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// `Queued`, `Running`, `Completed`, `Failed`.
    pub status: String,
    /// Stages.
    pub stages: usize,
    /// Stages completed.
    pub completed_stages: usize,
    /// Its tasks running now (of a running job).
    pub running_tasks: usize,
}

/// A cluster, as `GET /api/clusters` returns it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClusterView {
    /// Its name (`--cluster NAME=URL`).
    pub name: String,
    /// Its scheduler (`df://host:port`).
    pub url: String,
    /// Whether the scheduler answered.
    pub reachable: bool,
    /// Why not, when it did not.
    pub error: Option<String>,
    /// Its executors.
    pub executors: Vec<Executor>,
    /// Task slots of all executors.
    pub slots: u32,
    /// Jobs running now.
    pub running_jobs: usize,
    /// Tasks running now, over all jobs.
    pub running_tasks: usize,
    /// Its jobs, newest first (at most 20).
    pub jobs: Vec<Job>,
}

#[derive(Deserialize)]
struct RawExecutor {
    id: String,
    host: String,
    port: u16,
    last_seen: Option<u64>,
    specification: RawSpec,
}

#[derive(Deserialize)]
struct RawSpec {
    vcores: u32,
}

#[derive(Deserialize)]
struct RawJob {
    job_id: String,
    job_name: String,
    status: String,
    num_stages: usize,
    completed_stages: usize,
    start_time: u64,
}

/// The scheduler's HTTP root for a `df://host:port` URL.
fn rest_root(url: &str) -> String {
    let host = url
        .trim_start_matches("df://")
        .trim_start_matches("http://")
        .trim_end_matches('/');
    format!("http://{host}")
}

/// The answer to `request` (to `url`), when it is a success.
async fn answer(request: reqwest::RequestBuilder, url: &str) -> Result<reqwest::Response, String> {
    let response = request.send().await.map_err(|e| format!("{url}: {e}"))?;
    if !response.status().is_success() {
        return Err(format!("{url}: HTTP {}", response.status()));
    }
    Ok(response)
}

async fn get<T: for<'de> Deserialize<'de>>(
    client: &reqwest::Client,
    url: &str,
) -> Result<T, String> {
    let request = client.get(url).timeout(Duration::from_secs(5));
    answer(request, url)
        .await?
        .json::<T>()
        .await
        .map_err(|e| format!("{url}: {e}"))
}

/// Asks the scheduler of `url` for its executors and jobs.
pub async fn describe(client: &reqwest::Client, name: &str, url: &str) -> ClusterView {
    let root = rest_root(url);
    let executors = get::<Vec<RawExecutor>>(client, &format!("{root}/api/executors")).await;
    let jobs = get::<Vec<RawJob>>(client, &format!("{root}/api/jobs")).await;
    let mut view = ClusterView {
        name: name.to_owned(),
        url: url.to_owned(),
        reachable: false,
        error: None,
        executors: Vec::new(),
        slots: 0,
        running_jobs: 0,
        running_tasks: 0,
        jobs: Vec::new(),
    };
    match (executors, jobs) {
        (Ok(executors), Ok(mut jobs)) => {
            view.reachable = true;
            view.executors = executors
                .into_iter()
                .map(|e| Executor {
                    id: e.id,
                    host: e.host,
                    port: e.port,
                    slots: e.specification.vcores,
                    last_heartbeat_ms: e.last_seen,
                })
                .collect();
            view.slots = view.executors.iter().map(|e| e.slots).sum();
            jobs.sort_by_key(|j| std::cmp::Reverse(j.start_time));
            view.running_jobs = jobs.iter().filter(|j| j.status == "Running").count();
            view.jobs = jobs
                .into_iter()
                .take(20)
                .map(|j| Job {
                    id: j.job_id,
                    name: j.job_name,
                    status: j.status,
                    stages: j.num_stages,
                    completed_stages: j.completed_stages,
                    running_tasks: 0,
                })
                .collect();
            for job in view.jobs.iter_mut().filter(|j| j.status == "Running") {
                let stages = format!("{root}/api/job/{}/stages", job.id);
                match get::<serde_json::Value>(client, &stages).await {
                    Ok(stages) => job.running_tasks = running_tasks(&stages),
                    Err(e) => log::warn!("cannot read the stages of job {}: {e}", job.id),
                }
            }
            view.running_tasks = view.jobs.iter().map(|j| j.running_tasks).sum();
        }
        (Err(e), _) | (_, Err(e)) => view.error = Some(e),
    }
    view
}

/// Cancels the jobs named `name` that the scheduler of `url` has not finished (`PATCH
/// /api/job/{id}`): how many it cancelled.
pub async fn cancel_jobs_named(
    client: &reqwest::Client,
    url: &str,
    name: &str,
) -> Result<usize, String> {
    let root = rest_root(url);
    let jobs = get::<Vec<RawJob>>(client, &format!("{root}/api/jobs")).await?;
    let mut cancelled = 0;
    for job in jobs
        .iter()
        .filter(|j| j.job_name == name && matches!(j.status.as_str(), "Running" | "Queued"))
    {
        let target = format!("{root}/api/job/{}", job.job_id);
        answer(
            client.patch(&target).timeout(Duration::from_secs(10)),
            &target,
        )
        .await?;
        log::info!("cancelled job {} ({name}) on {url}", job.job_id);
        cancelled += 1;
    }
    Ok(cancelled)
}

/// Tasks whose status is `Running` in a job's `/stages` answer.
fn running_tasks(stages: &serde_json::Value) -> usize {
    stages["stages"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|stage| stage["tasks"].as_array().into_iter().flatten())
        .filter(|task| task["status"] == "Running")
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn running_tasks_are_counted_over_stages() {
        let stages = serde_json::json!({"stages": [
            {"stage_id": "1", "tasks": [{"id": 0, "status": "Running"}, {"id": 1, "status": "Successful"}]},
            {"stage_id": "2", "tasks": [{"id": 0, "status": {"Failed": {"reason": "x", "error": "y"}}}, {"id": 1, "status": "Running"}, null]},
        ]});
        assert_eq!(running_tasks(&stages), 2);
    }

    #[test]
    fn the_rest_root_is_the_scheduler_port() {
        assert_eq!(rest_root("df://127.0.0.1:50050"), "http://127.0.0.1:50050");
        assert_eq!(rest_root("df://sched:50050/"), "http://sched:50050");
    }
}
