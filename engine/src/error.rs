//! User-facing error messages.

use datafusion::error::DataFusionError;
use datafusion::sql::sqlparser::parser::ParserError;

/// One line that names the problem, for a person reading a terminal or a client error:
/// the root cause of `error` without DataFusion's wrapper prefixes, whitespace collapsed.
pub fn user_message(error: &DataFusionError) -> String {
    let text = match error.find_root() {
        DataFusionError::SQL(e, _) => match e.as_ref() {
            ParserError::ParserError(m) | ParserError::TokenizerError(m) => {
                format!("syntax error: {m}")
            }
            ParserError::RecursionLimitExceeded => {
                "syntax error: the statement nests too deeply".to_owned()
            }
        },
        DataFusionError::External(e) => e.to_string(),
        DataFusionError::Plan(m) => m.clone(),
        DataFusionError::Execution(m) => m.clone(),
        DataFusionError::Configuration(m) => format!("invalid setting: {m}"),
        DataFusionError::NotImplemented(m) => format!("not supported: {m}"),
        DataFusionError::SchemaError(e, _) => e.to_string(),
        DataFusionError::IoError(e) => format!("I/O error: {e}"),
        other => other.to_string(),
    };
    let text = coercion_message(&text).unwrap_or(&text);
    let text = no_matching_signature(text)
        .or_else(|| unknown_namespace(text))
        .unwrap_or_else(|| without_bug_report(text));
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// DataFusion's request to report a bug, which it adds to every internal error, also
/// those a user's input causes (a built-in function called with types it does not take).
const BUG_REPORT: &str = "This issue was likely caused by a bug in DataFusion's code. Please help us to resolve this by filing a bug report in our issue tracker: https://github.com/apache/datafusion/issues";

/// A built-in function called with argument types none of its signatures takes: what
/// DataFusion says about the call and its candidates, without the per-signature errors
/// and the bug report it wraps them in.
fn no_matching_signature(message: &str) -> Option<String> {
    let at = message.find("No function matches the given name and argument types")?;
    Some(message[at..].replace(BUG_REPORT, ""))
}

/// An option whose namespace no table type knows (`OPTIONS ('gcp.x' ...)`).
fn unknown_namespace(message: &str) -> Option<String> {
    let (_, rest) = message.split_once("Could not find config namespace \"")?;
    let namespace = rest.split('"').next()?;
    Some(format!(
        "unknown option namespace '{namespace}': table and COPY options are format.* (the file format's, for example 'format.compression'), aws.*, gcp.* and azure.* (an s3://, gs:// or az:// location's object store) and, for VIDEO tables, 'extensions'"
    ))
}

/// `message` without DataFusion's bug report; what is left of an internal error is
/// marked as framefusion's own.
fn without_bug_report(message: &str) -> String {
    if !message.contains(BUG_REPORT) && !message.starts_with("Internal error") {
        return message.to_owned();
    }
    let text = message.replace(BUG_REPORT, "");
    let text = text.trim_start_matches("Internal error: ").trim();
    format!(
        "the query failed inside the engine: {text} (check the statement's argument types; if it is right, please report it to framefusion)"
    )
}

/// The operator's own message inside DataFusion's report of a failed argument check
/// (`Function 'f' user-defined coercion failed with: Error during planning: MESSAGE. No
/// function matches ...`), which names the function's arguments and the one at fault.
fn coercion_message(message: &str) -> Option<&str> {
    let (_, rest) = message.split_once("user-defined coercion failed with: ")?;
    let rest = rest.strip_prefix("Error during planning: ").unwrap_or(rest);
    Some(rest.split(". No function matches").next().unwrap_or(rest))
}

/// Whether `error` is a function call's argument check failing at planning.
pub fn is_argument_error(error: &DataFusionError) -> bool {
    coercion_message(&error.find_root().to_string()).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SessionContextExt;

    #[tokio::test]
    async fn messages_are_one_line() -> datafusion::error::Result<()> {
        let ctx = crate::new_context()?;
        let err = ctx
            .run_script("SELEC 1")
            .await
            .err()
            .map(|e| user_message(&e));
        assert_eq!(
            err.as_deref(),
            Some("syntax error: Expected: an SQL statement, found: SELEC at Line: 1, Column: 1")
        );
        let err = ctx
            .run_script("SELECT * FROM nope")
            .await
            .err()
            .map(|e| user_message(&e));
        assert_eq!(
            err.as_deref(),
            Some("table 'datafusion.public.nope' not found")
        );
        let err = ctx
            .run_script("CREATE EXTERNAL TABLE v STORED AS VIDEO LOCATION '/no/such/dir'")
            .await
            .err()
            .map(|e| user_message(&e));
        assert_eq!(
            err.as_deref(),
            Some("location '/no/such/dir' does not exist; give an existing folder or video file")
        );
        let err = ctx
            .run_script("SELECT text_area_ratio('a.mp4', 'x', 1)")
            .await
            .err();
        assert!(err.as_ref().is_some_and(is_argument_error));
        assert_eq!(
            err.map(|e| user_message(&e)).as_deref(),
            Some(
                "text_area_ratio(path VARCHAR, start_s DOUBLE, end_s DOUBLE): start_s must be a number of seconds, not Utf8"
            )
        );
        Ok(())
    }
}
