//! Generated answers kept as they arrive, so a resumed run does not ask for them again.
//!
//! A generative operator (`caption`) pays for every answer: a request to a model server,
//! or seconds of in-process generation. A manifest run commits a group of videos' rows
//! only when the group is done, so a run killed in the middle of a group would pay again
//! for every answer of the group. So the run names a folder (`framefusion.answers`, its
//! output's `_framefusion/answers/`, a local folder or an `s3://` prefix) and the
//! operator writes each answer there as soon as it arrives, one small object per answer:
//!
//! ```text
//! <answers>/<video>/<answer>      the answer's text (UTF-8)
//! ```
//!
//! where `<video>` is a hash of the video's path ([`video_folder`]) and `<answer>` a hash
//! of everything the answer depends on (the operator, its model, prompt and generation
//! settings, the clip: [`answer_key`]). Before it asks, the operator reads the answers of
//! the videos it works on and asks only for the rows it has none of; a killed run pays
//! again at most for the requests that were in flight. The run deletes a video's answers
//! once its rows are committed (they are in the manifest then), so the folder holds only
//! the videos in flight. An object is written whole or not at all (the local store writes
//! a temporary file and renames it), so a kill never leaves half an answer.
//!
//! A failure to keep or read answers is logged and costs only the saving: the answer still
//! reaches the row, and the manifest keeps it when its group commits.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::common::config::ConfigOptions;
use futures::TryStreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

use crate::UdfError;
use crate::media::source::{Confinement, VideoSource};
use crate::storage::{S3Clients, StorageOptions};

/// Where a session's generative operators keep their answers.
#[derive(Debug, Clone)]
pub struct Answers {
    store: Arc<dyn ObjectStore>,
    prefix: ObjectPath,
    display: String,
}

impl Answers {
    /// The answers folder of a session (`framefusion.answers`); `None` when none is set.
    /// Only a manifest run sets it, for its own output (which may lie outside a server
    /// client's roots: a console run's folder; a server refuses a client's `SET` of it),
    /// so it is checked against the process's roots only.
    ///
    /// A folder that cannot be opened (outside an executor's `--allow-root`, a local
    /// folder that cannot be created) is logged and keeps nothing: the answers still reach
    /// their rows.
    pub fn of(config: &ConfigOptions) -> Option<Self> {
        match Self::open(config) {
            Ok(answers) => answers,
            Err(e) => {
                log::warn!("{e}; answers are not kept as they arrive");
                None
            }
        }
    }

    fn open(config: &ConfigOptions) -> Result<Option<Self>, UdfError> {
        let folder = framefusion_common::failures::RunOptions::answers_of(config);
        if folder.is_empty() {
            return Ok(None);
        }
        let bad = |e: &dyn std::fmt::Display| {
            UdfError::Setup(format!(
                "framefusion.answers = '{folder}': {e}; give a local folder or an s3:// prefix the process may write"
            ))
        };
        let confinement = Confinement::none().with_clients(S3Clients::of(config));
        let (store, prefix): (Arc<dyn ObjectStore>, ObjectPath) =
            match confinement.source(&folder).map_err(|e| bad(&e))? {
                VideoSource::Local(path) => {
                    std::fs::create_dir_all(&path).map_err(|e| bad(&e))?;
                    let store = object_store::local::LocalFileSystem::new_with_prefix(&path)
                        .map_err(|e| bad(&e))?;
                    (Arc::new(store), ObjectPath::default())
                }
                VideoSource::S3(location, clients) => {
                    let client = clients
                        .client(&location.bucket, &StorageOptions::default())
                        .map_err(|e| bad(&e))?;
                    (client, location.path().map_err(|e| bad(&e))?)
                }
            };
        Ok(Some(Self {
            store,
            prefix,
            display: folder,
        }))
    }

    fn folder(&self, video: &str) -> ObjectPath {
        self.prefix.clone().join(video_folder(video).as_str())
    }

    /// The answers kept for `video`, by key (none when they cannot be read: logged).
    pub async fn load(&self, video: &str) -> HashMap<String, String> {
        let folder = self.folder(video);
        let read = async {
            let listed: Vec<_> = self.store.list(Some(&folder)).try_collect().await?;
            let mut out = HashMap::with_capacity(listed.len());
            for meta in listed {
                let Some(key) = meta.location.filename().map(str::to_owned) else {
                    continue;
                };
                let bytes = self.store.get(&meta.location).await?.bytes().await?;
                if let Ok(text) = String::from_utf8(bytes.to_vec()) {
                    out.insert(key, text);
                }
            }
            Ok::<_, object_store::Error>(out)
        };
        match read.await {
            Ok(out) => out,
            Err(e) => {
                log::warn!(
                    "{}: cannot read the answers kept for {video} ({e}); asking again",
                    self.display
                );
                HashMap::new()
            }
        }
    }

    /// Keeps `text`, the answer `key` of `video` (a failure is logged).
    pub async fn keep(&self, video: &str, key: &str, text: &str) {
        let at = self.folder(video).join(key);
        let payload = PutPayload::from(text.as_bytes().to_vec());
        if let Err(e) = self.store.put(&at, payload).await {
            log::warn!(
                "{}: cannot keep an answer for {video} ({e}); a resumed run will ask for it again",
                self.display
            );
        }
    }
}

/// The folder of `video`'s answers under the answers folder: a hash of its path.
pub fn video_folder(video: &str) -> String {
    format!("{:016x}", crate::fnv1a(video))
}

/// The key of an answer: a hash of what it depends on (`parts`, each whole).
pub fn answer_key(parts: &[&str]) -> String {
    let mut text = String::new();
    for part in parts {
        text.push_str(&part.len().to_string());
        text.push(':');
        text.push_str(part);
    }
    format!("{:016x}", crate::fnv1a(&text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn answers_are_kept_per_video_and_read_back() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let folder = dir.path().join("answers");
        let mut config = ConfigOptions::new();
        config
            .extensions
            .insert(framefusion_common::failures::RunOptions::default());
        assert!(Answers::of(&config).is_none());
        assert!(
            config
                .set("framefusion.answers", &folder.display().to_string())
                .is_ok()
        );
        let answers = Answers::of(&config).unwrap_or_else(|| panic!("no answers folder"));
        let key = answer_key(&["caption", "m", "1.5"]);
        assert_ne!(key, answer_key(&["caption", "m1", ".5"]));
        answers.keep("/v/a.mp4", &key, "a red car").await;
        answers.keep("/v/b.mp4", &key, "a blue car").await;
        let kept = answers.load("/v/a.mp4").await;
        assert_eq!(kept.get(&key).map(String::as_str), Some("a red car"));
        assert_eq!(kept.len(), 1);
        assert!(answers.load("/v/c.mp4").await.is_empty());
        assert!(folder.join(video_folder("/v/b.mp4")).join(&key).is_file());
    }
}
