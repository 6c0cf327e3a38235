//! What the generative operators (`caption`, `translate`) share: their two backends, chosen
//! per call from settings and options ([`Backend`], [`GenerativeSettings`]), the models a
//! call declares (only the in-process backend's), the provenance a run records, and the
//! rows of a batch grouped by their options text.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::Duration;

use datafusion::common::config::ConfigOptions;

use crate::UdfError;
use crate::chat::ChatClient;
use crate::generate::Seq2Seq;
use crate::models::OnnxOptions;
use crate::operator::{Batch, RowOutcome};

/// Where answers come from.
pub(crate) enum Backend {
    /// An OpenAI-compatible chat-completions server.
    Chat(ChatClient),
    /// An exported encoder-decoder model in this folder, run in-process
    /// ([`crate::generate`]).
    Onnx(PathBuf),
}

/// How a backend is set (`<operator>.backend`, `.endpoint`, `.model`, ...).
pub(crate) struct BackendSettings<'a> {
    /// The operator, which names the settings' namespace.
    pub operator: &'static str,
    /// `openai` or `onnx`.
    pub backend: &'a str,
    pub endpoint: &'a str,
    pub model: &'a str,
    pub max_tokens: u64,
    pub timeout_s: u64,
    pub api_key_env: &'a str,
    /// What the `onnx` backend's folder must hold, for the message when none is set.
    pub export: &'static str,
}

impl BackendSettings<'_> {
    /// The backend these settings name.
    pub(crate) fn open(&self, config: &ConfigOptions) -> Result<Backend, UdfError> {
        let name = self.operator;
        match self.backend {
            "openai" => ChatClient::new(
                self.endpoint,
                self.model,
                self.max_tokens,
                Duration::from_secs(self.timeout_s.max(1)),
                self.api_key_env,
            )
            .map(|c| Backend::Chat(c.for_settings(name))),
            "onnx" => {
                if self.model.is_empty() {
                    return Err(UdfError::Setup(format!(
                        "{name}.backend = 'onnx' needs {name}.model: the folder of an Optimum export of {}",
                        self.export
                    )));
                }
                Ok(Backend::Onnx(
                    OnnxOptions::from_config(config).model_path(self.model),
                ))
            }
            other => Err(UdfError::Setup(format!(
                "{name}.backend = '{other}': use 'openai' or 'onnx'"
            ))),
        }
    }
}

/// A generative operator's settings for one call: the session's with the call's options
/// over them.
pub(crate) trait GenerativeSettings: Sized {
    /// The session's settings with a call's `options` over them.
    fn for_call(config: &ConfigOptions, options: Option<&str>) -> Result<Self, UdfError>;

    /// The backend they name.
    fn backend(&self, config: &ConfigOptions) -> Result<Backend, UdfError>;

    /// What a run records of them (never a key, nor its variable's name).
    fn provenance(&self) -> Vec<(String, String)>;
}

/// The models a call with `options` declares: the export's two with the `onnx` backend,
/// none with a server (the operator's `models_for`).
pub(crate) fn models_for<S: GenerativeSettings>(
    config: &ConfigOptions,
    options: Option<&str>,
) -> Vec<String> {
    match S::for_call(config, options).and_then(|o| o.backend(config)) {
        Ok(Backend::Onnx(folder)) => Seq2Seq::model_files(&folder),
        _ => Vec::new(),
    }
}

/// What a run records of a call with `options` (the operator's `provenance`).
pub(crate) fn provenance<S: GenerativeSettings>(
    config: &ConfigOptions,
    options: Option<&str>,
) -> Vec<(String, String)> {
    S::for_call(config, options)
        .map(|o| o.provenance())
        .unwrap_or_default()
}

/// The rows of `batch` by the text of their options (argument `options_arg`).
pub(crate) fn rows_by_options<'a>(
    batch: &'a Batch<'_>,
    options_arg: usize,
) -> BTreeMap<Option<&'a str>, Vec<usize>> {
    let mut calls: BTreeMap<Option<&str>, Vec<usize>> = BTreeMap::new();
    for &row in batch.rows() {
        calls
            .entry(batch.text(options_arg, row))
            .or_default()
            .push(row);
    }
    calls
}

/// The outcomes of `batch`'s rows in order (a row without one is a failure: a defect).
pub(crate) fn in_row_order(
    batch: &Batch<'_>,
    mut outcomes: HashMap<usize, RowOutcome>,
) -> Vec<RowOutcome> {
    batch
        .rows()
        .iter()
        .map(|row| {
            outcomes.remove(row).unwrap_or_else(|| {
                Err(UdfError::Option(format!(
                    "{}: the row was not computed",
                    batch.name()
                )))
            })
        })
        .collect()
}
