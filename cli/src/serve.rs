//! `framefusion serve`: the Arrow Flight SQL server.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use framefusion_console::ConsoleOptions;
use framefusion_flight_server::http::ExtraRoutes;
use framefusion_flight_server::{AuthConfig, ServeOptions, ServiceOptions, serve};

use crate::CliError;

/// Arguments of `framefusion serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on (port 0 picks a free port; the address is printed).
    #[arg(long, default_value = "127.0.0.1:50060")]
    bind: SocketAddr,

    /// A Ballista cluster, [NAME=]df://host:port (repeatable): the web console submits
    /// runs to any of them by name; Flight SQL and HTTP SQL statements run on the first.
    #[arg(long = "cluster", value_name = "[NAME=]URL")]
    clusters: Vec<String>,

    /// A folder or s3:// prefix of manifests the web console shows (a manifest, or a
    /// folder of them; repeatable); the console's runs without an output go under the
    /// first.
    #[arg(long = "runs", value_name = "LOCATION")]
    runs: Vec<String>,

    /// Seconds a console run's lease lasts unless this server renews it: the first
    /// --runs location records every run before it starts, and a server takes over a run
    /// whose lease expired (this one after a restart, or another sharing the location).
    #[arg(
        long,
        value_name = "SECONDS",
        env = "FRAMEFUSION_RUN_LEASE",
        default_value_t = 30
    )]
    run_lease: u64,

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
    /// is refused. (Or comma-separated in FRAMEFUSION_ALLOW_ROOTS, which executors read
    /// too.)
    #[arg(
        long = "allow-root",
        value_name = "LOCATION",
        env = "FRAMEFUSION_ALLOW_ROOTS",
        value_delimiter = ',',
        required = true
    )]
    allowed_roots: Vec<String>,

    /// PEM certificate to serve TLS with (needs --tls-key).
    #[arg(long, value_name = "PEM", requires = "tls_key")]
    tls_cert: Option<PathBuf>,

    /// PEM private key of --tls-cert.
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    tls_key: Option<PathBuf>,

    /// Also serve HTTP on this address: the web console (`/`) and its JSON API, a JSON
    /// SQL API (`/api/login`, `/api/sql`), `/metrics` (Prometheus) and `/healthz` (port 0
    /// picks a free port; the address is printed).
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
    let clusters = named_clusters(&args.clusters)?;
    let console = ConsoleOptions {
        runs: args.runs.clone(),
        clusters: clusters.clone(),
        run_lease: Some(Duration::from_secs(args.run_lease.max(1))),
    };
    let options = ServeOptions {
        bind: args.bind,
        tls: args.tls_cert.clone().zip(args.tls_key.clone()),
        http: args.http,
        http_routes: Some(ExtraRoutes(Arc::new(move |service| {
            framefusion_console::routes(service, console.clone())
        }))),
        allowed_roots: args.allowed_roots.clone(),
        service: ServiceOptions {
            cluster: clusters.first().map(|(_, url)| url.clone()),
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

/// `--cluster [NAME=]URL` values by name: an unnamed one is `cluster` (`cluster-2`, ... when
/// there are several).
fn named_clusters(values: &[String]) -> Result<Vec<(String, String)>, CliError> {
    let mut named: Vec<(String, String)> = Vec::new();
    for (i, value) in values.iter().enumerate() {
        let (name, url) = match value.split_once('=') {
            Some((name, url)) if !name.contains("://") => (name.trim().to_owned(), url.trim()),
            _ => (
                if i == 0 {
                    "cluster".to_owned()
                } else {
                    format!("cluster-{}", i + 1)
                },
                value.trim(),
            ),
        };
        if name.is_empty() || name == framefusion_console::EMBEDDED {
            return Err(CliError::Usage(format!(
                "--cluster '{value}': name it NAME=df://host:port, NAME not empty nor '{}'",
                framefusion_console::EMBEDDED
            )));
        }
        if named.iter().any(|(n, _)| *n == name) {
            return Err(CliError::Usage(format!(
                "--cluster '{value}': the name '{name}' is given twice"
            )));
        }
        named.push((name, url.to_owned()));
    }
    Ok(named)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clusters_are_named() {
        let got = named_clusters(&[
            "df://a:1".to_owned(),
            "gpu=df://b:2".to_owned(),
            "df://c:3".to_owned(),
        ])
        .ok();
        assert_eq!(
            got,
            Some(vec![
                ("cluster".to_owned(), "df://a:1".to_owned()),
                ("gpu".to_owned(), "df://b:2".to_owned()),
                ("cluster-3".to_owned(), "df://c:3".to_owned()),
            ])
        );
        assert!(named_clusters(&["a=df://x:1".to_owned(), "a=df://y:2".to_owned()]).is_err());
        assert!(named_clusters(&["embedded=df://x:1".to_owned()]).is_err());
    }
}
