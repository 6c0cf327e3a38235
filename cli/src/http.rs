//! The HTTP endpoints of `framefusion executor --metrics ADDR` (and, without `/readyz`,
//! of `framefusion scheduler --metrics ADDR`): `GET /metrics`, the
//! process's metrics in the OpenMetrics text format Prometheus scrapes
//! (`framefusion_media::metrics` lists them), and `GET /healthz`, which answers `ok` while
//! the process runs, and `GET /readyz`: `200 ready` once the scheduler acknowledged the
//! executor's heartbeat, `503` before and from the stop signal on (draining). (`framefusion
//! serve --http` serves the first two too, beside its JSON API:
//! `framefusion_flight_server::http`.)

use std::net::SocketAddr;

use framefusion_engine::cluster::ExecutorHealth;

use crate::CliError;

/// Binds `addr` (port 0: a free port), prints `framefusion {what} listening on
/// http://ADDR` on stdout (scripts and tests wait for it), and serves the endpoints on the
/// current runtime until the process ends.
pub async fn spawn(
    addr: SocketAddr,
    what: &str,
    health: ExecutorHealth,
) -> Result<SocketAddr, CliError> {
    serve(
        addr,
        what,
        framefusion_flight_server::http::executor_routes(health),
    )
    .await
}

/// As [`spawn`], `/metrics` and `/healthz` only (the scheduler's: its readiness is on
/// its own port).
pub async fn spawn_metrics(addr: SocketAddr, what: &str) -> Result<SocketAddr, CliError> {
    serve(addr, what, framefusion_flight_server::http::health_routes()).await
}

async fn serve(
    addr: SocketAddr,
    what: &str,
    app: framefusion_flight_server::http::Router,
) -> Result<SocketAddr, CliError> {
    let bound = framefusion_flight_server::http::spawn(addr, app)
        .await
        .map_err(|source| CliError::Io {
            context: format!("cannot listen for HTTP on {addr}"),
            source,
        })?;
    println!("framefusion {what} listening on http://{bound}");
    let _ = std::io::Write::flush(&mut std::io::stdout());
    Ok(bound)
}
