//! Where a video's bytes come from: the URI forms framefusion accepts.

use std::path::{Path, PathBuf};

use crate::UdfError;

/// A resolved video location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VideoSource {
    /// A file on the local file system (absolute path).
    Local(PathBuf),
}

impl VideoSource {
    /// Resolves a URI (`file:///abs/path`) or a plain path (absolute, or relative to the
    /// current directory) to a source.
    pub fn parse(uri: &str) -> Result<Self, UdfError> {
        if let Some(rest) = uri.strip_prefix("file:") {
            let url = url::Url::parse(uri).map_err(|e| UdfError::UnsupportedUri {
                uri: uri.to_owned(),
                reason: format!("not a valid file URI ({e}); write file:///absolute/path"),
            })?;
            let path = url.to_file_path().map_err(|()| UdfError::UnsupportedUri {
                uri: uri.to_owned(),
                reason: format!(
                    "'{rest}' is not an absolute local path; write file:///absolute/path"
                ),
            })?;
            return Ok(Self::Local(path));
        }
        if let Some((scheme, _)) = uri.split_once("://") {
            return Err(UdfError::UnsupportedUri {
                uri: uri.to_owned(),
                reason: format!(
                    "the '{scheme}' scheme is not supported; use a local path or a file:// URI"
                ),
            });
        }
        let path = std::path::absolute(Path::new(uri)).map_err(|e| UdfError::UnsupportedUri {
            uri: uri.to_owned(),
            reason: format!("cannot make the path absolute: {e}"),
        })?;
        Ok(Self::Local(path))
    }

    /// The canonical URI of this source (`file:///...`, percent-encoded).
    pub fn uri(&self) -> String {
        match self {
            Self::Local(path) => local_uri(path),
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
        assert_eq!(
            VideoSource::parse("file:///tmp/a%20b.mp4").ok(),
            Some(VideoSource::Local(PathBuf::from("/tmp/a b.mp4")))
        );
        assert_eq!(
            VideoSource::parse("/tmp/x.mp4").ok(),
            Some(VideoSource::Local(PathBuf::from("/tmp/x.mp4")))
        );
        assert_eq!(
            local_uri(Path::new("/tmp/a b.mp4")),
            "file:///tmp/a%20b.mp4"
        );
        let err = VideoSource::parse("gopher://host/x.mp4")
            .err()
            .map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("'gopher' scheme is not supported")));
    }
}
