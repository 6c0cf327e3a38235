//! Executors count their Ballista tasks (`framefusion_tasks_total` by outcome and
//! `framefusion_tasks_running`, see `framefusion_media::metrics`): Ballista's default
//! execution engine, wrapped so that every query stage it creates is counted while it runs.

use std::fmt;
use std::sync::Arc;

use ballista_core::JobId;
use ballista_core::serde::protobuf::{
    RuntimeStatsReport, ShuffleWritePartition, TaskColumnStats, WindowStateReport,
};
use ballista_executor::execution_engine::{ExecutionEngine, QueryStageExecutor};
use datafusion::error::Result;
use datafusion::execution::context::TaskContext;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::metrics::MetricsSet;
use datafusion::prelude::SessionConfig;
use framefusion_media::metrics;

/// An execution engine that counts the tasks of the engine it wraps.
pub struct CountingEngine {
    inner: Arc<dyn ExecutionEngine>,
}

impl CountingEngine {
    /// Counts the tasks `inner` runs.
    pub fn new(inner: Arc<dyn ExecutionEngine>) -> Self {
        Self { inner }
    }
}

impl ExecutionEngine for CountingEngine {
    fn create_query_stage_exec(
        &self,
        job_id: JobId,
        stage_id: usize,
        task_id: usize,
        global_output_partition_ids: Vec<usize>,
        plan: Arc<dyn ExecutionPlan>,
        work_dir: &str,
        config: &SessionConfig,
    ) -> Result<Arc<dyn QueryStageExecutor>> {
        let inner = self.inner.create_query_stage_exec(
            job_id,
            stage_id,
            task_id,
            global_output_partition_ids,
            plan,
            work_dir,
            config,
        )?;
        Ok(Arc::new(CountedStage { inner }))
    }
}

/// A query stage whose runs are counted.
#[derive(Debug)]
struct CountedStage {
    inner: Arc<dyn QueryStageExecutor>,
}

impl fmt::Display for CountedStage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.inner, f)
    }
}

#[async_trait::async_trait]
impl QueryStageExecutor for CountedStage {
    async fn execute_query_stage(
        &self,
        task_id: usize,
        context: Arc<TaskContext>,
    ) -> Result<Vec<ShuffleWritePartition>> {
        // dropped unfinished when the task is cancelled
        let running = metrics::task_started();
        let result = self.inner.execute_query_stage(task_id, context).await;
        running.finish(result.is_ok());
        result
    }

    fn collect_plan_metrics(&self) -> Vec<MetricsSet> {
        self.inner.collect_plan_metrics()
    }

    fn collect_runtime_stats_reports(&self) -> Vec<RuntimeStatsReport> {
        self.inner.collect_runtime_stats_reports()
    }

    fn collect_window_state_reports(&self) -> Result<Vec<WindowStateReport>> {
        self.inner.collect_window_state_reports()
    }

    fn collect_column_stats(&self) -> Vec<TaskColumnStats> {
        self.inner.collect_column_stats()
    }
}
