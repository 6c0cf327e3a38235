//! The `VIDEO` table type: one row per video file of a location.

use std::fmt;
use std::sync::{Arc, LazyLock};

use async_trait::async_trait;
use datafusion::arrow::array::{
    Array, ArrayRef, BooleanArray, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondBuilder,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::catalog::{Session, TableProvider, TableProviderFactory};
use datafusion::common::stats::Precision;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{Result, Statistics, plan_err};
use datafusion::datasource::TableType;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::{
    FileGroup, FileOpenFuture, FileOpener, FileScanConfig, FileScanConfigBuilder, FileSource,
};
use datafusion::datasource::source::DataSourceExec;
use datafusion::datasource::table_schema::TableSchema;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::logical_expr::{CreateExternalTable, Expr, TableProviderFilterPushDown};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr::projection::ProjectionExprs;
use datafusion::physical_plan::metrics::ExecutionPlanMetricsSet;
use datafusion::physical_plan::{DisplayFormatType, ExecutionPlan};
use framefusion_common::code::{Coded, ErrorCode};
use framefusion_common::failures::{Failure, RunOptions};
use framefusion_media::error::retry_transient;
use framefusion_media::probe::probe_input;
use framefusion_media::probe_columns::{ProbeColumnsBuilder, probe_fields};
use framefusion_media::source::{Confinement, VideoSource};
use framefusion_media::storage::{S3Clients, StorageOptions};
use futures::StreamExt;
use object_store::ObjectStore;

use crate::CatalogError;
use crate::config::VideoOptions;
use crate::frame_scan::{FrameOptions, FramesOpener, frames_schema};
use crate::listing::{self, ExtensionFilter, ListedFile};
pub use crate::listing::{listed_file, partitioned_file};

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
    storage: StorageOptions,
    definition: Option<String>,
}

impl VideoTable {
    /// A table over `locations` (each a folder, listed recursively, or a single file),
    /// keeping the files that pass `filter`, in a session confined to `confinement`.
    /// Fails when a location does not exist or lies outside the allowed roots (a listed
    /// file outside them, through a link, is refused when the scan opens it).
    pub fn try_new(
        locations: Vec<String>,
        filter: ExtensionFilter,
        confinement: &Confinement,
    ) -> Result<Self, CatalogError> {
        if locations.is_empty() {
            return Err(CatalogError::Option(
                "a VIDEO table needs a LOCATION".to_owned(),
            ));
        }
        for location in &locations {
            listing::check_location(location, confinement)?;
        }
        Ok(Self {
            locations,
            filter,
            storage: StorageOptions::default(),
            definition: None,
        })
    }

    /// The same table, reading object-store locations with `storage` (over the
    /// environment's AWS settings).
    pub fn with_storage(mut self, storage: StorageOptions) -> Self {
        self.storage = storage;
        self
    }

    /// The object-store options of this table.
    pub fn storage(&self) -> &StorageOptions {
        &self.storage
    }

    /// Asks the object store of every remote location whether it can be listed and holds
    /// objects (local locations were checked by [`VideoTable::try_new`]), with the
    /// session's runtime's `clients`.
    pub async fn check_remote(&self, clients: &S3Clients) -> Result<(), CatalogError> {
        for location in &self.locations {
            if let VideoSource::S3(remote, _) = VideoSource::parse(location)? {
                listing::check_remote(&remote, &self.storage, clients).await?;
            }
        }
        Ok(())
    }

    /// The same table, remembering the SQL statement that defined it.
    pub fn with_definition(mut self, definition: Option<String>) -> Self {
        self.definition = definition;
        self
    }

    /// A table from parts already checked when it was defined (for example a table
    /// decoded on a cluster node, where the definition was checked by the client).
    pub fn from_parts(locations: Vec<String>, filter: ExtensionFilter) -> Self {
        Self {
            locations,
            filter,
            storage: StorageOptions::default(),
            definition: None,
        }
    }

    /// The locations as written in the table definition.
    pub fn locations(&self) -> &[String] {
        &self.locations
    }

    /// Lists the files of every location, sorted by URI, each once, object stores with the
    /// session's runtime's `clients`. Local folders are walked on a blocking thread.
    pub async fn list_files(&self, clients: &S3Clients) -> Result<Vec<ListedFile>, CatalogError> {
        let mut files = Vec::new();
        for location in &self.locations {
            match VideoSource::parse(location)? {
                VideoSource::S3(remote, _) => {
                    files.extend(
                        listing::list_s3(&remote, &self.filter, &self.storage, clients).await?,
                    );
                }
                VideoSource::Local(_) => {
                    let (location, filter) = (location.clone(), self.filter.clone());
                    let listed =
                        tokio::task::spawn_blocking(move || listing::list(&location, &filter))
                            .await
                            .map_err(|e| CatalogError::Store(format!("listing failed: {e}")))??;
                    files.extend(listed);
                }
            }
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

    fn get_table_definition(&self) -> Option<&str> {
        self.definition.as_deref()
    }

    /// Filters on `path` alone (`path = '...'`, `path IN (...)`, `path LIKE '...'`, ...)
    /// choose the files to open: a file they reject is never probed. DataFusion still
    /// applies them to the rows (Inexact), so any expression over `path` is safe here.
    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        Ok(filters
            .iter()
            .map(|f| {
                if is_path_filter(f) {
                    TableProviderFilterPushDown::Inexact
                } else {
                    TableProviderFilterPushDown::Unsupported
                }
            })
            .collect())
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        // one row per file: a limit is a limit on files
        let path_filters = PathFilter::new(state, filters)?;
        plan_scan_filtered(
            state,
            self,
            ScanKind::Probe,
            projection.cloned(),
            limit,
            &path_filters,
        )
        .await
    }
}

/// Whether `expr` refers to the `path` column and nothing else.
fn is_path_filter(expr: &Expr) -> bool {
    let columns = expr.column_refs();
    !columns.is_empty() && columns.iter().all(|c| c.name == "path")
}

/// The filters of a scan that decide which files it opens: those over `path` alone,
/// evaluated on the listed URIs before anything is opened.
#[derive(Debug, Default)]
pub struct PathFilter {
    predicates: Vec<Arc<dyn PhysicalExpr>>,
}

impl PathFilter {
    /// The path-only filters among `filters`, planned for evaluation.
    pub fn new(state: &dyn Session, filters: &[Expr]) -> Result<Self> {
        let schema = Arc::new(Schema::new(vec![Field::new("path", DataType::Utf8, false)]));
        let df_schema = datafusion::common::DFSchema::try_from(Arc::clone(&schema))?;
        let predicates = filters
            .iter()
            .filter(|f| is_path_filter(f))
            .map(|f| state.create_physical_expr(f.clone(), &df_schema))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { predicates })
    }

    /// Keeps the files every predicate accepts (a null answer rejects).
    pub fn retain(&self, files: Vec<ListedFile>) -> Result<Vec<ListedFile>> {
        if self.predicates.is_empty() || files.is_empty() {
            return Ok(files);
        }
        let schema = Arc::new(Schema::new(vec![Field::new("path", DataType::Utf8, false)]));
        let paths: ArrayRef = Arc::new(StringArray::from_iter_values(
            files.iter().map(|f| f.uri.as_str()),
        ));
        let batch = RecordBatch::try_new(schema, vec![paths])?;
        let mut keep = vec![true; files.len()];
        for predicate in &self.predicates {
            let answer = predicate.evaluate(&batch)?.into_array(batch.num_rows())?;
            let Some(answer) = answer.as_any().downcast_ref::<BooleanArray>() else {
                return plan_err!("a filter on path did not give booleans: {predicate}");
            };
            for (k, a) in keep.iter_mut().zip(answer.iter()) {
                *k &= a == Some(true);
            }
        }
        Ok(files
            .into_iter()
            .zip(keep)
            .filter_map(|(f, k)| k.then_some(f))
            .collect())
    }
}

/// Plans a scan of `table`'s files: lists them (on a blocking thread), keeps the first
/// `max_files`, partitions them as the session's `video.*` options say and builds the
/// [`video_scan`].
pub async fn plan_scan(
    state: &dyn Session,
    table: &VideoTable,
    kind: ScanKind,
    columns: Option<Vec<usize>>,
    max_files: Option<usize>,
) -> Result<Arc<dyn ExecutionPlan>> {
    plan_scan_filtered(
        state,
        table,
        kind,
        columns,
        max_files,
        &PathFilter::default(),
    )
    .await
}

/// [`plan_scan`] of the files `path_filter` keeps.
pub async fn plan_scan_filtered(
    state: &dyn Session,
    table: &VideoTable,
    kind: ScanKind,
    columns: Option<Vec<usize>>,
    max_files: Option<usize>,
    path_filter: &PathFilter,
) -> Result<Arc<dyn ExecutionPlan>> {
    let clients = S3Clients::of(state.config_options());
    let mut files = path_filter.retain(table.list_files(&clients).await?)?;
    if let Some(max) = max_files {
        files.truncate(max);
    }
    let options = state
        .config_options()
        .extensions
        .get::<VideoOptions>()
        .cloned()
        .unwrap_or_default();
    let target = state.config_options().execution.target_partitions.max(1);
    let groups = partition_files(
        files,
        options.files_per_partition,
        options.partition_bytes,
        target,
    );
    let session = ScanSession::of(state.config_options());
    Ok(video_scan(
        kind,
        table.storage().clone(),
        groups,
        columns,
        session,
    )?)
}

/// The scan plan of listed files: a `DataSourceExec` over a `FileScanConfig` whose file
/// groups are `groups` (one partition each), making `kind` rows, projected to `columns`,
/// with what it takes of its `session` (the failure ledger, the allowed roots).
pub fn video_scan(
    kind: ScanKind,
    storage: StorageOptions,
    groups: Vec<Vec<ListedFile>>,
    columns: Option<Vec<usize>>,
    session: ScanSession,
) -> Result<Arc<DataSourceExec>> {
    let files: usize = groups.iter().map(Vec::len).sum();
    let schema = kind.schema();
    let mut statistics = Statistics::new_unknown(&schema);
    if kind == ScanKind::Probe {
        statistics.num_rows = Precision::Exact(files); // one row per file
    }
    let source = Arc::new(VideoFileSource::new(kind, storage, None).with_session(session));
    let file_groups = groups
        .into_iter()
        .map(|g| FileGroup::new(g.into_iter().map(partitioned_file).collect()))
        .collect();
    let config = FileScanConfigBuilder::new(ObjectStoreUrl::local_filesystem(), source)
        .with_file_groups(file_groups)
        .with_statistics(statistics)
        .with_projection_indices(columns)?
        .build();
    Ok(DataSourceExec::from_data_source(config))
}

/// Splits the sorted files into contiguous groups, one per partition: `per_partition`
/// files each; or, with 0, groups of at most `partition_bytes` bytes (a larger file alone)
/// and at least `target` groups when there are enough files, balanced by bytes. Always at
/// least one (possibly empty) group.
pub fn partition_files(
    files: Vec<ListedFile>,
    per_partition: usize,
    partition_bytes: u64,
    target: usize,
) -> Vec<Vec<ListedFile>> {
    if files.is_empty() {
        return vec![vec![]];
    }
    let n = files.len();
    if per_partition > 0 {
        let mut iter = files.into_iter();
        return (0..n.div_ceil(per_partition))
            .map(|_| iter.by_ref().take(per_partition).collect())
            .collect();
    }
    let sizes: Vec<u64> = files
        .iter()
        .map(|f| f.size.and_then(|s| u64::try_from(s).ok()).unwrap_or(0))
        .collect();
    let total: u64 = sizes.iter().sum();
    let by_bytes = usize::try_from(total.div_ceil(partition_bytes.max(1))).unwrap_or(usize::MAX);
    let groups = by_bytes.max(target).clamp(1, n);
    // each file goes to the group its byte midpoint falls in; files without a size count
    // as one byte so they still spread
    let weights: Vec<u64> = sizes.iter().map(|&s| s.max(1)).collect();
    let weight_total: u64 = weights.iter().sum();
    let mut out: Vec<Vec<ListedFile>> = vec![Vec::new(); groups];
    let mut before = 0u64;
    for (file, w) in files.into_iter().zip(weights) {
        let midpoint = u128::from(before) * 2 + u128::from(w);
        let g = (midpoint * groups as u128 / (u128::from(weight_total) * 2)) as usize;
        out[g.min(groups - 1)].push(file);
        before += w;
    }
    out.retain(|g| !g.is_empty());
    out
}

/// Creates [`VideoTable`]s for `CREATE EXTERNAL TABLE ... STORED AS VIDEO`.
///
/// Accepted `OPTIONS`: `'extensions' 'mp4,mov'` (or `'*'`; without it the session's
/// `video.extensions` applies) and, for `s3://` locations, the object-store options
/// `'aws.*'` of [`framefusion_media::storage`]. A remote location is checked (listable,
/// not empty) before the table exists.
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
        let mut storage = StorageOptions::default();
        for (key, value) in &cmd.options {
            let name = key.strip_prefix("format.").unwrap_or(key);
            match name {
                "extensions" => extensions = Some(value.clone()),
                aws if StorageOptions::is_storage_key(aws) => storage
                    .insert(aws, value)
                    .map_err(|e| datafusion::error::DataFusionError::Plan(e.to_string()))?,
                _ => {
                    return plan_err!(
                        "unknown option '{name}' for a VIDEO table; the accepted options are 'extensions' (for example OPTIONS ('extensions' 'mp4,mov'), or '*' for every file) and the object-store options 'aws.endpoint', 'aws.region', 'aws.access_key_id', 'aws.secret_access_key', ..."
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
        let definition = cmd
            .definition
            .as_deref()
            .map(|d| definition_with_options(d, &cmd.options));
        let confinement = Confinement::of(state.config_options()).map_err(CatalogError::from)?;
        let table = tokio::task::spawn_blocking(move || {
            VideoTable::try_new(locations, filter, &confinement)
                .map(|t| t.with_definition(definition))
        })
        .await
        .map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))??
        .with_storage(storage);
        table
            .check_remote(&S3Clients::of(state.config_options()))
            .await?;
        Ok(Arc::new(table))
    }
}

/// The statement that recreates a table: DataFusion's rendering of `CREATE EXTERNAL TABLE`
/// leaves `OPTIONS` out, so they are appended (sorted, quotes doubled) for the catalog to
/// rebuild the same table in a later process.
pub fn definition_with_options(
    definition: &str,
    options: &std::collections::HashMap<String, String>,
) -> String {
    if options.is_empty() {
        return definition.to_owned();
    }
    let quote = |s: &str| format!("'{}'", s.replace('\'', "''"));
    let mut pairs: Vec<_> = options.iter().collect();
    pairs.sort();
    let rendered: Vec<String> = pairs
        .into_iter()
        .map(|(k, v)| format!("{} {}", quote(k), quote(v)))
        .collect();
    format!("{definition} OPTIONS ({})", rendered.join(", "))
}

/// The `VIDEO` file source: DataFusion's file scan machinery (`DataSourceExec` over a
/// `FileScanConfig`) drives it, one file group per partition, files in order. Each file
/// is probed on a blocking thread and becomes one row.
///
/// Being a `FileSource` is what lets Ballista restrict a stage to a task's partitions: its
/// scheduler slices the `FileScanConfig`'s file groups, so every file is read by exactly
/// one task.
#[derive(Debug, Clone)]
pub struct VideoFileSource {
    kind: ScanKind,
    storage: StorageOptions,
    table_schema: TableSchema,
    /// Plain column indices of the kind's schema this source produces.
    columns: Option<Vec<usize>>,
    projection: Option<ProjectionExprs>,
    metrics: ExecutionPlanMetricsSet,
    session: ScanSession,
}

/// What a video scan takes of its session, to whichever node runs it (the codec carries
/// it): where failed probes are reported, where files may be opened, and the runtime's
/// clients that read them (which do not travel: a node decoding the scan gives its own,
/// [`ScanSession::with_clients_of`]).
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct ScanSession {
    /// The run's failure ledger files that fail their probe are reported to
    /// (`framefusion_common::failures`).
    #[serde(default)]
    pub failure_sink: Option<String>,
    /// The session's allowed roots (`framefusion.allowed_roots`): a listed file outside
    /// them (through a link) is not opened, its row says why.
    #[serde(default)]
    pub allowed_roots: String,
    /// The S3 clients of the runtime the scan runs in.
    #[serde(skip)]
    pub clients: S3Clients,
}

impl PartialEq for ScanSession {
    /// Equal when they report to the same ledger and allow the same roots (whichever
    /// runtime's clients they read with).
    fn eq(&self, other: &Self) -> bool {
        self.failure_sink == other.failure_sink && self.allowed_roots == other.allowed_roots
    }
}

impl ScanSession {
    /// What a scan takes of the session whose settings are `config`.
    pub fn of(config: &datafusion::common::config::ConfigOptions) -> Self {
        Self {
            failure_sink: RunOptions::sink_of(config),
            allowed_roots: RunOptions::allowed_roots_of(config),
            clients: S3Clients::of(config),
        }
    }

    /// The same session, reading with the clients of the runtime whose session `config`
    /// is (for a scan decoded on another node).
    pub fn with_clients_of(mut self, config: &datafusion::common::config::ConfigOptions) -> Self {
        self.clients = S3Clients::of(config);
        self
    }

    /// Where files may be opened, and what reads them.
    fn confinement(&self) -> Result<Confinement> {
        Confinement::from_setting(&self.allowed_roots)
            .map(|c| c.with_clients(self.clients.clone()))
            .map_err(|e| datafusion::error::DataFusionError::from(CatalogError::from(e)))
    }
}

/// What a [`VideoFileSource`] makes of each file.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum ScanKind {
    /// One row of listing and probe columns per file (the `VIDEO` table).
    Probe,
    /// The sampled frames of each file (the `frames` table function).
    Frames(FrameOptions),
}

impl ScanKind {
    /// The (unprojected) schema of the rows this kind produces.
    pub fn schema(&self) -> SchemaRef {
        match self {
            ScanKind::Probe => videos_schema(),
            ScanKind::Frames(_) => frames_schema(),
        }
    }
}

impl VideoFileSource {
    /// A source of `kind` reading remote files with `storage`, producing the columns
    /// `columns` of its schema (all when `None`).
    pub fn new(kind: ScanKind, storage: StorageOptions, columns: Option<Vec<usize>>) -> Self {
        let schema = kind.schema();
        let projection = columns
            .as_ref()
            .map(|c| ProjectionExprs::from_indices(c, &schema));
        Self {
            kind,
            storage,
            table_schema: TableSchema::from(schema),
            columns,
            projection,
            metrics: ExecutionPlanMetricsSet::new(),
            session: ScanSession::default(),
        }
    }

    /// The same source, with what it takes of its session.
    pub fn with_session(mut self, session: ScanSession) -> Self {
        self.session = session;
        self
    }

    /// What this source takes of its session.
    pub fn session(&self) -> &ScanSession {
        &self.session
    }

    /// What this source makes of each file.
    pub fn kind(&self) -> &ScanKind {
        &self.kind
    }

    /// The object-store options remote files are read with.
    pub fn storage(&self) -> &StorageOptions {
        &self.storage
    }

    /// The columns this source produces (all when `None`).
    pub fn columns(&self) -> Option<&[usize]> {
        self.columns.as_deref()
    }

    fn needs_probe(&self) -> bool {
        self.columns
            .as_ref()
            .is_none_or(|c| c.iter().any(|&i| i >= LISTING_COLUMNS))
    }
}

impl FileSource for VideoFileSource {
    fn create_file_opener(
        &self,
        _object_store: Arc<dyn ObjectStore>,
        _base_config: &FileScanConfig,
        _partition: usize,
    ) -> Result<Arc<dyn FileOpener>> {
        Ok(match &self.kind {
            ScanKind::Probe => Arc::new(VideoOpener {
                columns: self.columns.clone(),
                probe: self.needs_probe(),
                storage: self.storage.clone(),
                failure_sink: self.session.failure_sink.clone(),
                confinement: self.session.confinement()?,
            }),
            ScanKind::Frames(options) => Arc::new(FramesOpener::new(
                options.clone(),
                self.storage.clone(),
                self.columns.clone(),
                self.session.confinement()?,
            )),
        })
    }

    fn table_schema(&self) -> &TableSchema {
        &self.table_schema
    }

    fn with_batch_size(&self, _batch_size: usize) -> Arc<dyn FileSource> {
        // one row per file: batch size does not apply
        Arc::new(self.clone())
    }

    fn projection(&self) -> Option<&ProjectionExprs> {
        self.projection.as_ref()
    }

    fn try_pushdown_projection(
        &self,
        projection: &ProjectionExprs,
    ) -> Result<Option<Arc<dyn FileSource>>> {
        // plain column selections only; anything else stays in a ProjectionExec above
        let mut columns = Vec::new();
        for expr in projection.iter() {
            let Some(column) = expr.expr.downcast_ref::<Column>() else {
                return Ok(None);
            };
            let index = match &self.columns {
                Some(current) => match current.get(column.index()) {
                    Some(&i) => i,
                    None => return Ok(None),
                },
                None => column.index(),
            };
            columns.push(index);
        }
        Ok(Some(Arc::new(
            VideoFileSource::new(self.kind.clone(), self.storage.clone(), Some(columns))
                .with_session(self.session.clone()),
        )))
    }

    fn metrics(&self) -> &ExecutionPlanMetricsSet {
        &self.metrics
    }

    /// A video file is one unit of work: it cannot be split at arbitrary byte offsets
    /// (DataFusion would otherwise split large files into ranges, each read whole).
    fn supports_repartitioning(&self) -> bool {
        false
    }

    fn file_type(&self) -> &str {
        match self.kind {
            ScanKind::Probe => "video",
            ScanKind::Frames(_) => "video frames",
        }
    }

    fn fmt_extra(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        match &self.kind {
            ScanKind::Probe => write!(f, ", probe={}", self.needs_probe()),
            ScanKind::Frames(options) => write!(f, ", frames={options}"),
        }
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        match &self.projection {
            Some(p) => datafusion::physical_plan::apply_expression_roots(p.iter(), f),
            None => Ok(TreeNodeRecursion::Continue),
        }
    }
}

/// Opens one video file: probes it (when a probe column is asked for) on a blocking
/// thread and yields its one row.
struct VideoOpener {
    columns: Option<Vec<usize>>,
    probe: bool,
    storage: StorageOptions,
    failure_sink: Option<String>,
    confinement: Confinement,
}

impl FileOpener for VideoOpener {
    fn open(&self, file: PartitionedFile) -> Result<FileOpenFuture> {
        let listed = listed_file(&file);
        let columns = self.columns.clone();
        let probe = self.probe;
        let storage = self.storage.clone();
        let sink = self.failure_sink.clone();
        let confinement = self.confinement.clone();
        Ok(Box::pin(async move {
            let batch = tokio::task::spawn_blocking(move || {
                file_row(
                    &listed,
                    probe,
                    &storage,
                    &confinement,
                    columns.as_deref(),
                    sink.as_deref(),
                )
            })
            .await
            .map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))??;
            Ok(futures::stream::once(async { Ok(batch) }).boxed())
        }))
    }
}

/// The one-row batch of a listed file: its listing columns, and its probe columns when
/// `probe` (otherwise left null, to be projected away), restricted to `projection`. A
/// file that cannot be listed or probed is reported to the failure ledger `sink`, if any
/// (its row says why in `probe_error`, but a query may filter that row out).
fn file_row(
    file: &ListedFile,
    probe: bool,
    storage: &StorageOptions,
    confinement: &Confinement,
    projection: Option<&[usize]>,
    sink: Option<&str>,
) -> Result<RecordBatch> {
    let mut probed = ProbeColumnsBuilder::default();
    let failure = |code: ErrorCode, message: String| Failure {
        path: file.uri.clone(),
        operator: "probe".to_owned(),
        code,
        message,
    };
    let failed = match (&file.error, probe) {
        (Some(error), _) => {
            probed.append_error(error);
            Some(failure(ErrorCode::NotFound, error.clone()))
        }
        (None, false) => {
            probed.append_null();
            None
        }
        (None, true) => {
            let outcome = retry_transient(|| {
                let input = confinement.source(&file.uri)?.media_input(storage)?;
                probe_input(&input)
            });
            match outcome {
                // still failing after local retries: fail the task so the scheduler
                // retries it (a transient failure is not the file's fault)
                Err(e) if e.is_transient() => return Err(crate::error::task_error(e)),
                outcome => {
                    probed.append(&outcome);
                    outcome.err().map(|e| failure(e.code(), e.to_string()))
                }
            }
        }
    };
    if let (Some(sink), Some(failed)) = (sink, failed) {
        framefusion_common::failures::report(sink, vec![failed]).map_err(|e| {
            datafusion::error::DataFusionError::IoError(std::io::Error::other(format!(
                "cannot report the failed probe of '{}' to the run's failure ledger: {e}",
                file.uri
            )))
        })?;
    }
    let mut modified = TimestampMicrosecondBuilder::new().with_timezone("UTC");
    modified.append_option(file.modified_us);
    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(vec![file.uri.as_str()])),
        Arc::new(Int64Array::from(vec![file.size])),
        Arc::new(modified.finish()),
    ];
    columns.extend(probed.finish());
    let batch = RecordBatch::try_new(videos_schema(), columns)?;
    Ok(match projection {
        Some(p) => batch.project(p)?,
        None => batch,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_filters_choose_the_files_before_anything_opens() -> Result<()> {
        use datafusion::prelude::{SessionContext, col, lit};
        let state = SessionContext::new().state();
        let files: Vec<ListedFile> = ["a.mp4", "b.mp4", "c.mov"]
            .iter()
            .map(|n| ListedFile {
                uri: format!("file:///v/{n}"),
                size: Some(1),
                modified_us: None,
                error: None,
            })
            .collect();
        let names =
            |kept: Vec<ListedFile>| -> Vec<String> { kept.into_iter().map(|f| f.uri).collect() };
        let filters = vec![
            col("path").in_list(vec![lit("file:///v/a.mp4"), lit("file:///v/c.mov")], false),
            col("path").like(lit("%.mp4")),
            // not about path alone: left to DataFusion
            col("width").gt(lit(100)),
        ];
        assert!(is_path_filter(&filters[0]) && !is_path_filter(&filters[2]));
        let filter = PathFilter::new(&state, &filters)?;
        assert_eq!(names(filter.retain(files.clone())?), ["file:///v/a.mp4"]);
        let none = PathFilter::new(&state, &[col("path").eq(lit("file:///x.mp4"))])?;
        assert!(none.retain(files.clone())?.is_empty());
        assert_eq!(PathFilter::default().retain(files.clone())?.len(), 3);
        Ok(())
    }

    fn sized(sizes: &[i64]) -> Vec<ListedFile> {
        sizes
            .iter()
            .enumerate()
            .map(|(i, &s)| ListedFile {
                uri: format!("file:///{i:03}.mp4"),
                size: Some(s),
                modified_us: None,
                error: None,
            })
            .collect()
    }

    fn files(n: usize) -> Vec<ListedFile> {
        sized(&vec![1; n])
    }

    #[test]
    fn partitions_are_contiguous_and_balanced() {
        let sizes = |g: &Vec<Vec<ListedFile>>| g.iter().map(Vec::len).collect::<Vec<_>>();
        // fixed files per partition
        assert_eq!(sizes(&partition_files(files(5), 2, 1 << 30, 8)), [2, 2, 1]);
        // auto: at least `target` groups, balanced
        assert_eq!(sizes(&partition_files(files(5), 0, 1 << 30, 2)), [2, 3]);
        assert_eq!(
            sizes(&partition_files(files(5), 0, 1 << 30, 8)),
            [1, 1, 1, 1, 1]
        );
        assert_eq!(sizes(&partition_files(vec![], 0, 1 << 30, 8)), [0]);
        // auto: byte-bounded groups, a large file alone
        assert_eq!(
            sizes(&partition_files(sized(&[100; 8]), 0, 200, 1)),
            [2, 2, 2, 2]
        );
        assert_eq!(
            sizes(&partition_files(sized(&[1000, 1, 1, 1]), 0, 1 << 30, 2)),
            [1, 3]
        );
        // order is kept
        let flat: Vec<_> = partition_files(sized(&[5, 1, 9, 2, 7, 3, 3]), 0, 8, 3)
            .into_iter()
            .flatten()
            .map(|f| f.uri)
            .collect();
        assert_eq!(
            flat,
            sized(&[5, 1, 9, 2, 7, 3, 3])
                .into_iter()
                .map(|f| f.uri)
                .collect::<Vec<_>>()
        );
    }
}
