//! `translate(text [, options])`: a text's translation by a language model.
//!
//! Backends (`translate.backend`), as `caption`'s:
//! - `openai`: any OpenAI-compatible chat-completions server ([`crate::chat`]), asked
//!   `translate.prompt` (its `{target}` replaced by `translate.target`) with the text as a
//!   second text part, temperature 0: `translate.endpoint`, `translate.model`,
//!   `translate.max_tokens`, the API key from the environment variable named by
//!   `translate.api_key_env` on the process that sends the request (only the variable's
//!   name travels). `translate.concurrency` requests are in flight at once.
//! - `onnx`: in-process generation from a Hugging Face Optimum export of a seq2seq
//!   translator whose folder is `translate.model` (Marian opus-mt, T5; [`crate::generate`]):
//!   `translate.prefix` put before each text (T5's `translate English to German: `; a
//!   multilingual Marian model's `>>deu<< `), `translate.batch_size` texts generated
//!   together (in order of length, so little is padded), greedy or `translate.beams`
//!   beams. The language is the model's (`translate.target` is the server's only). The
//!   call declares the export's two models, so a cluster places it on its GPU pool.
//!
//! Each distinct text of a batch is translated once; a null text is a null row, an empty
//! one an empty translation (nothing asked). A call's options (`'to=German,beams=4'`:
//! `to`, `model`, `max_tokens`, `beams`, `batch`, `concurrency`) override the settings for
//! that call.
//!
//! What fails what is `caption`'s: a row whose request still fails after the retries (or
//! whose generation fails) is null and reported to the run; a refused key, an unknown model
//! or an unreachable endpoint, a missing export fails the query. A text is not a video, so
//! the planner gives each call the `path` of its row when the query has one
//! ([`crate::plan`]): a failed translation is then its video's failure in a manifest run
//! (an error row, redone by `--retry-errors`), and its answer is kept under that video as
//! it arrives ([`crate::answers`]); without a `path` column a failure is logged only and
//! answers are not kept.

use std::collections::{BTreeMap, HashMap};

use datafusion::arrow::datatypes::DataType;
use datafusion::common::config::{ConfigExtension, ConfigOptions};
use datafusion::common::{Result, ScalarValue, config_namespace};
use futures::StreamExt;

use crate::UdfError;
use crate::answers::{self, Answers};
use crate::chat::{About, ChatClient};
use crate::generative::{self, Backend, BackendSettings, GenerativeSettings};
use crate::operator::{Arg, Batch, RowOutcome, VideoOperator};

config_namespace! {
    /// Settings of `translate` (`translate.*`).
    pub struct TranslateOptions {
        /// The backend: `openai` (a chat-completions server) or `onnx` (in-process
        /// generation from an exported seq2seq translator).
        pub backend: String, default = "openai".to_owned()
        /// The server's base URL (its chat-completions API is `{endpoint}/chat/completions`).
        pub endpoint: String, default = "http://127.0.0.1:8000/v1".to_owned()
        /// The model: the one the server serves, or for `onnx` the export's folder (a
        /// path, or a name under `onnx.model_dir`).
        pub model: String, default = String::new()
        /// The language to translate into (the server's prompt says it; an `onnx` model
        /// translates into its own).
        pub target: String, default = "English".to_owned()
        /// What the server is asked; `{target}` is replaced by the target language.
        pub prompt: String, default = "Translate the following text into {target}. Answer with the translation only.".to_owned()
        /// Put before each text for the `onnx` backend (T5: `translate English to German: `).
        pub prefix: String, default = String::new()
        /// The longest translation, in tokens (the `onnx` backend: never more than its
        /// export's `max_length`).
        pub max_tokens: u64, default = 512
        /// The environment variable holding the API key (its name, not the key; empty:
        /// no key is sent).
        pub api_key_env: String, default = String::new()
        /// Requests in flight at once per batch of rows.
        pub concurrency: usize, default = 16
        /// Seconds one request may take.
        pub timeout_s: u64, default = 120
        /// Beams of the `onnx` backend's search (1: greedy; 0: the export's `num_beams`).
        pub beams: usize, default = 0
        /// Texts generated together by the `onnx` backend.
        pub batch_size: usize, default = 16
    }
}

framefusion_common::prefixed_extension!(TranslateOptions);

impl ConfigExtension for TranslateOptions {
    const PREFIX: &'static str = "translate";
}

impl TranslateOptions {
    /// The session's `translate.*` settings with a call's `options` over them.
    pub fn for_call(config: &ConfigOptions, options: Option<&str>) -> Result<Self, UdfError> {
        let mut out = config.extensions.get::<Self>().cloned().unwrap_or_default();
        for (key, value) in crate::args::option_pairs("translate", options)? {
            let number = |what: &str| crate::args::whole_option("translate", what, value);
            match key {
                "to" => out.target = value.to_owned(),
                "model" => out.model = value.to_owned(),
                "max_tokens" => out.max_tokens = number("max_tokens")?,
                "beams" => out.beams = number("beams")? as usize,
                "batch" => out.batch_size = number("batch")? as usize,
                "concurrency" => out.concurrency = number("concurrency")? as usize,
                other => {
                    return Err(UdfError::Setup(format!(
                        "translate: unknown option '{other}'; the options are to, model, max_tokens, beams, batch and concurrency (the others are settings: SET translate.prompt = '...')"
                    )));
                }
            }
        }
        Ok(out)
    }

    /// The prompt the server is asked with.
    fn prompt(&self) -> String {
        self.prompt.replace("{target}", &self.target)
    }

    /// What a run records of these settings (never the key, nor its variable's name).
    pub fn provenance(&self) -> Vec<(String, String)> {
        let mut out = self.answer_parts();
        if self.backend != "onnx" {
            out.push(("endpoint".to_owned(), self.endpoint.clone()));
        }
        out
    }

    /// What a translation depends on besides its text.
    fn answer_parts(&self) -> Vec<(String, String)> {
        let mut parts = vec![
            ("backend", self.backend.clone()),
            ("model", self.model.clone()),
            ("max_tokens", self.max_tokens.to_string()),
        ];
        if self.backend == "onnx" {
            parts.push(("beams", self.beams.to_string()));
            if !self.prefix.is_empty() {
                parts.push(("prefix", self.prefix.clone()));
            }
        } else {
            parts.extend([
                ("target", self.target.clone()),
                ("prompt", self.prompt()),
                ("temperature", "0".to_owned()),
            ]);
        }
        parts.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
    }

    /// The key of the translation of `text` ([`answers::answer_key`]).
    fn answer_key(&self, text: &str) -> String {
        let parts = self.answer_parts();
        let mut all: Vec<&str> = vec!["translate"];
        all.extend(parts.iter().map(|(_, v)| v.as_str()));
        all.push(text);
        answers::answer_key(&all)
    }
}

impl GenerativeSettings for TranslateOptions {
    fn for_call(config: &ConfigOptions, options: Option<&str>) -> Result<Self, UdfError> {
        TranslateOptions::for_call(config, options)
    }

    fn backend(&self, config: &ConfigOptions) -> Result<Backend, UdfError> {
        BackendSettings {
            operator: "translate",
            backend: &self.backend,
            endpoint: &self.endpoint,
            model: &self.model,
            max_tokens: self.max_tokens,
            timeout_s: self.timeout_s,
            api_key_env: &self.api_key_env,
            export: "a seq2seq translator",
        }
        .open(config)
    }

    fn provenance(&self) -> Vec<(String, String)> {
        TranslateOptions::provenance(self)
    }
}

/// `translate(text [, options])`: see the module docs.
#[derive(Debug, Default)]
pub struct Translate;

impl VideoOperator for Translate {
    fn name(&self) -> &'static str {
        "translate"
    }

    fn description(&self) -> &'static str {
        "A text's translation: by an OpenAI-compatible server, or by an exported seq2seq translator run in-process."
    }

    fn args(&self) -> &'static [Arg] {
        const ARGS: &[Arg] = &[Arg::text("text"), Arg::options("options"), Arg::row_video()];
        ARGS
    }

    fn arities(&self) -> Vec<usize> {
        vec![1, 2]
    }

    fn options_arg(&self) -> Option<usize> {
        Some(1)
    }

    fn row_video_arg(&self) -> Option<usize> {
        Some(2)
    }

    fn return_type(&self) -> DataType {
        DataType::Utf8
    }

    fn runs_model(&self) -> bool {
        // with the onnx backend (a call's options may choose it)
        true
    }

    fn models_for(&self, config: &ConfigOptions, options: Option<&str>) -> Vec<String> {
        generative::models_for::<TranslateOptions>(config, options)
    }

    fn provenance(&self, config: &ConfigOptions, options: Option<&str>) -> Vec<(String, String)> {
        generative::provenance::<TranslateOptions>(config, options)
    }

    fn evaluate(&self, batch: &Batch<'_>) -> Result<Vec<RowOutcome>> {
        let mut outcomes: HashMap<usize, RowOutcome> = HashMap::new();
        for (options, rows) in generative::rows_by_options(batch, 1) {
            let settings = TranslateOptions::for_call(batch.config, options)
                .map_err(UdfError::into_task_error)?;
            let backend = settings
                .backend(batch.config)
                .map_err(UdfError::into_task_error)?;
            let kept = Answers::of(batch.config);
            let texts = untranslated(batch, &settings, kept.as_ref(), &rows, &mut outcomes)?;
            let kept = Kept {
                answers: kept.as_ref(),
                batch,
                settings: &settings,
            };
            match backend {
                Backend::Chat(client) => ask_rows(&settings, &client, texts, &kept, &mut outcomes)?,
                Backend::Onnx(folder) => {
                    generate_rows(&settings, &folder, texts, &kept, &mut outcomes)?;
                }
            }
        }
        Ok(generative::in_row_order(batch, outcomes))
    }
}

/// The distinct texts to translate and the rows of each.
type Texts<'a> = Vec<(&'a str, Vec<usize>)>;

/// The texts of `rows` not translated yet: an empty text and a kept answer (`kept`, the
/// session's answers folder, under the row's video) go straight to `outcomes`.
fn untranslated<'a>(
    batch: &'a Batch<'_>,
    settings: &TranslateOptions,
    kept: Option<&Answers>,
    rows: &[usize],
    outcomes: &mut HashMap<usize, RowOutcome>,
) -> Result<Texts<'a>> {
    let mut videos: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for &row in rows {
        videos.entry(batch.video(row)).or_default().push(row);
    }
    let loaded = match kept {
        Some(kept) => crate::storage::block_on(async {
            let mut out = HashMap::new();
            for video in videos.keys().filter(|v| !v.is_empty()) {
                out.insert(*video, kept.load(video).await);
            }
            out
        })
        .map_err(|e| UdfError::from(e).into_task_error())?,
        None => HashMap::new(),
    };
    let mut texts: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for &row in rows {
        let text = batch.text(0, row).unwrap_or_default();
        if text.trim().is_empty() {
            outcomes.insert(row, Ok(ScalarValue::Utf8(Some(String::new()))));
            continue;
        }
        let answer = loaded
            .get(batch.video(row))
            .and_then(|answers| answers.get(&settings.answer_key(text)));
        match answer {
            Some(answer) => {
                outcomes.insert(row, Ok(ScalarValue::Utf8(Some(answer.clone()))));
            }
            None => texts.entry(text).or_default().push(row),
        }
    }
    Ok(texts.into_iter().collect())
}

/// Where answers are kept as they arrive, under each row's video.
struct Kept<'a> {
    answers: Option<&'a Answers>,
    batch: &'a Batch<'a>,
    settings: &'a TranslateOptions,
}

impl Kept<'_> {
    /// Keeps the translation `answer` of `text` for each of `rows`' videos.
    async fn keep(&self, text: &str, rows: &[usize], answer: &str) {
        let Some(answers) = self.answers else {
            return;
        };
        let key = self.settings.answer_key(text);
        let mut videos: Vec<&str> = rows.iter().map(|&r| self.batch.video(r)).collect();
        videos.sort_unstable();
        videos.dedup();
        for video in videos.into_iter().filter(|v| !v.is_empty()) {
            answers.keep(video, &key, answer).await;
        }
    }
}

/// The outcome of each of `rows` from the translation of their text.
fn answer_rows(
    rows: &[usize],
    answer: &std::result::Result<String, UdfError>,
    outcomes: &mut HashMap<usize, RowOutcome>,
) {
    for &row in rows {
        let outcome = match answer {
            Ok(text) => Ok(ScalarValue::Utf8(Some(text.clone()))),
            Err(e) => Err(UdfError::Model(e.to_string())),
        };
        outcomes.insert(row, outcome);
    }
}

/// Translates `texts` with the server, `translate.concurrency` requests in flight, each
/// answer kept as it arrives; a setup failure fails the query.
fn ask_rows(
    settings: &TranslateOptions,
    client: &ChatClient,
    texts: Texts<'_>,
    kept: &Kept<'_>,
    outcomes: &mut HashMap<usize, RowOutcome>,
) -> Result<()> {
    let prompt = settings.prompt();
    let prompt = prompt.as_str();
    let requests = futures::stream::iter(texts)
        .map(|(text, rows)| async move {
            let answer = client.ask(prompt, About::Text(text)).await;
            if let Ok(answer) = &answer {
                kept.keep(text, &rows, answer).await;
            }
            (rows, answer)
        })
        .buffer_unordered(settings.concurrency.max(1))
        .collect::<Vec<_>>();
    let answers =
        crate::storage::block_on(requests).map_err(|e| UdfError::from(e).into_task_error())?;
    for (rows, answer) in answers {
        match answer {
            Err(e) if e.fails_the_query() => return Err(e.into_task_error()),
            answer => answer_rows(&rows, &answer, outcomes),
        }
    }
    Ok(())
}

/// Translates `texts` with the export in `folder`, in-process: `translate.batch_size` texts
/// at a time in order of length, each batch's answers kept as they come.
fn generate_rows(
    settings: &TranslateOptions,
    folder: &std::path::Path,
    texts: Texts<'_>,
    kept: &Kept<'_>,
    outcomes: &mut HashMap<usize, RowOutcome>,
) -> Result<()> {
    let model =
        crate::generate::open(folder, kept.batch.models()).map_err(UdfError::into_task_error)?;
    if model.reads_images() {
        return Err(UdfError::Setup(format!(
            "translate: the model folder '{}' holds an image model (its encoder reads pixel_values); translate needs a text-to-text export (caption takes image models)",
            folder.display()
        ))
        .into_task_error());
    }
    let search = model.search(
        settings.beams,
        usize::try_from(settings.max_tokens).unwrap_or(usize::MAX),
    );
    let mut tokenized = Vec::with_capacity(texts.len());
    for (text, rows) in texts {
        match model.tokens(&format!("{}{text}", settings.prefix)) {
            Ok(ids) => tokenized.push((text, rows, ids)),
            Err(e) => answer_rows(&rows, &Err(e), outcomes),
        }
    }
    // in order of length: a batch's texts padded to about the same length
    tokenized.sort_by_key(|(_, _, ids)| ids.len());
    for chunk in tokenized.chunks(settings.batch_size.max(1)) {
        let ids: Vec<Vec<i64>> = chunk.iter().map(|(_, _, ids)| ids.clone()).collect();
        match model.generate_text(&ids, search) {
            Err(e) if e.fails_the_query() => return Err(e.into_task_error()),
            Err(e) => {
                for (_, rows, _) in chunk {
                    answer_rows(rows, &Err(UdfError::Model(e.to_string())), outcomes);
                }
            }
            Ok(generated) => {
                for ((text, rows, _), tokens) in chunk.iter().zip(generated) {
                    let answer = model.text(&tokens);
                    if let Ok(answer) = &answer {
                        crate::storage::block_on(kept.keep(text, rows, answer))
                            .map_err(|e| UdfError::from(e).into_task_error())?;
                    }
                    answer_rows(rows, &answer, outcomes);
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_override_the_settings_and_the_prompt_names_the_target() {
        let mut config = ConfigOptions::new();
        config.extensions.insert(TranslateOptions::default());
        assert!(config.set("translate.model", "opus").is_ok());
        let o = TranslateOptions::for_call(&config, Some("to=German,beams=4"))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (o.target.as_str(), o.beams, o.model.as_str()),
            ("German", 4, "opus")
        );
        assert_eq!(
            o.prompt(),
            "Translate the following text into German. Answer with the translation only."
        );
        assert!(TranslateOptions::for_call(&config, Some("prompt=x")).is_err());
        assert!(TranslateOptions::for_call(&config, Some("beams=two")).is_err());
        // the key depends on what the answer does: the target, not the concurrency
        let other = TranslateOptions::for_call(&config, Some("to=French"))
            .unwrap_or_else(|e| panic!("{e}"));
        let busier = TranslateOptions::for_call(&config, Some("to=German,concurrency=64"))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_ne!(o.answer_key("hallo"), other.answer_key("hallo"));
        assert_eq!(o.answer_key("hallo"), busier.answer_key("hallo"));
        assert_ne!(o.answer_key("hallo"), o.answer_key("hello"));
    }
}
