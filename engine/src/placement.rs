//! Where a cluster runs a query's stages: executors belong to a pool, `cpu` (the default)
//! or `gpu` (`framefusion executor --pool gpu`), and the scheduler sends every stage that
//! calls a model ([`framefusion_udfs::runs_model`]: text, faces, speech, user ONNX models)
//! to the GPU pool and every other stage (decoding, signals, shots, probes, shuffles) to
//! the CPU pool. A pool with no live executor does not hold work back: its stages go to
//! the other pool (a query on a cluster without GPU executors runs everything on the CPU
//! ones, and one without CPU executors everything on the GPU ones).
//!
//! [`PoolPlacement`] is the scheduler's task distribution policy (Ballista's
//! `DistributionPolicy`, in pull and push scheduling alike); an executor's pool travels in
//! its id (`gpu-<uuid>`, [`executor_id`]), the one thing Ballista tells a policy about the
//! executor asking for work. [`pending_partitions`] and [`PoolPlacement::live_executors`]
//! give per pool the pending work and the live executors, which the scheduler publishes
//! (`framefusion_pending_tasks`, `framefusion_executors`) for autoscalers.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ballista_core::JobId;
use ballista_core::config::BallistaConfig;
use ballista_core::execution_plans::{RangeShuffleReaderExec, ShuffleReaderExec};
use ballista_core::serde::protobuf::{AvailableVcores, executor_status, job_status};
use ballista_core::serde::scheduler::TaskKey;
use ballista_scheduler::cluster::{BoundTask, ClusterState, DistributionPolicy};
use ballista_scheduler::state::execution_graph::{TaskDescription, create_task_info};
use ballista_scheduler::state::execution_stage::{ExecutionStage, RunningStage};
use ballista_scheduler::state::task_manager::JobInfoCache;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::error::Result;
use datafusion::physical_expr::ScalarFunctionExpr;
use datafusion::physical_expr::expressions::Literal;
use datafusion::physical_plan::ExecutionPlan;

/// An executor pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum Pool {
    /// Decoding and everything that runs no model.
    #[default]
    Cpu,
    /// Stages that run a model.
    Gpu,
}

impl Pool {
    /// Both pools.
    pub const ALL: [Pool; 2] = [Pool::Cpu, Pool::Gpu];

    /// The pool's name (`cpu`, `gpu`), as in the metrics' `pool` label.
    pub fn name(self) -> &'static str {
        match self {
            Pool::Cpu => "cpu",
            Pool::Gpu => "gpu",
        }
    }

    /// The pool of the executor with this id: `gpu` for ids [`executor_id`] made for the GPU
    /// pool, `cpu` for every other (Ballista's own ids included).
    pub fn of_executor(id: &str) -> Self {
        if id.starts_with("gpu-") {
            Pool::Gpu
        } else {
            Pool::Cpu
        }
    }

    /// The pool that should run a stage with this plan.
    pub fn of_stage(plan: &Arc<dyn ExecutionPlan>) -> Self {
        if stage_runs_model(plan) {
            Pool::Gpu
        } else {
            Pool::Cpu
        }
    }

    fn other(self) -> Self {
        match self {
            Pool::Cpu => Pool::Gpu,
            Pool::Gpu => Pool::Cpu,
        }
    }
}

impl std::str::FromStr for Pool {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "cpu" => Ok(Pool::Cpu),
            "gpu" => Ok(Pool::Gpu),
            other => Err(format!("unknown executor pool '{other}': use cpu or gpu")),
        }
    }
}

impl std::fmt::Display for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A new executor id carrying `pool`: the pool's name, a dash, and the id Ballista would
/// give the executor (a UUID).
pub fn executor_id(pool: Pool) -> String {
    format!("{}-{}", pool.name(), ballista_core::ids::new_instance_id())
}

/// Whether a stage's plan calls a model anywhere in its expressions.
pub fn stage_runs_model(plan: &Arc<dyn ExecutionPlan>) -> bool {
    let mut found = false;
    let _ = plan.apply(|node| {
        node.apply_expressions(&mut |root| {
            root.apply(|e| {
                if e.downcast_ref::<ScalarFunctionExpr>().is_some_and(|f| {
                    let literals: Vec<_> = f
                        .args()
                        .iter()
                        .map(|a| a.downcast_ref::<Literal>().map(|l| l.value().clone()))
                        .collect();
                    framefusion_udfs::call_runs_model(f.fun(), &literals, f.config_options())
                }) {
                    found = true;
                    return Ok(TreeNodeRecursion::Stop);
                }
                Ok(TreeNodeRecursion::Continue)
            })
        })
    });
    found
}

/// The live executors of each pool, as the scheduler sees them: a heartbeat within the
/// executor timeout and not terminating (the rule of Ballista's own executor manager,
/// whose method is private to it).
fn live_executors(
    cluster: &dyn ClusterState,
    timeout: Duration,
    push: bool,
) -> HashMap<Pool, usize> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let since = now.saturating_sub(timeout.as_secs());
    let mut live = HashMap::new();
    for (id, heartbeat) in cluster.executor_heartbeats() {
        let active = match heartbeat.status.as_ref().and_then(|s| s.status.as_ref()) {
            Some(executor_status::Status::Active(_)) => true,
            Some(_) => false,
            // pull scheduling: an executor that only polls has no status yet
            None => !push,
        };
        if active && heartbeat.timestamp >= since {
            *live.entry(Pool::of_executor(&id)).or_insert(0) += 1;
        }
    }
    live
}

/// The scheduler's task distribution policy (see the module docs).
pub struct PoolPlacement {
    cluster: Arc<dyn ClusterState>,
    executor_timeout: Duration,
    push: bool,
    /// Per pool (by its index): the fallback to the other pool was logged.
    fallback_said: [AtomicBool; 2],
}

impl std::fmt::Debug for PoolPlacement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoolPlacement")
            .field("executor_timeout", &self.executor_timeout)
            .field("push", &self.push)
            .finish()
    }
}

impl PoolPlacement {
    /// The policy of a scheduler over `cluster`, whose executors are lost after
    /// `executor_timeout` without a heartbeat.
    pub fn new(cluster: Arc<dyn ClusterState>, executor_timeout: Duration, push: bool) -> Self {
        Self {
            cluster,
            executor_timeout,
            push,
            fallback_said: [AtomicBool::new(false), AtomicBool::new(false)],
        }
    }

    /// The live executors of each pool.
    pub fn live_executors(&self) -> HashMap<Pool, usize> {
        live_executors(self.cluster.as_ref(), self.executor_timeout, self.push)
    }

    /// Logs, once until `pool` has live executors again, that its stages run on the other
    /// pool.
    fn say_fallback(&self, pool: Pool) {
        if !self.fallback_said[pool as usize].swap(true, Ordering::Relaxed) {
            match pool {
                Pool::Gpu => log::warn!(
                    "no live gpu executor: stages that run a model run on the cpu executors \
                     (ONNX Runtime's CPU provider) until one registers"
                ),
                Pool::Cpu => log::warn!(
                    "no live cpu executor: stages that run no model run on the gpu executors \
                     until one registers"
                ),
            }
        }
    }
}

/// Whether an executor of `executor` may take a stage for `stage`: its own pool's work, or
/// the other pool's when that pool has no live executor.
fn takes(executor: Pool, stage: Pool, live: &HashMap<Pool, usize>) -> bool {
    executor == stage || live.get(&executor.other()).copied().unwrap_or(0) == 0
}

#[async_trait::async_trait]
impl DistributionPolicy for PoolPlacement {
    async fn bind_tasks(
        &self,
        mut budgets: Vec<&mut AvailableVcores>,
        running_jobs: Arc<HashMap<JobId, JobInfoCache>>,
    ) -> Result<Vec<BoundTask>> {
        let mut bound = Vec::new();
        if budgets.iter().all(|b| b.vcores == 0) {
            return Ok(bound);
        }
        let live = self.live_executors();
        for pool in Pool::ALL {
            if live.get(&pool).copied().unwrap_or(0) > 0 {
                self.fallback_said[pool as usize].store(false, Ordering::Relaxed);
            }
        }
        // as Ballista's bias policy: the largest free executor first
        budgets.sort_by_key(|b| std::cmp::Reverse(b.vcores));
        for (job_id, job) in running_jobs.iter() {
            if !matches!(job.status, Some(job_status::Status::Running(_))) {
                continue;
            }
            let mut graph = job.execution_graph.write().await;
            let session_id = graph.session_id().to_owned();
            let mut done_stages = Vec::new();
            while let Some(stage) = graph.fetch_running_stage(&done_stages) {
                let wants = Pool::of_stage(&stage.plan);
                for budget in budgets.iter_mut() {
                    let pool = Pool::of_executor(&budget.executor_id);
                    if !takes(pool, wants, &live) {
                        continue;
                    }
                    while budget.vcores > 0 {
                        match bind_one(stage, &session_id, job_id, budget) {
                            Some(task) => {
                                if pool != wants {
                                    self.say_fallback(wants);
                                }
                                bound.push(task);
                            }
                            None => break,
                        }
                    }
                }
                done_stages.push(stage.stage_id);
                if budgets.iter().all(|b| b.vcores == 0) {
                    return Ok(bound);
                }
            }
        }
        Ok(bound)
    }

    fn name(&self) -> &str {
        "framefusion-pools"
    }
}

/// Binds the next pending partitions of `stage` to the executor of `budget`, as Ballista
/// 55's scheduler binds a task (`cluster::bind_one`, private to it, so repeated here: a
/// slice of at most the executor's free vcores and `max_partitions_per_task` partitions,
/// one vcore and the whole queue for a stage that collapses its input into one partition).
fn bind_one(
    stage: &mut RunningStage,
    session_id: &str,
    job_id: &JobId,
    budget: &mut AvailableVcores,
) -> Option<BoundTask> {
    let collapse = stage_has_input_collapse(&stage.plan);
    let cap = stage
        .session_config
        .options()
        .extensions
        .get::<BallistaConfig>()
        .map(BallistaConfig::max_partitions_per_task)
        .filter(|&n| n > 0)
        .unwrap_or(usize::MAX);
    let max = if collapse {
        usize::MAX
    } else {
        (budget.vcores as usize).min(cap)
    };
    let partitions = stage.pending.next_slice(max);
    if partitions.is_empty() {
        return None;
    }
    let vcores = if collapse {
        1
    } else {
        u32::try_from(partitions.len()).unwrap_or(u32::MAX)
    };
    let task_id = stage.task_infos.len();
    let task_attempt = partitions
        .iter()
        .map(|p| stage.task_failure_numbers[*p])
        .max()
        .unwrap_or(0);
    let mut info = create_task_info(budget.executor_id.clone(), task_id);
    info.global_input_partition_ids = partitions.clone();
    info.vcores_consumed = vcores;
    stage.task_infos.push(info);
    budget.vcores = budget.vcores.saturating_sub(vcores);
    Some((
        budget.executor_id.clone(),
        TaskDescription {
            session_id: session_id.to_owned(),
            key: TaskKey {
                job_id: job_id.clone(),
                stage_id: stage.stage_id,
                task_id,
            },
            stage_attempt_num: stage.stage_attempt_num,
            task_attempt,
            global_input_partition_ids: partitions,
            vcores_consumed: vcores,
            plan: stage.plan.clone(),
            session_config: stage.session_config.clone(),
        },
    ))
}

/// Whether a stage collapses its input into one partition below its root (Ballista 55's
/// rule, private to its scheduler): such a stage's pending partitions must all go to one
/// task.
fn stage_has_input_collapse(root: &Arc<dyn ExecutionPlan>) -> bool {
    fn walk(node: &Arc<dyn ExecutionPlan>) -> bool {
        if node.downcast_ref::<ShuffleReaderExec>().is_some()
            || node.downcast_ref::<RangeShuffleReaderExec>().is_some()
        {
            return false;
        }
        if node.properties().output_partitioning().partition_count() == 1 {
            return true;
        }
        match node.children().as_slice() {
            [child] => walk(child),
            _ => false,
        }
    }
    match root.children().as_slice() {
        [child] => walk(child),
        _ => false,
    }
}

/// Pending work per pool: the input partitions of runnable stages (running, or resolved
/// and about to run) not yet given to an executor, counted for the pool that should run
/// them.
pub async fn pending_partitions(
    running_jobs: &HashMap<JobId, JobInfoCache>,
) -> HashMap<Pool, usize> {
    let mut pending = HashMap::new();
    for job in running_jobs.values() {
        let graph = job.execution_graph.read().await;
        for stage in graph.stages().values() {
            let (plan, n) = match stage {
                ExecutionStage::Running(s) => (&s.plan, s.pending.remaining()),
                ExecutionStage::Resolved(s) => (&s.plan, s.partitions),
                _ => continue,
            };
            if n > 0 {
                *pending.entry(Pool::of_stage(plan)).or_insert(0) += n;
            }
        }
    }
    pending
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn executor_ids_carry_their_pool() {
        let gpu = executor_id(Pool::Gpu);
        let cpu = executor_id(Pool::Cpu);
        assert_eq!(Pool::of_executor(&gpu), Pool::Gpu);
        assert_eq!(Pool::of_executor(&cpu), Pool::Cpu);
        assert_ne!(executor_id(Pool::Gpu), gpu);
        assert_eq!(gpu.len(), "gpu-".len() + 36, "{gpu}");
        // Ballista's own ids (UUIDs, hexadecimal) are CPU executors
        assert_eq!(
            Pool::of_executor("0a1b2c3d-0000-4000-8000-000000000000"),
            Pool::Cpu
        );
        assert_eq!("GPU".parse::<Pool>(), Ok(Pool::Gpu));
        assert!(
            "tpu"
                .parse::<Pool>()
                .is_err_and(|e| e.contains("cpu or gpu"))
        );
    }

    #[tokio::test]
    async fn stages_that_call_a_model_belong_to_the_gpu_pool() -> Result<()> {
        let ctx = crate::new_context()?;
        ctx.sql("CREATE TABLE v (path VARCHAR, at DOUBLE)").await?;
        for (sql, pool) in [
            ("SELECT text_area_ratio(path, 0, 1) FROM v", Pool::Gpu),
            (
                "SELECT path FROM v WHERE face_stats(path, 0, 1) IS NULL",
                Pool::Gpu,
            ),
            ("SELECT ocr_text(path, at) FROM v", Pool::Gpu),
            ("SELECT speech_activity(path) FROM v", Pool::Gpu),
            ("SELECT cardinality(detect_shots(path)) FROM v", Pool::Cpu),
            (
                "SELECT motion_score(path, 0, 1), thumbnail(path, at) FROM v",
                Pool::Cpu,
            ),
            ("SELECT count(*) FROM v GROUP BY path", Pool::Cpu),
        ] {
            let plan = ctx.sql(sql).await?.create_physical_plan().await?;
            assert_eq!(Pool::of_stage(&plan), pool, "{sql}");
        }
        Ok(())
    }

    #[test]
    fn a_pool_without_executors_gives_its_work_to_the_other() {
        let both = HashMap::from([(Pool::Cpu, 1), (Pool::Gpu, 1)]);
        assert!(takes(Pool::Gpu, Pool::Gpu, &both));
        assert!(!takes(Pool::Cpu, Pool::Gpu, &both));
        assert!(!takes(Pool::Gpu, Pool::Cpu, &both));
        let cpu_only = HashMap::from([(Pool::Cpu, 2)]);
        assert!(takes(Pool::Cpu, Pool::Gpu, &cpu_only));
        let gpu_only = HashMap::from([(Pool::Gpu, 1), (Pool::Cpu, 0)]);
        assert!(takes(Pool::Gpu, Pool::Cpu, &gpu_only));
    }
}
