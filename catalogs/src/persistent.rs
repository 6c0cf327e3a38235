//! The persistent catalog: table definitions that outlive the process.
//!
//! - [`CatalogStore`] is the backend trait (a shared metastore can replace the default).
//! - [`FileCatalogStore`] is the embedded default: one JSON file, every change a locked
//!   read-modify-write that replaces the file atomically, so concurrent `framefusion`
//!   processes never lose each other's changes or see a half-written file.
//! - [`PersistentSchemaProvider`] is a DataFusion schema provider over a store: `CREATE
//!   EXTERNAL TABLE` stores the statement, `DROP TABLE` removes it, and a table is rebuilt
//!   from its statement the first time a process uses it (by a [`TableBuilder`] the
//!   engine supplies, which plans the statement in the session).

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use async_trait::async_trait;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::{SchemaProvider, Session, TableProvider};
use datafusion::common::{DataFusionError, Result};
use datafusion::datasource::TableType;
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

use crate::CatalogError;

/// One stored table: its name and the `CREATE EXTERNAL TABLE` statement that defines it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredTable {
    /// Table name.
    pub name: String,
    /// The SQL statement that creates it.
    pub definition: String,
}

/// A backend that keeps table definitions.
pub trait CatalogStore: fmt::Debug + Send + Sync {
    /// Every stored table, by name.
    fn list(&self) -> Result<Vec<StoredTable>, CatalogError>;
    /// Stores a table, replacing one of the same name.
    fn put(&self, table: StoredTable) -> Result<(), CatalogError>;
    /// Removes a table; whether it was there.
    fn remove(&self, name: &str) -> Result<bool, CatalogError>;
    /// One stored table.
    fn get(&self, name: &str) -> Result<Option<StoredTable>, CatalogError> {
        Ok(self.list()?.into_iter().find(|t| t.name == name))
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct CatalogFile {
    version: u32,
    tables: BTreeMap<String, String>,
}

/// The embedded default store: a JSON file (`catalog.json`), with a lock file beside it.
#[derive(Debug, Clone)]
pub struct FileCatalogStore {
    path: PathBuf,
}

impl FileCatalogStore {
    /// A store in the file at `path` (created on the first change).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// The catalog file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn io(&self, what: &str, e: std::io::Error) -> CatalogError {
        CatalogError::Store(format!(
            "cannot {what} the catalog {}: {e}",
            self.path.display()
        ))
    }

    /// Runs `f` holding the catalog lock (shared for reads, exclusive for changes).
    fn locked<T>(
        &self,
        exclusive: bool,
        f: impl FnOnce() -> Result<T, CatalogError>,
    ) -> Result<T, CatalogError> {
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| self.io("create the folder of", e))?;
        }
        let mut lock_path = self.path.clone().into_os_string();
        lock_path.push(".lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| self.io("open the lock of", e))?;
        if exclusive {
            lock.lock().map_err(|e| self.io("lock", e))?;
        } else {
            lock.lock_shared().map_err(|e| self.io("lock", e))?;
        }
        let result = f();
        let _ = lock.unlock();
        result
    }

    fn read(&self) -> Result<CatalogFile, CatalogError> {
        match std::fs::read(&self.path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                CatalogError::Store(format!(
                    "the catalog {} is not valid ({e}); fix or remove it",
                    self.path.display()
                ))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(CatalogFile {
                version: 1,
                tables: BTreeMap::new(),
            }),
            Err(e) => Err(self.io("read", e)),
        }
    }

    /// Writes `file` to a temporary file beside the catalog, then renames it over the
    /// catalog: a reader sees the old or the new catalog, never a mix.
    fn write(&self, file: &CatalogFile) -> Result<(), CatalogError> {
        let mut tmp = self.path.clone().into_os_string();
        tmp.push(format!(".tmp-{}", std::process::id()));
        let tmp = PathBuf::from(tmp);
        let bytes =
            serde_json::to_vec_pretty(file).map_err(|e| CatalogError::Store(e.to_string()))?;
        // table definitions may hold object-store credentials: owner-only
        let mut out = {
            use std::os::unix::fs::OpenOptionsExt;
            OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(|e| self.io("write", e))?
        };
        out.write_all(&bytes)
            .and_then(|()| out.sync_all())
            .map_err(|e| self.io("write", e))?;
        std::fs::rename(&tmp, &self.path).map_err(|e| self.io("replace", e))
    }
}

impl CatalogStore for FileCatalogStore {
    fn list(&self) -> Result<Vec<StoredTable>, CatalogError> {
        let file = self.locked(false, || self.read())?;
        Ok(file
            .tables
            .into_iter()
            .map(|(name, definition)| StoredTable { name, definition })
            .collect())
    }

    fn put(&self, table: StoredTable) -> Result<(), CatalogError> {
        self.locked(true, || {
            let mut file = self.read()?;
            file.version = 1;
            file.tables.insert(table.name, table.definition);
            self.write(&file)
        })
    }

    fn remove(&self, name: &str) -> Result<bool, CatalogError> {
        self.locked(true, || {
            let mut file = self.read()?;
            let removed = file.tables.remove(name).is_some();
            if removed {
                self.write(&file)?;
            }
            Ok(removed)
        })
    }
}

tokio::task_local! {
    /// The name of the table whose stored statement is being planned in this task.
    static REBUILDING: String;
}

/// Rebuilds a table provider from its stored `CREATE EXTERNAL TABLE` statement.
pub type TableBuilder =
    Arc<dyn Fn(String) -> BoxFuture<'static, Result<Arc<dyn TableProvider>>> + Send + Sync>;

/// A table provider known to this process, with the stored definition it was built from
/// (`None` for tables that are not kept: views, in-memory tables).
type LocalTable = (Option<String>, Arc<dyn TableProvider>);

/// A schema whose external tables are kept in a [`CatalogStore`]; other tables (views,
/// in-memory tables) live in this process only.
pub struct PersistentSchemaProvider {
    store: Arc<dyn CatalogStore>,
    builder: OnceLock<TableBuilder>,
    /// Providers built or registered in this process, with the definition they came from.
    built: Mutex<HashMap<String, LocalTable>>,
}

impl fmt::Debug for PersistentSchemaProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PersistentSchemaProvider")
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

impl PersistentSchemaProvider {
    /// A schema over `store`. Call [`PersistentSchemaProvider::set_builder`] before use.
    pub fn new(store: Arc<dyn CatalogStore>) -> Self {
        Self {
            store,
            builder: OnceLock::new(),
            built: Mutex::new(HashMap::new()),
        }
    }

    /// Sets how stored statements become tables (once).
    pub fn set_builder(&self, builder: TableBuilder) {
        let _ = self.builder.set(builder);
    }

    fn stored(&self) -> Vec<StoredTable> {
        self.store.list().unwrap_or_else(|e| {
            log::warn!("{e}");
            Vec::new()
        })
    }

    fn local(&self) -> std::sync::MutexGuard<'_, HashMap<String, LocalTable>> {
        self.built
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn store_err(e: CatalogError) -> DataFusionError {
    e.into()
}

/// Whether a definition is one this catalog keeps (an external table's).
fn is_external_definition(definition: &str) -> bool {
    let words: Vec<String> = definition
        .split_whitespace()
        .take(6)
        .map(str::to_ascii_uppercase)
        .collect();
    words.first().is_some_and(|w| w == "CREATE") && words.iter().any(|w| w == "EXTERNAL")
}

#[async_trait]
impl SchemaProvider for PersistentSchemaProvider {
    fn table_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.stored().into_iter().map(|t| t.name).collect();
        names.extend(
            self.local()
                .iter()
                .filter(|(_, (def, _))| def.is_none())
                .map(|(n, _)| n.clone()),
        );
        names.sort();
        names.dedup();
        names
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        let stored = self.store.get(name).map_err(store_err)?;
        let cached = self.local().get(name).cloned();
        match (stored, cached) {
            // built in this process from the definition still stored
            (Some(s), Some((Some(def), provider))) if def == s.definition => Ok(Some(provider)),
            (Some(s), _) => {
                // Planning the stored CREATE statement resolves its own table name; while
                // the table is being rebuilt, that lookup must find nothing, not recurse.
                if REBUILDING
                    .try_with(|name_being_built| name_being_built == name)
                    .unwrap_or(false)
                {
                    return Ok(None);
                }
                let Some(builder) = self.builder.get() else {
                    return Err(DataFusionError::Internal(
                        "persistent catalog used before set_builder".to_owned(),
                    ));
                };
                let rebuilt = REBUILDING
                    .scope(name.to_owned(), builder(s.definition.clone()))
                    .await;
                let provider = match rebuilt {
                    Ok(p) => p,
                    // the table stays visible (and droppable); scanning it reports why
                    Err(e) => Arc::new(UnavailableTable {
                        name: name.to_owned(),
                        reason: crate_message(&e),
                        code: crate::error::code_of(&e),
                    }),
                };
                self.local()
                    .insert(name.to_owned(), (Some(s.definition), Arc::clone(&provider)));
                Ok(Some(provider))
            }
            // dropped by another process
            (None, Some((Some(_), _))) => {
                self.local().remove(name);
                Ok(None)
            }
            (None, Some((None, provider))) => Ok(Some(provider)),
            (None, None) => Ok(None),
        }
    }

    fn register_table(
        &self,
        name: String,
        table: Arc<dyn TableProvider>,
    ) -> Result<Option<Arc<dyn TableProvider>>> {
        let definition = table
            .get_table_definition()
            .filter(|d| is_external_definition(d))
            .map(str::to_owned);
        if let Some(definition) = &definition {
            self.store
                .put(StoredTable {
                    name: name.clone(),
                    definition: definition.clone(),
                })
                .map_err(store_err)?;
        }
        Ok(self
            .local()
            .insert(name, (definition, table))
            .map(|(_, p)| p))
    }

    fn deregister_table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        let removed = self.store.remove(name).map_err(store_err)?;
        let local = self.local().remove(name).map(|(_, p)| p);
        Ok(match (removed, local) {
            (_, Some(p)) => Some(p),
            (true, None) => Some(Arc::new(UnavailableTable {
                name: name.to_owned(),
                reason: "dropped".to_owned(),
                code: framefusion_media::error::ErrorCode::NotFound,
            })),
            (false, None) => None,
        })
    }

    fn table_exist(&self, name: &str) -> bool {
        self.store.get(name).ok().flatten().is_some() || self.local().contains_key(name)
    }
}

fn crate_message(e: &DataFusionError) -> String {
    match e.find_root() {
        DataFusionError::External(inner) => inner.to_string(),
        other => other.to_string(),
    }
}

/// A stored table that cannot be rebuilt now (its location is gone, say): it is listed and
/// can be dropped, and a query on it fails naming the reason.
#[derive(Debug)]
pub struct UnavailableTable {
    name: String,
    reason: String,
    code: framefusion_media::error::ErrorCode,
}

#[async_trait]
impl TableProvider for UnavailableTable {
    fn schema(&self) -> SchemaRef {
        // One column, so that every query on it plans a scan (and reports why it fails);
        // a table without columns could be planned away.
        Arc::new(Schema::new(vec![Field::new(
            "unavailable",
            DataType::Utf8,
            true,
        )]))
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        _projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Err(framefusion_media::error::external(
            crate::CatalogError::Unavailable {
                name: self.name.clone(),
                reason: self.reason.clone(),
                code: self.code,
            },
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_store_round_trips_and_survives_concurrent_writers() -> Result<(), CatalogError> {
        let dir = tempfile::tempdir().map_err(|e| CatalogError::Store(e.to_string()))?;
        let store = FileCatalogStore::new(dir.path().join("sub/catalog.json"));
        assert!(store.list()?.is_empty());
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let store = store.clone();
                std::thread::spawn(move || {
                    store.put(StoredTable {
                        name: format!("t{i}"),
                        definition: format!("CREATE EXTERNAL TABLE t{i} ..."),
                    })
                })
            })
            .collect();
        for t in threads {
            t.join()
                .map_err(|_| CatalogError::Store("writer panicked".into()))??;
        }
        let names: Vec<_> = store.list()?.into_iter().map(|t| t.name).collect();
        assert_eq!(names, ["t0", "t1", "t2", "t3", "t4", "t5", "t6", "t7"]);
        assert!(store.remove("t3")?);
        assert!(!store.remove("t3")?);
        assert_eq!(store.list()?.len(), 7);
        Ok(())
    }

    #[test]
    fn only_external_tables_are_kept() {
        assert!(is_external_definition(
            "CREATE EXTERNAL TABLE v STORED AS VIDEO LOCATION '/x'"
        ));
        assert!(is_external_definition(
            "create or replace external table v stored as parquet location '/x'"
        ));
        assert!(!is_external_definition("CREATE VIEW v AS SELECT 1"));
    }
}
