//! UDF arguments as typed arrays: every video UDF takes paths as strings and times as
//! numbers, whatever the caller's column types (cast as DataFusion casts them).

use datafusion::arrow::array::{Array, Float64Array, StringArray};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{Result, exec_err};
use datafusion::logical_expr::ColumnarValue;

fn cast<T: Array + Clone + 'static>(
    value: &ColumnarValue,
    rows: usize,
    to: &DataType,
    what: &str,
) -> Result<T> {
    let array = datafusion::arrow::compute::cast(&value.to_array(rows)?, to)?;
    match array.as_any().downcast_ref::<T>() {
        Some(typed) => Ok(typed.clone()),
        None => exec_err!("{what} must be {to}"),
    }
}

/// The argument as strings (`what` names it in the error).
pub(crate) fn strings(value: &ColumnarValue, rows: usize, what: &str) -> Result<StringArray> {
    cast(value, rows, &DataType::Utf8, what)
}

/// The argument as 64-bit floats (`what` names it in the error).
pub(crate) fn floats(value: &ColumnarValue, rows: usize, what: &str) -> Result<Float64Array> {
    cast(value, rows, &DataType::Float64, what)
}

/// The `(path [, start_s, end_s])` arguments of `function`: paths, and a range per row
/// when given.
pub(crate) struct PathAndRange {
    pub paths: StringArray,
    ranges: Option<(Float64Array, Float64Array)>,
}

impl PathAndRange {
    pub(crate) fn parse(args: &[ColumnarValue], rows: usize, function: &str) -> Result<Self> {
        let (path, range) = match args {
            [p] => (p, None),
            [p, s, e] => (p, Some((s, e))),
            _ => {
                return exec_err!(
                    "{function}(path [, start_s, end_s]) takes one or three arguments"
                );
            }
        };
        let ranges = range
            .map(|(s, e)| -> Result<_> {
                Ok((
                    floats(s, rows, &format!("{function}: start_s"))?,
                    floats(e, rows, &format!("{function}: end_s"))?,
                ))
            })
            .transpose()?;
        Ok(Self {
            paths: strings(path, rows, &format!("{function}: path"))?,
            ranges,
        })
    }

    /// Row `row`'s range (none when not given or null).
    pub(crate) fn range(&self, row: usize) -> Option<(f64, f64)> {
        match &self.ranges {
            Some((s, e)) if !(s.is_null(row) || e.is_null(row)) => {
                Some((s.value(row), e.value(row)))
            }
            _ => None,
        }
    }
}
