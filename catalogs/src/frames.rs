//! The frames of videos as a table: `frames(location [, options])`.
//!
//! ```sql
//! SELECT path, frame_index, pts_s, width, height FROM frames('/data/videos', 'fps=1,size=224');
//! ```
//!
//! `location` is a video file or a folder (listed like a `VIDEO` table, recursively, video
//! extensions only). `options` is a comma-separated list:
//!
//! | option | meaning |
//! |---|---|
//! | `all` (default) | every frame |
//! | `fps=N` | N frames per second, as ffmpeg's `fps` filter |
//! | `keyframes` | keyframes only; other frames are not decoded |
//! | `size=N` | scale so the longer side is N pixels (never enlarges) |
//! | `size=WxH` | scale to exactly W x H |
//! | `batch=N` | frames per output batch (default 8) |
//! | `aws.KEY=VALUE` | an object-store option for an `s3://` location (`aws.endpoint=...`, `aws.region=...`, ...; see `framefusion_media::storage`) |
//!
//! One row per produced frame: `path`, `frame_index`, `pts_s`, `is_keyframe`, `width`,
//! `height`, `rgb` (packed RGB24, `width * height * 3` bytes) and `decode_error`. A file that
//! cannot be decoded is one row with `decode_error` set and the other columns null. Files
//! are decoded on blocking threads and their frames streamed in small batches through a
//! bounded channel, so memory stays bounded whatever the videos' length.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::{Result, ScalarValue, plan_err};
use datafusion::datasource::TableType;
use datafusion::error::DataFusionError;
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;
use framefusion_media::source::Confinement;
use framefusion_media::storage::StorageOptions;

use crate::config::{DEFAULT_VIDEO_EXTENSIONS, VideoOptions};
pub use crate::frame_scan::{FrameOptions, frames_schema};
use crate::listing::ExtensionFilter;
use crate::video::{ScanKind, VideoTable, plan_scan};

/// The table behind `frames(...)`: the locations' video files, decoded as `options` say.
#[derive(Debug, Clone)]
pub struct FramesTable {
    files: VideoTable,
    options: FrameOptions,
}

impl FramesTable {
    /// Frames of the video files at `locations`, listed with `filter`.
    pub fn new(files: VideoTable, options: FrameOptions) -> Self {
        Self { files, options }
    }

    /// The videos whose frames this table holds.
    pub fn files(&self) -> &VideoTable {
        &self.files
    }

    /// How frames are sampled and sized.
    pub fn options(&self) -> &FrameOptions {
        &self.options
    }
}

#[async_trait]
impl TableProvider for FramesTable {
    fn schema(&self) -> SchemaRef {
        frames_schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Temporary
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        plan_scan(
            state,
            &self.files,
            ScanKind::Frames(self.options.clone()),
            projection.cloned(),
            None,
        )
        .await
    }
}

/// `frames(location [, options])`: see the module docs.
#[derive(Debug, Default)]
pub struct FramesFunction;

fn literal_string(expr: &Expr, what: &str) -> Result<String> {
    match expr {
        Expr::Literal(
            ScalarValue::Utf8(Some(s))
            | ScalarValue::LargeUtf8(Some(s))
            | ScalarValue::Utf8View(Some(s)),
            _,
        ) => Ok(s.clone()),
        other => {
            plan_err!("frames(location, options): {what} must be a string literal, not {other}")
        }
    }
}

impl TableFunctionImpl for FramesFunction {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let exprs = args.exprs();
        let mut storage = StorageOptions::default();
        let (location, options) = match exprs {
            [location] => (
                literal_string(location, "location")?,
                FrameOptions::default(),
            ),
            [location, options] => {
                let spec = literal_string(options, "options")?;
                // object-store options ride along: 'fps=1,aws.endpoint=http://...'
                let (aws, frame): (Vec<&str>, Vec<&str>) = spec
                    .split(',')
                    .partition(|p| StorageOptions::is_storage_key(p.trim()));
                for part in aws {
                    let (key, value) = part.trim().split_once('=').unwrap_or((part.trim(), ""));
                    storage
                        .insert(key.trim(), value.trim())
                        .map_err(|e| DataFusionError::Plan(e.to_string()))?;
                }
                (
                    literal_string(location, "location")?,
                    FrameOptions::parse(&frame.join(",")).map_err(DataFusionError::Plan)?,
                )
            }
            _ => {
                return plan_err!(
                    "frames(location [, options]) takes one or two arguments, not {}",
                    exprs.len()
                );
            }
        };
        let extensions = args
            .session()
            .config_options()
            .extensions
            .get::<VideoOptions>()
            .map(|o| o.extensions.clone())
            .unwrap_or_else(|| DEFAULT_VIDEO_EXTENSIONS.to_owned());
        let filter = ExtensionFilter::parse(&extensions)?;
        let confinement =
            Confinement::of(args.session().config_options()).map_err(crate::CatalogError::from)?;
        let files =
            VideoTable::try_new(vec![location], filter, &confinement)?.with_storage(storage);
        Ok(Arc::new(FramesTable::new(files, options)))
    }
}
