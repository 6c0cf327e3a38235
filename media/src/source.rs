//! Where a video's bytes come from: the URI forms framefusion accepts, and what ffmpeg
//! opens for each ([`MediaInput`]).

use std::path::{Path, PathBuf};

use crate::MediaError;
use crate::ffmpeg;
use crate::storage::{S3Clients, S3Location, StorageOptions, presigned_get};

/// A resolved video location.
#[derive(Debug, Clone)]
pub enum VideoSource {
    /// A file on the local file system (absolute path).
    Local(PathBuf),
    /// An object in an S3-compatible store, and the clients of the runtime that reads it
    /// (those of the session it was resolved for: [`Confinement::source`]).
    S3(S3Location, S3Clients),
}

/// The locations this process may read or write media at, when it is confined (a server
/// serving remote clients); `None` (the default) allows every location.
static ALLOWED_ROOTS: std::sync::OnceLock<Vec<Root>> = std::sync::OnceLock::new();

/// An allowed location: a local folder (canonical) or an S3 bucket and key prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Root {
    /// A local folder and everything under it.
    Local(PathBuf),
    /// `s3://bucket/prefix`: the objects whose keys start with the prefix.
    S3 {
        /// The bucket.
        bucket: String,
        /// The key prefix ("" for the whole bucket; otherwise ending with `/`).
        prefix: String,
    },
    /// A prefix of another object store's bucket (`gs://bucket/prefix/`,
    /// `az://container/prefix/`), for the tables that read it (not videos).
    Bucket {
        /// The scheme (`gs`, `az`, ...).
        scheme: String,
        /// The bucket (container).
        bucket: String,
        /// The key prefix, as for S3.
        prefix: String,
    },
}

/// The schemes of the object stores other than S3 that tables (not videos) read.
const TABLE_STORE_SCHEMES: [&str; 5] = ["gs", "az", "abfs", "abfss", "azure"];

/// `(scheme, bucket, key)` of a location in an object store of [`TABLE_STORE_SCHEMES`].
fn table_store_location(uri: &str) -> Option<(String, String, String)> {
    let (scheme, rest) = uri.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    if !TABLE_STORE_SCHEMES.contains(&scheme.as_str()) {
        return None;
    }
    let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
    Some((scheme, bucket.to_owned(), key.to_owned()))
}

/// Whether `key` stays below its prefix (no `.` or `..` segment).
fn plain_key(key: &str) -> bool {
    !key.split('/').any(|part| part == ".." || part == ".")
}

/// Checks a table's location (a video's, or any other table kind's: Parquet in `gs://`
/// too) against the roots this process is confined to, if it is (a session's own roots:
/// [`Confinement::check_location`]).
pub fn check_location(uri: &str) -> Result<(), MediaError> {
    Confinement::none().check_location(uri)
}

/// Where a session may read and write media and tables: the roots it carries (its
/// `framefusion.allowed_roots` setting), within those of its process (an executor
/// started with `--allow-root`, [`confine_to`]). A server sets the roots on its clients'
/// sessions; the setting travels with their queries to a cluster's executors, which check
/// every location against it: a session value, not a process's.
///
/// It also carries the session's runtime's S3 clients ([`S3Clients`]), which the sources
/// it resolves read with.
#[derive(Debug, Clone, Default)]
pub struct Confinement {
    roots: Option<std::sync::Arc<Vec<Root>>>,
    clients: S3Clients,
}

impl Confinement {
    /// No confinement but the process's.
    pub fn none() -> Self {
        Self::default()
    }

    /// Confined to `roots` (and the process's).
    pub fn to(roots: Vec<Root>) -> Self {
        Self {
            roots: Some(std::sync::Arc::new(roots)),
            clients: S3Clients::default(),
        }
    }

    /// The confinement a setting's text names: roots separated by commas ([`Root::parse`]
    /// each); empty: [`Confinement::none`].
    pub fn from_setting(text: &str) -> Result<Self, MediaError> {
        let roots = text
            .split(',')
            .map(str::trim)
            .filter(|r| !r.is_empty())
            .map(Root::parse)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(if roots.is_empty() {
            Self::none()
        } else {
            Self::to(roots)
        })
    }

    /// The confinement of a session's settings (`framefusion.allowed_roots`), with its
    /// runtime's S3 clients.
    pub fn of(
        config: &framefusion_common::datafusion_common::config::ConfigOptions,
    ) -> Result<Self, MediaError> {
        Ok(
            Self::from_setting(&framefusion_common::failures::RunOptions::allowed_roots_of(
                config,
            ))?
            .with_clients(S3Clients::of(config)),
        )
    }

    /// This confinement, reading S3 objects with `clients`.
    pub fn with_clients(mut self, clients: S3Clients) -> Self {
        self.clients = clients;
        self
    }

    /// The S3 clients the sources of this session read with.
    pub fn clients(&self) -> &S3Clients {
        &self.clients
    }

    /// The setting's text of these roots (empty for none); `None` when a root cannot be
    /// written in it (a comma in its name).
    pub fn setting(&self) -> Option<String> {
        let roots: Vec<String> = self
            .roots()
            .unwrap_or_default()
            .iter()
            .map(ToString::to_string)
            .collect();
        (!roots.iter().any(|r| r.contains(','))).then(|| roots.join(","))
    }

    /// The session's roots (`None`: not confined by the session).
    pub fn roots(&self) -> Option<&[Root]> {
        self.roots.as_deref().map(Vec::as_slice)
    }

    /// The source at `uri`, refused when it lies outside the process's or the session's
    /// roots.
    pub fn source(&self, uri: &str) -> Result<VideoSource, MediaError> {
        let source = VideoSource::parse_unconfined(uri)?;
        for roots in [allowed_roots(), self.roots()].into_iter().flatten() {
            if !roots.iter().any(|r| r.contains(&source)) {
                return Err(not_allowed(uri, roots));
            }
        }
        Ok(match source {
            VideoSource::S3(location, _) => VideoSource::S3(location, self.clients.clone()),
            local => local,
        })
    }

    /// Checks a table's location (a video's, or any other table kind's) against the
    /// process's and the session's roots.
    pub fn check_location(&self, uri: &str) -> Result<(), MediaError> {
        let Some((scheme, bucket, key)) = table_store_location(uri) else {
            return self.source(uri).map(drop);
        };
        for roots in [allowed_roots(), self.roots()].into_iter().flatten() {
            let allowed = roots.iter().any(|root| {
                matches!(root, Root::Bucket { scheme: s, bucket: b, prefix }
                    if *s == scheme && *b == bucket && key.starts_with(prefix.as_str()) && plain_key(&key))
            });
            if !allowed {
                return Err(not_allowed(uri, roots));
            }
        }
        Ok(())
    }
}

/// The refusal of `uri`, outside `roots`.
fn not_allowed(uri: &str, roots: &[Root]) -> MediaError {
    MediaError::NotAllowed {
        uri: uri.to_owned(),
        roots: roots
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", "),
    }
}

impl Root {
    /// Parses an allowed root: an existing local folder, `s3://bucket[/prefix]`, or a
    /// prefix of a GCS or Azure bucket (`gs://bucket[/prefix]`, `az://container[/prefix]`).
    pub fn parse(text: &str) -> Result<Self, MediaError> {
        if let Some((scheme, bucket, key)) = table_store_location(text) {
            if bucket.is_empty() {
                return Err(MediaError::UnsupportedUri {
                    uri: text.to_owned(),
                    reason: format!("no bucket name; write {scheme}://bucket/prefix/"),
                });
            }
            return Ok(Self::Bucket {
                scheme,
                bucket,
                prefix: folder_prefix(key),
            });
        }
        match VideoSource::parse_unconfined(text)? {
            VideoSource::Local(path) => {
                let canonical = path
                    .canonicalize()
                    .map_err(|e| MediaError::UnsupportedUri {
                        uri: text.to_owned(),
                        reason: format!("an allowed root must be an existing folder ({e})"),
                    })?;
                Ok(Self::Local(canonical))
            }
            VideoSource::S3(location, _) => Ok(Self::S3 {
                prefix: folder_prefix(location.key),
                bucket: location.bucket,
            }),
        }
    }

    fn contains(&self, source: &VideoSource) -> bool {
        match (self, source) {
            (Self::Local(root), VideoSource::Local(path)) => {
                resolve(path).is_some_and(|p| p.starts_with(root))
            }
            (Self::S3 { bucket, prefix }, VideoSource::S3(location, _)) => {
                &location.bucket == bucket
                    && location.key.starts_with(prefix.as_str())
                    && plain_key(&location.key)
            }
            _ => false,
        }
    }
}

impl std::fmt::Display for Root {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Local(path) => write!(f, "{}", path.display()),
            Self::S3 { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}"),
            Self::Bucket {
                scheme,
                bucket,
                prefix,
            } => write!(f, "{scheme}://{bucket}/{prefix}"),
        }
    }
}

/// The real location of `path`: symbolic links and `..` resolved through the longest
/// existing ancestor (a file about to be written need not exist yet).
/// A key as a folder prefix: ending with `/` unless empty (the whole bucket).
fn folder_prefix(mut key: String) -> String {
    if !key.is_empty() && !key.ends_with('/') {
        key.push('/');
    }
    key
}

fn resolve(path: &Path) -> Option<PathBuf> {
    let mut existing = path.to_path_buf();
    let mut rest = Vec::new();
    loop {
        if let Ok(real) = existing.canonicalize() {
            let mut out = real;
            for part in rest.iter().rev() {
                match part {
                    // past what exists: cannot be resolved safely
                    None => return None,
                    Some(name) => out.push(name),
                }
            }
            return Some(out);
        }
        // (`Path::components` drops interior `.`; a `..` below what exists is refused)
        rest.push(match existing.components().next_back()? {
            std::path::Component::Normal(name) => Some(name.to_owned()),
            _ => None,
        });
        existing = existing.parent()?.to_path_buf();
    }
}

/// Confines this process to `roots`: from now on every video location outside them is
/// refused (once per process; a second call changes nothing and returns false), whatever
/// its sessions' own roots ([`Confinement`]). For an executor whose host confines it at
/// start (`--allow-root`): its sessions' settings come from whoever sends it a query, so
/// the process's roots are the guard that does not depend on them.
pub fn confine_to(roots: Vec<Root>) -> bool {
    ALLOWED_ROOTS.set(roots).is_ok()
}

/// The roots this process is confined to, if it is.
pub fn allowed_roots() -> Option<&'static [Root]> {
    ALLOWED_ROOTS.get().map(Vec::as_slice)
}

impl VideoSource {
    /// Resolves a URI (`file:///abs/path`) or a plain path (absolute, or relative to the
    /// current directory) to a source. In a confined process ([`confine_to`]) a location
    /// outside the allowed roots is refused; a session's roots are checked by
    /// [`Confinement::source`]. An S3 source read from here gets clients of its own
    /// (nothing reused): a session's are its [`Confinement`]'s.
    pub fn parse(uri: &str) -> Result<Self, MediaError> {
        Confinement::none().source(uri)
    }

    fn parse_unconfined(uri: &str) -> Result<Self, MediaError> {
        if let Some(rest) = uri.strip_prefix("file:") {
            let url = url::Url::parse(uri).map_err(|e| MediaError::UnsupportedUri {
                uri: uri.to_owned(),
                reason: format!("not a valid file URI ({e}); write file:///absolute/path"),
            })?;
            let path = url
                .to_file_path()
                .map_err(|()| MediaError::UnsupportedUri {
                    uri: uri.to_owned(),
                    reason: format!(
                        "'{rest}' is not an absolute local path; write file:///absolute/path"
                    ),
                })?;
            return Ok(Self::Local(path));
        }
        if let Some((scheme, _)) = uri.split_once("://") {
            if scheme.eq_ignore_ascii_case("s3") || scheme.eq_ignore_ascii_case("s3a") {
                return S3Location::parse(uri).map(|l| Self::S3(l, S3Clients::default()));
            }
            return Err(MediaError::UnsupportedUri {
                uri: uri.to_owned(),
                reason: format!(
                    "the '{scheme}' scheme is not supported; use a local path, a file:// URI or an s3:// URI"
                ),
            });
        }
        let path = std::path::absolute(Path::new(uri)).map_err(|e| MediaError::UnsupportedUri {
            uri: uri.to_owned(),
            reason: format!("cannot make the path absolute: {e}"),
        })?;
        Ok(Self::Local(path))
    }

    /// The canonical URI of this source (`file:///...`, percent-encoded).
    pub fn uri(&self) -> String {
        match self {
            Self::Local(path) => local_uri(path),
            Self::S3(location, _) => location.uri(),
        }
    }

    /// A local file's size and modification time (nanoseconds since the Unix epoch): what
    /// tells a changed file from the one seen before. `None` for a remote object or a
    /// file that cannot be read.
    pub fn local_stamp(&self) -> Option<(u64, u128)> {
        let Self::Local(path) = self else {
            return None;
        };
        let meta = std::fs::metadata(path).ok()?;
        let modified = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        Some((meta.len(), modified))
    }

    /// What ffmpeg opens to read this source: the local file, or a presigned URL of the
    /// object (signed with `storage` over the environment's settings).
    pub fn media_input(&self, storage: &StorageOptions) -> Result<MediaInput, MediaError> {
        Ok(match self {
            Self::Local(path) => MediaInput::local(path),
            Self::S3(location, clients) => MediaInput {
                display: location.uri(),
                target: Target::Url(presigned_get(location, storage, clients)?),
            },
        })
    }
}

/// Timeout of one ffmpeg read on a remote input, in microseconds.
const REMOTE_RW_TIMEOUT_US: &str = "30000000";

/// An input ffmpeg can open: a local file through the `file:` protocol, or an HTTP(S) URL
/// it range-reads.
#[derive(Debug, Clone)]
pub struct MediaInput {
    /// The URI or path shown in messages.
    pub display: String,
    target: Target,
}

#[derive(Debug, Clone)]
enum Target {
    Local(PathBuf),
    Url(String),
}

impl MediaInput {
    /// A local file. It is opened through ffmpeg's `file:` protocol, so a path can never
    /// be mistaken for another protocol (`http:`, `concat:`, ...).
    pub fn local(path: &Path) -> Self {
        Self {
            display: path.display().to_string(),
            target: Target::Local(path.to_path_buf()),
        }
    }

    /// The local path, for a local file.
    pub fn local_path(&self) -> Option<&Path> {
        match &self.target {
            Target::Local(path) => Some(path),
            Target::Url(_) => None,
        }
    }

    /// Opens the input's container. A remote input may only use the HTTP protocols (a
    /// hostile playlist cannot make ffmpeg read local files) and times out when the
    /// server stops answering.
    pub fn open(&self) -> Result<ffmpeg::format::context::Input, ffmpeg::Error> {
        match &self.target {
            Target::Local(path) => {
                let mut target = std::ffi::OsString::from("file:");
                target.push(path.as_os_str());
                ffmpeg::format::input(Path::new(&target))
            }
            Target::Url(url) => {
                let mut options = ffmpeg::Dictionary::new();
                options.set("protocol_whitelist", "http,https,tcp,tls");
                options.set("rw_timeout", REMOTE_RW_TIMEOUT_US);
                options.set("multiple_requests", "1");
                ffmpeg::format::input_with_dictionary(Path::new(url), options)
            }
        }
    }
}

/// The `file://` URI of an absolute local path.
pub fn local_uri(path: &Path) -> String {
    url::Url::from_file_path(path)
        .map(String::from)
        .unwrap_or_else(|()| format!("file://{}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_uris_and_paths() {
        let local = |uri: &str| match VideoSource::parse(uri) {
            Ok(VideoSource::Local(path)) => Some(path),
            _ => None,
        };
        assert_eq!(
            local("file:///tmp/a%20b.mp4"),
            Some(PathBuf::from("/tmp/a b.mp4"))
        );
        assert_eq!(local("/tmp/x.mp4"), Some(PathBuf::from("/tmp/x.mp4")));
        assert_eq!(
            local_uri(Path::new("/tmp/a b.mp4")),
            "file:///tmp/a%20b.mp4"
        );
        let err = VideoSource::parse("gopher://host/x.mp4")
            .err()
            .map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("'gopher' scheme is not supported")));
        assert_eq!(
            VideoSource::parse("s3://b/k.mp4").ok().map(|s| s.uri()),
            Some("s3://b/k.mp4".to_owned())
        );
    }

    #[test]
    fn a_sessions_sources_read_with_its_runtimes_clients() {
        let shared = framefusion_common::shared::Shared::new();
        let mut config = framefusion_common::datafusion_common::config::ConfigOptions::new();
        config.extensions.insert(shared.clone());
        config
            .extensions
            .insert(framefusion_common::failures::RunOptions::default());
        let confinement = Confinement::of(&config).unwrap_or_else(|e| panic!("{e}"));
        let Ok(VideoSource::S3(_, clients)) = confinement.source("s3://b/k.mp4") else {
            panic!("not an S3 source");
        };
        assert!(clients.same_as(&S3Clients::in_shared(&shared)));
        assert!(!clients.same_as(&S3Clients::default()));
    }
}

#[cfg(test)]
mod confinement_tests {
    use super::*;

    #[test]
    fn roots_contain_only_what_resolves_inside_them() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let inside = dir.path().join("videos");
        std::fs::create_dir_all(&inside).unwrap_or_else(|e| panic!("{e}"));
        std::os::unix::fs::symlink("/etc", inside.join("escape")).unwrap_or_else(|e| panic!("{e}"));
        let root = Root::parse(&inside.display().to_string()).unwrap_or_else(|e| panic!("{e}"));
        let ok = |p: &str| {
            root.contains(&VideoSource::parse_unconfined(p).unwrap_or_else(|e| panic!("{e}")))
        };
        let base = inside.display().to_string();
        assert!(ok(&format!("{base}/a.mp4")));
        assert!(ok(&format!("{base}/new/folder/out.mp4")), "not yet written");
        assert!(ok(&format!("file://{base}/a.mp4")));
        assert!(!ok(&format!("{base}/../secret.mp4")));
        assert!(!ok(&format!("{base}/new/../../secret.mp4")));
        assert!(
            !ok(&format!("{base}/escape/passwd")),
            "a link out of the root"
        );
        assert!(!ok("/etc/passwd"));
        assert!(!ok("file:///etc/passwd"));
        assert!(!ok("s3://bucket/a.mp4"));

        let s3 = Root::parse("s3://media/raw").unwrap_or_else(|e| panic!("{e}"));
        let in_s3 = |p: &str| {
            s3.contains(&VideoSource::parse_unconfined(p).unwrap_or_else(|e| panic!("{e}")))
        };
        assert!(in_s3("s3://media/raw/a.mp4"));
        assert!(!in_s3("s3://media/rawer/a.mp4"));
        assert!(!in_s3("s3://media/raw/../secret/a.mp4"));
        assert!(!in_s3("s3://other/raw/a.mp4"));
        assert!(!in_s3(&format!("{base}/a.mp4")));
    }
}
