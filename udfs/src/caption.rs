//! `caption(path, start_s, end_s [, options])`: a clip's caption from a vision-language
//! model.
//!
//! The clip's `frames` frames (default 4) are taken evenly spaced over `[start_s, end_s)`
//! (frame `i` is the first frame at or after `start_s + i * (end_s - start_s) / frames`, the
//! start of its part of the clip, so every frame lies in the clip; a time past the video's
//! last frame repeats the clip's last frame), scaled
//! so their longer side is `size` pixels (default 448, never enlarged), encoded as JPEG
//! and sent with `caption.prompt` to the captioning backend, whose answer is the row's
//! value.
//!
//! Backends (`caption.backend`):
//! - `openai`: any OpenAI-compatible chat-completions server that takes images
//!   ([`crate::chat`]): `caption.endpoint`, `caption.model`, `caption.max_tokens`,
//!   temperature 0, the API key from the environment variable named by
//!   `caption.api_key_env` on the process that sends the request (an executor on a
//!   cluster; only the variable's name travels). `caption.concurrency` requests are in
//!   flight at once (asynchronous: one thread waits for all of a batch's), while the
//!   frames of the next clips are decoded on another thread. The model runs on the
//!   server, so a call runs no model here and is not placed on a cluster's GPU pool.
//! - `onnx` (in-process generation from an exported vision-encoder-decoder): not yet.
//!
//! A call's options (`'frames=2,size=224,max_tokens=64,model=NAME'`) override the
//! settings for that call. What fails what is the client's ([`crate::chat`]): a row whose
//! request still fails after the retries is null and reported to the run; a refused key,
//! an unknown model or an unreachable endpoint fails the query.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use datafusion::arrow::datatypes::DataType;
use datafusion::common::config::{ConfigExtension, ConfigOptions};
use datafusion::common::{Result, ScalarValue, config_namespace};
use futures::StreamExt;

use crate::UdfError;
use crate::answers::{self, Answers};
use crate::chat::ChatClient;
use crate::media::decode::Resize;
use crate::media::jpeg::encode_jpeg;
use crate::operator::{Arg, Batch, RowOutcome, VideoOperator};
use crate::storage::StorageOptions;

config_namespace! {
    /// Settings of `caption` (`caption.*`).
    pub struct CaptionOptions {
        /// The backend: `openai` (a chat-completions server; `onnx` is not yet supported).
        pub backend: String, default = "openai".to_owned()
        /// The server's base URL (its chat-completions API is `{endpoint}/chat/completions`).
        pub endpoint: String, default = "http://127.0.0.1:8000/v1".to_owned()
        /// The model the server serves (vLLM's `--served-model-name`).
        pub model: String, default = String::new()
        /// What the model is asked about the frames.
        pub prompt: String, default = "Describe this video clip in one or two sentences: the scene, the subjects and what they do.".to_owned()
        /// The longest answer, in tokens.
        pub max_tokens: u64, default = 256
        /// The environment variable holding the API key (its name, not the key; empty:
        /// no key is sent).
        pub api_key_env: String, default = String::new()
        /// Requests in flight at once per batch of rows.
        pub concurrency: usize, default = 16
        /// Seconds one request may take.
        pub timeout_s: u64, default = 120
        /// Frames per clip.
        pub frames: usize, default = 4
        /// The longer side of the frames sent, in pixels (never enlarged).
        pub size: u32, default = 448
    }
}

framefusion_common::prefixed_extension!(CaptionOptions);

impl ConfigExtension for CaptionOptions {
    const PREFIX: &'static str = "caption";
}

/// At most this many frames per clip.
pub const MAX_FRAMES: usize = 32;

/// JPEG quality of the frames sent (ffmpeg's `-q:v` scale: 2 is visually lossless).
const JPEG_QUALITY: u8 = 2;

impl CaptionOptions {
    /// The session's `caption.*` settings with a call's `options` over them.
    pub fn for_call(config: &ConfigOptions, options: Option<&str>) -> Result<Self, UdfError> {
        let mut out = config.extensions.get::<Self>().cloned().unwrap_or_default();
        for item in options
            .unwrap_or_default()
            .split([',', ' ', '\n', '\t'])
            .filter(|s| !s.is_empty())
        {
            let (key, value) = item.split_once('=').ok_or_else(|| {
                UdfError::Setup(format!("caption: '{item}' in the options is not key=value"))
            })?;
            let number = |what: &str| {
                value.trim().parse::<u64>().map_err(|_| {
                    UdfError::Setup(format!("caption: {what}={value}: not a whole number"))
                })
            };
            match key.trim() {
                "frames" => out.frames = number("frames")? as usize,
                "size" => out.size = u32::try_from(number("size")?).unwrap_or(u32::MAX),
                "max_tokens" => out.max_tokens = number("max_tokens")?,
                "concurrency" => out.concurrency = number("concurrency")? as usize,
                "model" => out.model = value.to_owned(),
                other => {
                    return Err(UdfError::Setup(format!(
                        "caption: unknown option '{other}'; the options are frames, size, max_tokens, concurrency and model (the others are settings: SET caption.prompt = '...')"
                    )));
                }
            }
        }
        if !(1..=MAX_FRAMES).contains(&out.frames) {
            return Err(UdfError::Setup(format!(
                "caption: frames={}: give 1 to {MAX_FRAMES}",
                out.frames
            )));
        }
        if out.size < 16 {
            return Err(UdfError::Setup(format!(
                "caption: size={}: at least 16",
                out.size
            )));
        }
        Ok(out)
    }

    /// What a run records of these settings (`_SUCCESS`; never the key, nor the name of
    /// its variable): what the answers depend on, and where they came from.
    pub fn provenance(&self) -> Vec<(String, String)> {
        let mut out = self.answer_parts();
        out.push(("endpoint".to_owned(), self.endpoint.clone()));
        out
    }

    /// What an answer depends on besides its clip.
    fn answer_parts(&self) -> Vec<(String, String)> {
        [
            ("backend", self.backend.clone()),
            ("model", self.model.clone()),
            ("prompt", self.prompt.clone()),
            ("max_tokens", self.max_tokens.to_string()),
            ("temperature", "0".to_owned()),
            ("frames", self.frames.to_string()),
            ("size", self.size.to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    /// The key of the answer for a clip of `path` ([`answers::answer_key`]).
    fn answer_key(&self, path: &str, start_s: f64, end_s: f64) -> String {
        let parts = self.answer_parts();
        let (start, end) = (format!("{start_s:?}"), format!("{end_s:?}"));
        let mut all: Vec<&str> = vec!["caption"];
        all.extend(parts.iter().map(|(_, v)| v.as_str()));
        all.extend([path, start.as_str(), end.as_str()]);
        answers::answer_key(&all)
    }

    /// The client of the backend these settings name.
    fn client(&self) -> Result<ChatClient, UdfError> {
        match self.backend.as_str() {
            "openai" => ChatClient::new(
                &self.endpoint,
                &self.model,
                self.max_tokens,
                Duration::from_secs(self.timeout_s.max(1)),
                &self.api_key_env,
            ),
            "onnx" => Err(UdfError::Setup(
                "caption.backend = 'onnx' (in-process generation) is not supported yet; use 'openai' with a model server".to_owned(),
            )),
            other => Err(UdfError::Setup(format!(
                "caption.backend = '{other}': use 'openai'"
            ))),
        }
    }
}

/// The times of `frames` evenly spaced frames of `[start_s, end_s)`: the start of each of
/// its `frames` equal parts (the frame read is the first at or after each, as
/// `frames_at` finds it, so it lies in the clip whenever the part holds a frame).
pub fn clip_times(start_s: f64, end_s: f64, frames: usize) -> Vec<f64> {
    let step = (end_s - start_s) / frames.max(1) as f64;
    (0..frames).map(|i| start_s + i as f64 * step).collect()
}

/// `caption(path, start_s, end_s [, options])`: see the module docs.
#[derive(Debug, Default)]
pub struct Caption;

impl VideoOperator for Caption {
    fn name(&self) -> &'static str {
        "caption"
    }

    fn description(&self) -> &'static str {
        "A clip's caption from a vision-language model served by an OpenAI-compatible server."
    }

    fn args(&self) -> &'static [Arg] {
        const ARGS: &[Arg] = &[
            Arg::path(),
            Arg::seconds("start_s"),
            Arg::seconds("end_s"),
            Arg::options("options"),
        ];
        ARGS
    }

    fn arities(&self) -> Vec<usize> {
        vec![3, 4]
    }

    fn return_type(&self) -> DataType {
        DataType::Utf8
    }

    fn provenance(&self, config: &ConfigOptions, options: Option<&str>) -> Vec<(String, String)> {
        CaptionOptions::for_call(config, options)
            .map(|o| o.provenance())
            .unwrap_or_default()
    }

    fn evaluate(&self, batch: &Batch<'_>) -> Result<Vec<RowOutcome>> {
        // the rows of each options text
        let mut calls: BTreeMap<Option<&str>, Vec<usize>> = BTreeMap::new();
        for &row in batch.rows() {
            calls.entry(batch.text(3, row)).or_default().push(row);
        }
        let mut outcomes: HashMap<usize, RowOutcome> = HashMap::new();
        for (options, rows) in calls {
            let settings = CaptionOptions::for_call(batch.config, options)
                .map_err(UdfError::into_task_error)?;
            let client = settings.client().map_err(UdfError::into_task_error)?;
            caption_rows(batch, &settings, &client, &rows, &mut outcomes)?;
        }
        Ok(batch
            .rows()
            .iter()
            .map(|row| {
                outcomes.remove(row).unwrap_or_else(|| {
                    Err(UdfError::Option(
                        "caption: the row was not computed".to_owned(),
                    ))
                })
            })
            .collect())
    }
}

/// A clip's frames as JPEG files, or why they cannot be had.
type Frames = std::result::Result<Vec<Vec<u8>>, UdfError>;

/// Captions `rows` into `outcomes`: one thread decodes the clips' frames (the rows of a
/// video together) and hands them over as they are ready; this one keeps up to
/// `caption.concurrency` requests in flight. A setup failure fails the query.
fn caption_rows(
    batch: &Batch<'_>,
    settings: &CaptionOptions,
    client: &ChatClient,
    rows: &[usize],
    outcomes: &mut HashMap<usize, RowOutcome>,
) -> Result<()> {
    let concurrency = settings.concurrency.max(1);
    let kept = Answers::of(batch.config).map_err(UdfError::into_task_error)?;
    let key = |row: usize| {
        let (start_s, end_s) = batch.range(row).unwrap_or_default();
        settings.answer_key(batch.path(row), start_s, end_s)
    };
    // the rows whose answers a run kept before are not asked again
    let rows = match &kept {
        None => rows.to_vec(),
        Some(kept) => {
            let mut videos: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
            for &row in rows {
                videos.entry(batch.path(row)).or_default().push(row);
            }
            let loaded = crate::storage::block_on(async {
                let mut out = Vec::with_capacity(videos.len());
                for (video, rows) in videos {
                    out.push((kept.load(video).await, rows));
                }
                out
            })
            .map_err(|e| UdfError::from(e).into_task_error())?;
            let mut todo = Vec::new();
            for (answers, rows) in loaded {
                for row in rows {
                    match answers.get(&key(row)) {
                        Some(text) => {
                            outcomes.insert(row, Ok(ScalarValue::Utf8(Some(text.clone()))));
                        }
                        None => todo.push(row),
                    }
                }
            }
            todo
        }
    };
    let rows = rows.as_slice();
    let (tx, rx) = tokio::sync::mpsc::channel::<(usize, Frames)>(concurrency * 2);
    let answers = std::thread::scope(|scope| {
        scope.spawn(move || decode_clips(batch, settings, rows, &tx));
        let (kept, key) = (&kept, &key);
        let requests = tokio_stream::wrappers::ReceiverStream::new(rx)
            .map(|(row, frames)| async move {
                let answer = match frames {
                    Ok(images) => client.complete(&settings.prompt, &images).await,
                    Err(e) => Err(e),
                };
                // kept as it arrives: a killed run does not pay for it again
                if let (Ok(text), Some(kept)) = (&answer, kept) {
                    kept.keep(batch.path(row), &key(row), text).await;
                }
                (row, answer)
            })
            .buffer_unordered(concurrency)
            .collect::<Vec<_>>();
        crate::storage::block_on(requests)
    })
    .map_err(|e| UdfError::from(e).into_task_error())?;
    for (row, answer) in answers {
        match answer {
            Err(e) if e.fails_the_query() => return Err(e.into_task_error()),
            answer => {
                outcomes.insert(row, answer.map(|text| ScalarValue::Utf8(Some(text))));
            }
        }
    }
    Ok(())
}

/// Decodes the frames of each row's clip (the rows of one video in one call of
/// `frames_at_each`, one pass per run of nearby times) and sends each clip's frames,
/// JPEG-encoded, as soon as its last frame is decoded.
fn decode_clips(
    batch: &Batch<'_>,
    settings: &CaptionOptions,
    rows: &[usize],
    tx: &tokio::sync::mpsc::Sender<(usize, Frames)>,
) {
    let mut videos: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for &row in rows {
        videos.entry(batch.path(row)).or_default().push(row);
    }
    for rows in videos.into_values() {
        let media = batch
            .source(rows[0])
            .and_then(|s| Ok(s.media_input(&StorageOptions::default())?));
        let sent = match media {
            Ok(media) => send_clips(batch, settings, &media, &rows, tx),
            Err(e) => rows.iter().all(|&row| {
                tx.blocking_send((row, Err(UdfError::Option(e.to_string()))))
                    .is_ok()
            }),
        };
        if !sent {
            return;
        }
    }
}

/// Sends the frames of each of `rows`' clips (all of the video `media`) as they are
/// decoded; false when nobody receives them any more.
fn send_clips(
    batch: &Batch<'_>,
    settings: &CaptionOptions,
    media: &crate::media::source::MediaInput,
    rows: &[usize],
    tx: &tokio::sync::mpsc::Sender<(usize, Frames)>,
) -> bool {
    let n = settings.frames;
    let mut times = Vec::with_capacity(rows.len() * n);
    for &row in rows {
        let (start_s, end_s) = batch.range(row).unwrap_or_default();
        times.extend(clip_times(start_s, end_s, n));
    }
    let mut clips: Vec<Vec<Option<Vec<u8>>>> = vec![vec![None; n]; rows.len()];
    let mut done = vec![false; rows.len()];
    let mut gone = false;
    let decoded = crate::media::decode::frames_at_each(
        media,
        &times,
        Resize::LongestSide(settings.size),
        &mut |i, frame| {
            let (r, k) = (i / n, i % n);
            let rgb: crate::media::image::Rgb = frame.into();
            clips[r][k] = Some(encode_jpeg(&rgb, JPEG_QUALITY)?);
            if clips[r].iter().all(Option::is_some) {
                done[r] = true;
                let jpegs = clips[r].iter_mut().filter_map(Option::take).collect();
                if tx.blocking_send((rows[r], Ok(jpegs))).is_err() {
                    gone = true;
                    return Err(crate::media::MediaError::Decode {
                        path: media.display.clone(),
                        message: "the query stopped".to_owned(),
                    });
                }
            }
            Ok(())
        },
    );
    if gone {
        return false;
    }
    // the clips not sent yet: a time past the video's last frame repeats the clip's last
    // frame; a clip with no frame at all (or a video that fails) is the row's failure
    for (r, clip) in clips.into_iter().enumerate().filter(|(r, _)| !done[*r]) {
        let frames: Frames = match &decoded {
            Err(e) => Err(UdfError::Option(e.to_string())),
            Ok(()) => {
                let mut jpegs: Vec<Vec<u8>> = Vec::with_capacity(n);
                for frame in clip {
                    match (frame, jpegs.last()) {
                        (Some(jpeg), _) => jpegs.push(jpeg),
                        (None, Some(last)) => jpegs.push(last.clone()),
                        (None, None) => break,
                    }
                }
                if jpegs.is_empty() {
                    Err(UdfError::Option(format!(
                        "{}: no frame in [{}, {}) (past the end?)",
                        media.display,
                        times[r * n],
                        times[r * n + n - 1]
                    )))
                } else {
                    Ok(jpegs)
                }
            }
        };
        if tx.blocking_send((rows[r], frames)).is_err() {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_override_the_settings() {
        let mut config = ConfigOptions::new();
        config.extensions.insert(CaptionOptions::default());
        assert!(config.set("caption.model", "qwen").is_ok());
        let o = CaptionOptions::for_call(&config, Some("frames=2,size=224"))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((o.frames, o.size, o.model.as_str()), (2, 224, "qwen"));
        assert!(CaptionOptions::for_call(&config, Some("frames=0")).is_err());
        assert!(CaptionOptions::for_call(&config, Some("prompt=x")).is_err());
        assert_eq!(clip_times(0.0, 4.0, 2), vec![0.0, 2.0]);
    }
}
