//! Object storage: `s3://` locations, the stores that serve them, and presigned read URLs.
//!
//! A video in S3 (or an S3-compatible store: MinIO, OSS, Ceph, ...) is never downloaded
//! whole: ffmpeg reads it through its own HTTP protocol from a presigned `GET` URL, with
//! range requests for exactly the bytes probing and decoding need (the header and index,
//! then the packets it decodes).
//!
//! Where a store is and how to sign in comes, in order of precedence, from
//!
//! 1. the `aws.*` options of a table (`OPTIONS ('aws.endpoint' 'http://127.0.0.1:9000',
//!    'aws.region' 'us-east-1', 'aws.access_key_id' '...', 'aws.secret_access_key' '...')`),
//! 2. the usual AWS environment variables of the process (`AWS_ACCESS_KEY_ID`,
//!    `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION`/`AWS_DEFAULT_REGION`,
//!    `AWS_ENDPOINT_URL`/`AWS_ENDPOINT`, `AWS_ALLOW_HTTP`, ...).
//!
//! Every key `object_store`'s S3 builder accepts is accepted after the `aws.` prefix. An
//! `http://` endpoint allows plain HTTP by itself (an explicit `aws.allow_http` wins).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use object_store::aws::{AmazonS3, AmazonS3Builder, AmazonS3ConfigKey};
use object_store::path::Path as ObjectPath;
use object_store::signer::Signer;
use object_store::{ClientConfigKey, RetryConfig};

use framefusion_common::datafusion_common::config::ConfigOptions;
use framefusion_common::shared::Shared;

use crate::MediaError;

/// The prefix of object-store options in a table's `OPTIONS`.
pub const OPTION_PREFIX: &str = "aws.";

/// How long a presigned read URL stays valid. ffmpeg reuses the URL for every range
/// request of one file, so this bounds how long one file may take to decode.
pub const SIGNED_URL_TTL: Duration = Duration::from_secs(6 * 3600);

/// Object-store options (`aws.*` keys) of a table, on top of the environment's.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct StorageOptions(BTreeMap<String, String>);

impl StorageOptions {
    /// Whether `key` is an object-store option (starts with `aws.`).
    pub fn is_storage_key(key: &str) -> bool {
        key.starts_with(OPTION_PREFIX)
    }

    /// Adds an option after checking that the S3 client knows its key.
    pub fn insert(&mut self, key: &str, value: &str) -> Result<(), MediaError> {
        let name = key.strip_prefix(OPTION_PREFIX).unwrap_or(key);
        if name.parse::<AmazonS3ConfigKey>().is_err() {
            return Err(MediaError::Option(format!(
                "unknown object store option '{key}'; use aws.endpoint, aws.region, aws.access_key_id, aws.secret_access_key, aws.session_token, aws.allow_http or another key of object_store's S3 client after 'aws.'"
            )));
        }
        self.0
            .insert(format!("{OPTION_PREFIX}{name}"), value.to_owned());
        Ok(())
    }

    /// Whether no option is set.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The options, `aws.` keys in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

/// An object (or a prefix) in an S3 bucket: `s3://bucket/key`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct S3Location {
    /// The bucket name.
    pub bucket: String,
    /// The object key or prefix, without a leading slash (may be empty: the whole bucket).
    pub key: String,
}

impl S3Location {
    /// Parses `s3://bucket/key` (also `s3a://`).
    pub fn parse(uri: &str) -> Result<Self, MediaError> {
        let rest = uri
            .strip_prefix("s3://")
            .or_else(|| uri.strip_prefix("s3a://"))
            .ok_or_else(|| MediaError::UnsupportedUri {
                uri: uri.to_owned(),
                reason: "not an s3:// URI".to_owned(),
            })?;
        let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(MediaError::UnsupportedUri {
                uri: uri.to_owned(),
                reason: "no bucket name; write s3://bucket/prefix/".to_owned(),
            });
        }
        Ok(Self {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
        })
    }

    /// The object path of the key.
    pub fn path(&self) -> Result<ObjectPath, MediaError> {
        ObjectPath::parse(self.key.trim_end_matches('/')).map_err(|e| MediaError::UnsupportedUri {
            uri: self.uri(),
            reason: format!("not a valid object key: {e}"),
        })
    }

    /// The canonical URI, `s3://bucket/key`.
    pub fn uri(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.key)
    }

    /// The URI of another object of the same bucket.
    pub fn with_key(&self, key: &str) -> Self {
        Self {
            bucket: self.bucket.clone(),
            key: key.to_owned(),
        }
    }
}

/// The S3 clients of one runtime, by bucket and options: one client per bucket and
/// options, so that its HTTP connections and fetched credentials are reused. A runtime
/// keeps its set in its [`Shared`] handles ([`S3Clients::of`]); the engine's object-store
/// registry serves tables from the same set. Cloning shares the set.
#[derive(Debug, Clone, Default)]
pub struct S3Clients {
    clients: Arc<Mutex<ClientMap>>,
}

/// S3 clients by bucket and options.
type ClientMap = HashMap<(String, StorageOptions), Arc<AmazonS3>>;

impl S3Clients {
    /// The clients of the runtime whose session `config` is (a new, empty set for this
    /// call when the configuration carries no [`Shared`] handles).
    pub fn of(config: &ConfigOptions) -> Self {
        Self::in_shared(&Shared::of(config))
    }

    /// The clients kept in `shared`.
    pub fn in_shared(shared: &Shared) -> Self {
        Self::clone(&shared.slot::<Self>())
    }

    /// The client for `bucket` with `options` over the environment's settings.
    pub fn client(
        &self,
        bucket: &str,
        options: &StorageOptions,
    ) -> Result<Arc<AmazonS3>, MediaError> {
        let key = (bucket.to_owned(), options.clone());
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(client) = clients.get(&key) {
            return Ok(Arc::clone(client));
        }
        let client = Arc::new(build_store(bucket, options)?);
        clients.insert(key, Arc::clone(&client));
        Ok(client)
    }

    /// Whether `self` and `other` are the same set.
    pub fn same_as(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.clients, &other.clients)
    }
}

fn build_store(bucket: &str, options: &StorageOptions) -> Result<AmazonS3, MediaError> {
    let client = |key: ClientConfigKey| AmazonS3ConfigKey::Client(key);
    let mut builder = AmazonS3Builder::from_env()
        .with_bucket_name(bucket)
        .with_config(client(ClientConfigKey::ConnectTimeout), "5s")
        .with_config(client(ClientConfigKey::Timeout), "60s");
    for (key, value) in options.iter() {
        let name = key.strip_prefix(OPTION_PREFIX).unwrap_or(key);
        let config_key = name
            .parse::<AmazonS3ConfigKey>()
            .map_err(|e| MediaError::Option(format!("unknown object store option '{key}': {e}")))?;
        builder = builder.with_config(config_key, value);
    }
    let http_endpoint = builder
        .get_config_value(&AmazonS3ConfigKey::Endpoint)
        .is_some_and(|e| e.starts_with("http://"));
    let allow_http_given = options.iter().any(|(k, _)| k.ends_with("allow_http"))
        || std::env::var_os("AWS_ALLOW_HTTP").is_some();
    if http_endpoint && !allow_http_given {
        builder = builder.with_config(client(ClientConfigKey::AllowHttp), "true");
    }
    builder
        .with_retry(client_retry())
        .build()
        .map_err(|e| MediaError::Option(format!("cannot configure S3 for bucket '{bucket}': {e}")))
}

/// The retries of every object-store client (S3 here, GCS and Azure for tables): three,
/// within 20 seconds, so that an unreachable store fails a query in seconds, not minutes.
pub fn client_retry() -> RetryConfig {
    RetryConfig {
        max_retries: 3,
        retry_timeout: Duration::from_secs(20),
        ..RetryConfig::default()
    }
}

/// Turns an object-store failure on `uri` into an error that says what to do.
pub fn storage_error(uri: &str, e: &object_store::Error) -> MediaError {
    use crate::code::ErrorCode::{NotFound, PermissionDenied, Unavailable};
    use object_store::Error as E;
    // the one place a store's answer is read: object_store reports listing and request
    // failures as generic errors carrying the server's text; from here on the code says
    let (message, code) = match e {
        E::NotFound { .. } => (
            "no such bucket, prefix or object; check the location".to_owned(),
            NotFound,
        ),
        E::PermissionDenied { source, .. } | E::Unauthenticated { source, .. } => {
            (denied(uri, &source.to_string()), PermissionDenied)
        }
        other => {
            // listing errors arrive as generic errors carrying the server's answer
            let chain = error_chain(other);
            let has = |needles: &[&str]| needles.iter().any(|n| chain.contains(n));
            if has(&["NoSuchBucket", "ContainerNotFound", "bucket does not exist"]) {
                (
                    "no such bucket (or container); check its name".to_owned(),
                    NotFound,
                )
            } else if has(&[
                "403 Forbidden",
                "401 Unauthorized",
                "AccessDenied",
                "SignatureDoesNotMatch",
                "InvalidAccessKeyId",
                "AuthenticationFailed",
                "AuthorizationFailure",
            ]) {
                (denied(uri, &chain), PermissionDenied)
            } else if has(&["404 Not Found", "NoSuchKey"]) {
                (
                    "no such prefix or object; check the location".to_owned(),
                    NotFound,
                )
            } else {
                (
                    format!(
                        "the object store failed: {chain}; check that the endpoint ({}) is reachable",
                        endpoint_setting(uri)
                    ),
                    Unavailable,
                )
            }
        }
    };
    let transient = code == Unavailable;
    MediaError::Storage {
        uri: uri.to_owned(),
        message,
        transient,
        code,
    }
}

fn denied(uri: &str, detail: &str) -> String {
    let credentials = match scheme_of(uri).as_str() {
        "gs" => {
            "GOOGLE_SERVICE_ACCOUNT (a service account file) or GOOGLE_APPLICATION_CREDENTIALS, or OPTIONS ('gcp.service_account_path' '...')"
        }
        "az" | "abfs" | "abfss" | "azure" => {
            "AZURE_STORAGE_ACCOUNT_NAME and AZURE_STORAGE_ACCOUNT_KEY (or AZURE_STORAGE_SAS_TOKEN), or OPTIONS ('azure.account_name' '...', 'azure.access_key' '...')"
        }
        _ => {
            "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or OPTIONS ('aws.access_key_id' '...', 'aws.secret_access_key' '...')"
        }
    };
    format!("access denied ({detail}); check the credentials: {credentials}")
}

/// The setting that names the endpoint of the store of `uri`.
fn endpoint_setting(uri: &str) -> &'static str {
    match scheme_of(uri).as_str() {
        "gs" => "gcp.base_url or GOOGLE_BASE_URL",
        "az" | "abfs" | "abfss" | "azure" => "azure.endpoint or AZURE_STORAGE_ENDPOINT",
        _ => "aws.endpoint or AWS_ENDPOINT_URL",
    }
}

fn scheme_of(uri: &str) -> String {
    uri.split_once("://")
        .map_or_else(String::new, |(scheme, _)| scheme.to_ascii_lowercase())
}

/// An error and its sources, joined (reqwest hides the cause of a failed connection in
/// its sources).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// Runs an object-store future to completion from synchronous code on a blocking thread
/// (a UDF body or a `spawn_blocking` task) of a multi-threaded runtime, or outside any
/// runtime.
pub fn block_on<F: std::future::Future>(future: F) -> Result<F::Output, MediaError> {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == RuntimeFlavor::MultiThread => {
            Ok(tokio::task::block_in_place(|| handle.block_on(future)))
        }
        Ok(_) => Err(MediaError::Option(
            "object-store writes from a UDF need a multi-threaded tokio runtime".to_owned(),
        )),
        Err(_) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map(|runtime| runtime.block_on(future))
            .map_err(|e| MediaError::Option(format!("cannot start a runtime: {e}"))),
    }
}

/// A presigned `GET` URL for one object, valid for [`SIGNED_URL_TTL`].
///
/// Signing is local computation with static credentials; with credentials fetched from a
/// provider it may wait for that provider, so call it off async I/O threads.
pub fn presigned_get(
    location: &S3Location,
    options: &StorageOptions,
    clients: &S3Clients,
) -> Result<String, MediaError> {
    let store = clients.client(&location.bucket, options)?;
    let path = location.path()?;
    let uri = location.uri();
    futures::executor::block_on(store.signed_url(http::Method::GET, &path, SIGNED_URL_TTL))
        .map(String::from)
        .map_err(|e| storage_error(&uri, &e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_s3_uris() {
        let l = S3Location::parse("s3://corpus/raw/a.mp4").ok();
        assert_eq!(
            l.as_ref().map(|l| (l.bucket.as_str(), l.key.as_str())),
            Some(("corpus", "raw/a.mp4"))
        );
        assert_eq!(
            S3Location::parse("s3://corpus").ok().map(|l| l.uri()),
            Some("s3://corpus/".to_owned())
        );
        assert!(S3Location::parse("s3:///x").is_err());
    }

    #[test]
    fn options_are_checked() {
        let mut o = StorageOptions::default();
        assert!(o.insert("aws.endpoint", "http://127.0.0.1:1").is_ok());
        assert!(o.insert("aws.region", "eu-west-1").is_ok());
        let err = o.insert("aws.colour", "red").err().map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("unknown object store option 'aws.colour'")));
        assert_eq!(o.iter().count(), 2);
    }

    #[test]
    fn signs_urls_with_static_credentials() -> Result<(), MediaError> {
        let mut o = StorageOptions::default();
        o.insert("aws.endpoint", "http://127.0.0.1:9")?;
        o.insert("aws.access_key_id", "AKIDEXAMPLE")?;
        o.insert("aws.secret_access_key", "secret")?;
        o.insert("aws.region", "us-east-1")?;
        let url = presigned_get(
            &S3Location::parse("s3://b/dir/a b.mp4")?,
            &o,
            &S3Clients::default(),
        )?;
        assert!(
            url.starts_with("http://127.0.0.1:9/b/dir/a%20b.mp4?"),
            "{url}"
        );
        assert!(url.contains("X-Amz-Signature="), "{url}");
        Ok(())
    }
}
