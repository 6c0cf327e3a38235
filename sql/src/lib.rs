//! # framefusion-sql
//!
//! The SQL surface framefusion adds to stock DataFusion:
//!
//! - scripts: several `;`-separated statements in one string or file, parsed up front so
//!   a syntax error anywhere is reported before anything runs ([`parse_script`]);
//! - syntax errors as one line that names the problem and where it is ([`SqlError`]).
//!
//! The sqllogictest suite of the project lives in `sql/slt/`; the test crate runs every
//! file there against the embedded engine (and, with the distributed engine, on a
//! cluster), and both runs must give the same results.

use std::collections::VecDeque;

use datafusion::sql::parser::{DFParserBuilder, Statement};
use datafusion::sql::sqlparser::dialect::dialect_from_str;
use datafusion::sql::sqlparser::parser::ParserError;

/// Errors from parsing SQL text.
#[derive(Debug, thiserror::Error)]
pub enum SqlError {
    /// The text is not valid SQL.
    #[error("syntax error: {0}")]
    Syntax(String),
    /// The configured dialect does not exist.
    #[error("unknown SQL dialect '{0}'; use one of generic, postgresql, mysql, duckdb, ansi, ...")]
    UnknownDialect(String),
    /// The script holds no statement.
    #[error("no SQL statement given")]
    Empty,
}

impl framefusion_common::Coded for SqlError {
    fn code(&self) -> framefusion_common::ErrorCode {
        framefusion_common::ErrorCode::InvalidArgument
    }
}

impl From<ParserError> for SqlError {
    fn from(e: ParserError) -> Self {
        let message = match e {
            ParserError::ParserError(m) | ParserError::TokenizerError(m) => m,
            ParserError::RecursionLimitExceeded => "the statement nests too deeply".to_owned(),
        };
        SqlError::Syntax(message)
    }
}

/// Parses a script of one or more `;`-separated statements with the named dialect
/// (DataFusion's `datafusion.sql_parser.dialect`, `generic` by default).
pub fn parse_script(sql: &str, dialect: &str) -> Result<VecDeque<Statement>, SqlError> {
    let dialect =
        dialect_from_str(dialect).ok_or_else(|| SqlError::UnknownDialect(dialect.to_owned()))?;
    let statements = DFParserBuilder::new(sql)
        .with_dialect(dialect.as_ref())
        .build()
        .and_then(|mut parser| parser.parse_statements())
        .map_err(|e| match e {
            datafusion::error::DataFusionError::SQL(p, _) => SqlError::from(*p),
            other => SqlError::Syntax(other.to_string()),
        })?;
    if statements.is_empty() {
        return Err(SqlError::Empty);
    }
    Ok(statements)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_several_statements() -> Result<(), SqlError> {
        let s = parse_script(
            "CREATE EXTERNAL TABLE v STORED AS VIDEO LOCATION '/tmp'; SELECT 1;\n-- done\n",
            "generic",
        )?;
        assert_eq!(s.len(), 2);
        Ok(())
    }

    #[test]
    fn syntax_error_is_one_line_naming_the_token() {
        let e = parse_script("SELEC 1", "generic")
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            e.as_deref(),
            Some("syntax error: Expected: an SQL statement, found: SELEC at Line: 1, Column: 1")
        );
        assert!(matches!(
            parse_script("  ;  ", "generic"),
            Err(SqlError::Empty)
        ));
    }
}
