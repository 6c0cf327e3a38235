//! # framefusion-flight-server
//!
//! The Arrow Flight SQL service over `framefusion-engine`, for remote clients (ADBC,
//! JDBC, the arrow-flight clients). It is the only crate that knows tonic serving.
//!
//! - [`service`]: the Flight SQL methods: ad-hoc statements (queries, DDL, `SET`, `COPY`),
//!   prepared statements with parameters, the metadata calls, cancellation; sessions.
//! - [`auth`]: the username/password handshake issuing expiring bearer tokens, and static
//!   tokens.
//! - [`status`]: the one mapping of engine errors to gRPC status codes.
//! - [`http`]: the HTTP side (`--http`): a JSON SQL API with the same users and locations,
//!   `/metrics`, `/healthz`.
//! - [`serve`]: the server (TLS when a certificate and key are given); its clients'
//!   sessions carry the configured locations (`framefusion.allowed_roots`, which they cannot
//!   change), to the executors of a cluster too.

pub mod auth;
pub mod http;
pub mod service;
pub mod status;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use arrow_flight::flight_service_server::FlightServiceServer;
use framefusion_media::source::{Confinement, Root};
use tonic::transport::{Identity, Server, ServerTlsConfig};

pub use auth::AuthConfig;
pub use service::{FrameFusionFlightSql, RUNNING_QUERIES_ACTION, ServiceOptions};

/// Errors starting or running the server.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Bad configuration.
    #[error("{0}")]
    Config(String),
    /// The listening socket or the transport failed.
    #[error("{0}")]
    Transport(String),
}

/// A server's settings.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Where to listen (port 0 picks a free one).
    pub bind: SocketAddr,
    /// PEM certificate and private key: serve TLS.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// The only locations tables may be defined on, read or written (local folders,
    /// `s3://bucket/prefix`).
    pub allowed_roots: Vec<String>,
    /// The service.
    pub service: ServiceOptions,
    /// Also serve HTTP here ([`http`]; port 0 picks a free one).
    pub http: Option<SocketAddr>,
    /// More HTTP routes (the web console), beside the JSON SQL API.
    pub http_routes: Option<http::ExtraRoutes>,
}

/// Confines the process, binds, calls `ready` with the bound address (and the HTTP side's),
/// and serves until `shutdown` resolves.
pub async fn serve(
    options: ServeOptions,
    ready: impl FnOnce(SocketAddr, Option<SocketAddr>),
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), ServeError> {
    if options.service.auth.users.is_empty() && options.service.auth.static_tokens.is_empty() {
        return Err(ServeError::Config(
            "no credentials configured: give --user NAME:PASSWORD or --token TOKEN (or FRAMEFUSION_SERVE_USERS / FRAMEFUSION_SERVE_TOKENS)".to_owned(),
        ));
    }
    if options.allowed_roots.is_empty() {
        return Err(ServeError::Config(
            "no allowed locations: give --allow-root with each folder or s3:// (gs://, az://) prefix clients may use".to_owned(),
        ));
    }
    let roots = options
        .allowed_roots
        .iter()
        .map(|r| Root::parse(r).map_err(|e| ServeError::Config(format!("--allow-root '{r}': {e}"))))
        .collect::<Result<Vec<_>, _>>()?;
    log::info!(
        "serving only {}",
        roots
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    );
    // the roots are a value of every client session (they travel with its queries to a
    // cluster), not of this process
    let confinement = Confinement::to(roots);
    if confinement.setting().is_none() {
        return Err(ServeError::Config(
            "an --allow-root holds a comma, which the sessions' roots setting cannot carry; give the folder another name".to_owned(),
        ));
    }
    let service = Arc::new(
        FrameFusionFlightSql::new(options.service.clone(), confinement)
            .map_err(|e| ServeError::Config(e.message().to_owned()))?,
    );
    let http = match options.http {
        Some(at) => Some(
            http::spawn(
                at,
                http::routes(Arc::clone(&service), options.http_routes.as_ref()),
            )
            .await
            .map_err(|e| ServeError::Transport(format!("cannot listen for HTTP on {at}: {e}")))?,
        ),
        None => None,
    };
    let mut builder = Server::builder();
    if let Some((cert, key)) = &options.tls {
        let read = |p: &PathBuf| {
            std::fs::read(p)
                .map_err(|e| ServeError::Config(format!("cannot read '{}': {e}", p.display())))
        };
        let identity = Identity::from_pem(read(cert)?, read(key)?);
        builder = builder
            .tls_config(ServerTlsConfig::new().identity(identity))
            .map_err(|e| ServeError::Config(format!("TLS: {e}")))?;
    }
    let listener = tokio::net::TcpListener::bind(options.bind)
        .await
        .map_err(|e| ServeError::Transport(format!("cannot listen on {}: {e}", options.bind)))?;
    let addr = listener
        .local_addr()
        .map_err(|e| ServeError::Transport(e.to_string()))?;
    ready(addr, http);
    builder
        .add_service(FlightServiceServer::from_arc(service))
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(listener),
            shutdown,
        )
        .await
        .map_err(|e| ServeError::Transport(e.to_string()))
}
