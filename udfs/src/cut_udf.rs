//! `cut_clip(path, start_s, end_s, dest_prefix [, mode])`: writes `[start_s, end_s)` of a
//! video as a new MP4 file under `dest_prefix` (a local folder, or an `s3://bucket/prefix/`)
//! and returns the written file's URI.
//!
//! - `mode`: `auto` (default: stream copy when `start_s` sits on a keyframe, within half a
//!   frame; re-encode otherwise), `copy` (stream copy from the keyframe at or before
//!   `start_s`: no decoding, the clip may start up to one GOP early), `encode` (re-encode the
//!   video to H.264, frame-exact). Audio is stream-copied over the range in every mode.
//! - The file name is derived from the inputs: `{stem}_{start}_{end}_{mode}_{hash}.mp4`,
//!   the hash covering the source URI, its size and modification time (local files), the
//!   range and the mode. Running the same cut again finds the file and writes nothing, so a
//!   retried task never leaves a second copy.
//! - A local file is written under a temporary name in the destination folder and renamed
//!   into place (a reader never sees half a clip); an object is written to a local
//!   temporary file, then uploaded in one `PUT`.
//! - A clip that cannot be cut gives null (the reason is logged at `warn`); bad arguments
//!   (an unknown mode, an empty range) do too.

use std::path::{Path, PathBuf};

use datafusion::arrow::datatypes::DataType;
use datafusion::common::{Result, ScalarValue};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStoreExt, PutPayload};

use crate::UdfError;
use crate::error::MediaError;
use crate::media::cut::{CutMode, cut_to_file};
use crate::media::source::{VideoSource, local_uri};
use crate::operator::{Arg, ArgKind, Batch, RowOutcome, VideoOperator};
use crate::storage::{S3Clients, S3Location, StorageOptions, block_on, storage_error};

/// Where clips go.
enum Destination {
    Folder(PathBuf),
    Bucket(S3Location, S3Clients),
}

impl Destination {
    fn of(prefix: VideoSource) -> Self {
        match prefix {
            VideoSource::Local(path) => Self::Folder(path),
            VideoSource::S3(location, clients) => Self::Bucket(location, clients),
        }
    }
}

/// FNV-1a, 64 bits: a stable hash for names and fingerprints (not for security); the
/// same on every machine and release.
pub fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The output file name of a cut.
fn clip_name(source: &VideoSource, start_s: f64, end_s: f64, mode: CutMode) -> String {
    let uri = source.uri();
    let stamp = source
        .local_stamp()
        .map(|(len, modified)| format!("{len}:{modified}"))
        .unwrap_or_default();
    let stem = uri
        .rsplit('/')
        .next()
        .and_then(|name| Path::new(name).file_stem())
        .map_or_else(|| "clip".to_owned(), |s| s.to_string_lossy().into_owned());
    let stem: String = stem
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let hash = fnv1a(&format!(
        "{uri}|{stamp}|{}|{}|{}",
        start_s.to_bits(),
        end_s.to_bits(),
        mode.name()
    ));
    format!(
        "{stem}_{start_s:.3}_{end_s:.3}_{}_{hash:016x}.mp4",
        mode.name()
    )
}

/// Cuts one clip (see the module docs); returns the URI written (or found).
pub fn cut_clip(
    source: &VideoSource,
    start_s: f64,
    end_s: f64,
    dest_prefix: VideoSource,
    mode: CutMode,
    storage: &StorageOptions,
) -> Result<String, UdfError> {
    let name = clip_name(source, start_s, end_s, mode);
    match Destination::of(dest_prefix) {
        Destination::Folder(dir) => {
            let target = dir.join(&name);
            if target.is_file() {
                return Ok(local_uri(&target));
            }
            std::fs::create_dir_all(&dir).map_err(|e| {
                UdfError::Option(format!(
                    "cannot create the clip folder {}: {e}",
                    dir.display()
                ))
            })?;
            let tmp = dir.join(format!(".{name}.part-{}", std::process::id()));
            let input = source.media_input(storage)?;
            let written = cut_to_file(&input, start_s, end_s, mode, &tmp)
                .map_err(UdfError::from)
                .and_then(|_| {
                    std::fs::rename(&tmp, &target).map_err(|e| {
                        UdfError::Option(format!("cannot publish {}: {e}", target.display()))
                    })
                });
            if written.is_err() {
                let _ = std::fs::remove_file(&tmp);
            }
            written.map(|()| local_uri(&target))
        }
        Destination::Bucket(prefix, clients) => {
            let key = format!("{}/{name}", prefix.key.trim_end_matches('/'));
            let key = key.trim_start_matches('/').to_owned();
            let target = prefix.with_key(&key);
            let uri = target.uri();
            let store = clients.client(&prefix.bucket, storage)?;
            let object = ObjectPath::parse(&key).map_err(|e| MediaError::UnsupportedUri {
                uri: uri.clone(),
                reason: format!("not a valid object key: {e}"),
            })?;
            match block_on(store.head(&object))? {
                Ok(_) => return Ok(uri),
                Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(storage_error(&uri, &e).into()),
            }
            let tmp = tempfile::Builder::new()
                .prefix(".framefusion-clip-")
                .suffix(".mp4")
                .tempfile()
                .map_err(|e| UdfError::Option(format!("cannot make a temporary file: {e}")))?;
            let input = source.media_input(storage)?;
            cut_to_file(&input, start_s, end_s, mode, tmp.path())?;
            let bytes = std::fs::read(tmp.path())
                .map_err(|e| UdfError::Option(format!("cannot read the cut clip back: {e}")))?;
            block_on(store.put(&object, PutPayload::from(bytes)))?
                .map_err(|e| storage_error(&uri, &e))?;
            Ok(uri)
        }
    }
}

/// `cut_clip(path, start_s, end_s, dest_prefix [, mode])`: see the module docs.
#[derive(Debug, Default)]
pub struct CutClip;

impl VideoOperator for CutClip {
    fn name(&self) -> &'static str {
        "cut_clip"
    }

    fn description(&self) -> &'static str {
        "Cuts [start_s, end_s) of a video into a new MP4 under dest_prefix (stream copy or re-encode) and returns where it wrote it; idempotent."
    }

    fn args(&self) -> &'static [Arg] {
        const ARGS: &[Arg] = &[
            Arg::path(),
            Arg::seconds("start_s"),
            Arg::seconds("end_s"),
            Arg {
                name: "dest_prefix",
                kind: ArgKind::Text,
                required: true,
            },
            Arg::options("mode"),
        ];
        ARGS
    }

    fn arities(&self) -> Vec<usize> {
        vec![4, 5]
    }

    fn return_type(&self) -> DataType {
        DataType::Utf8
    }

    fn evaluate(&self, batch: &Batch<'_>) -> Result<Vec<RowOutcome>> {
        Ok(batch.each_row(|row| {
            let mode = batch
                .text(4, row)
                .map_or(Ok(CutMode::Auto), CutMode::parse)?;
            let (start_s, end_s) = batch.range(row).unwrap_or_default();
            let uri = cut_clip(
                &batch.source(row)?,
                start_s,
                end_s,
                batch.location(batch.text(3, row).unwrap_or_default())?,
                mode,
                &StorageOptions::default(),
            )?;
            Ok(ScalarValue::Utf8(Some(uri)))
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_stable_and_distinct() {
        let source = VideoSource::S3(
            S3Location {
                bucket: "b".into(),
                key: "raw/My Clip.mp4".into(),
            },
            S3Clients::default(),
        );
        let a = clip_name(&source, 1.0, 2.5, CutMode::Copy);
        assert_eq!(a, clip_name(&source, 1.0, 2.5, CutMode::Copy));
        assert!(a.starts_with("My_Clip_1.000_2.500_copy_"), "{a}");
        assert_ne!(a, clip_name(&source, 1.0, 2.5, CutMode::Encode));
        assert_ne!(a, clip_name(&source, 1.0, 2.6, CutMode::Copy));
    }
}
