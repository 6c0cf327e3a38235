//! User-facing error messages, and the typed code of every engine error
//! ([`error_code`]): what the Flight SQL server, the HTTP API and manifest runs decide by.

use datafusion::common::TableReference;
use datafusion::error::DataFusionError;
use datafusion::execution::context::SessionState;
use datafusion::sql::sqlparser::parser::ParserError;
pub use framefusion_media::error::{Coded, ErrorCode};

/// Errors the engine raises itself.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// A statement names a table the session does not have.
    #[error("table '{0}' not found")]
    TableNotFound(String),
    /// `CREATE EXTERNAL TABLE` names a table the session already has, defined otherwise.
    #[error(
        "table '{0}' already exists with another definition; DROP TABLE {0} first, or use CREATE OR REPLACE EXTERNAL TABLE (or IF NOT EXISTS to keep it)"
    )]
    TableExists(String),
    /// The cluster's scheduler does not answer.
    #[error(
        "cannot reach the framefusion scheduler at {url} ({message}); start one (framefusion cluster, or framefusion scheduler) or fix --cluster"
    )]
    Unreachable {
        /// The scheduler's URL.
        url: String,
        /// What the connection attempt said.
        message: String,
    },
}

impl Coded for EngineError {
    fn code(&self) -> ErrorCode {
        match self {
            EngineError::TableNotFound(_) => ErrorCode::NotFound,
            EngineError::TableExists(_) => ErrorCode::InvalidArgument,
            EngineError::Unreachable { .. } => ErrorCode::Unavailable,
        }
    }
}

impl From<EngineError> for DataFusionError {
    fn from(e: EngineError) -> Self {
        framefusion_common::code::external(e)
    }
}

/// The code of an engine error, from its type alone: the workspace's own errors carry
/// theirs (`framefusion_common::code::code_of`); Ballista's errors and gRPC statuses
/// from a cluster, at the root of the error, are coded here. No message is read.
pub fn error_code(error: &DataFusionError) -> ErrorCode {
    if let DataFusionError::External(inner) = error.find_root()
        && let Some(code) = cluster_code(inner.as_ref())
    {
        return code;
    }
    framefusion_common::code::code_of(error)
}

/// The code of a Ballista error or a gRPC status (a cluster's answer).
fn cluster_code(error: &(dyn std::error::Error + Send + Sync + 'static)) -> Option<ErrorCode> {
    use ballista_core::error::BallistaError as B;
    if let Some(e) = error.downcast_ref::<B>() {
        return Some(match e {
            B::NotImplemented(_) => ErrorCode::Unimplemented,
            B::Configuration(_) | B::SqlError(_) => ErrorCode::InvalidArgument,
            B::DataFusionError(inner) => error_code(inner),
            B::IoError(_) | B::TonicError(_) | B::GrpcConnectionError(_) | B::FetchFailed(..) => {
                ErrorCode::Unavailable
            }
            B::GrpcError(status) => grpc_code(status.code()),
            B::Cancelled => ErrorCode::Cancelled,
            _ => ErrorCode::Internal,
        });
    }
    error
        .downcast_ref::<tonic::Status>()
        .map(|status| grpc_code(status.code()))
}

/// The [`ErrorCode`] of a gRPC status code (a cluster's or a Flight server's answer).
pub fn grpc_code(code: tonic::Code) -> ErrorCode {
    use tonic::Code as C;
    match code {
        C::InvalidArgument | C::OutOfRange => ErrorCode::InvalidArgument,
        C::FailedPrecondition => ErrorCode::Setup,
        C::NotFound => ErrorCode::NotFound,
        C::PermissionDenied => ErrorCode::PermissionDenied,
        C::Unauthenticated => ErrorCode::Unauthenticated,
        C::Unavailable | C::DeadlineExceeded | C::Aborted => ErrorCode::Unavailable,
        C::ResourceExhausted => ErrorCode::ResourceExhausted,
        C::Unimplemented => ErrorCode::Unimplemented,
        C::Cancelled => ErrorCode::Cancelled,
        _ => ErrorCode::Internal,
    }
}

/// `error` of planning or running a statement that references `references` (see
/// [`read_references`]): when it is a planning error and one of them is not a table of
/// `state` (nor a table function, nor a URL table), a [`EngineError::TableNotFound`], else
/// `error` as it is. DataFusion reports a missing table as a planning
/// error like any other; this gives it its own type, so its code is `NotFound`.
pub fn with_missing_table(
    state: &SessionState,
    references: &[TableReference],
    error: DataFusionError,
) -> DataFusionError {
    // DataFusion reports a missing table at planning, as a plan error
    if !matches!(error.find_root(), DataFusionError::Plan(_)) {
        return error;
    }
    let missing = references.iter().find(|r| {
        // a URL table (`FROM 's3://bucket/x.parquet'`) is a location, not a name
        if r.table().contains('/') {
            return false;
        }
        let function = r.schema().is_none() && state.table_functions().contains_key(r.table());
        let exists = state
            .schema_for_ref((*r).clone())
            .map(|schema| schema.table_exist(r.table()))
            .unwrap_or(false);
        !function && !exists
    });
    match missing {
        Some(r) => {
            let catalog = &state.config_options().catalog;
            let name = r
                .clone()
                .resolve(&catalog.default_catalog, &catalog.default_schema);
            EngineError::TableNotFound(name.to_string()).into()
        }
        None => error,
    }
}

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

/// The tables a statement reads, for [`with_missing_table`]: those of a query, an
/// `EXPLAIN` or an `INSERT`'s source; none for other statements (a `CREATE` names the table
/// it makes, a `DROP` one that may be gone).
pub fn read_references(
    state: &SessionState,
    statement: &datafusion::sql::parser::Statement,
) -> Vec<TableReference> {
    use datafusion::sql::parser::Statement as S;
    use datafusion::sql::sqlparser::ast::Statement as Ast;
    let reads = match statement {
        S::Statement(s) => matches!(s.as_ref(), Ast::Query(_)),
        S::Explain(_) => true,
        _ => false,
    };
    if !reads {
        return Vec::new();
    }
    state
        .resolve_table_references(statement)
        .unwrap_or_default()
}

/// The scheduler a cluster session submits to, kept in its session config (so that an
/// error can be checked against it: [`with_unreachable_cluster`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterUrl(pub String);

/// `error` of a query that ran on a cluster: when its type says nothing
/// ([`ErrorCode::Internal`]: Ballista's client reports a scheduler it cannot reach as a
/// plain execution error) and the scheduler of `config` does not accept a connection now,
/// an [`EngineError::Unreachable`] ([`ErrorCode::Unavailable`]); else `error` as it is.
/// The cluster is asked, not the message read.
pub fn with_unreachable_cluster(
    config: &datafusion::prelude::SessionConfig,
    error: DataFusionError,
) -> DataFusionError {
    let Some(cluster) = config.get_extension::<ClusterUrl>() else {
        return error;
    };
    if error_code(&error) != ErrorCode::Internal {
        return error;
    }
    let reachable = url::Url::parse(&cluster.0)
        .ok()
        .and_then(|u| Some((u.host_str()?.to_owned(), u.port().unwrap_or(50050))))
        .and_then(|(host, port)| {
            use std::net::ToSocketAddrs;
            (host.as_str(), port).to_socket_addrs().ok()?.next()
        })
        .is_some_and(|addr| {
            std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(2)).is_ok()
        });
    if reachable {
        return error;
    }
    EngineError::Unreachable {
        url: cluster.0.clone(),
        message: crate::user_message(&error),
    }
    .into()
}
