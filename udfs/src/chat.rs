//! A client of OpenAI-compatible chat-completions servers: how vision-language and
//! language models are served in production (vLLM, SGLang, llama.cpp's server, Ollama,
//! TGI). `POST {endpoint}/chat/completions` with one user message holding the prompt and
//! what it is about (`caption`: the frames as base64 JPEG data URLs; `translate`: the
//! text, a second text part), `temperature` 0.
//!
//! What fails what ([`ChatClient::complete`]): a 429, a 5xx, a dropped connection or a
//! timeout is retried with exponential backoff (a 429's `Retry-After` honoured, at most
//! 10 s); a request still failing after the retries is that request's failure (the row's),
//! as is a 400 (a request the server refuses); 401 and 403 (the key), 404 (the model or the
//! path) and an endpoint that never answered through all the retries are setup failures
//! that fail the query, naming the endpoint. The API key is read from the environment of
//! the process that sends the request (a variable whose name is a setting); it is sent as
//! a bearer token and never written to a message, a log or `Debug` output.

use std::time::Duration;

use base64::Engine as _;
use serde_json::json;

use crate::UdfError;

/// Retries after the first attempt.
pub const RETRIES: u32 = 4;

/// The first backoff; each later one doubles.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);

/// The longest wait a `Retry-After` may ask.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(10);

/// One chat-completions endpoint and how to ask it.
#[derive(Clone)]
pub struct ChatClient {
    http: reqwest::Client,
    url: String,
    endpoint: String,
    model: String,
    max_tokens: u64,
    key: Option<String>,
    /// The settings' namespace messages name (`caption`, `translate`).
    settings: &'static str,
}

/// What a request asks about besides its prompt.
#[derive(Debug, Clone, Copy)]
pub enum About<'a> {
    /// Frames, JPEG-encoded.
    Images(&'a [Vec<u8>]),
    /// A text.
    Text(&'a str),
}

impl std::fmt::Debug for ChatClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatClient")
            .field("endpoint", &self.endpoint)
            .field("model", &self.model)
            .field("max_tokens", &self.max_tokens)
            .field("key", &self.key.as_ref().map(|_| "(set)"))
            .finish()
    }
}

/// What one failed attempt says about the next.
enum Attempt {
    /// Try again (after the backoff, or after the server's `Retry-After`).
    Retry(String, Option<Duration>, bool),
    /// Stop: the row's failure.
    Row(String),
    /// Stop: the setup's failure.
    Setup(String),
}

impl ChatClient {
    /// A client of the server at `endpoint` (its base URL, such as
    /// `http://127.0.0.1:8000/v1`) for `model`, answers of at most `max_tokens`, each
    /// request given `timeout`; the key is the value of the environment variable
    /// `key_env` when it is named and set.
    pub fn new(
        endpoint: &str,
        model: &str,
        max_tokens: u64,
        timeout: Duration,
        key_env: &str,
    ) -> Result<Self, UdfError> {
        let endpoint = endpoint.trim_end_matches('/').to_owned();
        if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
            return Err(UdfError::Setup(format!(
                "the chat endpoint '{endpoint}' is not an http:// or https:// URL; set it to the server's base URL, such as http://127.0.0.1:8000/v1"
            )));
        }
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| UdfError::Setup(format!("cannot make an HTTP client: {e}")))?;
        let key = (!key_env.is_empty())
            .then(|| std::env::var(key_env).ok())
            .flatten()
            .filter(|k| !k.is_empty());
        Ok(Self {
            http,
            url: format!("{endpoint}/chat/completions"),
            endpoint,
            model: model.to_owned(),
            max_tokens,
            key,
            settings: "caption",
        })
    }

    /// The same client naming the settings `settings.*` in its messages.
    pub fn for_settings(mut self, settings: &'static str) -> Self {
        self.settings = settings;
        self
    }

    /// The request body for `prompt` and what it is `about`.
    pub fn body(&self, prompt: &str, about: About<'_>) -> serde_json::Value {
        let mut content = vec![json!({ "type": "text", "text": prompt })];
        match about {
            About::Images(images) => {
                for jpeg in images {
                    let data = base64::engine::general_purpose::STANDARD.encode(jpeg);
                    content.push(json!({
                        "type": "image_url",
                        "image_url": { "url": format!("data:image/jpeg;base64,{data}") }
                    }));
                }
            }
            About::Text(text) => content.push(json!({ "type": "text", "text": text })),
        }
        json!({
            "model": self.model,
            "messages": [{ "role": "user", "content": content }],
            "max_tokens": self.max_tokens,
            "temperature": 0,
        })
    }

    /// The server's answer to `prompt` about `images` (see the module docs for what fails
    /// what).
    pub async fn complete(&self, prompt: &str, images: &[Vec<u8>]) -> Result<String, UdfError> {
        self.ask(prompt, About::Images(images)).await
    }

    /// The server's answer to `prompt` about what `about` holds (see the module docs for
    /// what fails what).
    pub async fn ask(&self, prompt: &str, about: About<'_>) -> Result<String, UdfError> {
        let body = self.body(prompt, about);
        let mut answered = false;
        let mut last = String::new();
        for attempt in 0..=RETRIES {
            match self.attempt(&body).await {
                Ok(text) => return Ok(text),
                Err(Attempt::Row(message)) => return Err(UdfError::Model(message)),
                Err(Attempt::Setup(message)) => return Err(UdfError::Setup(message)),
                Err(Attempt::Retry(message, wait, got_answer)) => {
                    answered |= got_answer;
                    last = message;
                    if attempt < RETRIES {
                        let backoff = FIRST_BACKOFF * 2u32.pow(attempt);
                        tokio::time::sleep(wait.unwrap_or(backoff)).await;
                    }
                }
            }
        }
        if answered {
            Err(UdfError::Model(format!(
                "{}: still failing after {RETRIES} retries: {last}",
                self.endpoint
            )))
        } else {
            Err(UdfError::Setup(format!(
                "the chat endpoint {} cannot be reached ({last}); check {}.endpoint and that the server runs",
                self.endpoint, self.settings
            )))
        }
    }

    async fn attempt(&self, body: &serde_json::Value) -> Result<String, Attempt> {
        let mut request = self.http.post(&self.url).json(body);
        if let Some(key) = &self.key {
            request = request.bearer_auth(key);
        }
        let response = match request.send().await {
            Ok(r) => r,
            // no answer: a refused or dropped connection, a timeout
            Err(e) => {
                let kind = if e.is_timeout() {
                    "timed out"
                } else {
                    "no answer"
                };
                return Err(Attempt::Retry(
                    format!("{kind} ({})", without_url(&e)),
                    None,
                    e.is_timeout(),
                ));
            }
        };
        let status = response.status();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(|s| Duration::from_secs(s).min(MAX_RETRY_AFTER));
        let text = match response.text().await {
            Ok(text) => text,
            Err(e) => {
                return Err(Attempt::Retry(
                    format!("the answer was cut ({})", without_url(&e)),
                    None,
                    true,
                ));
            }
        };
        let said = || excerpt(&text);
        match status.as_u16() {
            200..=299 => {
                parse_answer(&text).map_err(|m| Attempt::Row(format!("{}: {m}", self.endpoint)))
            }
            429 => Err(Attempt::Retry(
                format!("429 Too Many Requests: {}", said()),
                retry_after,
                true,
            )),
            401 | 403 => Err(Attempt::Setup(format!(
                "{} refused the key ({status}: {}); set {}.api_key_env to the name of the environment variable holding the API key",
                self.endpoint,
                said(),
                self.settings
            ))),
            404 => Err(Attempt::Setup(format!(
                "{} has no model '{}' or no chat-completions API ({status}: {}); check {s}.model and {s}.endpoint",
                self.endpoint,
                self.model,
                said(),
                s = self.settings
            ))),
            500..=599 => Err(Attempt::Retry(
                format!("{status}: {}", said()),
                retry_after,
                true,
            )),
            _ => Err(Attempt::Row(format!(
                "{} refused the request ({status}: {})",
                self.endpoint,
                said()
            ))),
        }
    }
}

/// The text of the first choice of a chat-completions answer.
fn parse_answer(text: &str) -> Result<String, String> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("the answer is not JSON ({e})"))?;
    value
        .pointer("/choices/0/message/content")
        .and_then(serde_json::Value::as_str)
        .map(|s| s.trim().to_owned())
        .ok_or_else(|| {
            format!(
                "the answer has no choices[0].message.content: {}",
                excerpt(text)
            )
        })
}

/// The first 300 characters of a server's answer, on one line.
fn excerpt(text: &str) -> String {
    let one_line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match one_line.char_indices().nth(300) {
        Some((at, _)) => format!("{}...", &one_line[..at]),
        None => one_line,
    }
}

/// A request error's message without its URL (kept short; the endpoint is named anyway).
fn without_url(e: &reqwest::Error) -> String {
    let mut message = e.to_string();
    if let Some(url) = e.url() {
        message = message.replace(url.as_str(), "the endpoint");
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_holds_the_prompt_and_the_frames_and_the_key_stays_out_of_debug() {
        let client = ChatClient::new(
            "http://127.0.0.1:9/v1/",
            "m",
            64,
            Duration::from_secs(1),
            "PATH",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let body = client.body("say", About::Images(&[vec![1, 2, 3]]));
        assert_eq!(body["model"], "m");
        assert_eq!(body["temperature"], 0);
        assert_eq!(body["messages"][0]["content"][0]["text"], "say");
        assert_eq!(
            body["messages"][0]["content"][1]["image_url"]["url"],
            "data:image/jpeg;base64,AQID"
        );
        let text = client.body("translate", About::Text("hallo"));
        assert_eq!(
            text["messages"][0]["content"][1],
            json!({ "type": "text", "text": "hallo" })
        );
        let shown = format!("{client:?}");
        let key = std::env::var("PATH").unwrap_or_default();
        assert!(!key.is_empty() && !shown.contains(&key), "{shown}");
        assert!(ChatClient::new("ftp://x", "m", 1, Duration::from_secs(1), "").is_err());
    }

    #[test]
    fn answers_are_read_from_the_first_choice() {
        assert_eq!(
            parse_answer(r#"{"choices":[{"message":{"content":" a red car "}}]}"#),
            Ok("a red car".to_owned())
        );
        assert!(parse_answer("{}").is_err());
    }
}
