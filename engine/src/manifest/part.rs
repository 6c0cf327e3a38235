//! Manifest rows and part files: the job's columns plus `status`, `error` and `run_id`,
//! written as Parquet with what the part covers in its key-value metadata.

use std::collections::BTreeSet;
use std::fs::File;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, RecordBatch, StringArray, new_null_array};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::error::{DataFusionError, Result};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;
use serde::{Deserialize, Serialize};

/// The column that names an item's video (the unit of work).
pub const UNIT_COLUMN: &str = "path";
/// `ok` or `error`.
pub const STATUS_COLUMN: &str = "status";
/// Why an item failed (null when it did not).
pub const ERROR_COLUMN: &str = "error";
/// The run that wrote the row.
pub const RUN_ID_COLUMN: &str = "run_id";

/// Key-value metadata key: JSON [`PartMeta`].
pub const PART_META_KEY: &str = "framefusion.part";
/// Key-value metadata key: JSON list of the operators the job runs.
pub const OPERATORS_KEY: &str = "framefusion.operators";
/// Key-value metadata key: the job (its logical plan).
pub const JOB_KEY: &str = "framefusion.job";

/// What a part covers, in its key-value metadata: resume reads only part footers.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct PartMeta {
    /// The run.
    pub run_id: String,
    /// Every video this part answers for, including those that gave no row.
    pub units: Vec<String>,
    /// The videos with at least one `error` row.
    pub error_units: Vec<String>,
    /// The videos that gave no row and did not fail (filtered out by the job, too short).
    #[serde(default)]
    pub no_row_units: Vec<String>,
    /// The part this one replaces (a retry of its failed videos); the replaced part is
    /// deleted after this one is published, or by the next run if that was interrupted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replaces: Option<String>,
}

/// How job rows become manifest rows.
#[derive(Debug, Clone)]
pub struct RowShape {
    schema: SchemaRef,
    /// Index in the job's rows of each manifest column taken from them.
    job_columns: Vec<usize>,
    /// The job's own `error` column, if it has one.
    job_error: Option<usize>,
    unit: usize,
    run_id: String,
}

impl RowShape {
    /// The manifest shape of a job whose rows have `job` schema.
    pub fn new(job: &Schema, run_id: &str) -> Result<Self> {
        let unit = job.index_of(UNIT_COLUMN).map_err(|_| {
            DataFusionError::Plan(format!(
                "a manifest job must return the video's `{UNIT_COLUMN}` column (it names each item's video, which is what a resumed run skips); add it to the SELECT list"
            ))
        })?;
        for reserved in [STATUS_COLUMN, RUN_ID_COLUMN] {
            if job.index_of(reserved).is_ok() {
                return Err(DataFusionError::Plan(format!(
                    "`{reserved}` is a manifest column; rename the job's `{reserved}` column"
                )));
            }
        }
        let job_error = job.index_of(ERROR_COLUMN).ok();
        let mut fields = Vec::new();
        let mut job_columns = Vec::new();
        for (i, field) in job.fields().iter().enumerate() {
            if Some(i) == job_error {
                continue;
            }
            job_columns.push(i);
            fields.push(field.as_ref().clone().with_nullable(true));
        }
        fields.push(Field::new(STATUS_COLUMN, DataType::Utf8, false));
        fields.push(Field::new(ERROR_COLUMN, DataType::Utf8, true));
        fields.push(Field::new(RUN_ID_COLUMN, DataType::Utf8, false));
        Ok(Self {
            schema: Arc::new(Schema::new(fields)),
            job_columns,
            job_error,
            unit,
            run_id: run_id.to_owned(),
        })
    }

    /// The manifest's schema.
    pub fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    /// The manifest rows of a batch of job rows, and the videos among them that failed.
    pub fn convert(&self, batch: &RecordBatch) -> Result<(RecordBatch, Vec<String>)> {
        let rows = batch.num_rows();
        let error: ArrayRef = match self.job_error {
            Some(i) => cast(batch.column(i), &DataType::Utf8)?,
            None => new_null_array(&DataType::Utf8, rows),
        };
        let status: StringArray = (0..rows)
            .map(|r| Some(if error.is_null(r) { "ok" } else { "error" }))
            .collect();
        let units = cast(batch.column(self.unit), &DataType::Utf8)?;
        let units = units
            .as_any()
            .downcast_ref::<StringArray>()
            .ok_or_else(|| DataFusionError::Internal("path is not text".to_owned()))?;
        let failed: BTreeSet<String> = (0..rows)
            .filter(|&r| !error.is_null(r) && !units.is_null(r))
            .map(|r| units.value(r).to_owned())
            .collect();
        // the planned types: a batch may carry another encoding of the same values
        // (Utf8View for Utf8), and every part must have the manifest's schema
        let mut columns: Vec<ArrayRef> = self
            .job_columns
            .iter()
            .zip(self.schema.fields())
            .map(|(&i, field)| {
                let column = batch.column(i);
                if column.data_type() == field.data_type() {
                    Ok(Arc::clone(column))
                } else {
                    cast(column, field.data_type())
                }
            })
            .collect::<Result<_, _>>()?;
        columns.push(Arc::new(status));
        columns.push(error);
        columns.push(Arc::new(StringArray::from(vec![
            self.run_id.as_str();
            rows
        ])));
        Ok((
            RecordBatch::try_new(self.schema(), columns)?,
            failed.into_iter().collect(),
        ))
    }

    /// The one row that records a video whose job failed as a whole.
    pub fn error_row(&self, unit: &str, message: &str) -> Result<RecordBatch> {
        let columns = self
            .schema
            .fields()
            .iter()
            .map(|f| -> ArrayRef {
                match f.name().as_str() {
                    UNIT_COLUMN => cast_unit(unit, f.data_type()),
                    STATUS_COLUMN => Arc::new(StringArray::from(vec!["error"])),
                    ERROR_COLUMN => Arc::new(StringArray::from(vec![message])),
                    RUN_ID_COLUMN => Arc::new(StringArray::from(vec![self.run_id.as_str()])),
                    _ => new_null_array(f.data_type(), 1),
                }
            })
            .collect();
        Ok(RecordBatch::try_new(self.schema(), columns)?)
    }
}

fn cast_unit(unit: &str, to: &DataType) -> ArrayRef {
    let text: ArrayRef = Arc::new(StringArray::from(vec![unit]));
    cast(&text, to).unwrap_or_else(|_| new_null_array(to, 1))
}

/// Where manifest rows go: a part, or rows held in memory.
pub trait RowSink: Send {
    /// Appends manifest rows; `failed` are the videos among them with an error.
    fn write(&mut self, batch: &RecordBatch, failed: Vec<String>) -> Result<()>;
}

impl RowSink for PartWriter {
    fn write(&mut self, batch: &RecordBatch, failed: Vec<String>) -> Result<()> {
        PartWriter::write(self, batch, failed)
    }
}

impl RowSink for Vec<(RecordBatch, Vec<String>)> {
    fn write(&mut self, batch: &RecordBatch, failed: Vec<String>) -> Result<()> {
        self.push((batch.clone(), failed));
        Ok(())
    }
}

/// A part being written to its staging file.
pub struct PartWriter {
    writer: ArrowWriter<File>,
    staged: tempfile::NamedTempFile,
    rows: usize,
    errors: usize,
    failed: BTreeSet<String>,
}

impl PartWriter {
    /// A writer of `schema` rows into `staged`, with the job's metadata.
    pub fn new(
        staged: tempfile::NamedTempFile,
        schema: SchemaRef,
        metadata: &[(String, String)],
    ) -> Result<Self> {
        let properties = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::default()))
            .set_key_value_metadata(Some(
                metadata
                    .iter()
                    .map(|(k, v)| KeyValue::new(k.clone(), v.clone()))
                    .collect(),
            ))
            .build();
        let file = staged.reopen().map_err(DataFusionError::IoError)?;
        let writer = ArrowWriter::try_new(file, schema, Some(properties))?;
        Ok(Self {
            writer,
            staged,
            rows: 0,
            errors: 0,
            failed: BTreeSet::new(),
        })
    }

    /// Appends manifest rows; `failed` are the videos among them with an error.
    pub fn write(&mut self, batch: &RecordBatch, failed: Vec<String>) -> Result<()> {
        self.rows += batch.num_rows();
        if let Some(status) = batch
            .column_by_name(STATUS_COLUMN)
            .and_then(|c| c.as_any().downcast_ref::<StringArray>())
        {
            self.errors += status.iter().filter(|s| *s == Some("error")).count();
        }
        self.failed.extend(failed);
        self.writer.write(batch)?;
        Ok(())
    }

    /// The rows written so far, and how many of them are error rows.
    pub fn counts(&self) -> (usize, usize) {
        (self.rows, self.errors)
    }

    /// Finishes the file with `meta` (the failed videos filled in) and returns it, ready
    /// to publish, with the meta written.
    pub fn finish(
        mut self,
        mut meta: PartMeta,
    ) -> Result<(tempfile::NamedTempFile, PartMeta, usize)> {
        meta.error_units = self.failed.iter().cloned().collect();
        let json = serde_json::to_string(&meta)
            .map_err(|e| DataFusionError::Internal(format!("part metadata: {e}")))?;
        self.writer
            .append_key_value_metadata(KeyValue::new(PART_META_KEY.to_owned(), json));
        self.writer.close()?;
        Ok((self.staged, meta, self.rows))
    }
}
