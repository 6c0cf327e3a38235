//! The HTTP endpoints of `framefusion serve --http ADDR` and `framefusion executor
//! --metrics ADDR`: `GET /metrics`, the process's metrics in the OpenMetrics text format
//! Prometheus scrapes (`framefusion_media::metrics` lists them), and `GET /healthz`, which
//! answers `ok` while the process runs.

use std::net::SocketAddr;

use axum::Router;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;

use crate::CliError;

async fn metrics() -> impl IntoResponse {
    (
        [(CONTENT_TYPE, framefusion_media::metrics::CONTENT_TYPE)],
        framefusion_media::metrics::render(),
    )
}

async fn healthz() -> &'static str {
    "ok\n"
}

/// Binds `addr` (port 0: a free port), prints `framefusion {what} listening on
/// http://ADDR` on stdout (scripts and tests wait for it), and serves the endpoints on the
/// current runtime until the process ends.
pub async fn spawn(addr: SocketAddr, what: &str) -> Result<SocketAddr, CliError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| CliError::Io {
            context: format!("cannot listen for HTTP on {addr}"),
            source,
        })?;
    let bound = listener.local_addr().map_err(|source| CliError::Io {
        context: format!("cannot listen for HTTP on {addr}"),
        source,
    })?;
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz));
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            log::error!("the HTTP endpoint on {bound} stopped: {e}");
        }
    });
    println!("framefusion {what} listening on http://{bound}");
    let _ = std::io::Write::flush(&mut std::io::stdout());
    Ok(bound)
}
