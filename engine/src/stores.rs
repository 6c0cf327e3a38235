//! Object stores for every table kind: one registry per session that serves `s3://`
//! locations (AWS and S3-compatible stores: MinIO, OSS, Ceph, ...), `gs://` (Google Cloud
//! Storage) and `az://` (Azure Blob Storage; also `abfs://`, `abfss://`, `azure://`) to
//! Parquet, CSV, JSON and Arrow tables, URL tables (`SELECT * FROM 's3://bucket/run-42/'`)
//! and `COPY ... TO`, through `object_store`'s own clients. Each store is configured by:
//!
//! 1. a table's (or a `COPY`'s) options in the store's namespace, registered for its
//!    bucket when the table is created or the `COPY` planned: `aws.*` for `s3://`
//!    (`OPTIONS ('aws.endpoint' 'http://...', 'aws.access_key_id' '...', ...)`, the keys
//!    the `VIDEO` tables take: [`framefusion_media::storage`]), `gcp.*` for `gs://`
//!    (`gcp.service_account_path`, `gcp.base_url`, ...), `azure.*` for `az://`
//!    (`azure.account_name`, `azure.access_key`, `azure.endpoint`, ...); every key of
//!    `object_store`'s S3, GCS or Azure client is accepted after its namespace;
//! 2. otherwise the process's environment (`AWS_*`, `GOOGLE_*`, `AZURE_*`), read when a
//!    bucket is first used.
//!
//! The options of the last table or `COPY` that named a bucket serve every later use of
//! that bucket in the session (as in datafusion-cli); on a cluster they travel with each
//! query ([`StoreSettings`]). A location no store serves is refused with a message that
//! names it and the schemes framefusion reads. (`VIDEO` tables and manifests read and
//! write local paths and `s3://`.)
//!
//! The clients (one per bucket and options, with their connection pools and credentials)
//! are the runtime's ([`StoreClients`], kept in its `framefusion_common::shared::Shared`
//! handles): the registry of every session of one runtime serves from them, and the
//! `VIDEO` tables, operators and manifests of those sessions read S3 with the same ones.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::catalog::{
    DynamicFileCatalog, Session, TableProvider, TableProviderFactory, UrlTableFactory,
};
use datafusion::common::config::{ConfigEntry, ConfigExtension, ExtensionOptions};
use datafusion::datasource::listing::{
    ListingTable, ListingTableConfig, ListingTableConfigExt, ListingTableUrl,
};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::object_store::{DefaultObjectStoreRegistry, ObjectStoreRegistry};
use datafusion::execution::session_state::SessionState;
use datafusion::logical_expr::CreateExternalTable;
use datafusion::prelude::SessionContext;
use framefusion_media::storage::{S3Clients, S3Location, StorageOptions};
use futures::TryStreamExt;
use object_store::ObjectStore;
use url::Url;

/// The kinds of object store a table location may name, by URL scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Provider {
    /// `s3://`, `s3a://`: AWS S3 and S3-compatible stores.
    S3,
    /// `gs://`: Google Cloud Storage.
    Gcs,
    /// `az://`, `abfs://`, `abfss://`, `azure://`: Azure Blob Storage.
    Azure,
}

impl Provider {
    const ALL: [Self; 3] = [Self::S3, Self::Gcs, Self::Azure];

    fn of_scheme(scheme: &str) -> Option<Self> {
        match scheme.to_ascii_lowercase().as_str() {
            "s3" | "s3a" => Some(Self::S3),
            "gs" => Some(Self::Gcs),
            "az" | "abfs" | "abfss" | "azure" => Some(Self::Azure),
            _ => None,
        }
    }

    /// The namespace of its options (`aws.endpoint`, `gcp.base_url`, `azure.account_name`).
    fn namespace(self) -> &'static str {
        match self {
            Self::S3 => "aws",
            Self::Gcs => "gcp",
            Self::Azure => "azure",
        }
    }

    /// The locations it serves, for messages.
    fn locations(self) -> &'static str {
        match self {
            Self::S3 => "s3:// locations",
            Self::Gcs => "gs:// locations",
            Self::Azure => "az:// (abfs://, abfss://) locations",
        }
    }

    /// The provider whose namespace `key` is in, and the key's name in it.
    fn of_key(key: &str) -> Option<(Self, &str)> {
        Self::ALL.into_iter().find_map(|p| {
            key.strip_prefix(p.namespace())
                .and_then(|rest| rest.strip_prefix('.'))
                .map(|name| (p, name))
        })
    }

    /// Checks that its client knows the option `name` (without the namespace).
    fn check_key(self, name: &str) -> Result<()> {
        let known = match self {
            Self::S3 => {
                return StorageOptions::default()
                    .insert(&format!("aws.{name}"), "")
                    .map_err(external);
            }
            Self::Gcs => name.parse::<object_store::gcp::GoogleConfigKey>().is_ok(),
            Self::Azure => name.parse::<object_store::azure::AzureConfigKey>().is_ok(),
        };
        if known {
            return Ok(());
        }
        let examples = match self {
            Self::Gcs => {
                "gcp.service_account_path, gcp.service_account_key, gcp.application_credentials, gcp.base_url"
            }
            _ => {
                "azure.account_name, azure.access_key, azure.sas_token, azure.endpoint, azure.use_emulator"
            }
        };
        Err(DataFusionError::Configuration(format!(
            "unknown object store option '{}.{name}'; use {examples} or another key of object_store's {} client after '{}.'",
            self.namespace(),
            if self == Self::Gcs { "GCS" } else { "Azure" },
            self.namespace()
        )))
    }
}

/// The object-store options of a location, keys with their namespace (`aws.endpoint`,
/// `gcp.base_url`, `azure.account_name`), each checked against its client's keys.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct LocationOptions(std::collections::BTreeMap<String, String>);

impl LocationOptions {
    /// The store options among a table's or a `COPY`'s `options` (other keys left alone).
    fn among(options: &HashMap<String, String>) -> Result<Self> {
        let mut out = Self::default();
        for (key, value) in options {
            if let Some((provider, name)) = Provider::of_key(key) {
                provider.check_key(name)?;
                out.0.insert(key.clone(), value.clone());
            }
        }
        Ok(out)
    }

    /// The names and values of `provider`'s options.
    fn of(&self, provider: Provider) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().filter_map(move |(key, value)| {
            Provider::of_key(key)
                .filter(|(p, _)| *p == provider)
                .map(|(_, name)| (name, value.as_str()))
        })
    }

    /// The `aws.*` options, as the S3 client of the `VIDEO` tables takes them.
    fn aws(&self) -> Result<StorageOptions> {
        let mut out = StorageOptions::default();
        for (name, value) in self.of(Provider::S3) {
            out.insert(&format!("aws.{name}"), value)
                .map_err(external)?;
        }
        Ok(out)
    }

    /// The providers of its keys.
    fn providers(&self) -> Vec<Provider> {
        let mut out: Vec<Provider> = self
            .0
            .keys()
            .filter_map(|k| Provider::of_key(k).map(|(p, _)| p))
            .collect();
        out.dedup();
        out
    }
}

/// The session's object-store registry: the local file system, stores registered by
/// tables with store options, and `s3://`, `gs://` and `az://` buckets resolved from the
/// environment on first use.
#[derive(Debug, Default)]
pub struct StoreRegistry {
    known: DefaultObjectStoreRegistry,
    clients: StoreClients,
}

/// The methods of [`ExtensionOptions`] that every `Clone` extension writes the same way.
macro_rules! clone_extension_methods {
    () => {
        fn as_any(&self) -> &dyn std::any::Any {
            self
        }

        fn as_any_mut(&mut self) -> &mut dyn std::any::Any {
            self
        }

        fn cloned(&self) -> Box<dyn ExtensionOptions> {
            Box::new(self.clone())
        }
    };
}

/// The store options of the buckets a session's tables and `COPY`s named, in the
/// session's configuration (`framefusion_stores.SCHEME://BUCKET` = the options as JSON),
/// so that on a cluster they travel with every query to the scheduler and the executors,
/// whose registries serve those buckets with them ([`StoreRegistry::for_config`]).
#[derive(Debug, Clone, Default)]
pub struct StoreSettings {
    buckets: std::collections::BTreeMap<String, LocationOptions>,
}

impl StoreSettings {
    /// Records `options` for the bucket of `url`.
    fn insert(&mut self, url: &Url, options: LocationOptions) {
        self.buckets.insert(store_key(url), options);
    }
}

/// `scheme://bucket` of a location: what one store serves.
fn store_key(url: &Url) -> String {
    format!("{}://{}", url.scheme(), url.host_str().unwrap_or_default())
}

impl ConfigExtension for StoreSettings {
    const PREFIX: &'static str = "framefusion_stores";
}

impl ExtensionOptions for StoreSettings {
    clone_extension_methods!();

    fn set(&mut self, key: &str, value: &str) -> Result<()> {
        let options: LocationOptions = serde_json::from_str(value).map_err(|e| {
            DataFusionError::Configuration(format!(
                "framefusion_stores.{key} must be a JSON object of aws.*, gcp.* or azure.* options: {e}"
            ))
        })?;
        self.buckets.insert(key.to_owned(), options);
        Ok(())
    }

    fn entries(&self) -> Vec<ConfigEntry> {
        self.buckets
            .iter()
            .map(|(bucket, options)| ConfigEntry {
                key: format!("{}.{bucket}", Self::PREFIX),
                value: serde_json::to_string(options).ok(),
                description: "the store options of a bucket the session's tables named",
            })
            .collect()
    }
}

impl StoreRegistry {
    /// A registry with the local file system and nothing else yet, whose buckets are
    /// served by `clients`.
    pub fn new(clients: StoreClients) -> Self {
        let registry = Self {
            known: DefaultObjectStoreRegistry::default(),
            clients,
        };
        if let Ok(url) = Url::parse("file://") {
            registry.register_store(&url, Arc::new(object_store::local::LocalFileSystem::new()));
        }
        registry
    }

    /// A registry that serves the buckets recorded in `config`'s [`StoreSettings`] with
    /// their options (an executor's or the scheduler's, for a client's query).
    /// Its clients are the runtime's, from `config`'s shared handles.
    pub fn for_config(config: &datafusion::prelude::SessionConfig) -> Self {
        let registry = Self::new(StoreClients::of(config.options()));
        if let Some(settings) = config.options().extensions.get::<StoreSettings>() {
            for (bucket, options) in &settings.buckets {
                let store = Url::parse(&format!("{bucket}/"))
                    .ok()
                    .and_then(|url| Some((registry.clients.store(&url, options).ok()?, url)));
                match store {
                    Some((store, url)) => {
                        registry.register_store(&url, store);
                    }
                    None => log::warn!("cannot configure the store of '{bucket}'"),
                }
            }
        }
        registry
    }
}

/// A store whose listings leave out what is not data: objects with a path segment, below
/// the listed prefix, that starts with `_` or `.` (a manifest's `_SUCCESS`, `_tmp/` and
/// `_framefusion/`, Spark's and Hive's markers, hidden files), as Spark and Hive read
/// folders. Without it a Parquet table over a manifest folder read `_SUCCESS` as a
/// Parquet file ("Corrupt footer"). Reads, writes and deletes pass through unchanged.
#[derive(Debug)]
struct DataOnly(Arc<dyn ObjectStore>);

impl std::fmt::Display for DataOnly {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DataOnly({})", self.0)
    }
}

/// Whether `object` is data under `prefix` (see [`DataOnly`]).
fn is_data_below(
    prefix: Option<&object_store::path::Path>,
    object: &object_store::path::Path,
) -> bool {
    let skip = prefix.map_or(0, |p| p.parts().count());
    object
        .parts()
        .skip(skip)
        .all(|part| !part.as_ref().starts_with(['_', '.']))
}

#[async_trait::async_trait]
impl ObjectStore for DataOnly {
    async fn put_opts(
        &self,
        location: &object_store::path::Path,
        payload: object_store::PutPayload,
        opts: object_store::PutOptions,
    ) -> object_store::Result<object_store::PutResult> {
        self.0.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &object_store::path::Path,
        opts: object_store::PutMultipartOptions,
    ) -> object_store::Result<Box<dyn object_store::MultipartUpload>> {
        self.0.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &object_store::path::Path,
        options: object_store::GetOptions,
    ) -> object_store::Result<object_store::GetResult> {
        self.0.get_opts(location, options).await
    }

    fn delete_stream(
        &self,
        locations: futures::stream::BoxStream<
            'static,
            object_store::Result<object_store::path::Path>,
        >,
    ) -> futures::stream::BoxStream<'static, object_store::Result<object_store::path::Path>> {
        self.0.delete_stream(locations)
    }

    fn list(
        &self,
        prefix: Option<&object_store::path::Path>,
    ) -> futures::stream::BoxStream<'static, object_store::Result<object_store::ObjectMeta>> {
        let under = prefix.cloned();
        Box::pin(self.0.list(prefix).try_filter(move |meta| {
            std::future::ready(is_data_below(under.as_ref(), &meta.location))
        }))
    }

    async fn list_with_delimiter(
        &self,
        prefix: Option<&object_store::path::Path>,
    ) -> object_store::Result<object_store::ListResult> {
        let mut listed = self.0.list_with_delimiter(prefix).await?;
        listed
            .objects
            .retain(|o| is_data_below(prefix, &o.location));
        listed.common_prefixes.retain(|p| is_data_below(prefix, p));
        Ok(listed)
    }

    async fn copy_opts(
        &self,
        from: &object_store::path::Path,
        to: &object_store::path::Path,
        options: object_store::CopyOptions,
    ) -> object_store::Result<()> {
        self.0.copy_opts(from, to, options).await
    }

    async fn rename_opts(
        &self,
        from: &object_store::path::Path,
        to: &object_store::path::Path,
        options: object_store::RenameOptions,
    ) -> object_store::Result<()> {
        self.0.rename_opts(from, to, options).await
    }
}

impl ObjectStoreRegistry for StoreRegistry {
    fn register_store(
        &self,
        url: &Url,
        store: Arc<dyn ObjectStore>,
    ) -> Option<Arc<dyn ObjectStore>> {
        self.known.register_store(url, Arc::new(DataOnly(store)))
    }

    fn deregister_store(&self, url: &Url) -> Result<Arc<dyn ObjectStore>> {
        self.known.deregister_store(url)
    }

    fn get_store(&self, url: &Url) -> Result<Arc<dyn ObjectStore>> {
        if let Ok(store) = self.known.get_store(url) {
            return Ok(store);
        }
        if Provider::of_scheme(url.scheme()).is_none() {
            return Err(DataFusionError::Configuration(format!(
                "no object store serves '{url}' (scheme '{}'); framefusion reads local paths, s3:// (AWS or S3-compatible: aws.* options or the AWS_* environment), gs:// (gcp.* or GOOGLE_*) and az:// (azure.* or AZURE_*) locations",
                url.scheme()
            )));
        }
        let store: Arc<dyn ObjectStore> = Arc::new(DataOnly(
            self.clients.store(url, &LocationOptions::default())?,
        ));
        self.known.register_store(url, Arc::clone(&store));
        Ok(store)
    }
}

/// The object-store clients of one runtime: S3's ([`S3Clients`], which the `VIDEO`
/// tables and operators read with too) and GCS's and Azure's, one per bucket and options,
/// so that their connections are reused. Kept in the runtime's shared handles
/// ([`StoreClients::of`]); cloning shares them.
#[derive(Debug, Clone, Default)]
pub struct StoreClients {
    s3: S3Clients,
    cloud: Arc<CloudClients>,
}

/// GCS and Azure clients by bucket and options.
#[derive(Debug, Default)]
struct CloudClients(std::sync::Mutex<HashMap<(String, LocationOptions), Arc<dyn ObjectStore>>>);

impl StoreClients {
    /// The clients of the runtime whose session `config` is (new, empty ones for this
    /// call when the configuration carries no shared handles).
    pub fn of(config: &datafusion::common::config::ConfigOptions) -> Self {
        let shared = framefusion_common::shared::Shared::of(config);
        Self {
            s3: S3Clients::in_shared(&shared),
            cloud: shared.slot::<CloudClients>(),
        }
    }

    /// The store of the bucket of `url` with `options` over the environment's settings.
    fn store(&self, url: &Url, options: &LocationOptions) -> Result<Arc<dyn ObjectStore>> {
        let provider = Provider::of_scheme(url.scheme()).ok_or_else(|| {
            DataFusionError::Configuration(format!("no object store serves '{url}'"))
        })?;
        if provider == Provider::S3 {
            let location = S3Location::parse(url.as_str()).map_err(external)?;
            return Ok(self
                .s3
                .client(&location.bucket, &options.aws()?)
                .map_err(external)?);
        }
        let key = (store_key(url), options.clone());
        let mut stores = self.cloud.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(store) = stores.get(&key) {
            return Ok(Arc::clone(store));
        }
        let built = if provider == Provider::Gcs {
            gcs_store(url, options)
        } else {
            azure_store(url, options)
        };
        let store = built.map_err(|e| {
            DataFusionError::Configuration(format!(
                "cannot configure the store of '{}': {e}; give its {}.* options or the {} environment",
                key.0,
                provider.namespace(),
                if provider == Provider::Gcs {
                    "GOOGLE_*"
                } else {
                    "AZURE_*"
                }
            ))
        })?;
        stores.insert(key, Arc::clone(&store));
        Ok(store)
    }
}

/// Whether plain HTTP must be allowed: the endpoint given is `http://` (an emulator's,
/// as the S3 client does) and no `allow_http` option says otherwise.
fn http_endpoint(endpoint: Option<String>, options: &LocationOptions, provider: Provider) -> bool {
    endpoint.is_some_and(|e| e.starts_with("http://"))
        && !options
            .of(provider)
            .any(|(name, _)| name.ends_with("allow_http"))
}

/// A GCS client from `object_store`'s builder: the `GOOGLE_*` environment, the bucket of
/// `url`, then the `gcp.*` options.
fn gcs_store(url: &Url, options: &LocationOptions) -> object_store::Result<Arc<dyn ObjectStore>> {
    use object_store::ClientConfigKey as C;
    use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey as K};
    let mut builder = GoogleCloudStorageBuilder::from_env()
        .with_url(url.as_str())
        .with_config(K::Client(C::ConnectTimeout), "5s")
        .with_config(K::Client(C::Timeout), "60s")
        .with_retry(framefusion_media::storage::client_retry());
    for (name, value) in options.of(Provider::Gcs) {
        builder = builder.with_config(name.parse()?, value);
    }
    if http_endpoint(
        builder.get_config_value(&K::BaseUrl),
        options,
        Provider::Gcs,
    ) {
        builder = builder.with_config(K::Client(C::AllowHttp), "true");
    }
    Ok(Arc::new(builder.build()?))
}

/// An Azure Blob Storage client from `object_store`'s builder: the `AZURE_*` environment,
/// the container (and account) of `url`, then the `azure.*` options.
fn azure_store(url: &Url, options: &LocationOptions) -> object_store::Result<Arc<dyn ObjectStore>> {
    use object_store::ClientConfigKey as C;
    use object_store::azure::{AzureConfigKey as K, MicrosoftAzureBuilder};
    let mut builder = MicrosoftAzureBuilder::from_env()
        .with_url(url.as_str())
        .with_config(K::Client(C::ConnectTimeout), "5s")
        .with_config(K::Client(C::Timeout), "60s")
        .with_retry(framefusion_media::storage::client_retry());
    for (name, value) in options.of(Provider::Azure) {
        builder = builder.with_config(name.parse()?, value);
    }
    if http_endpoint(
        builder.get_config_value(&K::Endpoint),
        options,
        Provider::Azure,
    ) {
        builder = builder.with_config(K::Client(C::AllowHttp), "true");
    }
    Ok(Arc::new(builder.build()?))
}

/// `error`, or when the object store failed on `location`, one line that names the
/// location and what to do (no such bucket, access denied, unreachable endpoint).
fn store_failure(location: &str, error: DataFusionError) -> DataFusionError {
    match error.find_root() {
        DataFusionError::ObjectStore(e) => {
            external(framefusion_media::storage::storage_error(location, e))
        }
        _ => error,
    }
}

fn external(e: framefusion_media::MediaError) -> DataFusionError {
    framefusion_common::code::external(e)
}

/// The URL of `location` and the store options among `options` (`aws.*`, `gcp.*`,
/// `azure.*`; other keys are left alone), when such options are given; options of a
/// store that does not serve the location are refused. Without options the registry
/// resolves the bucket from the environment when it is first used.
fn location_storage(
    location: &str,
    options: &HashMap<String, String>,
) -> Result<Option<(Url, LocationOptions)>> {
    let storage = LocationOptions::among(options)?;
    let providers = storage.providers();
    let Some(&given) = providers.first() else {
        return Ok(None);
    };
    let url = Url::parse(location).ok();
    let serves = url.as_ref().and_then(|u| Provider::of_scheme(u.scheme()));
    match (url, serves) {
        (Some(url), Some(provider)) if providers == [provider] => Ok(Some((url, storage))),
        _ => Err(DataFusionError::Configuration(format!(
            "{}.* options apply to {}; '{location}' is not one (drop the options or use such a location)",
            given.namespace(),
            given.locations()
        ))),
    }
}

/// Registers the store of `location` with the store options among `options` (`aws.*`,
/// `gcp.*`, `azure.*`; options of a store that does not serve the location are refused)
/// in the runtime of `state`, with its clients.
pub fn register_location(
    state: &dyn Session,
    location: &str,
    options: &HashMap<String, String>,
) -> Result<()> {
    if let Some((url, storage)) = location_storage(location, options)? {
        let store = StoreClients::of(state.config_options()).store(&url, &storage)?;
        state.runtime_env().register_object_store(&url, store);
    }
    Ok(())
}

/// A namespace of table options for one object store (`aws`, `gcp`, `azure`):
/// `OPTIONS ('aws.endpoint' '...')` on a Parquet, CSV, JSON or Arrow table or a `COPY` is
/// accepted and checked here (an unknown key is refused with the keys that exist), and
/// used by [`register_location`].
macro_rules! store_options {
    ($name:ident, $provider:expr, $prefix:literal) => {
        #[doc = concat!("The `", $prefix, "` namespace of table options.")]
        #[derive(Debug, Clone, Default)]
        pub struct $name {
            options: std::collections::BTreeMap<String, String>,
        }

        impl ConfigExtension for $name {
            const PREFIX: &'static str = $prefix;
        }

        impl ExtensionOptions for $name {
            clone_extension_methods!();

            fn set(&mut self, key: &str, value: &str) -> Result<()> {
                let name = key.strip_prefix(concat!($prefix, ".")).unwrap_or(key);
                $provider.check_key(name)?;
                self.options
                    .insert(format!("{}.{name}", $prefix), value.to_owned());
                Ok(())
            }

            fn entries(&self) -> Vec<ConfigEntry> {
                self.options
                    .iter()
                    .map(|(key, value)| ConfigEntry {
                        key: key.to_owned(),
                        value: Some(value.to_owned()),
                        description: "an object-store option of this table",
                    })
                    .collect()
            }
        }
    };
}

store_options!(AwsOptions, Provider::S3, "aws");
store_options!(GcpOptions, Provider::Gcs, "gcp");
store_options!(AzureOptions, Provider::Azure, "azure");

/// A file-format table factory (Parquet, CSV, JSON, Arrow, ...) that first registers the
/// store of the table's location with the table's store options.
#[derive(Debug)]
pub struct StoreAwareFactory {
    inner: Arc<dyn TableProviderFactory>,
}

impl StoreAwareFactory {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn TableProviderFactory>) -> Self {
        Self { inner }
    }
}

#[async_trait::async_trait]
impl TableProviderFactory for StoreAwareFactory {
    async fn create(
        &self,
        state: &dyn Session,
        cmd: &CreateExternalTable,
    ) -> Result<Arc<dyn TableProvider>> {
        for location in &cmd.locations {
            register_location(state, location, &cmd.options)?;
        }
        let provider = self
            .inner
            .create(state, cmd)
            .await
            .map_err(|e| store_failure(&cmd.locations.join(", "), e))?;
        Ok(with_options_in_definition(provider, cmd))
    }
}

/// `provider` (a listing table) with a definition that keeps the statement's `OPTIONS`
/// (DataFusion's rendering leaves them out): a table of the persistent catalog is rebuilt
/// in a later process with its format and store options, as a `VIDEO` table is.
fn with_options_in_definition(
    provider: Arc<dyn TableProvider>,
    cmd: &CreateExternalTable,
) -> Arc<dyn TableProvider> {
    let definition = cmd
        .definition
        .as_deref()
        .map(|d| framefusion_catalogs::video::definition_with_options(d, &cmd.options));
    let any = provider.as_ref() as &dyn std::any::Any;
    match any.downcast_ref::<ListingTable>() {
        Some(table) if definition.as_deref() != table.get_table_definition() => {
            Arc::new(table.clone().with_definition(definition))
        }
        _ => provider,
    }
}

/// A runtime whose object-store registry is a [`StoreRegistry`] for `config`.
pub fn runtime(
    config: &datafusion::prelude::SessionConfig,
) -> Result<Arc<datafusion::execution::runtime_env::RuntimeEnv>> {
    datafusion::execution::runtime_env::RuntimeEnvBuilder::new()
        .with_object_store_registry(Arc::new(StoreRegistry::for_config(config)))
        .build_arc()
}

/// Records the buckets of a `CREATE EXTERNAL TABLE` or `COPY` plan's store options in
/// `ctx`'s [`StoreSettings`] (for a cluster's processes), and registers a `COPY`'s store
/// (a table's is registered by its factory, [`StoreAwareFactory`]).
pub fn register_plan_stores(
    ctx: &SessionContext,
    plan: &datafusion::logical_expr::LogicalPlan,
) -> Result<()> {
    use datafusion::logical_expr::{DdlStatement, LogicalPlan};
    let (locations, options, copy): (Vec<&String>, _, _) = match plan {
        LogicalPlan::Copy(copy) => (vec![&copy.output_url], &copy.options, true),
        LogicalPlan::Ddl(DdlStatement::CreateExternalTable(cmd))
            if cmd.file_type != framefusion_catalogs::video::VIDEO_FILE_TYPE =>
        {
            (cmd.locations.iter().collect(), &cmd.options, false)
        }
        _ => return Ok(()),
    };
    for location in locations {
        let Some((url, storage)) = location_storage(location, options)? else {
            continue;
        };
        if copy {
            let store =
                StoreClients::of(ctx.state_ref().read().config_options()).store(&url, &storage)?;
            ctx.runtime_env().register_object_store(&url, store);
        }
        record_store(&mut ctx.state_ref().write(), &url, storage);
    }
    Ok(())
}

/// Records the store options of the definition `cmd` of a table of the persistent
/// catalog, rebuilt in this process, in `state`'s [`StoreSettings`]: its bucket's options
/// then travel to the cluster's processes, as those of a table created in the session do
/// ([`register_plan_stores`]).
pub fn record_table_stores(state: &mut SessionState, cmd: &CreateExternalTable) -> Result<()> {
    if cmd.file_type == framefusion_catalogs::video::VIDEO_FILE_TYPE {
        return Ok(()); // a VIDEO table's options travel with the table itself
    }
    for location in &cmd.locations {
        if let Some((url, storage)) = location_storage(location, &cmd.options)? {
            record_store(state, &url, storage);
        }
    }
    Ok(())
}

fn record_store(state: &mut SessionState, url: &Url, storage: LocationOptions) {
    if let Some(settings) = state
        .config_mut()
        .options_mut()
        .extensions
        .get_mut::<StoreSettings>()
    {
        settings.insert(url, storage);
    }
}

/// Gives every table factory of `state` but `VIDEO` (which reads its own options) the
/// stores of its tables' options, and adds the `aws`, `gcp` and `azure` namespaces of
/// table options.
pub fn install(state: &mut datafusion::execution::session_state::SessionState) {
    for (name, factory) in state.table_factories_mut().iter_mut() {
        if name != framefusion_catalogs::video::VIDEO_FILE_TYPE {
            *factory = Arc::new(StoreAwareFactory::new(Arc::clone(factory)));
        }
    }
    state.register_table_options_extension(AwsOptions::default());
    state.register_table_options_extension(GcpOptions::default());
    state.register_table_options_extension(AzureOptions::default());
}

/// The current state of a session, read when a URL table is resolved.
type StateSource = Box<dyn Fn() -> Option<SessionState> + Send + Sync>;

/// URL tables (`SELECT * FROM 's3://corpus/manifests/run-42/'`, `FROM 'out.parquet'`):
/// a file, or a folder whose files share a format, read as a table of that format, as
/// DataFusion's own URL tables do.
/// A folder's marker files and work in progress (names starting with `_` or `.`, such as
/// a manifest's `_SUCCESS` and `_tmp/`) are not data (the registry's stores leave them
/// out of listings), so a manifest folder reads as its published parts, also while its
/// run goes on. Unlike DataFusion's own URL tables, a location whose store refuses it (no
/// such bucket, no credentials) says so instead of "table not found".
#[derive(Default)]
pub struct UrlTables {
    state: std::sync::OnceLock<StateSource>,
}

impl std::fmt::Debug for UrlTables {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UrlTables")
    }
}

#[async_trait::async_trait]
impl UrlTableFactory for UrlTables {
    async fn try_new(&self, url: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        let Ok(table_url) = ListingTableUrl::parse(url) else {
            return Ok(None);
        };
        let Some(state) = self.state.get().and_then(|state| state()) else {
            return Ok(None);
        };
        let remote = table_url.scheme() != "file";
        // DataFusion's inference (format from the first data file's extension, partition
        // columns from `key=value` folders), its failures said plainly for remote locations
        let config = match ListingTableConfig::new(table_url)
            .infer_options(&state)
            .await
        {
            Ok(config) => config,
            Err(DataFusionError::Internal(m)) if remote && m.starts_with("No files for table") => {
                return Err(DataFusionError::Plan(format!(
                    "'{url}' holds no data files (a manifest whose run has not published a part yet, or a wrong prefix)"
                )));
            }
            Err(e) if remote => return Err(store_failure(url, e)),
            Err(_) => return Ok(None),
        };
        let config = config
            .infer_partitions_from_path(&state)
            .await?
            .infer_schema(&state)
            .await?;
        Ok(Some(Arc::new(ListingTable::try_new(config)?)))
    }
}

/// `ctx` with URL tables ([`UrlTables`]) over its catalogs.
pub fn enable_url_tables(ctx: SessionContext) -> SessionContext {
    let catalogs = Arc::clone(ctx.state().catalog_list());
    let factory = Arc::new(UrlTables::default());
    let session_id = ctx.session_id();
    let ctx: SessionContext = ctx
        .into_state_builder()
        .with_session_id(session_id)
        .with_catalog_list(Arc::new(DynamicFileCatalog::new(
            catalogs,
            Arc::clone(&factory) as Arc<dyn UrlTableFactory>,
        )))
        .build()
        .into();
    let weak = ctx.state_weak_ref();
    let _ = factory
        .state
        .set(Box::new(move || weak.upgrade().map(|s| s.read().clone())));
    ctx
}
