//! The `VIDEO` table type: one row per video file of a location.

use std::fmt;
use std::sync::{Arc, LazyLock};

use async_trait::async_trait;
use datafusion::arrow::array::{
    ArrayRef, Int64Builder, RecordBatch, RecordBatchOptions, StringBuilder,
    TimestampMicrosecondBuilder,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::catalog::{Session, TableProvider, TableProviderFactory};
use datafusion::common::stats::Precision;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{Result, Statistics, internal_err, plan_err};
use datafusion::datasource::TableType;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{CreateExternalTable, Expr};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{
    Boundedness, ChildrenPropertiesMode, EmissionType, ReplaceChildrenOptions,
};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
};
use framefusion_udfs::media::probe::probe_path;
use framefusion_udfs::media::source::VideoSource;
use framefusion_udfs::probe_udf::{ProbeColumnsBuilder, probe_fields};
use futures::StreamExt;

use crate::CatalogError;
use crate::config::VideoOptions;
use crate::listing::{self, ExtensionFilter, ListedFile};

/// The file type name in `STORED AS VIDEO`.
pub const VIDEO_FILE_TYPE: &str = "VIDEO";

/// Number of listing columns (`path`, `size_bytes`, `modified`) before the probe columns.
const LISTING_COLUMNS: usize = 3;

static VIDEOS_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    let mut fields = vec![
        Arc::new(Field::new("path", DataType::Utf8, false)),
        Arc::new(Field::new("size_bytes", DataType::Int64, true)),
        Arc::new(Field::new(
            "modified",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            true,
        )),
    ];
    fields.extend(probe_fields().iter().cloned());
    Arc::new(Schema::new(fields))
});

/// The schema of a `VIDEO` table: the videos table of the design (listing columns, then
/// the probe columns of [`probe_fields`]).
pub fn videos_schema() -> SchemaRef {
    Arc::clone(&VIDEOS_SCHEMA)
}

/// A corpus of video files at a location, as a table.
#[derive(Debug, Clone)]
pub struct VideoTable {
    locations: Vec<String>,
    filter: ExtensionFilter,
}

impl VideoTable {
    /// A table over `locations` (each a folder, listed recursively, or a single file),
    /// keeping the files that pass `filter`. Fails when a location does not exist.
    pub fn try_new(locations: Vec<String>, filter: ExtensionFilter) -> Result<Self, CatalogError> {
        if locations.is_empty() {
            return Err(CatalogError::Option(
                "a VIDEO table needs a LOCATION".to_owned(),
            ));
        }
        for location in &locations {
            listing::check_location(location)?;
        }
        Ok(Self { locations, filter })
    }

    /// The locations as written in the table definition.
    pub fn locations(&self) -> &[String] {
        &self.locations
    }

    /// Lists the files of every location, sorted by URI, each once.
    pub fn list_files(&self) -> Result<Vec<ListedFile>, CatalogError> {
        let mut files = Vec::new();
        for location in &self.locations {
            files.extend(listing::list(location, &self.filter)?);
        }
        files.sort_by(|a, b| a.uri.cmp(&b.uri));
        files.dedup_by(|a, b| a.uri == b.uri);
        Ok(files)
    }

    /// The extension filter of this table.
    pub fn filter(&self) -> &ExtensionFilter {
        &self.filter
    }
}

#[async_trait]
impl TableProvider for VideoTable {
    fn schema(&self) -> SchemaRef {
        videos_schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let table = self.clone();
        let mut files = tokio::task::spawn_blocking(move || table.list_files())
            .await
            .map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))??;
        // One row per file: a limit is a limit on files.
        if let Some(limit) = limit {
            files.truncate(limit);
        }
        let options = state
            .config_options()
            .extensions
            .get::<VideoOptions>()
            .cloned()
            .unwrap_or_default();
        let target = state.config_options().execution.target_partitions.max(1);
        let groups = partition_files(files, options.files_per_partition, target);
        Ok(Arc::new(VideoScanExec::try_new(
            groups,
            projection.cloned(),
            options.probe_batch_rows.max(1),
        )?))
    }
}

/// Splits the sorted files into contiguous groups: `per_partition` files each, or, with 0,
/// evenly over `target` partitions. Always at least one (possibly empty) group.
pub fn partition_files(
    files: Vec<ListedFile>,
    per_partition: usize,
    target: usize,
) -> Vec<Vec<ListedFile>> {
    if files.is_empty() {
        return vec![vec![]];
    }
    let n = files.len();
    let groups = if per_partition > 0 {
        n.div_ceil(per_partition)
    } else {
        target.min(n)
    };
    let mut out = Vec::with_capacity(groups);
    let mut iter = files.into_iter();
    for g in 0..groups {
        // the first n % groups groups take one file more
        let size = n / groups + usize::from(g < n % groups);
        out.push(iter.by_ref().take(size).collect());
    }
    out
}

/// Creates [`VideoTable`]s for `CREATE EXTERNAL TABLE ... STORED AS VIDEO`.
///
/// Accepted `OPTIONS`: `'extensions' 'mp4,mov'` (or `'*'`); without it the session's
/// `video.extensions` applies.
#[derive(Debug, Default)]
pub struct VideoTableFactory;

#[async_trait]
impl TableProviderFactory for VideoTableFactory {
    async fn create(
        &self,
        state: &dyn Session,
        cmd: &CreateExternalTable,
    ) -> Result<Arc<dyn TableProvider>> {
        if !cmd.schema.fields().is_empty() {
            let expected = videos_schema();
            let given: Vec<_> = cmd
                .schema
                .fields()
                .iter()
                .map(|f| f.name().clone())
                .collect();
            return plan_err!(
                "a VIDEO table has a fixed schema; remove the column list ({}) from CREATE EXTERNAL TABLE. Its columns are: {}",
                given.join(", "),
                expected
                    .fields()
                    .iter()
                    .map(|f| f.name().as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        if !cmd.table_partition_cols.is_empty() {
            return plan_err!("a VIDEO table has no partition columns; remove PARTITIONED BY");
        }
        let mut extensions = None;
        for (key, value) in &cmd.options {
            match key.as_str() {
                "format.extensions" | "extensions" => extensions = Some(value.clone()),
                other => {
                    let name = other.strip_prefix("format.").unwrap_or(other);
                    return plan_err!(
                        "unknown option '{name}' for a VIDEO table; the accepted option is 'extensions' (for example OPTIONS ('extensions' 'mp4,mov'), or '*' for every file)"
                    );
                }
            }
        }
        let extensions = match extensions {
            Some(e) => e,
            None => state
                .config_options()
                .extensions
                .get::<VideoOptions>()
                .map(|o| o.extensions.clone())
                .unwrap_or_else(|| crate::config::DEFAULT_VIDEO_EXTENSIONS.to_owned()),
        };
        let filter = ExtensionFilter::parse(&extensions)?;
        let locations = cmd.locations.clone();
        let table = tokio::task::spawn_blocking(move || VideoTable::try_new(locations, filter))
            .await
            .map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))??;
        Ok(Arc::new(table))
    }
}

/// Scans listed video files: each partition probes its files in order, on blocking
/// threads, and yields batches of `batch_rows` rows.
#[derive(Debug, Clone)]
pub struct VideoScanExec {
    groups: Vec<Vec<ListedFile>>,
    projection: Option<Vec<usize>>,
    batch_rows: usize,
    schema: SchemaRef,
    properties: Arc<PlanProperties>,
}

impl VideoScanExec {
    /// A scan of `groups` (one partition per group) with an optional projection of the
    /// videos schema.
    pub fn try_new(
        groups: Vec<Vec<ListedFile>>,
        projection: Option<Vec<usize>>,
        batch_rows: usize,
    ) -> Result<Self> {
        let schema = match &projection {
            Some(p) => Arc::new(videos_schema().project(p)?),
            None => videos_schema(),
        };
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(Arc::clone(&schema)),
            Partitioning::UnknownPartitioning(groups.len().max(1)),
            EmissionType::Incremental,
            Boundedness::Bounded,
        ));
        Ok(Self {
            groups,
            projection,
            batch_rows,
            schema,
            properties,
        })
    }

    /// The files of each partition.
    pub fn groups(&self) -> &[Vec<ListedFile>] {
        &self.groups
    }

    /// The projection of the videos schema this scan produces.
    pub fn projection(&self) -> Option<&[usize]> {
        self.projection.as_deref()
    }

    /// Files probed per output batch.
    pub fn batch_rows(&self) -> usize {
        self.batch_rows
    }

    fn needs_probe(&self) -> bool {
        match &self.projection {
            Some(p) => p.iter().any(|&i| i >= LISTING_COLUMNS),
            None => true,
        }
    }
}

impl DisplayAs for VideoScanExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let files: usize = self.groups.iter().map(Vec::len).sum();
        write!(
            f,
            "VideoScanExec: files={files}, partitions={}, probe={}",
            self.groups.len(),
            self.needs_probe()
        )?;
        if let Some(p) = &self.projection {
            let names: Vec<_> = p
                .iter()
                .map(|&i| videos_schema().field(i).name().clone())
                .collect();
            write!(f, ", projection=[{}]", names.join(", "))?;
        }
        Ok(())
    }
}

impl ExecutionPlan for VideoScanExec {
    fn name(&self) -> &'static str {
        "VideoScanExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn replace_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
        _options: ReplaceChildrenOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if children.is_empty() {
            Ok(self)
        } else {
            internal_err!("VideoScanExec has no children")
        }
    }

    #[allow(deprecated)]
    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        self.replace_children(
            children,
            ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute),
        )
    }

    fn execute(
        &self,
        partition: usize,
        _context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let Some(files) = self.groups.get(partition).cloned() else {
            return internal_err!(
                "VideoScanExec: no partition {partition} (it has {})",
                self.groups.len()
            );
        };
        let chunks: Vec<Vec<ListedFile>> =
            files.chunks(self.batch_rows).map(<[_]>::to_vec).collect();
        let projection = self.projection.clone();
        let probe = self.needs_probe();
        let stream = futures::stream::iter(chunks).then(move |chunk| {
            let projection = projection.clone();
            async move {
                tokio::task::spawn_blocking(move || {
                    build_batch(&chunk, probe, projection.as_deref())
                })
                .await
                .map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))?
            }
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            Arc::clone(&self.schema),
            stream,
        )))
    }

    fn partition_statistics(&self, partition: Option<usize>) -> Result<Arc<Statistics>> {
        let rows = match partition {
            Some(p) => self.groups.get(p).map_or(0, Vec::len),
            None => self.groups.iter().map(Vec::len).sum(),
        };
        let mut stats = Statistics::new_unknown(&self.schema);
        stats.num_rows = Precision::Exact(rows);
        Ok(Arc::new(stats))
    }
}

/// Builds the batch of one chunk of files: listing columns, and probe columns when `probe`
/// (otherwise they are left null and projected away).
fn build_batch(
    files: &[ListedFile],
    probe: bool,
    projection: Option<&[usize]>,
) -> Result<RecordBatch> {
    let mut path = StringBuilder::new();
    let mut size = Int64Builder::new();
    let mut modified = TimestampMicrosecondBuilder::new().with_timezone("UTC");
    let mut probed = ProbeColumnsBuilder::default();
    for file in files {
        path.append_value(&file.uri);
        size.append_option(file.size);
        modified.append_option(file.modified_us);
        match (&file.error, probe) {
            (Some(error), _) => probed.append_error(error),
            (None, false) => probed.append_null(),
            (None, true) => match VideoSource::parse(&file.uri) {
                Ok(VideoSource::Local(local)) => probed.append(&probe_path(&local)),
                Err(e) => probed.append_error(&e.to_string()),
            },
        }
    }
    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(path.finish()),
        Arc::new(size.finish()),
        Arc::new(modified.finish()),
    ];
    columns.extend(probed.finish());
    let batch = RecordBatch::try_new_with_options(
        videos_schema(),
        columns,
        &RecordBatchOptions::new().with_row_count(Some(files.len())),
    )?;
    Ok(match projection {
        Some(p) => batch.project(p)?,
        None => batch,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(n: usize) -> Vec<ListedFile> {
        (0..n)
            .map(|i| ListedFile {
                uri: format!("file:///{i}.mp4"),
                size: Some(1),
                modified_us: None,
                error: None,
            })
            .collect()
    }

    #[test]
    fn partitions_are_contiguous_and_balanced() {
        let sizes = |g: &Vec<Vec<ListedFile>>| g.iter().map(Vec::len).collect::<Vec<_>>();
        assert_eq!(sizes(&partition_files(files(5), 0, 2)), [3, 2]);
        assert_eq!(sizes(&partition_files(files(5), 0, 8)), [1, 1, 1, 1, 1]);
        assert_eq!(sizes(&partition_files(files(5), 2, 8)), [2, 2, 1]);
        assert_eq!(sizes(&partition_files(vec![], 0, 8)), [0]);
        let flat: Vec<_> = partition_files(files(7), 0, 3)
            .into_iter()
            .flatten()
            .map(|f| f.uri)
            .collect();
        assert_eq!(
            flat,
            files(7).into_iter().map(|f| f.uri).collect::<Vec<_>>()
        );
    }
}
