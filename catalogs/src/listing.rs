//! Recursive listing of a `VIDEO` table's location.
//!
//! Every entry whose extension matches becomes a [`ListedFile`]. What cannot be read is
//! not dropped: a broken symbolic link, a FIFO or device node with a video extension, or a
//! folder that cannot be opened becomes a [`ListedFile`] carrying an `error`, so it shows
//! up as an error row of the table.

use datafusion::datasource::listing::PartitionedFile;
use framefusion_media::error::{ErrorCode, io_code};
use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use framefusion_media::source::{Confinement, VideoSource, local_uri};
use framefusion_media::storage::{S3Clients, S3Location, StorageOptions, storage_error};
use futures::{StreamExt, TryStreamExt};
use object_store::aws::AmazonS3;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt};

use crate::CatalogError;

/// One listed entry of a corpus.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ListedFile {
    /// Full URI (`file:///...`).
    pub uri: String,
    /// Size in bytes, when known.
    pub size: Option<i64>,
    /// Last modification, microseconds since the Unix epoch (UTC), when known.
    pub modified_us: Option<i64>,
    /// Why this entry cannot be read, if it cannot.
    pub error: Option<String>,
}

/// Which files a listing keeps, by extension.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExtensionFilter {
    /// Every file (`'*'`).
    Any,
    /// Files whose extension (lower-cased, without the dot) is one of these.
    Only(Vec<String>),
}

impl ExtensionFilter {
    /// Parses a comma-separated list (`"mp4, MOV"`) or `*`.
    pub fn parse(spec: &str) -> Result<Self, CatalogError> {
        if spec.trim() == "*" {
            return Ok(Self::Any);
        }
        let exts: Vec<String> = spec
            .split(',')
            .map(|e| e.trim().trim_start_matches('.').to_ascii_lowercase())
            .filter(|e| !e.is_empty())
            .collect();
        if exts.is_empty() {
            return Err(CatalogError::Option(format!(
                "extensions '{spec}' names no extension; write a list such as 'mp4,mov' or '*' for every file"
            )));
        }
        Ok(Self::Only(exts))
    }

    /// Whether `path` passes the filter.
    pub fn matches(&self, path: &Path) -> bool {
        match self {
            Self::Any => true,
            Self::Only(exts) => path
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| exts.iter().any(|x| x.eq_ignore_ascii_case(e))),
        }
    }

    /// The filter as it is written (`*` or `mp4,mov`).
    pub fn spec(&self) -> String {
        match self {
            Self::Any => "*".to_owned(),
            Self::Only(exts) => exts.join(","),
        }
    }
}

/// Checks that a location lies within the session's allowed roots and, local, exists,
/// before a table is defined on it. An object-store location is only parsed here
/// ([`check_remote`] asks the store).
pub fn check_location(
    location: &str,
    confinement: &Confinement,
) -> Result<VideoSource, CatalogError> {
    let source = confinement.source(location)?;
    match &source {
        VideoSource::S3(..) => Ok(source),
        VideoSource::Local(path) => match fs::metadata(path) {
            Ok(_) => Ok(source),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(CatalogError::Location {
                location: location.to_owned(),
                reason: "does not exist; give an existing folder or video file".to_owned(),
                code: ErrorCode::NotFound,
            }),
            Err(e) => Err(CatalogError::Location {
                location: location.to_owned(),
                reason: format!("cannot be read: {e}"),
                code: io_code(&e),
            }),
        },
    }
}

/// Lists the files of `location` (a folder, listed recursively, or one file) that pass
/// `filter`, sorted by URI. A single-file location is listed whatever its extension.
pub fn list(location: &str, filter: &ExtensionFilter) -> Result<Vec<ListedFile>, CatalogError> {
    // (the table's locations were checked against its session's roots when it was defined)
    let root = match check_location(location, &Confinement::none())? {
        VideoSource::Local(root) => root,
        VideoSource::S3(..) => {
            return Err(CatalogError::Location {
                location: location.to_owned(),
                reason: "is an object-store location; list it with list_s3".to_owned(),
                code: ErrorCode::Internal,
            });
        }
    };
    let mut out = Vec::new();
    let meta = fs::metadata(&root).map_err(|e| CatalogError::Location {
        location: location.to_owned(),
        reason: format!("cannot be read: {e}"),
        code: io_code(&e),
    })?;
    if meta.is_dir() {
        let mut visited = HashSet::new();
        walk(&root, filter, &mut visited, &mut out);
    } else {
        out.push(entry(&root, filter, true).unwrap_or_else(|| listed_error(&root, "not listed")));
    }
    out.sort_by(|a, b| a.uri.cmp(&b.uri));
    Ok(out)
}

/// Lists the objects under an S3 prefix (recursively) that pass `filter`, sorted by URI;
/// a location naming one object lists that object whatever its extension. A prefix with
/// no object at all is an error (in S3, a prefix exists only through its objects), as are
/// an unreachable store, refused credentials and a missing bucket, each naming the
/// location and what to check. The store's client is one of `clients` (the session's
/// runtime's).
pub async fn list_s3(
    location: &S3Location,
    filter: &ExtensionFilter,
    storage: &StorageOptions,
    clients: &S3Clients,
) -> Result<Vec<ListedFile>, CatalogError> {
    let (store, prefix) = open_prefix(location, storage, clients)?;
    let objects: Vec<ObjectMeta> = store
        .list(prefix.as_ref())
        .try_collect()
        .await
        .map_err(|e| storage_error(&location.uri(), &e))?;
    let listed = |meta: &ObjectMeta| ListedFile {
        uri: location.with_key(meta.location.as_ref()).uri(),
        size: i64::try_from(meta.size).ok(),
        modified_us: Some(meta.last_modified.timestamp_micros()),
        error: None,
    };
    if objects.is_empty() {
        let meta = lone_object(store.as_ref(), location, prefix.as_ref()).await?;
        return Ok(vec![listed(&meta)]);
    }
    let mut out: Vec<ListedFile> = objects
        .iter()
        .filter(|m| filter.matches(Path::new(m.location.as_ref())))
        .map(listed)
        .collect();
    out.sort_by(|a, b| a.uri.cmp(&b.uri));
    Ok(out)
}

/// Checks that an object-store location can be listed and holds at least one object,
/// without listing all of it.
pub async fn check_remote(
    location: &S3Location,
    storage: &StorageOptions,
    clients: &S3Clients,
) -> Result<(), CatalogError> {
    let (store, prefix) = open_prefix(location, storage, clients)?;
    match store.list(prefix.as_ref()).next().await {
        Some(Ok(_)) => Ok(()),
        Some(Err(e)) => Err(storage_error(&location.uri(), &e).into()),
        None => lone_object(store.as_ref(), location, prefix.as_ref())
            .await
            .map(|_| ()),
    }
}

/// The store of `location` and its key as a listing prefix (`None`: the whole bucket).
fn open_prefix(
    location: &S3Location,
    storage: &StorageOptions,
    clients: &S3Clients,
) -> Result<(Arc<AmazonS3>, Option<ObjectPath>), CatalogError> {
    let store = clients.client(&location.bucket, storage)?;
    let prefix = location.path()?;
    Ok((store, (!prefix.as_ref().is_empty()).then_some(prefix)))
}

/// The one object a location names when nothing lies under it as a prefix.
async fn lone_object(
    store: &AmazonS3,
    location: &S3Location,
    prefix: Option<&ObjectPath>,
) -> Result<ObjectMeta, CatalogError> {
    let uri = location.uri();
    match prefix {
        Some(key) if !location.key.ends_with('/') => match store.head(key).await {
            Ok(meta) => Ok(meta),
            Err(object_store::Error::NotFound { .. }) => Err(no_objects(&uri)),
            Err(e) => Err(storage_error(&uri, &e).into()),
        },
        _ => Err(no_objects(&uri)),
    }
}

fn no_objects(uri: &str) -> CatalogError {
    CatalogError::Location {
        location: uri.to_owned(),
        reason:
            "holds no object (no such prefix or object in the bucket); check the bucket and prefix"
                .to_owned(),
        code: ErrorCode::NotFound,
    }
}

fn listed_error(path: &Path, error: &str) -> ListedFile {
    ListedFile {
        uri: local_uri(path),
        size: None,
        modified_us: None,
        error: Some(error.to_owned()),
    }
}

fn walk(
    dir: &Path,
    filter: &ExtensionFilter,
    visited: &mut HashSet<PathBuf>,
    out: &mut Vec<ListedFile>,
) {
    // Symbolic links to folders are followed once: a link cycle cannot loop forever.
    let canonical = fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    if !visited.insert(canonical) {
        return;
    }
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => {
            out.push(listed_error(dir, &format!("cannot list folder: {e}")));
            return;
        }
    };
    for dirent in entries {
        let path = match dirent {
            Ok(d) => d.path(),
            Err(e) => {
                out.push(listed_error(dir, &format!("cannot list folder: {e}")));
                continue;
            }
        };
        match fs::metadata(&path) {
            Ok(m) if m.is_dir() => walk(&path, filter, visited, out),
            _ => out.extend(entry(&path, filter, false)),
        }
    }
}

/// The listing entry of one non-folder path, or `None` when the filter drops it.
fn entry(path: &Path, filter: &ExtensionFilter, explicit: bool) -> Option<ListedFile> {
    if !explicit && !filter.matches(path) {
        return None;
    }
    let uri = local_uri(path);
    let meta = match fs::metadata(path) {
        Ok(m) => m,
        Err(e) => {
            let broken = fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink());
            let error = if broken {
                format!("broken symbolic link ({e})")
            } else {
                format!("cannot read file metadata: {e}")
            };
            return Some(ListedFile {
                uri,
                size: None,
                modified_us: None,
                error: Some(error),
            });
        }
    };
    let modified_us = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .and_then(|d| i64::try_from(d.as_micros()).ok());
    let error = (!meta.is_file()).then(|| {
        use std::os::unix::fs::FileTypeExt;
        let ft = meta.file_type();
        let kind = if ft.is_fifo() {
            "a FIFO"
        } else if ft.is_socket() {
            "a socket"
        } else if ft.is_block_device() || ft.is_char_device() {
            "a device"
        } else {
            "not a regular file"
        };
        format!("not a regular file ({kind}); only regular files are probed")
    });
    Some(ListedFile {
        uri,
        size: i64::try_from(meta.len()).ok(),
        modified_us,
        error,
    })
}

/// The listing facts of a scanned file: the [`ListedFile`] attached to it at planning
/// time, or what its object path says.
pub fn listed_file(file: &PartitionedFile) -> ListedFile {
    file.extension::<ListedFile>()
        .cloned()
        .unwrap_or_else(|| ListedFile {
            uri: format!("file:///{}", file.object_meta.location),
            size: i64::try_from(file.object_meta.size).ok(),
            modified_us: Some(file.object_meta.last_modified.timestamp_micros()),
            error: None,
        })
}

/// The scan partition of one listed file.
pub fn partitioned_file(file: ListedFile) -> PartitionedFile {
    let location = file
        .uri
        .strip_prefix("file:///")
        .unwrap_or(&file.uri)
        .to_owned();
    let size = file.size.and_then(|s| u64::try_from(s).ok()).unwrap_or(0);
    PartitionedFile::new(location, size).with_extension(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_parses_and_matches() -> Result<(), CatalogError> {
        let f = ExtensionFilter::parse("mp4, .MOV")?;
        assert!(f.matches(Path::new("/a/b.MP4")));
        assert!(f.matches(Path::new("/a/b.mov")));
        assert!(!f.matches(Path::new("/a/b.txt")));
        assert!(!f.matches(Path::new("/a/mp4")));
        assert!(ExtensionFilter::parse("*")?.matches(Path::new("/a/b.txt")));
        assert!(ExtensionFilter::parse(" , ").is_err());
        Ok(())
    }

    #[test]
    fn lists_recursively_and_keeps_unreadable_entries() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        fs::create_dir_all(dir.path().join("sub/deeper"))?;
        fs::write(dir.path().join("a.mp4"), b"x")?;
        fs::write(dir.path().join("sub/deeper/b.MKV"), b"xy")?;
        fs::write(dir.path().join("notes.txt"), b"x")?;
        std::os::unix::fs::symlink(
            dir.path().join("missing.mp4"),
            dir.path().join("dangling.mp4"),
        )?;
        std::os::unix::fs::symlink(dir.path(), dir.path().join("sub/loop"))?;
        let location = dir.path().to_string_lossy().into_owned();
        let files = list(&location, &ExtensionFilter::parse("mp4,mkv")?)?;
        let names: Vec<_> = files
            .iter()
            .map(|f| f.uri.rsplit('/').next().unwrap_or_default().to_owned())
            .collect();
        assert_eq!(names, ["a.mp4", "dangling.mp4", "b.MKV"]);
        assert_eq!(files[0].size, Some(1));
        assert!(
            files[1]
                .error
                .as_deref()
                .is_some_and(|e| e.contains("broken symbolic link"))
        );
        assert_eq!(files[2].size, Some(2));
        let all = list(&location, &ExtensionFilter::Any)?;
        assert_eq!(all.len(), 4);
        Ok(())
    }

    #[test]
    fn missing_location_names_it() {
        let err = list("/definitely/not/here", &ExtensionFilter::Any)
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some(
                "location '/definitely/not/here' does not exist; give an existing folder or video file"
            )
        );
    }
}
