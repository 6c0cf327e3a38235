//! In-process text generation from a Hugging Face Optimum (or transformers.js) export of an
//! encoder-decoder model, one folder of
//!
//! ```text
//! encoder_model.onnx          images: pixel_values [B, 3, H, W] -> last_hidden_state [B, N, D]
//!                             text:   input_ids, attention_mask [B, S] -> last_hidden_state [B, S, D]
//! decoder_model_merged.onnx   input_ids, encoder_hidden_states, [encoder_attention_mask],
//!                             past_key_values.{i}.key/.value (a captioner's GPT-2 decoder) or
//!                             past_key_values.{i}.decoder/.encoder.key/.value (a seq2seq
//!                             model's: Marian, T5, BART), use_cache_branch
//!                             -> logits, present.{i}.(...) named as the cache inputs
//! tokenizer.json              the tokenizer (the `tokenizers` crate reads it)
//! preprocessor_config.json    images only: the image processor's settings (resize, rescale,
//!                             normalize)
//! generation_config.json      start, end and pad tokens, max_length, num_beams, length_penalty,
//!                             early_stopping, bad_words_ids, forced_eos_token_id,
//!                             renormalize_logits
//! config.json                 text only, optional: max_position_embeddings (inputs are cut
//!                             to it)
//! ```
//!
//! The encoder's inputs say which it is: a vision-encoder-decoder captioner (ViT-GPT2) or a
//! text-to-text model (a translator such as Marian opus-mt).
//!
//! [`Seq2Seq::pixel_values`] prepares a frame as the image processor does (the frame is
//! scaled to the processor's size by the decode pass with ffmpeg's scaler, not PIL's:
//! identical when the frame already has that size, close otherwise; then rescaled in
//! float64 and normalised in float32, as Hugging Face's processors compute it).
//! [`Seq2Seq::generate`] runs the encoder on every frame of a batch of clips, pools a
//! clip's frames (the mean of their encoder states), and generates with the decoder;
//! [`Seq2Seq::generate_text`] encodes a batch of texts as the tokenizer does (its
//! post-processor's special tokens added, padded to the longest with the pad token and an
//! attention mask of the real tokens, which the decoder's cross-attention also gets). The
//! decoder reuses its key/value cache between steps (the merged decoder's
//! `use_cache_branch`; a seq2seq decoder's cross-attention cache is computed on the first
//! step and passed through after): greedy as `generate()` does it, or beam search as its
//! beam scorer does (2 x beams candidates a step, an end token among the first `beams`
//! closes a hypothesis scored `sum of log-probabilities / generated_len ^ length_penalty`,
//! `early_stopping` true or false). The logits processors a generation config names are
//! applied as `generate()` applies them: `bad_words_ids` of one token never generated
//! (Marian's pad), `forced_eos_token_id` on the last step, and with `renormalize_logits`
//! the beam scores normalised again after them. Both models run where `onnx.device` says
//! (CUDA or the CPU), loaded once per process like every model.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ort::session::{Session, SessionInputValue};
use ort::value::{DynValue, Tensor};
use serde::Deserialize;

use crate::UdfError;
use crate::media::image::Rgb;
use crate::models::{LoadedModel, Models, model_label};

/// The encoder's file in an export's folder.
pub const ENCODER: &str = "encoder_model.onnx";
/// The merged decoder's file in an export's folder.
pub const DECODER: &str = "decoder_model_merged.onnx";

/// The image processor's settings (`preprocessor_config.json`).
#[derive(Debug, Clone, Deserialize)]
pub struct Preprocessor {
    #[serde(default)]
    size: ProcessorSize,
    #[serde(default = "yes")]
    do_rescale: bool,
    #[serde(default = "rescale")]
    rescale_factor: f64,
    #[serde(default = "yes")]
    do_normalize: bool,
    #[serde(default = "half")]
    image_mean: Vec<f32>,
    #[serde(default = "half")]
    image_std: Vec<f32>,
}

#[derive(Debug, Clone, Default, Deserialize)]
struct ProcessorSize {
    height: Option<u32>,
    width: Option<u32>,
}

fn yes() -> bool {
    true
}
fn rescale() -> f64 {
    1.0 / 255.0
}
fn half() -> Vec<f32> {
    vec![0.5; 3]
}

/// One token id or several (`eos_token_id` may be a list).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum Ids {
    One(i64),
    Many(Vec<i64>),
}

/// The generation settings of an export (`generation_config.json`).
#[derive(Debug, Clone, Deserialize)]
pub struct GenerationConfig {
    decoder_start_token_id: Option<i64>,
    bos_token_id: Option<i64>,
    eos_token_id: Option<Ids>,
    pad_token_id: Option<i64>,
    #[serde(default = "max_length")]
    max_length: usize,
    #[serde(default = "one")]
    num_beams: usize,
    #[serde(default = "unit")]
    length_penalty: f64,
    #[serde(default)]
    early_stopping: serde_json::Value,
    #[serde(default)]
    bad_words_ids: Vec<Vec<i64>>,
    forced_eos_token_id: Option<Ids>,
    #[serde(default)]
    renormalize_logits: bool,
}

/// The model's settings a text model's inputs depend on (`config.json`, optional).
#[derive(Debug, Clone, Default, Deserialize)]
struct ModelConfig {
    max_position_embeddings: Option<usize>,
}

/// What the encoder reads.
#[derive(Debug, Clone)]
enum Input {
    /// Frames (`pixel_values`) of this width and height, prepared as the processor says.
    Image { pre: Preprocessor, size: (u32, u32) },
    /// Text (`input_ids`, `attention_mask`).
    Text,
}

/// What the encoder made of a batch: states `[rows, sequence, hidden]` and, for text, the
/// mask of the real tokens `[rows, sequence]`.
#[derive(Debug, Clone)]
struct Encoded {
    shape: [i64; 3],
    states: Vec<f32>,
    mask: Vec<i64>,
}

impl Encoded {
    fn rows(&self) -> usize {
        self.shape[0] as usize
    }

    /// The rows `picks`, in that order.
    fn pick(&self, picks: &[usize]) -> Self {
        let one = (self.shape[1] * self.shape[2]) as usize;
        let seq = self.shape[1] as usize;
        let mut states = Vec::with_capacity(picks.len() * one);
        let mut mask = Vec::with_capacity(picks.len() * seq);
        for &r in picks {
            states.extend_from_slice(&self.states[r * one..(r + 1) * one]);
            mask.extend_from_slice(&self.mask[r * seq..(r + 1) * seq]);
        }
        Self {
            shape: [picks.len() as i64, self.shape[1], self.shape[2]],
            states,
            mask,
        }
    }
}

fn max_length() -> usize {
    20
}
fn one() -> usize {
    1
}
fn unit() -> f64 {
    1.0
}

/// How to generate: beams (1: greedy) and the most new tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Search {
    /// Beams (1: greedy).
    pub beams: usize,
    /// The most tokens generated after the start token.
    pub max_new: usize,
}

/// One key/value cache input of the decoder and the output it comes back as.
#[derive(Debug, Clone)]
struct Slot {
    past: String,
    present: String,
    heads: i64,
    head_dim: i64,
}

/// A loaded export: the two models, the tokenizer and the settings.
pub struct Seq2Seq {
    folder: PathBuf,
    encoder: Arc<LoadedModel>,
    decoder: Arc<LoadedModel>,
    slots: Vec<Slot>,
    tokenizer: tokenizers::Tokenizer,
    input: Input,
    generation: GenerationConfig,
    start: i64,
    eos: Vec<i64>,
    pad: i64,
    /// Whether the decoder takes `encoder_attention_mask`.
    masks: bool,
    /// Tokens never generated (`bad_words_ids` of one token).
    banned: Vec<i64>,
    /// The token forced on the last step (`forced_eos_token_id`).
    forced_eos: Option<i64>,
    /// The longest input, in tokens (text).
    max_source: Option<usize>,
}

impl std::fmt::Debug for Seq2Seq {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Seq2Seq")
            .field("folder", &self.folder)
            .finish_non_exhaustive()
    }
}

fn setup(folder: &Path, what: impl std::fmt::Display) -> UdfError {
    UdfError::Setup(format!("the model folder '{}': {what}", folder.display()))
}

fn model_error(path: &Path, e: impl std::fmt::Display) -> UdfError {
    UdfError::Model(format!("model '{}': {e}", path.display()))
}

fn read_json<T: serde::de::DeserializeOwned>(folder: &Path, name: &str) -> Result<T, UdfError> {
    let path = folder.join(name);
    let text = std::fs::read_to_string(&path).map_err(|e| {
        setup(
            folder,
            format!("cannot read {name} ({e}); an Optimum export holds it"),
        )
    })?;
    serde_json::from_str(&text).map_err(|e| setup(folder, format!("{name} is not valid ({e})")))
}

impl Seq2Seq {
    /// The model files of the export in `folder` (loaded by the operator's scaffold).
    pub fn model_files(folder: &Path) -> Vec<String> {
        [ENCODER, DECODER]
            .iter()
            .map(|f| folder.join(f).display().to_string())
            .collect()
    }

    /// The export in `folder`, its models from `models` (loaded for the call).
    pub fn open(folder: &Path, models: &Models) -> Result<Self, UdfError> {
        let files = Self::model_files(folder);
        let encoder = models.get(&files[0])?;
        let decoder = models.get(&files[1])?;
        let tokenizer = tokenizers::Tokenizer::from_file(folder.join("tokenizer.json"))
            .map_err(|e| setup(folder, format!("cannot read tokenizer.json ({e})")))?;
        let generation: GenerationConfig = read_json(folder, "generation_config.json")?;
        let encoder_inputs: Vec<&str> = encoder.inputs.iter().map(|p| p.name.as_str()).collect();
        let input = if encoder_inputs.contains(&"pixel_values") {
            let pre: Preprocessor = read_json(folder, "preprocessor_config.json")?;
            let size = match (pre.size.width, pre.size.height) {
                (Some(w), Some(h)) if w > 0 && h > 0 => (w, h),
                _ => {
                    return Err(setup(
                        folder,
                        "preprocessor_config.json has no size {\"height\": H, \"width\": W} (other image processors' sizes are not supported)",
                    ));
                }
            };
            if pre.image_mean.len() != 3 || pre.image_std.len() != 3 {
                return Err(setup(folder, "image_mean and image_std must have 3 values"));
            }
            Input::Image { pre, size }
        } else if encoder_inputs.contains(&"input_ids")
            && encoder_inputs.contains(&"attention_mask")
        {
            Input::Text
        } else {
            return Err(setup(
                folder,
                format!(
                    "{ENCODER} takes neither pixel_values (an image encoder) nor input_ids and attention_mask (a text encoder); its inputs: {}",
                    encoder_inputs.join(", ")
                ),
            ));
        };
        let max_source = match input {
            Input::Text if folder.join("config.json").exists() => {
                read_json::<ModelConfig>(folder, "config.json")?.max_position_embeddings
            }
            _ => None,
        };
        let start = generation
            .decoder_start_token_id
            .or(generation.bos_token_id)
            .ok_or_else(|| {
                setup(
                    folder,
                    "generation_config.json names no decoder_start_token_id or bos_token_id",
                )
            })?;
        let eos = match &generation.eos_token_id {
            Some(Ids::One(id)) => vec![*id],
            Some(Ids::Many(ids)) => ids.clone(),
            None => Vec::new(),
        };
        let pad = generation
            .pad_token_id
            .or_else(|| eos.first().copied())
            .unwrap_or(0);
        let mut banned = Vec::new();
        for words in &generation.bad_words_ids {
            match words.as_slice() {
                [one] => banned.push(*one),
                _ => log::warn!(
                    "the model folder '{}': bad_words_ids {words:?} of more than one token are not applied",
                    folder.display()
                ),
            }
        }
        let forced_eos = match &generation.forced_eos_token_id {
            Some(Ids::One(id)) => Some(*id),
            Some(Ids::Many(ids)) if ids.len() == 1 => Some(ids[0]),
            Some(Ids::Many(ids)) => {
                return Err(setup(
                    folder,
                    format!("forced_eos_token_id {ids:?}: only one forced end token is supported"),
                ));
            }
            None => None,
        };
        let mut slots = Vec::new();
        for port in &decoder.inputs {
            let Some(rest) = port.name.strip_prefix("past_key_values.") else {
                continue;
            };
            let (heads, head_dim) = match port.shape.as_slice() {
                [_, h, _, d] if *h > 0 && *d > 0 => (*h, *d),
                other => {
                    return Err(setup(
                        folder,
                        format!(
                            "the cache input {} has shape {other:?}, not [batch, heads, past, head_dim] with fixed heads and head_dim",
                            port.name
                        ),
                    ));
                }
            };
            slots.push(Slot {
                past: port.name.clone(),
                present: format!("present.{rest}"),
                heads,
                head_dim,
            });
        }
        let names: Vec<&str> = decoder.inputs.iter().map(|p| p.name.as_str()).collect();
        let masks = names.contains(&"encoder_attention_mask");
        if matches!(input, Input::Text) && !masks {
            return Err(setup(
                folder,
                format!(
                    "{DECODER} has no input 'encoder_attention_mask', which a text model's decoder needs"
                ),
            ));
        }
        for wanted in ["input_ids", "encoder_hidden_states", "use_cache_branch"] {
            if !names.contains(&wanted) {
                return Err(setup(
                    folder,
                    format!(
                        "{DECODER} has no input '{wanted}' (inputs: {}); export the merged decoder with its cache (Optimum: --task image-to-text-with-past, or text2text-generation-with-past)",
                        names.join(", ")
                    ),
                ));
            }
        }
        if slots.is_empty() {
            return Err(setup(
                folder,
                format!("{DECODER} has no past_key_values inputs"),
            ));
        }
        Ok(Self {
            folder: folder.to_path_buf(),
            encoder,
            decoder,
            slots,
            tokenizer,
            input,
            generation,
            start,
            eos,
            pad,
            masks,
            banned,
            forced_eos,
            max_source,
        })
    }

    /// Whether the export reads images (a captioner), not text.
    pub fn reads_images(&self) -> bool {
        matches!(self.input, Input::Image { .. })
    }

    /// The size frames must have (width, height); none for a text model.
    pub fn size(&self) -> Option<(u32, u32)> {
        match &self.input {
            Input::Image { size, .. } => Some(*size),
            Input::Text => None,
        }
    }

    /// The search `beams` and `max_new` ask, 0 meaning the export's: `num_beams`, and
    /// `max_length` less the start token (never more than it).
    pub fn search(&self, beams: usize, max_new: usize) -> Search {
        let limit = self.generation.max_length.saturating_sub(1).max(1);
        Search {
            beams: if beams == 0 {
                self.generation.num_beams.max(1)
            } else {
                beams
            },
            max_new: if max_new == 0 {
                limit
            } else {
                max_new.min(limit)
            },
        }
    }

    /// A frame (at [`Seq2Seq::size`]) as the model's input: channels first, rescaled and
    /// normalised as the image processor does.
    pub fn pixel_values(&self, frame: &Rgb) -> Vec<f32> {
        let plane = frame.width * frame.height;
        let Input::Image { pre, .. } = &self.input else {
            return Vec::new();
        };
        let mut out = vec![0f32; plane * 3];
        for (i, px) in frame.data.chunks_exact(3).enumerate() {
            for c in 0..3 {
                let mut x = f32::from(px[c]);
                if pre.do_rescale {
                    // Hugging Face rescales in float64, then casts
                    x = (f64::from(px[c]) * pre.rescale_factor) as f32;
                }
                if pre.do_normalize {
                    x = (x - pre.image_mean[c]) / pre.image_std[c];
                }
                out[c * plane + i] = x;
            }
        }
        out
    }

    /// The text of generated `tokens` (special tokens skipped).
    pub fn text(&self, tokens: &[i64]) -> Result<String, UdfError> {
        let ids: Vec<u32> = tokens
            .iter()
            .map(|&t| u32::try_from(t).unwrap_or(0))
            .collect();
        self.tokenizer
            .decode(&ids, true)
            .map(|t| t.trim().to_owned())
            .map_err(|e| model_error(&self.folder, format!("cannot decode tokens: {e}")))
    }

    /// The generated tokens of each clip: `pixels` holds the frames of the clips in order
    /// (`frames[c]` frames for clip `c`, each [`Seq2Seq::pixel_values`]). Tokens are those
    /// after the start token, with the end token when a sequence ended on it.
    pub fn generate(
        &self,
        pixels: Vec<f32>,
        frames: &[usize],
        search: Search,
    ) -> Result<Vec<Vec<i64>>, UdfError> {
        let Some((w, h)) = self.size() else {
            return Err(setup(&self.folder, "the export reads text, not images"));
        };
        let images = frames.iter().sum::<usize>();
        let (shape, states) = self.encoder.run(
            "pixel_values",
            vec![images as i64, 3, i64::from(h), i64::from(w)],
            pixels,
            Some("last_hidden_state"),
        )?;
        let [_, seq, dim] = shape.as_slice() else {
            return Err(model_error(
                &self.encoder.path,
                format!("last_hidden_state has shape {shape:?}, not [batch, sequence, hidden]"),
            ));
        };
        let one = (*seq * *dim) as usize;
        // a clip's encoder states: the mean of its frames' (summed in order, then divided)
        let mut pooled = Vec::with_capacity(frames.len() * one);
        let mut at = 0;
        for &n in frames {
            let mut acc = states[at * one..(at + 1) * one].to_vec();
            for f in 1..n {
                for (a, x) in acc
                    .iter_mut()
                    .zip(&states[(at + f) * one..(at + f + 1) * one])
                {
                    *a += x;
                }
            }
            let count = n as f32;
            acc.iter_mut().for_each(|a| *a /= count);
            pooled.extend(acc);
            at += n;
        }
        let encoded = Encoded {
            shape: [frames.len() as i64, *seq, *dim],
            states: pooled,
            mask: vec![1; frames.len() * *seq as usize],
        };
        self.decode(encoded, search)
    }

    /// The token ids of `text` as the encoder takes them: the tokenizer's encoding with its
    /// special tokens, cut to the model's longest input.
    pub fn tokens(&self, text: &str) -> Result<Vec<i64>, UdfError> {
        let encoding = self
            .tokenizer
            .encode(text, true)
            .map_err(|e| model_error(&self.folder, format!("cannot tokenize: {e}")))?;
        let mut ids: Vec<i64> = encoding.get_ids().iter().map(|&i| i64::from(i)).collect();
        if let Some(max) = self.max_source
            && ids.len() > max
        {
            // as the tokenizer cuts: the text's tokens, then its closing special tokens
            let closing = encoding
                .get_special_tokens_mask()
                .iter()
                .rev()
                .take_while(|&&m| m == 1)
                .count()
                .min(max);
            let tail = ids.split_off(ids.len() - closing);
            ids.truncate(max - closing);
            ids.extend(tail);
        }
        Ok(ids)
    }

    /// The generated tokens of each text of `texts` (each [`Seq2Seq::tokens`]; one batch,
    /// padded to the longest). Tokens are those after the start token, with the end token
    /// when a sequence ended on it.
    pub fn generate_text(
        &self,
        texts: &[Vec<i64>],
        search: Search,
    ) -> Result<Vec<Vec<i64>>, UdfError> {
        if self.reads_images() {
            return Err(setup(&self.folder, "the export reads images, not text"));
        }
        let rows = texts.len();
        let seq = texts.iter().map(Vec::len).max().unwrap_or(0).max(1);
        let mut ids = vec![self.pad; rows * seq];
        let mut mask = vec![0i64; rows * seq];
        for (r, text) in texts.iter().enumerate() {
            ids[r * seq..r * seq + text.len()].copy_from_slice(text);
            mask[r * seq..r * seq + text.len()].fill(1);
        }
        let path = &self.encoder.path;
        let shape = vec![rows as i64, seq as i64];
        let inputs = ort::inputs![
            "input_ids" => Tensor::from_array((shape.clone(), ids)).map_err(|e| model_error(path, e))?,
            "attention_mask" => Tensor::from_array((shape, mask.clone())).map_err(|e| model_error(path, e))?,
        ];
        let mut session = self.encoder.session();
        let started = std::time::Instant::now();
        let outputs = crate::blocking::run_blocking(|| session.run(inputs))
            .map_err(|e| model_error(path, e))?;
        framefusion_media::metrics::inference_seconds(
            &model_label(path),
            started.elapsed().as_secs_f64(),
        );
        let (dims, states) = outputs
            .get("last_hidden_state")
            .ok_or_else(|| model_error(path, "no output 'last_hidden_state'"))?
            .try_extract_tensor::<f32>()
            .map_err(|e| model_error(path, e))?;
        let shape = match dims.as_ref() {
            [b, s, d] if *b as usize == rows && *s as usize == seq => [*b, *s, *d],
            other => {
                return Err(model_error(
                    path,
                    format!("last_hidden_state has shape {other:?}, not [{rows}, {seq}, hidden]"),
                ));
            }
        };
        let encoded = Encoded {
            shape,
            states: states.to_vec(),
            mask,
        };
        drop(outputs);
        drop(session);
        self.decode(encoded, search)
    }

    /// Greedy or beam search over what the encoder made.
    fn decode(&self, encoded: Encoded, search: Search) -> Result<Vec<Vec<i64>>, UdfError> {
        if search.beams <= 1 {
            self.greedy(encoded, search.max_new)
        } else {
            self.beam(encoded, search)
        }
    }

    /// The logits processors of the generation config on one row's scores (logits for
    /// greedy, log-probabilities for beams) at step `step` of `max_new`.
    fn process(&self, scores: &mut [f64], step: usize, max_new: usize) {
        for &t in &self.banned {
            if let Some(x) = usize::try_from(t).ok().and_then(|t| scores.get_mut(t)) {
                *x = f64::NEG_INFINITY;
            }
        }
        if let Some(eos) = self.forced_eos
            && step + 1 == max_new
            && let Ok(eos) = usize::try_from(eos)
            && eos < scores.len()
        {
            scores.fill(f64::NEG_INFINITY);
            scores[eos] = 0.0;
        }
    }

    /// Whether a processor may change a row's scores at this step.
    fn processes(&self, step: usize, max_new: usize) -> bool {
        !self.banned.is_empty() || (self.forced_eos.is_some() && step + 1 == max_new)
    }

    fn is_eos(&self, token: i64) -> bool {
        self.eos.contains(&token)
    }

    /// Empty caches for `rows` sequences (the first step runs the branch without them).
    fn empty_cache(&self, rows: usize) -> Result<Vec<DynValue>, UdfError> {
        self.slots
            .iter()
            .map(|s| {
                Tensor::from_array((vec![rows as i64, s.heads, 0, s.head_dim], Vec::<f32>::new()))
                    .map(|t| t.into_dyn())
                    .map_err(|e| model_error(&self.decoder.path, e))
            })
            .collect()
    }

    /// One decoder step: the last tokens of each sequence, the encoder states, the cache;
    /// answers the last position's logits (rows x vocabulary) and the new cache.
    fn step(
        &self,
        session: &mut Session,
        last: Vec<i64>,
        enc: &(DynValue, DynValue),
        cache: Vec<DynValue>,
        cached: bool,
    ) -> Result<(Vec<f32>, usize, Vec<DynValue>), UdfError> {
        let path = &self.decoder.path;
        let rows = last.len();
        let mut inputs: Vec<(String, SessionInputValue<'_>)> = Vec::with_capacity(cache.len() + 4);
        inputs.push((
            "input_ids".to_owned(),
            Tensor::from_array((vec![rows as i64, 1], last))
                .map_err(|e| model_error(path, e))?
                .into(),
        ));
        inputs.push(("encoder_hidden_states".to_owned(), enc.0.view().into()));
        if self.masks {
            inputs.push(("encoder_attention_mask".to_owned(), enc.1.view().into()));
        }
        for (slot, value) in self.slots.iter().zip(cache) {
            inputs.push((slot.past.clone(), value.into()));
        }
        inputs.push((
            "use_cache_branch".to_owned(),
            Tensor::from_array((vec![1i64], vec![cached]))
                .map_err(|e| model_error(path, e))?
                .into(),
        ));
        let started = std::time::Instant::now();
        let mut outputs = crate::blocking::run_blocking(|| session.run(inputs))
            .map_err(|e| model_error(path, e))?;
        framefusion_media::metrics::inference_seconds(
            &model_label(path),
            started.elapsed().as_secs_f64(),
        );
        let (shape, logits) = outputs
            .get("logits")
            .ok_or_else(|| model_error(path, "no output 'logits'"))?
            .try_extract_tensor::<f32>()
            .map_err(|e| model_error(path, e))?;
        let (s, vocab) = match shape.as_ref() {
            [r, s, v] if *r as usize == rows => (*s as usize, *v as usize),
            other => {
                return Err(model_error(
                    path,
                    format!("logits have shape {other:?}, not [{rows}, sequence, vocabulary]"),
                ));
            }
        };
        let mut last_logits = Vec::with_capacity(rows * vocab);
        for r in 0..rows {
            let at = (r * s + s - 1) * vocab;
            last_logits.extend_from_slice(&logits[at..at + vocab]);
        }
        let mut present = Vec::with_capacity(self.slots.len());
        for slot in &self.slots {
            present.push(outputs.remove(&slot.present).ok_or_else(|| {
                model_error(
                    path,
                    format!(
                        "no output '{}' for the cache input '{}'",
                        slot.present, slot.past
                    ),
                )
            })?);
        }
        Ok((last_logits, vocab, present))
    }

    fn tensor(&self, shape: &[i64], data: Vec<f32>) -> Result<DynValue, UdfError> {
        Tensor::from_array((shape.to_vec(), data))
            .map(|t| t.into_dyn())
            .map_err(|e| model_error(&self.decoder.path, e))
    }

    /// The decoder's encoder inputs: the states and the mask.
    fn encoder_inputs(&self, encoded: &Encoded) -> Result<(DynValue, DynValue), UdfError> {
        let states = self.tensor(&encoded.shape, encoded.states.clone())?;
        let mask = Tensor::from_array((
            vec![encoded.shape[0], encoded.shape[1]],
            encoded.mask.clone(),
        ))
        .map(|t| t.into_dyn())
        .map_err(|e| model_error(&self.decoder.path, e))?;
        Ok((states, mask))
    }

    /// Greedy search. A sequence that has ended leaves the batch (its cache rows are
    /// dropped), so the steps after it cost only the sequences still running; the tokens
    /// are those of `generate()`, which keeps it in the batch, padded.
    fn greedy(&self, encoded: Encoded, max_new: usize) -> Result<Vec<Vec<i64>>, UdfError> {
        let rows = encoded.rows();
        let mut enc = self.encoder_inputs(&encoded)?;
        let mut session = self.decoder.session();
        let mut cache = self.empty_cache(rows)?;
        // the sequences still running (their rows in the batch, in order)
        let mut running: Vec<usize> = (0..rows).collect();
        let mut last = vec![self.start; rows];
        let mut out = vec![Vec::new(); rows];
        let mut scores = Vec::new();
        for step in 0..max_new {
            let (logits, vocab, present) = self.step(&mut session, last, &enc, cache, step > 0)?;
            let mut kept = Vec::with_capacity(running.len());
            last = Vec::with_capacity(running.len());
            for (i, &r) in running.iter().enumerate() {
                let row = &logits[i * vocab..(i + 1) * vocab];
                let token = if self.processes(step, max_new) {
                    scores.clear();
                    scores.extend(row.iter().map(|&x| f64::from(x)));
                    self.process(&mut scores, step, max_new);
                    argmax(&scores)
                } else {
                    argmax(row)
                } as i64;
                out[r].push(token);
                if !self.is_eos(token) {
                    kept.push(i);
                    last.push(token);
                }
            }
            if kept.is_empty() {
                break;
            }
            if kept.len() < running.len() {
                running = kept.iter().map(|&i| running[i]).collect();
                enc = self.encoder_inputs(&encoded.pick(&running))?;
                cache = self.reorder(present, &kept)?;
            } else {
                cache = present;
            }
        }
        Ok(out)
    }

    fn beam(&self, encoded: Encoded, search: Search) -> Result<Vec<Vec<i64>>, UdfError> {
        let k = search.beams;
        let clips = encoded.rows();
        let rows = clips * k;
        let repeated: Vec<usize> = (0..clips).flat_map(|c| [c].repeat(k)).collect();
        let enc = self.encoder_inputs(&encoded.pick(&repeated))?;
        let early = match &self.generation.early_stopping {
            serde_json::Value::Bool(b) => *b,
            serde_json::Value::Null => false,
            other => {
                return Err(setup(
                    &self.folder,
                    format!(
                        "generation_config.json: early_stopping = {other} is not supported (true or false)"
                    ),
                ));
            }
        };
        let lp = self.generation.length_penalty;
        let mut session = self.decoder.session();
        let mut cache = self.empty_cache(rows)?;
        let mut seqs: Vec<Vec<i64>> = vec![Vec::new(); rows];
        let mut scores = vec![-1e9f64; rows];
        for c in 0..clips {
            scores[c * k] = 0.0;
        }
        let mut hyps: Vec<Hyps> = (0..clips).map(|_| Hyps::new(k, lp, early)).collect();
        let mut done = vec![false; clips];
        let mut last = vec![self.start; rows];
        for step in 0..search.max_new {
            let (logits, vocab, present) = self.step(&mut session, last, &enc, cache, step > 0)?;
            let generated = step;
            let mut new_scores = vec![0f64; rows];
            let mut new_tokens = vec![self.pad; rows];
            let mut origin: Vec<usize> = (0..rows).collect();
            for c in 0..clips {
                if done[c] {
                    continue;
                }
                // every candidate of the clip's beams: log-softmax (float64) + beam score
                let mut cand: Vec<f64> = Vec::with_capacity(k * vocab);
                for b in 0..k {
                    let r = c * k + b;
                    let at = cand.len();
                    cand.extend(log_softmax(&logits[r * vocab..(r + 1) * vocab]));
                    let row = &mut cand[at..];
                    if self.processes(step, search.max_new) {
                        self.process(row, step, search.max_new);
                        if self.generation.renormalize_logits {
                            renormalize(row);
                        }
                    }
                    row.iter_mut().for_each(|x| *x += scores[r]);
                }
                let order = top(&cand, 2 * k);
                let mut j = 0;
                for (rank, &flat) in order.iter().enumerate() {
                    let (src, token) = (flat / vocab, (flat % vocab) as i64);
                    let score = cand[flat];
                    if self.is_eos(token) {
                        if rank >= k {
                            continue;
                        }
                        let mut hyp = seqs[c * k + src].clone();
                        hyp.push(token);
                        hyps[c].add(hyp, score, generated);
                    } else {
                        let r = c * k + j;
                        new_scores[r] = score;
                        new_tokens[r] = token;
                        origin[r] = c * k + src;
                        j += 1;
                    }
                    if j == k {
                        break;
                    }
                }
                done[c] = done[c] || hyps[c].done(cand[order[0]], generated);
            }
            seqs = (0..rows)
                .map(|r| {
                    let mut s = seqs[origin[r]].clone();
                    s.push(new_tokens[r]);
                    s
                })
                .collect();
            scores = new_scores;
            cache = self.reorder(present, &origin)?;
            last = new_tokens;
            if done.iter().all(|d| *d) {
                break;
            }
        }
        let mut best = Vec::with_capacity(clips);
        for (c, mut h) in hyps.into_iter().enumerate() {
            if !done[c] {
                for b in 0..k {
                    let r = c * k + b;
                    let len = seqs[r].len();
                    h.add(seqs[r].clone(), scores[r], len);
                }
            }
            best.push(h.best());
        }
        Ok(best)
    }

    /// The cache rows `origin` (the beam each new beam continues, the sequences still
    /// running), in that order.
    fn reorder(&self, cache: Vec<DynValue>, origin: &[usize]) -> Result<Vec<DynValue>, UdfError> {
        let path = &self.decoder.path;
        cache
            .into_iter()
            .map(|value| {
                let gathered = {
                    let (shape, data) = value
                        .try_extract_tensor::<f32>()
                        .map_err(|e| model_error(path, e))?;
                    let mut dims: Vec<i64> = shape.iter().copied().collect();
                    let rows = dims.first().copied().unwrap_or(1).max(1) as usize;
                    if rows == origin.len() && origin.iter().enumerate().all(|(i, &o)| i == o) {
                        None
                    } else {
                        let row = data.len() / rows;
                        let mut out = Vec::with_capacity(origin.len() * row);
                        for &o in origin {
                            out.extend_from_slice(&data[o * row..(o + 1) * row]);
                        }
                        if let Some(first) = dims.first_mut() {
                            *first = origin.len() as i64;
                        }
                        Some((dims, out))
                    }
                };
                match gathered {
                    None => Ok(value),
                    Some((dims, out)) => self.tensor(&dims, out),
                }
            })
            .collect()
    }
}

/// The index of the largest value (the first of equal ones, as numpy's argmax).
fn argmax<T: PartialOrd>(xs: &[T]) -> usize {
    let mut best = 0;
    for (i, x) in xs.iter().enumerate() {
        if *x > xs[best] {
            best = i;
        }
    }
    best
}

/// Log-softmax again in float64 (after a processor changed log-probabilities).
fn renormalize(xs: &mut [f64]) {
    let m = xs.iter().fold(f64::NEG_INFINITY, |m, &x| m.max(x));
    if !m.is_finite() {
        return;
    }
    let log_sum = xs.iter().map(|&x| (x - m).exp()).sum::<f64>().ln();
    xs.iter_mut().for_each(|x| *x -= m + log_sum);
}

/// Log-softmax in float64.
fn log_softmax(xs: &[f32]) -> impl Iterator<Item = f64> + '_ {
    let m = xs
        .iter()
        .fold(f64::NEG_INFINITY, |m, &x| m.max(f64::from(x)));
    let sum: f64 = xs.iter().map(|&x| (f64::from(x) - m).exp()).sum();
    let log_sum = sum.ln();
    xs.iter().map(move |&x| f64::from(x) - m - log_sum)
}

/// The indices of the `n` largest values, largest first (equal values: lower index first).
fn top(xs: &[f64], n: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..xs.len()).collect();
    let n = n.min(xs.len());
    let by = |a: &usize, b: &usize| xs[*b].total_cmp(&xs[*a]).then(a.cmp(b));
    if n < idx.len() {
        idx.select_nth_unstable_by(n, by);
        idx.truncate(n);
    }
    idx.sort_by(by);
    idx
}

/// The finished hypotheses of one clip's beam search.
struct Hyps {
    k: usize,
    lp: f64,
    early: bool,
    beams: Vec<(f64, Vec<i64>)>,
    worst: f64,
}

impl Hyps {
    fn new(k: usize, lp: f64, early: bool) -> Self {
        Self {
            k,
            lp,
            early,
            beams: Vec::new(),
            worst: 1e9,
        }
    }

    fn add(&mut self, hyp: Vec<i64>, total: f64, generated: usize) {
        let score = total / (generated.max(1) as f64).powf(self.lp);
        if self.beams.len() < self.k || score > self.worst {
            self.beams.push((score, hyp));
            if self.beams.len() > self.k {
                let mut ranked: Vec<(f64, usize)> = self
                    .beams
                    .iter()
                    .enumerate()
                    .map(|(i, (s, _))| (*s, i))
                    .collect();
                ranked.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
                self.beams.remove(ranked[0].1);
                self.worst = ranked[1].0;
            } else {
                self.worst = self.worst.min(score);
            }
        }
    }

    fn done(&self, best: f64, generated: usize) -> bool {
        if self.beams.len() < self.k {
            return false;
        }
        if self.early {
            return true;
        }
        self.worst >= best / (generated.max(1) as f64).powf(self.lp)
    }

    /// The best hypothesis (the last added of equal scores, as a stable sort's last).
    fn best(mut self) -> Vec<i64> {
        let mut best: Option<(f64, usize)> = None;
        for (i, (s, _)) in self.beams.iter().enumerate() {
            if best.is_none_or(|(b, _)| *s >= b) {
                best = Some((*s, i));
            }
        }
        best.map(|(_, i)| self.beams.swap_remove(i).1)
            .unwrap_or_default()
    }
}

/// Exports loaded, by folder: reading the tokenizer and settings once per process.
static OPEN: std::sync::LazyLock<std::sync::Mutex<HashMap<PathBuf, Arc<Seq2Seq>>>> =
    std::sync::LazyLock::new(Default::default);

/// The export in `folder` with the models `models` loaded for the call (kept per
/// process once opened).
pub fn open(folder: &Path, models: &Models) -> Result<Arc<Seq2Seq>, UdfError> {
    let mut open = OPEN.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(s) = open.get(folder) {
        let files = Seq2Seq::model_files(folder);
        // the same loaded models (another device would be another load)
        if models
            .get(&files[1])
            .is_ok_and(|m| Arc::ptr_eq(&m, &s.decoder))
        {
            return Ok(Arc::clone(s));
        }
    }
    let s = Arc::new(Seq2Seq::open(folder, models)?);
    open.insert(folder.to_path_buf(), Arc::clone(&s));
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn beam_hypotheses_keep_the_best_and_stop_as_configured() {
        let mut h = Hyps::new(2, 1.0, false);
        h.add(vec![1], -2.0, 2);
        assert!(!h.done(-0.1, 3), "fewer than beams hypotheses");
        h.add(vec![2], -1.0, 1);
        h.add(vec![3], -3.0, 1);
        assert_eq!(h.beams.len(), 2);
        assert!((h.worst - -1.0).abs() < 1e-12);
        // a running beam could still reach -0.5 per token: not done
        assert!(!h.done(-1.0, 2));
        assert!(h.done(-4.0, 2));
        assert_eq!(h.best(), vec![2]);
        assert_eq!(top(&[0.1, 0.5, 0.5, -1.0], 3), vec![1, 2, 0]);
        assert_eq!(argmax(&[1.0, 3.0, 3.0]), 1);
        let l: Vec<f64> = log_softmax(&[0.0, 0.0]).collect();
        assert!((l[0] - (0.5f64).ln()).abs() < 1e-12);
    }
}
