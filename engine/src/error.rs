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
    text.split_whitespace().collect::<Vec<_>>().join(" ")
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
        Ok(())
    }
}
