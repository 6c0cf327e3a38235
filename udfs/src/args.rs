//! Function arguments: what each argument of an operator or a user model is ([`Arg`],
//! [`ArgKind`]), a call's types checked and cast at planning ([`coerce_call`]), and a
//! function's usage and syntax for messages and documentation; and UDF arguments as typed
//! arrays, for the UDFs outside the operator scaffold (user models): paths as strings and
//! times as numbers, cast as DataFusion casts them.

use datafusion::arrow::array::{Array, Float64Array, StringArray};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{Result, exec_err, plan_err};
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

/// The `key=value` items of a call's options text (separated by commas or white space),
/// or why one is not such an item (`operator` names the function in the message).
pub(crate) fn option_pairs<'a>(
    operator: &str,
    options: Option<&'a str>,
) -> std::result::Result<Vec<(&'a str, &'a str)>, crate::UdfError> {
    options
        .unwrap_or_default()
        .split([',', ' ', '\n', '\t'])
        .filter(|s| !s.is_empty())
        .map(|item| {
            item.split_once('=')
                .map(|(k, v)| (k.trim(), v.trim()))
                .ok_or_else(|| {
                    crate::UdfError::Setup(format!(
                        "{operator}: '{item}' in the options is not key=value"
                    ))
                })
        })
        .collect()
}

/// An option's whole number, or why it is not one.
pub(crate) fn whole_option(
    operator: &str,
    key: &str,
    value: &str,
) -> std::result::Result<u64, crate::UdfError> {
    value.parse::<u64>().map_err(|_| {
        crate::UdfError::Setup(format!("{operator}: {key}={value}: not a whole number"))
    })
}

/// What an argument is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArgKind {
    /// A video: a path or URI (a string).
    Path,
    /// A time in seconds (a number).
    Seconds,
    /// Another number.
    Number,
    /// An integer.
    Integer,
    /// Options or another string.
    Text,
}

impl ArgKind {
    pub(crate) fn sql(self) -> &'static str {
        match self {
            ArgKind::Path | ArgKind::Text => "VARCHAR",
            ArgKind::Seconds | ArgKind::Number => "DOUBLE",
            ArgKind::Integer => "BIGINT",
        }
    }

    /// The type a value of `given` type is cast to, or why it cannot be.
    pub(crate) fn coerce(self, given: &DataType) -> Option<DataType> {
        let target = match self {
            ArgKind::Path | ArgKind::Text => DataType::Utf8,
            ArgKind::Seconds | ArgKind::Number => DataType::Float64,
            ArgKind::Integer => DataType::Int64,
        };
        let ok = match (self, given) {
            (_, DataType::Null) => true,
            (_, DataType::Dictionary(_, value)) => return self.coerce(value),
            (ArgKind::Path | ArgKind::Text, t) => {
                matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View)
            }
            (ArgKind::Seconds | ArgKind::Number, t) => t.is_numeric(),
            (ArgKind::Integer, t) => t.is_integer(),
        };
        ok.then_some(target)
    }

    pub(crate) fn what(self) -> &'static str {
        match self {
            ArgKind::Path => "a path or URI (a string)",
            ArgKind::Text => "a string",
            ArgKind::Seconds => "a number of seconds",
            ArgKind::Number => "a number",
            ArgKind::Integer => "an integer",
        }
    }
}

/// One argument of an operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arg {
    /// Its name, in messages and the SQL reference.
    pub name: &'static str,
    /// What it is.
    pub kind: ArgKind,
    /// Whether a null value nulls the row (paths and times); otherwise a null is the
    /// argument's default (options).
    pub required: bool,
}

impl Arg {
    /// A video path.
    pub const fn path() -> Self {
        Self {
            name: "path",
            kind: ArgKind::Path,
            required: true,
        }
    }

    /// A time in seconds.
    pub const fn seconds(name: &'static str) -> Self {
        Self {
            name,
            kind: ArgKind::Seconds,
            required: true,
        }
    }

    /// A text the operator works on (null: the row is null).
    pub const fn text(name: &'static str) -> Self {
        Self {
            name,
            kind: ArgKind::Text,
            required: true,
        }
    }

    /// The row's video, added by the planner to an operator over something else (null:
    /// none).
    pub const fn row_video() -> Self {
        Self {
            name: "video",
            kind: ArgKind::Path,
            required: false,
        }
    }

    /// An options string (null: the defaults).
    pub const fn options(name: &'static str) -> Self {
        Self {
            name,
            kind: ArgKind::Text,
            required: false,
        }
    }

    /// An optional time in seconds (null: none, as when not given).
    pub const fn optional_seconds(name: &'static str) -> Self {
        Self {
            name,
            kind: ArgKind::Seconds,
            required: false,
        }
    }

    /// An optional number (null: its default).
    pub const fn number(name: &'static str) -> Self {
        Self {
            name,
            kind: ArgKind::Number,
            required: false,
        }
    }
}

/// A call's syntax as the SQL reference writes it: `name(a, b [, c, d])`, the optional
/// arguments grouped as the arities allow them (`[, start_s, end_s]`: both or neither).
pub fn syntax(name: &str, args: &[Arg], arities: &[usize]) -> String {
    let mut arities = arities.to_vec();
    arities.sort_unstable();
    arities.dedup();
    let names: Vec<&str> = args.iter().map(|a| a.name).collect();
    let required = arities
        .first()
        .copied()
        .unwrap_or(names.len())
        .min(names.len());
    let mut text = names[..required].join(", ");
    let mut from = required;
    for &to in &arities[1..] {
        let to = to.min(names.len());
        if to <= from {
            continue;
        }
        if !text.is_empty() {
            text.push(' ');
        }
        text.push_str(if from == 0 { "[" } else { "[, " });
        text.push_str(&names[from..to].join(", "));
        from = to;
    }
    let closing = arities[1..].len();
    format!("{name}({text}{})", "]".repeat(closing))
}

/// [`crate::operator::coerce_args`] for a function `name` with `args`, of which a call gives one of
/// `arities`.
pub fn coerce_call(
    name: &str,
    args: &[Arg],
    arities: &[usize],
    given: &[DataType],
) -> Result<Vec<DataType>> {
    let usage = usage(name, args, arities);
    if !arities.contains(&given.len()) {
        let mut counts: Vec<String> = arities.iter().map(ToString::to_string).collect();
        let last = counts.pop().unwrap_or_default();
        let counts = if counts.is_empty() {
            last
        } else {
            format!("{} or {last}", counts.join(", "))
        };
        return plan_err!("{usage} takes {counts} arguments, not {}", given.len());
    }
    given
        .iter()
        .zip(args)
        .map(|(t, arg)| match arg.kind.coerce(t) {
            Some(target) => Ok(target),
            None => plan_err!("{usage}: {} must be {}, not {t}", arg.name, arg.kind.what()),
        })
        .collect()
}

/// A function's usage, `name(arg TYPE, ... [, optional TYPE])`, for messages.
pub fn usage(name: &str, args: &[Arg], arities: &[usize]) -> String {
    let required = arities.iter().copied().min().unwrap_or(0);
    // the arguments a call may give (not one only the planner adds)
    let most = arities.iter().copied().max().unwrap_or(args.len());
    let args = &args[..most.min(args.len())];
    let mut text = String::new();
    for (i, arg) in args.iter().enumerate() {
        if i > 0 {
            text.push_str(if i >= required { " [, " } else { ", " });
        } else if i >= required {
            text.push('[');
        }
        text.push_str(&format!("{} {}", arg.name, arg.kind.sql()));
    }
    let optional = args.len().saturating_sub(required);
    format!("{name}({text}{})", "]".repeat(optional))
}
