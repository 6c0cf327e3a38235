//! UDF arguments as typed arrays, for the UDFs outside the operator scaffold (user
//! models): paths as strings and times as numbers, cast as DataFusion casts them.

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
