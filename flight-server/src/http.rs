//! The HTTP side of `framefusion serve --http ADDR`, beside Flight SQL and with its users,
//! tokens, sessions and allowed locations:
//!
//! | route | what |
//! |---|---|
//! | `POST /api/login` | `authorization: Basic ...` (a `--user`) -> `{"token": "..."}`, a bearer token as the Flight handshake issues |
//! | `POST /api/sql` | `authorization: Bearer TOKEN`, the SQL text as the body -> `{"columns": [...], "rows": [{...}, ...]}`: the last statement's rows |
//! | `GET /metrics` | the process's metrics, OpenMetrics text (Prometheus) |
//! | `GET /healthz` | `ok` |
//!
//! A failure is `{"error": {"code": "not_found", "message": "..."}}` with the HTTP status
//! of its typed code (`ErrorCode::http_status`: 400, 401, 403, 404, 422, 499, 500, 501,
//! 503), the same code the Flight SQL status carries.

use std::sync::Arc;

pub use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tonic::metadata::MetadataMap;

use crate::FrameFusionFlightSql;

/// Binds `addr` (port 0: a free port) and serves `app` there on the current runtime until
/// the process ends; the bound address.
pub async fn spawn(
    addr: std::net::SocketAddr,
    app: Router,
) -> std::io::Result<std::net::SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            log::error!("the HTTP side on {bound} stopped: {e}");
        }
    });
    Ok(bound)
}

/// `/metrics` and `/healthz` (every framefusion process that serves HTTP).
pub fn health_routes() -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
}

/// An executor's HTTP side: [`health_routes`] and `GET /readyz`, `200 ready` once the
/// scheduler acknowledged its heartbeat, `503 draining` from the stop signal on, `503 not
/// registered yet` before.
pub fn executor_routes(health: framefusion_engine::cluster::ExecutorHealth) -> Router {
    health_routes().route(
        "/readyz",
        get(move || {
            let health = health.clone();
            async move {
                if health.is_ready() {
                    (StatusCode::OK, "ready\n")
                } else if health.is_draining() {
                    (StatusCode::SERVICE_UNAVAILABLE, "draining\n")
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, "not registered yet\n")
                }
            }
        }),
    )
}

/// More routes for the server's HTTP side, made from the service (the web console's).
#[derive(Clone)]
pub struct ExtraRoutes(pub Arc<dyn Fn(Arc<FrameFusionFlightSql>) -> Router + Send + Sync>);

impl std::fmt::Debug for ExtraRoutes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ExtraRoutes")
    }
}

/// Every route of the server's HTTP side (see the module docs), and `extra`'s.
pub fn routes(service: Arc<FrameFusionFlightSql>, extra: Option<&ExtraRoutes>) -> Router {
    let mut router = Router::new()
        .route("/api/login", post(login))
        .route("/api/sql", post(sql))
        .with_state(Arc::clone(&service))
        .merge(health_routes());
    if let Some(extra) = extra {
        router = router.merge((extra.0)(service));
    }
    router
}

async fn metrics() -> impl IntoResponse {
    (
        [(CONTENT_TYPE, framefusion_media::metrics::CONTENT_TYPE)],
        framefusion_media::metrics::render(),
    )
}

async fn healthz() -> &'static str {
    "ok\n"
}

/// A JSON response.
pub fn json(status: StatusCode, value: serde_json::Value) -> Response {
    (
        status,
        [(CONTENT_TYPE, "application/json")],
        value.to_string(),
    )
        .into_response()
}

/// The JSON error of a failed call, with the HTTP status of its code.
pub fn failure(status: &tonic::Status) -> Response {
    let code = framefusion_engine::error::grpc_code(status.code());
    let http =
        StatusCode::from_u16(code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json(
        http,
        serde_json::json!({"error": {"code": code.name(), "message": status.message()}}),
    )
}

/// The gRPC metadata of HTTP `headers` (the service's authentication reads it).
pub fn metadata(headers: &HeaderMap) -> MetadataMap {
    MetadataMap::from_headers(headers.clone())
}

async fn login(State(service): State<Arc<FrameFusionFlightSql>>, headers: HeaderMap) -> Response {
    match service.http_login(&metadata(&headers)) {
        Ok(token) => json(StatusCode::OK, serde_json::json!({ "token": token })),
        Err(status) => failure(&status),
    }
}

async fn sql(
    State(service): State<Arc<FrameFusionFlightSql>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Ok(text) = std::str::from_utf8(&body) else {
        return failure(&tonic::Status::invalid_argument(
            "the SQL must be UTF-8 text",
        ));
    };
    let batches = match service.http_sql(metadata(&headers), text).await {
        Ok(batches) => batches,
        Err(status) => return failure(&status),
    };
    let (columns, rows) = match rows_json(&batches) {
        Ok(written) => written,
        Err(status) => return failure(&status),
    };
    json(
        StatusCode::OK,
        serde_json::json!({ "columns": columns, "rows": rows }),
    )
}

/// The column names and the rows (JSON objects) of `batches`.
pub fn rows_json(
    batches: &[datafusion::arrow::array::RecordBatch],
) -> Result<(Vec<String>, serde_json::Value), tonic::Status> {
    let columns: Vec<String> = batches
        .first()
        .map(|b| {
            b.schema()
                .fields()
                .iter()
                .map(|f| f.name().clone())
                .collect()
        })
        .unwrap_or_default();
    let mut writer = datafusion::arrow::json::ArrayWriter::new(Vec::new());
    batches
        .iter()
        .try_for_each(|b| writer.write(b))
        .and_then(|()| writer.finish())
        .map_err(|e| tonic::Status::internal(format!("cannot write the rows as JSON: {e}")))?;
    let bytes = writer.into_inner();
    let rows = if bytes.is_empty() {
        serde_json::Value::Array(Vec::new())
    } else {
        serde_json::from_slice(&bytes).unwrap_or_default()
    };
    Ok((columns, rows))
}
