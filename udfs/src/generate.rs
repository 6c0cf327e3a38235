//! In-process text generation from a Hugging Face Optimum (or transformers.js) export of a
//! vision-encoder-decoder model: a captioner such as ViT-GPT2, exported as one folder of
//!
//! ```text
//! encoder_model.onnx          pixel_values [B, 3, H, W] -> last_hidden_state [B, N, D]
//! decoder_model_merged.onnx   input_ids, encoder_hidden_states, past_key_values.{i}.key/.value,
//!                             use_cache_branch -> logits, present.{i}.key/.value
//! tokenizer.json              the tokenizer (the `tokenizers` crate reads it)
//! preprocessor_config.json    the image processor's settings (resize, rescale, normalize)
//! generation_config.json      start, end and pad tokens, max_length, num_beams, length_penalty,
//!                             early_stopping
//! ```
//!
//! [`Seq2Seq::pixel_values`] prepares a frame as the image processor does (the frame is
//! scaled to the processor's size by the decode pass with ffmpeg's scaler, not PIL's:
//! identical when the frame already has that size, close otherwise; then rescaled in
//! float64 and normalised in float32, as Hugging Face's processors compute it).
//! [`Seq2Seq::generate`] runs the encoder on every frame of a batch of clips, pools a
//! clip's frames (the mean of their encoder states), and generates with the decoder,
//! reusing its key/value cache between steps (the merged decoder's `use_cache_branch`):
//! greedy as `generate()` does it, or beam search as its beam scorer does (2 x beams
//! candidates a step, an end token among the first `beams` closes a hypothesis scored
//! `sum of log-probabilities / generated_len ^ length_penalty`, `early_stopping` true or
//! false). Both models run where `onnx.device` says (CUDA or the CPU), loaded once per
//! process like every model.

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
    pre: Preprocessor,
    generation: GenerationConfig,
    start: i64,
    eos: Vec<i64>,
    pad: i64,
    size: (u32, u32),
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
        let pre: Preprocessor = read_json(folder, "preprocessor_config.json")?;
        let generation: GenerationConfig = read_json(folder, "generation_config.json")?;
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
        for wanted in ["input_ids", "encoder_hidden_states", "use_cache_branch"] {
            if !names.contains(&wanted) {
                return Err(setup(
                    folder,
                    format!(
                        "{DECODER} has no input '{wanted}' (inputs: {}); export the merged decoder with its cache (Optimum: --task image-to-text-with-past)",
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
            pre,
            generation,
            start,
            eos,
            pad,
            size,
        })
    }

    /// The size frames must have (width, height).
    pub fn size(&self) -> (u32, u32) {
        self.size
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
        let mut out = vec![0f32; plane * 3];
        for (i, px) in frame.data.chunks_exact(3).enumerate() {
            for c in 0..3 {
                let mut x = f32::from(px[c]);
                if self.pre.do_rescale {
                    // Hugging Face rescales in float64, then casts
                    x = (f64::from(px[c]) * self.pre.rescale_factor) as f32;
                }
                if self.pre.do_normalize {
                    x = (x - self.pre.image_mean[c]) / self.pre.image_std[c];
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
        let (w, h) = self.size;
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
        let enc_shape = [frames.len() as i64, *seq, *dim];
        if search.beams <= 1 {
            self.greedy(&enc_shape, pooled, search.max_new)
        } else {
            self.beam(&enc_shape, pooled, search)
        }
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
        enc: &DynValue,
        cache: Vec<DynValue>,
        cached: bool,
    ) -> Result<(Vec<f32>, usize, Vec<DynValue>), UdfError> {
        let path = &self.decoder.path;
        let rows = last.len();
        let mut inputs: Vec<(String, SessionInputValue<'_>)> = Vec::with_capacity(cache.len() + 3);
        inputs.push((
            "input_ids".to_owned(),
            Tensor::from_array((vec![rows as i64, 1], last))
                .map_err(|e| model_error(path, e))?
                .into(),
        ));
        inputs.push(("encoder_hidden_states".to_owned(), enc.view().into()));
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

    /// Greedy search. A sequence that has ended leaves the batch (its cache rows are
    /// dropped), so the steps after it cost only the sequences still running; the tokens
    /// are those of `generate()`, which keeps it in the batch, padded.
    fn greedy(
        &self,
        enc_shape: &[i64; 3],
        pooled: Vec<f32>,
        max_new: usize,
    ) -> Result<Vec<Vec<i64>>, UdfError> {
        let rows = enc_shape[0] as usize;
        let one = (enc_shape[1] * enc_shape[2]) as usize;
        let mut enc = self.tensor(enc_shape, pooled.clone())?;
        let mut session = self.decoder.session();
        let mut cache = self.empty_cache(rows)?;
        // the sequences still running (their rows in the batch, in order)
        let mut running: Vec<usize> = (0..rows).collect();
        let mut last = vec![self.start; rows];
        let mut out = vec![Vec::new(); rows];
        for step in 0..max_new {
            let (logits, vocab, present) = self.step(&mut session, last, &enc, cache, step > 0)?;
            let mut kept = Vec::with_capacity(running.len());
            last = Vec::with_capacity(running.len());
            for (i, &r) in running.iter().enumerate() {
                let token = argmax(&logits[i * vocab..(i + 1) * vocab]) as i64;
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
                let mut states = Vec::with_capacity(running.len() * one);
                for &r in &running {
                    states.extend_from_slice(&pooled[r * one..(r + 1) * one]);
                }
                enc = self.tensor(&[running.len() as i64, enc_shape[1], enc_shape[2]], states)?;
                cache = self.reorder(present, &kept)?;
            } else {
                cache = present;
            }
        }
        Ok(out)
    }

    fn beam(
        &self,
        enc_shape: &[i64; 3],
        pooled: Vec<f32>,
        search: Search,
    ) -> Result<Vec<Vec<i64>>, UdfError> {
        let k = search.beams;
        let clips = enc_shape[0] as usize;
        let rows = clips * k;
        let one = (enc_shape[1] * enc_shape[2]) as usize;
        let mut repeated = Vec::with_capacity(rows * one);
        for c in 0..clips {
            for _ in 0..k {
                repeated.extend_from_slice(&pooled[c * one..(c + 1) * one]);
            }
        }
        let enc = self.tensor(&[rows as i64, enc_shape[1], enc_shape[2]], repeated)?;
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
                    cand.extend(
                        log_softmax(&logits[r * vocab..(r + 1) * vocab]).map(|x| x + scores[r]),
                    );
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
fn argmax(xs: &[f32]) -> usize {
    let mut best = 0;
    for (i, x) in xs.iter().enumerate() {
        if *x > xs[best] {
            best = i;
        }
    }
    best
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
