//! Extension codecs for Ballista: how framefusion's table providers and plan nodes travel
//! between client, scheduler and executors.
//!
//! Each codec wraps Ballista's own (which handles the built-in file formats and Ballista's
//! shuffle nodes) and recognises framefusion's nodes by a tag at the start of the bytes:
//!
//! | node | where it is encoded |
//! |---|---|
//! | `VideoTable` (the `VIDEO` table provider) | logical plans, client → scheduler |
//! | `FramesTable` (behind `frames(...)`) | logical plans, client → scheduler |
//! | the `VideoFileSource` scan (a `DataSourceExec`, with the listed files of each task's partitions) | physical plans, scheduler → executors |
//!
//! The same codecs must be installed on all three: the client (through its session
//! config), the scheduler and every executor (through their process configs).

use std::any::Any;
use std::sync::Arc;

use ballista_core::serde::{BallistaLogicalExtensionCodec, BallistaPhysicalExtensionCodec};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::TableProvider;
use datafusion::common::{DataFusionError, Result, TableReference};
use datafusion::datasource::file_format::FileFormatFactory;
use datafusion::datasource::physical_plan::{FileScanConfig, FileScanConfigBuilder};
use datafusion::datasource::source::DataSourceExec;
use datafusion::execution::TaskContext;
use datafusion::logical_expr::{AggregateUDF, Extension, LogicalPlan, ScalarUDF, WindowUDF};
use datafusion::physical_plan::ExecutionPlan;
use datafusion_proto::logical_plan::LogicalExtensionCodec;
use datafusion_proto::physical_plan::{PhysicalExtensionCodec, PhysicalProtoConverterExtension};
use framefusion_catalogs::frames::{FrameOptions, FramesTable};
use framefusion_catalogs::listing::{ExtensionFilter, ListedFile};
use framefusion_catalogs::video::{ScanKind, ScanSession, listed_file};
use framefusion_catalogs::{VideoFileSource, VideoTable, video_scan};
use framefusion_media::storage::StorageOptions;
use framefusion_udfs::models::user::OnnxModelUdf;
use serde::{Deserialize, Serialize};

const VIDEO_TABLE_TAG: &[u8] = b"framefusion:video_table:v1\n";
const VIDEO_SCAN_TAG: &[u8] = b"framefusion:video_scan:v2\n";
const FRAMES_TABLE_TAG: &[u8] = b"framefusion:frames_table:v1\n";

#[derive(Serialize, Deserialize)]
struct VideoTableWire {
    locations: Vec<String>,
    extensions: String,
    #[serde(default)]
    storage: StorageOptions,
}

#[derive(Serialize, Deserialize)]
struct FramesTableWire {
    files: VideoTableWire,
    options: FrameOptions,
}

impl VideoTableWire {
    fn of(table: &VideoTable) -> Self {
        Self {
            locations: table.locations().to_vec(),
            extensions: table.filter().spec(),
            storage: table.storage().clone(),
        }
    }

    fn table(self) -> Result<VideoTable> {
        Ok(
            VideoTable::from_parts(self.locations, ExtensionFilter::parse(&self.extensions)?)
                .with_storage(self.storage),
        )
    }
}

#[derive(Serialize, Deserialize)]
struct VideoScanWire {
    kind: ScanKind,
    #[serde(default)]
    storage: StorageOptions,
    groups: Vec<Vec<ListedFile>>,
    columns: Option<Vec<usize>>,
    limit: Option<usize>,
    /// What the scan takes of its session (the failure ledger, the allowed roots).
    #[serde(default)]
    session: ScanSession,
}

/// The `VideoFileSource` scan inside `plan`, if `plan` is one.
fn as_video_scan(plan: &dyn ExecutionPlan) -> Option<(&FileScanConfig, &VideoFileSource)> {
    let exec = (plan as &dyn Any).downcast_ref::<DataSourceExec>()?;
    let config = (exec.data_source().as_ref() as &dyn Any).downcast_ref::<FileScanConfig>()?;
    let source = (config.file_source().as_ref() as &dyn Any).downcast_ref::<VideoFileSource>()?;
    Some((config, source))
}

fn encode_json(tag: &[u8], value: &impl Serialize, buf: &mut Vec<u8>) -> Result<()> {
    buf.extend_from_slice(tag);
    serde_json::to_writer(buf, value)
        .map_err(|e| DataFusionError::Internal(format!("cannot encode plan node: {e}")))
}

fn decode_json<T: for<'de> Deserialize<'de>>(what: &str, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| {
        DataFusionError::Internal(format!(
            "cannot decode a {what} sent by another framefusion process ({e}); are client, scheduler and executors the same framefusion version?"
        ))
    })
}

/// The logical codec: `VIDEO` tables, then Ballista's codec for everything else.
#[derive(Debug)]
pub struct FrameFusionLogicalCodec {
    inner: Arc<dyn LogicalExtensionCodec>,
}

impl Default for FrameFusionLogicalCodec {
    fn default() -> Self {
        Self {
            inner: Arc::new(BallistaLogicalExtensionCodec::default()),
        }
    }
}

impl LogicalExtensionCodec for FrameFusionLogicalCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[LogicalPlan],
        ctx: &TaskContext,
    ) -> Result<Extension> {
        self.inner.try_decode(buf, inputs, ctx)
    }

    fn try_encode(&self, node: &Extension, buf: &mut Vec<u8>) -> Result<()> {
        self.inner.try_encode(node, buf)
    }

    fn try_decode_table_provider(
        &self,
        buf: &[u8],
        table_ref: &TableReference,
        schema: SchemaRef,
        ctx: &TaskContext,
    ) -> Result<Arc<dyn TableProvider>> {
        if let Some(bytes) = buf.strip_prefix(VIDEO_TABLE_TAG) {
            let wire: VideoTableWire = decode_json("VIDEO table", bytes)?;
            return Ok(Arc::new(wire.table()?));
        }
        if let Some(bytes) = buf.strip_prefix(FRAMES_TABLE_TAG) {
            let wire: FramesTableWire = decode_json("frames table", bytes)?;
            return Ok(Arc::new(FramesTable::new(
                wire.files.table()?,
                wire.options,
            )));
        }
        self.inner
            .try_decode_table_provider(buf, table_ref, schema, ctx)
    }

    fn try_encode_table_provider(
        &self,
        table_ref: &TableReference,
        node: Arc<dyn TableProvider>,
        buf: &mut Vec<u8>,
    ) -> Result<()> {
        let any: &dyn Any = node.as_ref();
        if let Some(table) = any.downcast_ref::<VideoTable>() {
            return encode_json(VIDEO_TABLE_TAG, &VideoTableWire::of(table), buf);
        }
        if let Some(table) = any.downcast_ref::<FramesTable>() {
            let wire = FramesTableWire {
                files: VideoTableWire::of(table.files()),
                options: table.options().clone(),
            };
            return encode_json(FRAMES_TABLE_TAG, &wire, buf);
        }
        self.inner.try_encode_table_provider(table_ref, node, buf)
    }

    fn try_decode_file_format(
        &self,
        buf: &[u8],
        ctx: &TaskContext,
    ) -> Result<Arc<dyn FileFormatFactory>> {
        self.inner.try_decode_file_format(buf, ctx)
    }

    fn try_encode_file_format(
        &self,
        buf: &mut Vec<u8>,
        node: Arc<dyn FileFormatFactory>,
    ) -> Result<()> {
        self.inner.try_encode_file_format(buf, node)
    }

    fn try_decode_udf(&self, name: &str, buf: &[u8]) -> Result<Arc<ScalarUDF>> {
        decode_udf(name, buf, |n, b| self.inner.try_decode_udf(n, b))
    }

    fn try_encode_udf(&self, node: &ScalarUDF, buf: &mut Vec<u8>) -> Result<()> {
        encode_udf(node, buf, |n, b| self.inner.try_encode_udf(n, b))
    }

    fn try_decode_udaf(&self, name: &str, buf: &[u8]) -> Result<Arc<AggregateUDF>> {
        self.inner.try_decode_udaf(name, buf)
    }

    fn try_encode_udaf(&self, node: &AggregateUDF, buf: &mut Vec<u8>) -> Result<()> {
        self.inner.try_encode_udaf(node, buf)
    }

    fn try_decode_udwf(&self, name: &str, buf: &[u8]) -> Result<Arc<WindowUDF>> {
        self.inner.try_decode_udwf(name, buf)
    }

    fn try_encode_udwf(&self, node: &WindowUDF, buf: &mut Vec<u8>) -> Result<()> {
        self.inner.try_encode_udwf(node, buf)
    }
}

/// The physical codec: `VideoScanExec`, then Ballista's codec for everything else.
#[derive(Debug)]
pub struct FrameFusionPhysicalCodec {
    inner: Arc<dyn PhysicalExtensionCodec>,
}

impl Default for FrameFusionPhysicalCodec {
    fn default() -> Self {
        Self {
            inner: Arc::new(BallistaPhysicalExtensionCodec::default()),
        }
    }
}

impl PhysicalExtensionCodec for FrameFusionPhysicalCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[Arc<dyn ExecutionPlan>],
        ctx: &TaskContext,
        proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        match buf.strip_prefix(VIDEO_SCAN_TAG) {
            Some(bytes) => {
                let wire: VideoScanWire = decode_json("VIDEO scan", bytes)?;
                let scan = video_scan(
                    wire.kind,
                    wire.storage,
                    wire.groups,
                    wire.columns,
                    wire.session.with_clients_of(ctx.session_config().options()),
                )?;
                let config = (scan.data_source().as_ref() as &dyn Any)
                    .downcast_ref::<FileScanConfig>()
                    .map(|c| {
                        FileScanConfigBuilder::from(c.clone())
                            .with_limit(wire.limit)
                            .build()
                    })
                    .ok_or_else(|| {
                        DataFusionError::Internal(
                            "VIDEO scan without a file scan config".to_owned(),
                        )
                    })?;
                Ok(DataSourceExec::from_data_source(config))
            }
            None => self.inner.try_decode(buf, inputs, ctx, proto_converter),
        }
    }

    fn try_encode(
        &self,
        node: Arc<dyn ExecutionPlan>,
        buf: &mut Vec<u8>,
        proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<()> {
        match as_video_scan(node.as_ref()) {
            Some((config, source)) => {
                let groups: Vec<Vec<ListedFile>> = config
                    .file_groups
                    .iter()
                    .map(|g| g.files().iter().map(listed_file).collect())
                    .collect();
                let wire = VideoScanWire {
                    kind: source.kind().clone(),
                    storage: source.storage().clone(),
                    groups,
                    columns: source.columns().map(<[usize]>::to_vec),
                    limit: config.limit,
                    session: source.session().clone(),
                };
                encode_json(VIDEO_SCAN_TAG, &wire, buf)
            }
            None => self.inner.try_encode(node, buf, proto_converter),
        }
    }

    fn try_decode_udf(&self, name: &str, buf: &[u8]) -> Result<Arc<ScalarUDF>> {
        decode_udf(name, buf, |n, b| self.inner.try_decode_udf(n, b))
    }

    fn try_encode_udf(&self, node: &ScalarUDF, buf: &mut Vec<u8>) -> Result<()> {
        encode_udf(node, buf, |n, b| self.inner.try_encode_udf(n, b))
    }

    fn try_decode_udaf(&self, name: &str, buf: &[u8]) -> Result<Arc<AggregateUDF>> {
        self.inner.try_decode_udaf(name, buf)
    }

    fn try_encode_udaf(&self, node: &AggregateUDF, buf: &mut Vec<u8>) -> Result<()> {
        self.inner.try_encode_udaf(node, buf)
    }

    fn try_decode_udwf(&self, name: &str, buf: &[u8]) -> Result<Arc<WindowUDF>> {
        self.inner.try_decode_udwf(name, buf)
    }

    fn try_encode_udwf(&self, node: &WindowUDF, buf: &mut Vec<u8>) -> Result<()> {
        self.inner.try_encode_udwf(node, buf)
    }
}

/// Functions registered in a session (ONNX models from `CREATE FUNCTION ... LANGUAGE onnx`)
/// travel as their definition, video operators with their query's decode-pass demands;
/// the others by name.
fn encode_udf(
    node: &ScalarUDF,
    buf: &mut Vec<u8>,
    inner: impl FnOnce(&ScalarUDF, &mut Vec<u8>) -> Result<()>,
) -> Result<()> {
    if let Some(udf) = (node.inner().as_ref() as &dyn Any).downcast_ref::<OnnxModelUdf>() {
        buf.extend(udf.encode());
        return Ok(());
    }
    if let Some(bytes) = framefusion_udfs::encode_udf(node) {
        buf.extend(bytes);
        return Ok(());
    }
    inner(node, buf)
}

fn decode_udf(
    name: &str,
    buf: &[u8],
    inner: impl FnOnce(&str, &[u8]) -> Result<Arc<ScalarUDF>>,
) -> Result<Arc<ScalarUDF>> {
    if let Some(udf) = framefusion_udfs::decode_udf(buf) {
        return udf;
    }
    match OnnxModelUdf::decode(buf) {
        Some(udf) => Ok(Arc::new(ScalarUDF::new_from_impl(udf?))),
        None => inner(name, buf),
    }
}
