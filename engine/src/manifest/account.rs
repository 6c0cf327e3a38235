//! Every video of a group accounted for: the rows its query gave, and an error row for
//! each video whose failures the rows do not show.
//!
//! A group's rows are written to its part as they come, except the *bare* ok rows: those
//! whose item key has only the video (`path`, the other key columns null), which an
//! error row of the same video would collide with. When the query is over, the failures
//! its run's ledger holds for the group's videos decide (`framefusion_common::failures`):
//!
//! - a failed video with an error row already (the job marks its failure itself, as a
//!   `probe_error` or `clip_signals(...)['error']` column named `error`): kept as is;
//! - else a failed video with a bare ok row: that row becomes its error row (`status`
//!   error, `error` naming each failure as `operator: reason`, its values kept);
//! - any other failed video: a new error row (`path`, `error`, every other column null),
//!   beside the ok rows it may have (the shots that worked);
//! - a video with no row and no failure gave no row legitimately (filtered by a condition
//!   on good values, too short): counted as such, not as an error.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;

use datafusion::arrow::array::{Array, BooleanArray, RecordBatch, StringArray};
use datafusion::arrow::compute::filter_record_batch;
use datafusion::error::Result;
use framefusion_common::failures::Failure;

use super::part::{ERROR_COLUMN, RowShape, RowSink, STATUS_COLUMN, UNIT_COLUMN};
use super::text_column;

/// What a group's query gave, written as it comes (see the module docs).
pub(super) struct GroupRows<'a> {
    shape: &'a RowShape,
    /// Manifest columns of the item key other than `path`.
    rest_of_key: Vec<usize>,
    /// Bare ok rows, held until the failures are known.
    held: Vec<RecordBatch>,
    /// Videos with at least one row.
    seen: HashSet<String>,
    /// Videos with an error row among the job's rows.
    errors: HashSet<String>,
}

impl<'a> GroupRows<'a> {
    /// Rows of `shape` whose items are keyed by `key`.
    pub(super) fn new(shape: &'a RowShape, key: &[String]) -> Self {
        let schema = shape.schema();
        let rest_of_key = key
            .iter()
            .filter(|k| k.as_str() != UNIT_COLUMN)
            .filter_map(|k| schema.index_of(k).ok())
            .collect();
        Self {
            shape,
            rest_of_key,
            held: Vec::new(),
            seen: HashSet::new(),
            errors: HashSet::new(),
        }
    }

    /// Writes (or holds) a batch of the job's rows.
    pub(super) fn add(&mut self, batch: &RecordBatch, writer: &mut dyn RowSink) -> Result<()> {
        let (rows, failed) = self.shape.convert(batch)?;
        let units = text_column(&rows, UNIT_COLUMN)?;
        let status = text_column(&rows, STATUS_COLUMN)?;
        let mut hold = Vec::with_capacity(rows.num_rows());
        for r in 0..rows.num_rows() {
            let bare = self.rest_of_key.iter().all(|&c| rows.column(c).is_null(r));
            let ok = status.value(r) == "ok";
            if !units.is_null(r) {
                self.seen.insert(units.value(r).to_owned());
                if !ok {
                    self.errors.insert(units.value(r).to_owned());
                }
            }
            hold.push(bare && ok && !units.is_null(r));
        }
        let held = BooleanArray::from(hold);
        if held.true_count() > 0 {
            self.held.push(filter_record_batch(&rows, &held)?);
        }
        let rest = datafusion::arrow::compute::not(&held)?;
        let written = filter_record_batch(&rows, &rest)?;
        if written.num_rows() > 0 {
            writer.write(&written, failed)?;
        }
        Ok(())
    }

    /// Writes the held rows and an error row for every failed video of `units` that needs
    /// one; returns the videos of `units` that gave no row and did not fail.
    pub(super) fn finish(
        self,
        units: &[String],
        failures: Vec<Failure>,
        writer: &mut dyn RowSink,
    ) -> Result<Vec<String>> {
        let ours: HashSet<&str> = units.iter().map(String::as_str).collect();
        let mut by_unit: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for failure in failures {
            if ours.contains(failure.path.as_str()) {
                by_unit
                    .entry(failure.path.clone())
                    .or_default()
                    .insert(failure.describe());
            } else {
                log::warn!(
                    "a failure of '{}', which is not a video of this group, cannot be recorded in the manifest: {}",
                    failure.path,
                    failure.describe()
                );
            }
        }
        let message = |unit: &str| {
            by_unit
                .get(unit)
                .map(|m| m.iter().cloned().collect::<Vec<_>>().join("; "))
        };
        let mut answered: HashSet<String> = self.errors.clone();
        for batch in &self.held {
            let units = text_column(batch, UNIT_COLUMN)?;
            let messages: Vec<Option<String>> = (0..batch.num_rows())
                .map(|r| message(units.value(r)).filter(|_| !self.errors.contains(units.value(r))))
                .collect();
            let failed: Vec<String> = (0..batch.num_rows())
                .filter(|&r| messages[r].is_some())
                .map(|r| units.value(r).to_owned())
                .collect();
            answered.extend(failed.iter().cloned());
            let status: StringArray = messages
                .iter()
                .map(|m| Some(if m.is_some() { "error" } else { "ok" }))
                .collect();
            let error: StringArray = messages.iter().map(Option::as_deref).collect();
            let schema = batch.schema();
            let mut columns = batch.columns().to_vec();
            columns[schema.index_of(STATUS_COLUMN)?] = Arc::new(status);
            columns[schema.index_of(ERROR_COLUMN)?] = Arc::new(error);
            writer.write(&RecordBatch::try_new(schema, columns)?, failed)?;
        }
        for unit in by_unit.keys() {
            if answered.contains(unit) {
                continue;
            }
            let text = message(unit).unwrap_or_default();
            log::warn!("{unit}: {text}");
            let row = self.shape.error_row(unit, &text)?;
            writer.write(&row, vec![unit.clone()])?;
        }
        Ok(units
            .iter()
            .filter(|u| !self.seen.contains(u.as_str()) && !by_unit.contains_key(u.as_str()))
            .cloned()
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{Array, Float64Array, RecordBatch, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use framefusion_common::code::ErrorCode;
    use framefusion_common::failures::Failure;

    use super::GroupRows;
    use crate::manifest::part::RowShape;

    fn failure(path: &str, operator: &str) -> Failure {
        Failure {
            path: path.to_owned(),
            operator: operator.to_owned(),
            code: ErrorCode::BadMedia,
            message: format!("cannot decode '{path}'"),
        }
    }

    /// Rows of a job `SELECT path, motion, error` (an `error` column of its own).
    fn job_rows(rows: &[(&str, Option<f64>, Option<&str>)]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("path", DataType::Utf8, true),
            Field::new("motion", DataType::Float64, true),
            Field::new("error", DataType::Utf8, true),
        ]));
        let paths: StringArray = rows.iter().map(|r| Some(r.0)).collect();
        let motion: Float64Array = rows.iter().map(|r| r.1).collect();
        let errors: StringArray = rows.iter().map(|r| r.2).collect();
        RecordBatch::try_new(
            schema,
            vec![Arc::new(paths), Arc::new(motion), Arc::new(errors)],
        )
        .unwrap_or_else(|e| panic!("{e}"))
    }

    /// (path, status, error) of every row the group wrote, in order.
    fn written(out: &[(RecordBatch, Vec<String>)]) -> Vec<(String, String, Option<String>)> {
        let mut rows = Vec::new();
        for (batch, _) in out {
            let text = |name: &str| {
                batch
                    .column_by_name(name)
                    .and_then(|c| c.as_any().downcast_ref::<StringArray>())
                    .cloned()
                    .unwrap_or_else(|| panic!("no {name}"))
            };
            let (path, status, error) = (text("path"), text("status"), text("error"));
            for r in 0..batch.num_rows() {
                rows.push((
                    path.value(r).to_owned(),
                    status.value(r).to_owned(),
                    (!error.is_null(r)).then(|| error.value(r).to_owned()),
                ));
            }
        }
        rows
    }

    #[test]
    fn failed_videos_get_one_error_row_and_the_others_are_counted() {
        let job = job_rows(&[
            ("a", Some(1.0), None),
            ("b", None, None),
            ("d", None, Some("probe failed")),
        ]);
        let shape = RowShape::new(&job.schema(), "run-1").unwrap_or_else(|e| panic!("{e}"));
        let key = vec!["path".to_owned()];
        let mut group = GroupRows::new(&shape, &key);
        let mut out: Vec<(RecordBatch, Vec<String>)> = Vec::new();
        group.add(&job, &mut out).unwrap_or_else(|e| panic!("{e}"));
        let units: Vec<String> = ["a", "b", "c", "d", "e"].map(String::from).to_vec();
        let failures = vec![
            // b's row is its item: it becomes the error row
            failure("b", "motion_score"),
            // c gave no row: it gets one
            failure("c", "detect_shots"),
            failure("c", "probe"),
            // d's own row already says it failed: no second row
            failure("d", "probe"),
            // not a video of this group: logged only
            failure("z", "probe"),
        ];
        let empty = group
            .finish(&units, failures, &mut out)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(empty, ["e"], "e gave no row and did not fail");
        let mut rows = written(&out);
        rows.sort();
        assert_eq!(
            rows,
            [
                ("a".to_owned(), "ok".to_owned(), None),
                (
                    "b".to_owned(),
                    "error".to_owned(),
                    Some("motion_score: cannot decode 'b'".to_owned())
                ),
                (
                    "c".to_owned(),
                    "error".to_owned(),
                    Some("detect_shots: cannot decode 'c'; probe: cannot decode 'c'".to_owned())
                ),
                (
                    "d".to_owned(),
                    "error".to_owned(),
                    Some("probe failed".to_owned())
                ),
            ]
        );
        let failed: Vec<&String> = out.iter().flat_map(|(_, f)| f).collect();
        assert_eq!(failed.len(), 3, "b, c and d are failed videos: {failed:?}");
    }
}
