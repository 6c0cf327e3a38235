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
//! - `onnx`: in-process generation from a Hugging Face Optimum export of a
//!   vision-encoder-decoder model whose folder is `caption.model` ([`crate::generate`]):
//!   frames at the export's size, `caption.batch_size` clips generated together, greedy
//!   or `caption.beams` beams. The call declares the export's two models, so a cluster
//!   places it on its GPU pool.
//!
//! With `fps=F` (an option or `caption.fps`) the clip's frames are taken `F` a second from
//! its start instead (at least one, at most [`MAX_FRAMES`]).
//!
//! A call's options (`'frames=2,size=224,max_tokens=64,model=NAME'`) override the
//! settings for that call. What fails what is the client's ([`crate::chat`]): a row whose
//! request still fails after the retries is null and reported to the run; a refused key,
//! an unknown model or an unreachable endpoint fails the query.

use std::collections::{BTreeMap, HashMap};

use datafusion::arrow::datatypes::DataType;
use datafusion::common::config::{ConfigExtension, ConfigOptions};
use datafusion::common::{Result, ScalarValue, config_namespace};
use futures::StreamExt;

use crate::UdfError;
use crate::answers::{self, Answers};
use crate::chat::ChatClient;
use crate::generative::{self, Backend, BackendSettings, GenerativeSettings};
use crate::media::MediaError;
use crate::media::decode::{DecodedFrame, Resize};
use crate::media::jpeg::encode_jpeg;
use crate::operator::{Arg, Batch, RowOutcome, VideoOperator};
use crate::storage::StorageOptions;

config_namespace! {
    /// Settings of `caption` (`caption.*`).
    pub struct CaptionOptions {
        /// The backend: `openai` (a chat-completions server) or `onnx` (in-process
        /// generation from an exported vision-encoder-decoder model).
        pub backend: String, default = "openai".to_owned()
        /// The server's base URL (its chat-completions API is `{endpoint}/chat/completions`).
        pub endpoint: String, default = "http://127.0.0.1:8000/v1".to_owned()
        /// The model: the one the server serves (vLLM's `--served-model-name`), or for
        /// `onnx` the export's folder (a path, or a name under `onnx.model_dir`).
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
        /// Frames per clip (evenly spaced).
        pub frames: usize, default = 4
        /// Frames per second of the clip instead (at most 32 a clip; 0: `frames`).
        pub fps: f64, default = 0.0
        /// The longer side of the frames sent, in pixels (never enlarged; the `onnx`
        /// backend scales frames to its export's size instead).
        pub size: u32, default = 448
        /// Beams of the `onnx` backend's search (1: greedy; 0: the export's `num_beams`).
        pub beams: usize, default = 0
        /// Clips generated together by the `onnx` backend.
        pub batch_size: usize, default = 8
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
        for (key, value) in crate::args::option_pairs("caption", options)? {
            let number = |what: &str| crate::args::whole_option("caption", what, value);
            match key {
                "frames" => {
                    out.frames = number("frames")? as usize;
                    out.fps = 0.0;
                }
                "fps" => {
                    out.fps = value
                        .parse::<f64>()
                        .ok()
                        .filter(|f| f.is_finite() && *f > 0.0)
                        .ok_or_else(|| {
                            UdfError::Setup(format!(
                                "caption: fps={value}: give a positive number of frames a second"
                            ))
                        })?;
                }
                "size" => out.size = u32::try_from(number("size")?).unwrap_or(u32::MAX),
                "max_tokens" => out.max_tokens = number("max_tokens")?,
                "concurrency" => out.concurrency = number("concurrency")? as usize,
                "beams" => out.beams = number("beams")? as usize,
                "batch" => out.batch_size = number("batch")? as usize,
                "model" => out.model = value.to_owned(),
                other => {
                    return Err(UdfError::Setup(format!(
                        "caption: unknown option '{other}'; the options are frames, fps, size, max_tokens, concurrency, beams, batch and model (the others are settings: SET caption.prompt = '...')"
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
        if self.backend != "onnx" {
            out.push(("endpoint".to_owned(), self.endpoint.clone()));
        }
        out
    }

    /// What an answer depends on besides its clip.
    fn answer_parts(&self) -> Vec<(String, String)> {
        let mut parts = vec![
            ("backend", self.backend.clone()),
            ("model", self.model.clone()),
            ("max_tokens", self.max_tokens.to_string()),
            ("frames", self.frames.to_string()),
        ];
        if self.fps > 0.0 {
            parts.push(("fps", self.fps.to_string()));
        }
        if self.backend == "onnx" {
            parts.push(("beams", self.beams.to_string()));
        } else {
            parts.extend([
                ("prompt", self.prompt.clone()),
                ("temperature", "0".to_owned()),
                ("size", self.size.to_string()),
            ]);
        }
        parts.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
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
}

impl GenerativeSettings for CaptionOptions {
    fn for_call(config: &ConfigOptions, options: Option<&str>) -> Result<Self, UdfError> {
        CaptionOptions::for_call(config, options)
    }

    fn backend(&self, config: &ConfigOptions) -> Result<Backend, UdfError> {
        BackendSettings {
            operator: "caption",
            backend: &self.backend,
            endpoint: &self.endpoint,
            model: &self.model,
            max_tokens: self.max_tokens,
            timeout_s: self.timeout_s,
            api_key_env: &self.api_key_env,
            export: "a vision-encoder-decoder model",
        }
        .open(config)
    }

    fn provenance(&self) -> Vec<(String, String)> {
        CaptionOptions::provenance(self)
    }
}

/// The times of `frames` evenly spaced frames of `[start_s, end_s)`: the start of each of
/// its `frames` equal parts (the frame read is the first at or after each, as
/// `frames_at` finds it, so it lies in the clip whenever the part holds a frame).
pub fn clip_times(start_s: f64, end_s: f64, frames: usize) -> Vec<f64> {
    let step = (end_s - start_s) / frames.max(1) as f64;
    (0..frames).map(|i| start_s + i as f64 * step).collect()
}

/// The times of a clip's frames: `fps` frames a second from `start_s` while before
/// `end_s` (at least one, at most [`MAX_FRAMES`]) when `fps` is positive, else `frames`
/// evenly spaced ([`clip_times`]).
pub fn frame_times(start_s: f64, end_s: f64, frames: usize, fps: f64) -> Vec<f64> {
    if fps > 0.0 {
        let n = ((end_s - start_s) * fps - 1e-9)
            .ceil()
            .clamp(1.0, MAX_FRAMES as f64) as usize;
        (0..n).map(|i| start_s + i as f64 / fps).collect()
    } else {
        clip_times(start_s, end_s, frames)
    }
}

/// `caption(path, start_s, end_s [, options])`: see the module docs.
#[derive(Debug, Default)]
pub struct Caption;

impl VideoOperator for Caption {
    fn name(&self) -> &'static str {
        "caption"
    }

    fn description(&self) -> &'static str {
        "A clip's caption from a vision-language model: an OpenAI-compatible server, or an exported captioner run in-process."
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

    fn runs_model(&self) -> bool {
        // with the onnx backend (a call's options may choose it)
        true
    }

    fn models_for(&self, config: &ConfigOptions, options: Option<&str>) -> Vec<String> {
        generative::models_for::<CaptionOptions>(config, options)
    }

    fn provenance(&self, config: &ConfigOptions, options: Option<&str>) -> Vec<(String, String)> {
        generative::provenance::<CaptionOptions>(config, options)
    }

    fn evaluate(&self, batch: &Batch<'_>) -> Result<Vec<RowOutcome>> {
        let mut outcomes: HashMap<usize, RowOutcome> = HashMap::new();
        for (options, rows) in generative::rows_by_options(batch, 3) {
            let settings = CaptionOptions::for_call(batch.config, options)
                .map_err(UdfError::into_task_error)?;
            match settings
                .backend(batch.config)
                .map_err(UdfError::into_task_error)?
            {
                Backend::Chat(client) => {
                    caption_rows(batch, &settings, &client, &rows, &mut outcomes)?;
                }
                Backend::Onnx(folder) => {
                    generate_rows(batch, &settings, &folder, &rows, &mut outcomes)?;
                }
            }
        }
        Ok(generative::in_row_order(batch, outcomes))
    }
}

/// A clip's frames, or why they cannot be had.
type Frames<T> = std::result::Result<Vec<T>, UdfError>;

/// How a backend wants a clip's frames: which, at what size, as what.
struct ClipFrames<'a, T> {
    frames: usize,
    fps: f64,
    resize: Resize,
    convert: &'a (dyn Fn(DecodedFrame) -> std::result::Result<T, MediaError> + Sync),
}

/// The key of `row`'s answer.
fn row_key(batch: &Batch<'_>, settings: &CaptionOptions, row: usize) -> String {
    let (start_s, end_s) = batch.range(row).unwrap_or_default();
    settings.answer_key(batch.path(row), start_s, end_s)
}

/// The rows of `rows` whose answers are not kept (`kept`, the session's answers folder):
/// the others' answers go to `outcomes` and are not asked again.
fn unanswered(
    batch: &Batch<'_>,
    settings: &CaptionOptions,
    kept: Option<&Answers>,
    rows: &[usize],
    outcomes: &mut HashMap<usize, RowOutcome>,
) -> Result<Vec<usize>> {
    let Some(kept) = kept else {
        return Ok(rows.to_vec());
    };
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
            match answers.get(&row_key(batch, settings, row)) {
                Some(text) => {
                    outcomes.insert(row, Ok(ScalarValue::Utf8(Some(text.clone()))));
                }
                None => todo.push(row),
            }
        }
    }
    Ok(todo)
}

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
    let kept = Answers::of(batch.config);
    let rows = unanswered(batch, settings, kept.as_ref(), rows, outcomes)?;
    let rows = rows.as_slice();
    let spec = ClipFrames {
        frames: settings.frames,
        fps: settings.fps,
        resize: Resize::LongestSide(settings.size),
        convert: &|frame: DecodedFrame| encode_jpeg(&frame.into(), JPEG_QUALITY),
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<(usize, Frames<Vec<u8>>)>(concurrency * 2);
    let answers = std::thread::scope(|scope| {
        let spec = &spec;
        scope.spawn(move || {
            let send = |row: usize, frames| tx.blocking_send((row, frames)).is_ok();
            decode_clips(batch, spec, rows, &send);
        });
        let kept = &kept;
        let requests = tokio_stream::wrappers::ReceiverStream::new(rx)
            .map(|(row, frames)| async move {
                let answer = match frames {
                    Ok(images) => client.complete(&settings.prompt, &images).await,
                    Err(e) => Err(e),
                };
                // kept as it arrives: a killed run does not pay for it again
                if let (Ok(text), Some(kept)) = (&answer, kept) {
                    kept.keep(batch.path(row), &row_key(batch, settings, row), text)
                        .await;
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

/// Captions `rows` into `outcomes` with the export in `folder`, in-process: one thread
/// decodes the clips' frames at the export's size; this one generates for
/// `caption.batch_size` clips at a time and keeps each batch's answers as they come.
fn generate_rows(
    batch: &Batch<'_>,
    settings: &CaptionOptions,
    folder: &std::path::Path,
    rows: &[usize],
    outcomes: &mut HashMap<usize, RowOutcome>,
) -> Result<()> {
    let model = crate::generate::open(folder, batch.models()).map_err(UdfError::into_task_error)?;
    let kept = Answers::of(batch.config);
    let rows = unanswered(batch, settings, kept.as_ref(), rows, outcomes)?;
    let rows = rows.as_slice();
    let search = model.search(
        settings.beams,
        usize::try_from(settings.max_tokens).unwrap_or(usize::MAX),
    );
    let (width, height) = model.size().ok_or_else(|| {
        UdfError::Setup(format!(
            "caption: the model folder '{}' holds a text model (its encoder reads input_ids); caption needs a vision-encoder-decoder export (translate takes text models)",
            folder.display()
        ))
        .into_task_error()
    })?;
    let convert = |frame: DecodedFrame| Ok(model.pixel_values(&frame.into()));
    let spec = ClipFrames {
        frames: settings.frames,
        fps: settings.fps,
        resize: Resize::Exact(width, height),
        convert: &convert,
    };
    let per_batch = settings.batch_size.max(1);
    let (tx, rx) = std::sync::mpsc::sync_channel::<(usize, Frames<Vec<f32>>)>(per_batch * 2);
    std::thread::scope(|scope| {
        let spec = &spec;
        scope.spawn(move || {
            let send = |row: usize, frames| tx.send((row, frames)).is_ok();
            decode_clips(batch, spec, rows, &send);
        });
        let mut pending: Vec<(usize, Vec<Vec<f32>>)> = Vec::with_capacity(per_batch);
        loop {
            let next = rx.recv().ok();
            let last = next.is_none();
            match next {
                Some((row, Ok(frames))) => pending.push((row, frames)),
                Some((row, Err(e))) => {
                    outcomes.insert(row, Err(e));
                }
                None => {}
            }
            if pending.len() >= per_batch || (last && !pending.is_empty()) {
                let clips = std::mem::take(&mut pending);
                let counts: Vec<usize> = clips.iter().map(|(_, f)| f.len()).collect();
                let pixels: Vec<f32> = clips
                    .iter()
                    .flat_map(|(_, f)| f.iter().flatten().copied())
                    .collect();
                match model.generate(pixels, &counts, search) {
                    Err(e) if e.fails_the_query() => return Err(e.into_task_error()),
                    Err(e) => {
                        let message = e.to_string();
                        for (row, _) in clips {
                            outcomes.insert(row, Err(UdfError::Model(message.clone())));
                        }
                    }
                    Ok(tokens) => {
                        for ((row, _), tokens) in clips.iter().zip(tokens) {
                            let text = model.text(&tokens);
                            if let (Ok(text), Some(kept)) = (&text, &kept) {
                                let key = row_key(batch, settings, *row);
                                crate::storage::block_on(kept.keep(batch.path(*row), &key, text))
                                    .map_err(|e| UdfError::from(e).into_task_error())?;
                            }
                            outcomes.insert(*row, text.map(|t| ScalarValue::Utf8(Some(t))));
                        }
                    }
                }
            }
            if last {
                return Ok(());
            }
        }
    })
}

/// Decodes the frames of each row's clip (the rows of one video in one call of
/// `frames_at_each`, one pass per run of nearby times) and sends each clip's frames,
/// converted, as soon as its last frame is decoded; stops when `send` says nobody
/// receives them any more.
fn decode_clips<T: Clone + Send>(
    batch: &Batch<'_>,
    spec: &ClipFrames<'_, T>,
    rows: &[usize],
    send: &(dyn Fn(usize, Frames<T>) -> bool + Sync),
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
            Ok(media) => send_clips(batch, spec, &media, &rows, send),
            Err(e) => rows
                .iter()
                .all(|&row| send(row, Err(UdfError::Option(e.to_string())))),
        };
        if !sent {
            return;
        }
    }
}

/// Sends the frames of each of `rows`' clips (all of the video `media`) as they are
/// decoded; false when nobody receives them any more.
fn send_clips<T: Clone + Send>(
    batch: &Batch<'_>,
    spec: &ClipFrames<'_, T>,
    media: &crate::media::source::MediaInput,
    rows: &[usize],
    send: &(dyn Fn(usize, Frames<T>) -> bool + Sync),
) -> bool {
    // each row's times, one after the other: row r's from starts[r]
    let mut times = Vec::new();
    let mut starts = Vec::with_capacity(rows.len() + 1);
    for &row in rows {
        let (start_s, end_s) = batch.range(row).unwrap_or_default();
        starts.push(times.len());
        times.extend(frame_times(start_s, end_s, spec.frames, spec.fps));
    }
    starts.push(times.len());
    let mut clips: Vec<Vec<Option<T>>> = (0..rows.len())
        .map(|r| vec![None; starts[r + 1] - starts[r]])
        .collect();
    let mut done = vec![false; rows.len()];
    let mut gone = false;
    let decoded =
        crate::media::decode::frames_at_each(media, &times, spec.resize, &mut |i, frame| {
            let r = starts.partition_point(|&s| s <= i) - 1;
            let k = i - starts[r];
            clips[r][k] = Some((spec.convert)(frame)?);
            if clips[r].iter().all(Option::is_some) {
                done[r] = true;
                let frames = clips[r].iter_mut().filter_map(Option::take).collect();
                if !send(rows[r], Ok(frames)) {
                    gone = true;
                    return Err(MediaError::Decode {
                        path: media.display.clone(),
                        message: "the query stopped".to_owned(),
                    });
                }
            }
            Ok(())
        });
    if gone {
        return false;
    }
    // the clips not sent yet: a time past the video's last frame repeats the clip's last
    // frame; a clip with no frame at all (or a video that fails) is the row's failure
    for (r, clip) in clips.into_iter().enumerate().filter(|(r, _)| !done[*r]) {
        let frames: Frames<T> = match &decoded {
            Err(e) => Err(UdfError::Option(e.to_string())),
            Ok(()) => {
                let mut kept: Vec<T> = Vec::with_capacity(clip.len());
                for frame in clip {
                    match (frame, kept.last()) {
                        (Some(frame), _) => kept.push(frame),
                        (None, Some(last)) => kept.push(last.clone()),
                        (None, None) => break,
                    }
                }
                if kept.is_empty() {
                    Err(UdfError::Option(format!(
                        "{}: no frame in [{}, {}) (past the end?)",
                        media.display,
                        times[starts[r]],
                        times[starts[r + 1] - 1]
                    )))
                } else {
                    Ok(kept)
                }
            }
        };
        if !send(rows[r], frames) {
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
        let o = CaptionOptions::for_call(&config, Some("fps=2")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(frame_times(1.0, 2.5, o.frames, o.fps), vec![1.0, 1.5, 2.0]);
        assert_eq!(
            frame_times(1.0, 1.1, 4, 2.0),
            vec![1.0],
            "at least one frame"
        );
        assert_eq!(frame_times(0.0, 100.0, 4, 10.0).len(), MAX_FRAMES);
        assert!(CaptionOptions::for_call(&config, Some("fps=0")).is_err());
    }
}
