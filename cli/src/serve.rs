//! `framefusion serve`: the Arrow Flight SQL server.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use framefusion_flight_server::{AuthConfig, ServeOptions, ServiceOptions, serve};

use crate::CliError;

/// Arguments of `framefusion serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on (port 0 picks a free port; the address is printed).
    #[arg(long, default_value = "127.0.0.1:50060")]
    bind: SocketAddr,

    /// Run queries on the Ballista cluster whose scheduler is at this URL (df://host:port).
    #[arg(long, value_name = "URL")]
    cluster: Option<String>,

    /// A user of the username/password handshake, NAME:PASSWORD (repeatable, or
    /// comma-separated in FRAMEFUSION_SERVE_USERS).
    #[arg(
        long = "user",
        value_name = "NAME:PASSWORD",
        env = "FRAMEFUSION_SERVE_USERS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    users: Vec<String>,

    /// A static bearer token clients may send as it is (repeatable, or comma-separated in
    /// FRAMEFUSION_SERVE_TOKENS).
    #[arg(
        long = "token",
        value_name = "TOKEN",
        env = "FRAMEFUSION_SERVE_TOKENS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    tokens: Vec<String>,

    /// Seconds a token issued by the handshake stays valid.
    #[arg(long, value_name = "SECONDS", default_value_t = 3600)]
    token_ttl: u64,

    /// A folder, s3://bucket/prefix (or gs://, az:// for tables other than VIDEO) clients
    /// may define tables on and read or write (repeatable; at least one). Everything else
    /// is refused.
    #[arg(long = "allow-root", value_name = "LOCATION", required = true)]
    allowed_roots: Vec<String>,

    /// PEM certificate to serve TLS with (needs --tls-key).
    #[arg(long, value_name = "PEM", requires = "tls_key")]
    tls_cert: Option<PathBuf>,

    /// PEM private key of --tls-cert.
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    tls_key: Option<PathBuf>,

    /// Also serve HTTP on this address: a JSON SQL API (`/api/login`, `/api/sql`),
    /// `/metrics` (Prometheus) and `/healthz` (port 0 picks a free port; the address is
    /// printed).
    #[arg(long, value_name = "ADDR")]
    http: Option<SocketAddr>,

    #[command(flatten)]
    catalog: crate::catalog_args::CatalogArgs,
}

/// Runs `framefusion serve` until Ctrl-C or SIGTERM.
pub async fn run(args: ServeArgs) -> Result<(), CliError> {
    let users = args
        .users
        .iter()
        .filter(|u| !u.is_empty())
        .map(|u| {
            u.split_once(':')
                .map(|(n, p)| (n.to_owned(), p.to_owned()))
                .ok_or_else(|| {
                    CliError::Usage(format!(
                        "--user '{}': write it as NAME:PASSWORD",
                        u.split(':').next().unwrap_or_default()
                    ))
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let catalog = args.catalog.path();
    let options = ServeOptions {
        bind: args.bind,
        tls: args.tls_cert.clone().zip(args.tls_key.clone()),
        http: args.http,
        allowed_roots: args.allowed_roots.clone(),
        service: ServiceOptions {
            cluster: args.cluster.clone(),
            catalog,
            auth: AuthConfig {
                users,
                static_tokens: args
                    .tokens
                    .iter()
                    .filter(|t| !t.is_empty())
                    .cloned()
                    .collect(),
                token_ttl: Duration::from_secs(args.token_ttl.max(1)),
            },
        },
    };
    let tls = options.tls.is_some();
    serve(
        options,
        |addr, http| {
            // lines on stdout that scripts (and tests) wait for: the HTTP side's first
            if let Some(http) = http {
                println!("framefusion HTTP endpoint listening on http://{http}");
            }
            println!(
                "framefusion Flight SQL server listening on {}://{addr}",
                if tls { "grpc+tls" } else { "grpc" }
            );
            let _ = std::io::stdout().flush();
        },
        crate::shutdown_signal(),
    )
    .await
    .map_err(|e| CliError::Usage(e.to_string()))
}
