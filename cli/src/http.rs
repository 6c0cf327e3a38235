//! The HTTP endpoints of `framefusion executor --metrics ADDR`: `GET /metrics`, the
//! process's metrics in the OpenMetrics text format Prometheus scrapes
//! (`framefusion_media::metrics` lists them), and `GET /healthz`, which answers `ok` while
//! the process runs. (`framefusion serve --http` serves them too, beside its JSON API:
//! `framefusion_flight_server::http`.)

use std::net::SocketAddr;

use crate::CliError;

/// Binds `addr` (port 0: a free port), prints `framefusion {what} listening on
/// http://ADDR` on stdout (scripts and tests wait for it), and serves the endpoints on the
/// current runtime until the process ends.
pub async fn spawn(addr: SocketAddr, what: &str) -> Result<SocketAddr, CliError> {
    let io = |source| CliError::Io {
        context: format!("cannot listen for HTTP on {addr}"),
        source,
    };
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(io)?;
    let bound = listener.local_addr().map_err(io)?;
    let app = framefusion_flight_server::http::health_routes();
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            log::error!("the HTTP endpoint on {bound} stopped: {e}");
        }
    });
    println!("framefusion {what} listening on http://{bound}");
    let _ = std::io::Write::flush(&mut std::io::stdout());
    Ok(bound)
}
