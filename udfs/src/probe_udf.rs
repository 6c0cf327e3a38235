//! Probe results as Arrow columns, and the `probe(path)` scalar function.
//!
//! The columns are `framefusion_media::probe_columns`' (the videos table builds the same
//! ones), so a column means the same thing everywhere.
//!
//! `probe(path)` takes a path or `file://` URI per row and returns a struct of the probe
//! columns. A file that cannot be probed yields a struct whose `probe_error` says why and
//! whose other fields are null: one bad row never fails the query.

use datafusion::arrow::array::StructArray;
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{Result, ScalarValue};

use crate::UdfError;
use crate::media::probe::{ProbeInfo, probe_input};
use crate::media::source::VideoSource;
use crate::operator::{Arg, Batch, RowOutcome, VideoOperator, error_struct};
use crate::storage::StorageOptions;
pub use framefusion_media::probe_columns::{ProbeColumnsBuilder, probe_fields};

/// Probes a video; an `s3://` object is read with the environment's AWS settings.
pub fn probe_source(source: &VideoSource) -> std::result::Result<ProbeInfo, UdfError> {
    let input = source.media_input(&StorageOptions::default())?;
    Ok(probe_input(&input)?)
}

/// `probe(path)`: the probe columns of the file at `path`, as a struct.
#[derive(Debug, Default)]
pub struct Probe;

impl VideoOperator for Probe {
    fn name(&self) -> &'static str {
        "probe"
    }

    fn description(&self) -> &'static str {
        "Container and stream facts of a video, as ffprobe reports them."
    }

    fn args(&self) -> &'static [Arg] {
        const ARGS: &[Arg] = &[Arg::path()];
        ARGS
    }

    fn return_type(&self) -> DataType {
        DataType::Struct(probe_fields())
    }

    fn failed(&self, message: &str) -> Result<ScalarValue> {
        error_struct(&probe_fields(), message)
    }

    fn evaluate(&self, batch: &Batch<'_>) -> Result<Vec<RowOutcome>> {
        Ok(batch.each_row(|row| {
            let info = probe_source(&batch.source(row)?)?;
            let mut builder = ProbeColumnsBuilder::default();
            builder.append_info(&info);
            StructArray::try_new(probe_fields(), builder.finish(), None)
                .map_err(datafusion::error::DataFusionError::from)
                .and_then(|array| ScalarValue::try_from_array(&array, 0))
                .map_err(|e| UdfError::Option(e.to_string()))
        }))
    }
}
