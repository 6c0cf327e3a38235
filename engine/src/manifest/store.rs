//! Where a manifest lives: a local folder or an S3 prefix, with atomic publication.
//!
//! A local part is written under `_tmp/` in the manifest folder and renamed into place
//! (same file system, so the rename is atomic); an S3 part is one `PUT` (or a multipart
//! upload completed at the end), which S3 makes visible only when it is whole.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use datafusion::error::{DataFusionError, Result};
use framefusion_media::source::{Confinement, VideoSource};
use framefusion_media::storage::{S3Location, StorageOptions, storage_error};
use futures::TryStreamExt;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt, PutPayload};

/// Environment variable (a test hook): milliseconds to wait between writing a part in
/// full and publishing it, so a test can kill a run in the middle of a commit (parts
/// only: markers and other small files are published at once).
pub const COMMIT_PAUSE_ENV: &str = "FRAMEFUSION_FAULT_COMMIT_PAUSE_MS";

/// Parts larger than this are uploaded in several pieces.
const SINGLE_PUT_LIMIT: u64 = 16 * 1024 * 1024;

/// Where a manifest is: the text a user gave, parsed once where it enters (a run's
/// options, a console's runs folder) into a local folder or an S3 prefix read with the
/// session's runtime's clients; every later step takes this.
#[derive(Debug, Clone)]
pub struct ManifestLocation {
    given: String,
    source: VideoSource,
}

impl ManifestLocation {
    /// The location `text` names, refused outside `confinement`'s roots (a session's:
    /// [`Confinement::of`]; an operator's own folder: [`Confinement::none`] with the
    /// runtime's clients).
    pub fn parse(text: &str, confinement: &Confinement) -> Result<Self> {
        Ok(Self {
            given: text.to_owned(),
            source: confinement.source(text).map_err(external)?,
        })
    }

    /// The location as given.
    pub fn given(&self) -> &str {
        &self.given
    }

    /// The local folder, for a local location.
    pub fn local(&self) -> Option<&Path> {
        match &self.source {
            VideoSource::Local(path) => Some(path),
            VideoSource::S3(..) => None,
        }
    }

    /// The location of `name` directly under this one.
    pub fn child(&self, name: &str) -> Self {
        let given = format!("{}/{name}", self.given.trim_end_matches('/'));
        let source = match &self.source {
            VideoSource::Local(path) => VideoSource::Local(path.join(name)),
            VideoSource::S3(location, clients) => {
                let key = format!("{}/{name}", location.key.trim_end_matches('/'));
                VideoSource::S3(
                    location.with_key(key.trim_start_matches('/')),
                    clients.clone(),
                )
            }
        };
        Self { given, source }
    }
}

/// A manifest location.
#[derive(Debug, Clone)]
pub struct ManifestStore {
    store: Arc<dyn ObjectStore>,
    root: ObjectPath,
    /// The local folder, for a local manifest.
    local: Option<PathBuf>,
    display: String,
}

fn external(e: impl std::error::Error + Send + Sync + 'static) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

impl ManifestStore {
    /// Opens (creating a local folder if needed) the manifest at `output`: a local
    /// folder or an S3 prefix (with its clients).
    pub fn open(output: &ManifestLocation, storage: &StorageOptions) -> Result<Self> {
        match &output.source {
            VideoSource::Local(path) => {
                std::fs::create_dir_all(path.join("_tmp")).map_err(|e| {
                    DataFusionError::Execution(format!(
                        "cannot create the manifest folder '{}': {e}",
                        path.display()
                    ))
                })?;
                let path = path.canonicalize().map_err(DataFusionError::IoError)?;
                let store = LocalFileSystem::new_with_prefix(&path).map_err(external)?;
                Ok(Self {
                    store: Arc::new(store),
                    root: ObjectPath::default(),
                    display: path.display().to_string(),
                    local: Some(path),
                })
            }
            VideoSource::S3(location, clients) => {
                let S3Location { bucket, key } = location;
                let store = clients.client(bucket, storage).map_err(external)?;
                Ok(Self {
                    store,
                    root: ObjectPath::from(key.trim_end_matches('/')),
                    display: format!("s3://{bucket}/{}", key.trim_end_matches('/')),
                    local: None,
                })
            }
        }
    }

    /// The location as a user wrote it (for messages).
    pub fn display(&self) -> &str {
        &self.display
    }

    /// The object store and the path of `name` in it.
    pub fn object(&self, name: &str) -> (Arc<dyn ObjectStore>, ObjectPath) {
        (Arc::clone(&self.store), self.path(name))
    }

    fn path(&self, name: &str) -> ObjectPath {
        name.split('/')
            .filter(|p| !p.is_empty())
            .fold(self.root.clone(), |path, part| path.join(part))
    }

    /// The name of `path` relative to the manifest root.
    fn relative(&self, path: &ObjectPath) -> String {
        let full = path.as_ref();
        let root = self.root.as_ref();
        full.strip_prefix(root)
            .unwrap_or(full)
            .trim_start_matches('/')
            .to_owned()
    }

    fn error(&self, name: &str, e: &object_store::Error) -> DataFusionError {
        let uri = format!("{}/{name}", self.display);
        match e {
            object_store::Error::NotFound { .. } => {
                DataFusionError::Execution(format!("'{uri}' does not exist"))
            }
            // a store that cannot be reached fails the run (it resumes later), as I/O
            _ => {
                let udf = storage_error(&uri, e);
                DataFusionError::IoError(std::io::Error::other(udf.to_string()))
            }
        }
    }

    /// The objects directly under the root (`name`, size), and those under `folder/`.
    pub async fn list(&self, folder: Option<&str>) -> Result<Vec<(String, u64)>> {
        let prefix = folder.map_or_else(|| self.root.clone(), |f| self.path(f));
        let listed = self
            .store
            .list_with_delimiter(Some(&prefix))
            .await
            .map_err(|e| self.error(folder.unwrap_or(""), &e))?;
        Ok(listed
            .objects
            .iter()
            .map(|m: &ObjectMeta| (self.relative(&m.location), m.size))
            .collect())
    }

    /// The folders directly under the root (names).
    pub async fn folders(&self) -> Result<Vec<String>> {
        let listed = self
            .store
            .list_with_delimiter(Some(&self.root))
            .await
            .map_err(|e| self.error("", &e))?;
        Ok(listed
            .common_prefixes
            .iter()
            .map(|p| self.relative(p))
            .collect())
    }

    /// The bytes of `name`, or `None` when it does not exist.
    pub async fn read(&self, name: &str) -> Result<Option<Vec<u8>>> {
        match self.store.get(&self.path(name)).await {
            Ok(got) => Ok(Some(
                got.bytes()
                    .await
                    .map_err(|e| self.error(name, &e))?
                    .to_vec(),
            )),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.error(name, &e)),
        }
    }

    /// Publishes `bytes` as `name`, atomically.
    pub async fn write(&self, name: &str, bytes: Vec<u8>) -> Result<()> {
        let staged = self.staging_file(name)?;
        tokio::fs::write(staged.path(), &bytes)
            .await
            .map_err(DataFusionError::IoError)?;
        self.publish(staged, name).await
    }

    /// Writes `bytes` as `name` unless `name` exists: whether this call created it. One
    /// writer wins when several race: a local folder creates the file atomically (a hard
    /// link), S3 sends a conditional put (`If-None-Match: *`); a store without conditional
    /// writes answers with an error, never a false `true`.
    pub async fn create(&self, name: &str, bytes: Vec<u8>) -> Result<bool> {
        let options = object_store::PutOptions::from(object_store::PutMode::Create);
        match self
            .store
            .put_opts(&self.path(name), PutPayload::from(bytes), options)
            .await
        {
            Ok(_) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(false),
            Err(e) => Err(self.error(name, &e)),
        }
    }

    /// The location of `name` under the manifest, as a session setting names it (a local
    /// path or an `s3://` URI).
    pub fn location_of(&self, name: &str) -> String {
        match &self.local {
            Some(path) => path.join(name).display().to_string(),
            None => format!("{}/{name}", self.display),
        }
    }

    /// Removes every object under `folder/` (nothing happens when there is none).
    pub async fn delete_under(&self, folder: &str) -> Result<()> {
        let prefix = self.path(folder);
        let listed: Vec<ObjectMeta> = self
            .store
            .list(Some(&prefix))
            .try_collect()
            .await
            .map_err(|e| self.error(folder, &e))?;
        for meta in listed {
            match self.store.delete(&meta.location).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(self.error(folder, &e)),
            }
        }
        if let Some(local) = &self.local {
            // the local store leaves the emptied folder behind
            let _ = std::fs::remove_dir(local.join(folder));
        }
        Ok(())
    }

    /// Removes `name` (nothing happens when it does not exist).
    pub async fn delete(&self, name: &str) -> Result<()> {
        match self.store.delete(&self.path(name)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.error(name, &e)),
        }
    }

    /// A new file to write a part or marker into before it is published: in the manifest
    /// folder's `_tmp/` for a local manifest (so publishing is a rename), in the system's
    /// temporary folder otherwise. Dropped unpublished, it is removed.
    pub fn staging_file(&self, name: &str) -> Result<tempfile::NamedTempFile> {
        let base = name.rsplit('/').next().unwrap_or(name);
        let dir = self
            .local
            .as_ref()
            .map_or_else(std::env::temp_dir, |p| p.join("_tmp"));
        tempfile::Builder::new()
            .prefix(&format!("{base}."))
            .suffix(".tmp")
            .tempfile_in(&dir)
            .map_err(|e| {
                DataFusionError::Execution(format!(
                    "cannot create a temporary file in '{}': {e}",
                    dir.display()
                ))
            })
    }

    /// Publishes the complete file `staged` as `name`: a rename for a local manifest, an
    /// upload otherwise. Readers see all of it or nothing.
    pub async fn publish(&self, staged: tempfile::NamedTempFile, name: &str) -> Result<()> {
        staged
            .as_file()
            .sync_all()
            .map_err(DataFusionError::IoError)?;
        // the test hook pauses part commits only (not markers or a console's run book)
        if let Some(ms) = std::env::var(COMMIT_PAUSE_ENV)
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|_| name.ends_with(".parquet"))
        {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        match &self.local {
            Some(folder) => {
                let target = folder.join(name);
                if let Some(parent) = target.parent() {
                    std::fs::create_dir_all(parent).map_err(DataFusionError::IoError)?;
                }
                // readable like any file the user writes (temporary files are private)
                let mode = std::os::unix::fs::PermissionsExt::from_mode(0o644);
                std::fs::set_permissions(staged.path(), mode).map_err(DataFusionError::IoError)?;
                staged.persist(&target).map_err(|e| {
                    DataFusionError::Execution(format!(
                        "cannot publish '{}': {}",
                        target.display(),
                        e.error
                    ))
                })?;
                sync_dir(folder);
                Ok(())
            }
            None => self.upload(staged.path(), name).await,
        }
    }

    async fn upload(&self, file: &Path, name: &str) -> Result<()> {
        let path = self.path(name);
        let size = tokio::fs::metadata(file)
            .await
            .map_err(DataFusionError::IoError)?
            .len();
        if size <= SINGLE_PUT_LIMIT {
            let bytes = tokio::fs::read(file)
                .await
                .map_err(DataFusionError::IoError)?;
            self.store
                .put(&path, PutPayload::from(bytes))
                .await
                .map_err(|e| self.error(name, &e))?;
            return Ok(());
        }
        let upload = self
            .store
            .put_multipart(&path)
            .await
            .map_err(|e| self.error(name, &e))?;
        let mut writer = object_store::WriteMultipart::new(upload);
        let mut reader = tokio::fs::File::open(file)
            .await
            .map_err(DataFusionError::IoError)?;
        let mut buffer = vec![0u8; 8 * 1024 * 1024];
        loop {
            use tokio::io::AsyncReadExt;
            let n = reader
                .read(&mut buffer)
                .await
                .map_err(DataFusionError::IoError)?;
            if n == 0 {
                break;
            }
            writer
                .wait_for_capacity(4)
                .await
                .map_err(|e| self.error(name, &e))?;
            writer.write(&buffer[..n]);
        }
        writer.finish().await.map_err(|e| self.error(name, &e))?;
        Ok(())
    }

    /// Removes what a killed run left half-written (`_tmp/`).
    pub async fn clean_staging(&self) -> Result<()> {
        if let Some(folder) = &self.local {
            let tmp = folder.join("_tmp");
            if let Ok(entries) = std::fs::read_dir(&tmp) {
                for entry in entries.flatten() {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
            return Ok(());
        }
        let prefix = self.path("_tmp");
        let stale: Vec<ObjectMeta> = self
            .store
            .list(Some(&prefix))
            .try_collect()
            .await
            .map_err(|e| self.error("_tmp", &e))?;
        for meta in stale {
            let name = self.relative(&meta.location);
            self.delete(&name).await?;
        }
        Ok(())
    }
}

/// Makes a rename in `folder` durable (best effort: not every file system allows it).
fn sync_dir(folder: &Path) {
    if let Ok(dir) = std::fs::File::open(folder) {
        let _ = dir.sync_all();
    }
}
