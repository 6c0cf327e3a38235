//! An OpenAI-compatible chat-completions server for the caption and translate tests and
//! the bench.
//!
//! With `frames` 0 it is a text server (`translate`): the message must be the prompt and
//! one text part, answered with that text in capitals (a text holding `refuse me` is
//! answered 400: the row's failure); its answers are counted per text.
//!
//! It checks every request strictly (path, key, model, prompt, temperature, max_tokens,
//! the number of images, each a JPEG data URL whose picture has the expected size) and
//! answers with text that depends on the first image's bytes (framefusion's JPEG encoder
//! is deterministic, so the bytes stand for the pixels), so a caption tells which frames
//! were sent. It waits `latency` before answering and, for `fail_percent`% of the clips,
//! answers 503 once first. It records every request's arrival and answer, how many were in
//! flight (from a request's arrival until its answer is about to be sent, so a client's
//! next request never overlaps the one it follows), and how many answers each clip got.
//!
//! Written in Rust, not Python: a Python server (one interpreter lock) saturated at about
//! 150 requests a second of two 224-pixel frames, below what 16 requests of 100 ms ask.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use serde_json::{Value, json};

/// What the server expects and how it answers.
#[derive(Debug, Clone)]
pub struct ChatExpect {
    /// The model asked for.
    pub model: String,
    /// The prompt (the first part of the message).
    pub prompt: String,
    /// The bearer key wanted (empty: none may be sent).
    pub key: String,
    /// Images per request (0: a text part instead).
    pub frames: usize,
    /// Their width and height.
    pub size: (u32, u32),
    /// How long each answer takes.
    pub latency: Duration,
    /// The share of clips (percent) answered 503 once before their answer.
    pub fail_percent: u64,
}

#[derive(Debug, Default)]
struct Record {
    in_flight: usize,
    max_in_flight: usize,
    events: Vec<(Instant, i64)>,
    answers: HashMap<String, usize>,
    failed_once: HashSet<String>,
    bad: Vec<String>,
    requests: usize,
}

struct Server {
    expect: ChatExpect,
    record: Mutex<Record>,
}

/// What the server saw.
#[derive(Debug, Clone)]
pub struct ChatStats {
    /// The most requests in flight at once.
    pub max_in_flight: usize,
    /// Answers per clip (by the hash of its first frame).
    pub answers: HashMap<String, usize>,
    /// The clips answered 503 once.
    pub failed_once: usize,
    /// Why requests were refused.
    pub bad: Vec<String>,
    /// Requests received.
    pub requests: usize,
    /// The share of the time from the first request to the last answer during which at
    /// least the target number of requests were in flight.
    pub busy: f64,
}

/// A running server (on the current tokio runtime; stopped when dropped).
pub struct ChatServer {
    /// Its port on 127.0.0.1.
    pub port: u16,
    server: Arc<Server>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ChatServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ChatServer {
    /// Starts a server expecting `expect`.
    pub async fn start(expect: ChatExpect) -> Self {
        let server = Arc::new(Server {
            expect,
            record: Mutex::new(Record::default()),
        });
        let app = axum::Router::new()
            .route("/v1/chat/completions", post(complete))
            .route("/stats", get(stats_json))
            .with_state(Arc::clone(&server));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("cannot bind the chat server: {e}"));
        let port = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("{e}"))
            .port();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { port, server, task }
    }

    /// Its base URL, as `caption.endpoint` takes it.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}/v1", self.port)
    }

    /// What it saw, `busy` counted at `target` requests in flight.
    pub fn stats(&self, target: usize) -> ChatStats {
        self.server.stats(target)
    }
}

impl Server {
    fn stats(&self, target: usize) -> ChatStats {
        let record = self.record.lock().unwrap_or_else(|p| p.into_inner());
        ChatStats {
            max_in_flight: record.max_in_flight,
            answers: record.answers.clone(),
            failed_once: record.failed_once.len(),
            bad: record.bad.clone(),
            requests: record.requests,
            busy: busy(&record.events, target),
        }
    }

    fn arrive(&self) {
        let mut r = self.record.lock().unwrap_or_else(|p| p.into_inner());
        r.in_flight += 1;
        r.requests += 1;
        r.max_in_flight = r.max_in_flight.max(r.in_flight);
        r.events.push((Instant::now(), 1));
    }

    fn leave(&self) {
        let mut r = self.record.lock().unwrap_or_else(|p| p.into_inner());
        r.in_flight -= 1;
        r.events.push((Instant::now(), -1));
    }

    /// The clip of a valid request (the hash of its first image, or its text) and its
    /// answer, or the status and why.
    fn check(
        &self,
        headers: &HeaderMap,
        body: &Value,
    ) -> Result<(String, String), (StatusCode, String)> {
        let e = &self.expect;
        let auth = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let wanted = if e.key.is_empty() {
            String::new()
        } else {
            format!("Bearer {}", e.key)
        };
        if auth != wanted {
            return Err((StatusCode::UNAUTHORIZED, "wrong or missing key".to_owned()));
        }
        let bad = |m: String| Err((StatusCode::BAD_REQUEST, m));
        if body["model"] != e.model.as_str() {
            return Err((
                StatusCode::NOT_FOUND,
                format!("The model `{}` does not exist.", body["model"]),
            ));
        }
        if body["temperature"] != 0 {
            return bad(format!("temperature {}", body["temperature"]));
        }
        if !body["max_tokens"].is_u64() {
            return bad(format!("max_tokens {}", body["max_tokens"]));
        }
        let messages = body["messages"].as_array().cloned().unwrap_or_default();
        if messages.len() != 1 || messages[0]["role"] != "user" {
            return bad("messages must be one user message".to_owned());
        }
        let content = messages[0]["content"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if content.len() != 1 + e.frames.max(1) {
            return bad(format!(
                "content must be the prompt and {} images",
                e.frames
            ));
        }
        if content[0] != json!({ "type": "text", "text": e.prompt }) {
            return bad(format!("prompt {}", content[0]));
        }
        if e.frames == 0 {
            let text = match (&content[1]["type"], content[1]["text"].as_str()) {
                (t, Some(text)) if t == "text" => text.to_owned(),
                _ => return bad(format!("not a text part: {}", content[1])),
            };
            if text.contains("refuse me") {
                return bad("this text is refused".to_owned());
            }
            let answer = text.to_uppercase();
            return Ok((text, answer));
        }
        let mut first = None;
        for part in &content[1..] {
            let url = part["image_url"]["url"].as_str().unwrap_or_default();
            let Some(data) = url.strip_prefix("data:image/jpeg;base64,") else {
                return bad("an image is not a JPEG data URL".to_owned());
            };
            let jpeg =
                match base64::Engine::decode(&base64::engine::general_purpose::STANDARD, data) {
                    Ok(j) => j,
                    Err(_) => return bad("an image is not base64".to_owned()),
                };
            match jpeg_size(&jpeg) {
                Some(size) if size == e.size => {}
                other => return bad(format!("image {other:?}, expected a JPEG of {:?}", e.size)),
            }
            first.get_or_insert(jpeg);
        }
        let clip = format!("{:016x}", fnv1a(&first.unwrap_or_default()));
        let answer = format!("clip {clip}");
        Ok((clip, answer))
    }
}

async fn stats_json(State(server): State<Arc<Server>>, uri: axum::http::Uri) -> Json<Value> {
    let target = uri
        .query()
        .and_then(|q| q.strip_prefix("target="))
        .and_then(|t| t.parse().ok())
        .unwrap_or(1);
    let s = server.stats(target);
    Json(json!({
        "max_in_flight": s.max_in_flight,
        "answers": s.answers,
        "failed_once": s.failed_once,
        "bad": s.bad,
        "requests": s.requests,
        "busy": s.busy,
    }))
}

async fn complete(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> (StatusCode, Json<Value>) {
    server.arrive();
    let answer = answer(&server, &headers, &body).await;
    server.leave();
    answer
}

async fn answer(server: &Server, headers: &HeaderMap, body: &[u8]) -> (StatusCode, Json<Value>) {
    let body: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({ "error": e.to_string() })),
            );
        }
    };
    let (clip, text) = match server.check(headers, &body) {
        Ok(asked) => asked,
        Err((status, message)) => {
            let mut r = server.record.lock().unwrap_or_else(|p| p.into_inner());
            r.bad.push(message.clone());
            return (status, Json(json!({ "error": message })));
        }
    };
    tokio::time::sleep(server.expect.latency).await;
    let mut r = server.record.lock().unwrap_or_else(|p| p.into_inner());
    let hash = fnv1a(clip.as_bytes());
    if hash % 100 < server.expect.fail_percent && r.failed_once.insert(clip.clone()) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "error": "overloaded, try again" })),
        );
    }
    *r.answers.entry(clip.clone()).or_default() += 1;
    (
        StatusCode::OK,
        Json(json!({
            "choices": [{ "index": 0, "message": { "role": "assistant", "content": text } }]
        })),
    )
}

/// The share of the time from the first event to the last during which at least `target`
/// requests were in flight.
fn busy(events: &[(Instant, i64)], target: usize) -> f64 {
    let mut events = events.to_vec();
    events.sort_by_key(|(t, _)| *t);
    let (Some(first), Some(last)) = (events.first(), events.last()) else {
        return 0.0;
    };
    let total = last.0.duration_since(first.0).as_secs_f64();
    let mut level: i64 = 0;
    let mut full = 0.0;
    let mut since = first.0;
    for (t, d) in &events {
        if level >= target as i64 {
            full += t.duration_since(since).as_secs_f64();
        }
        level += d;
        since = *t;
    }
    if total > 0.0 { full / total } else { 0.0 }
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The width and height of a baseline or progressive JPEG file (its SOF segment), `None`
/// when the bytes are not a whole JPEG file.
pub fn jpeg_size(jpeg: &[u8]) -> Option<(u32, u32)> {
    if !jpeg.starts_with(&[0xFF, 0xD8]) || !jpeg.ends_with(&[0xFF, 0xD9]) {
        return None;
    }
    let mut at = 2;
    while at + 4 <= jpeg.len() {
        if jpeg[at] != 0xFF {
            return None;
        }
        let marker = jpeg[at + 1];
        let length = usize::from(u16::from_be_bytes([jpeg[at + 2], jpeg[at + 3]]));
        let is_sof = (0xC0..=0xCF).contains(&marker) && ![0xC4, 0xC8, 0xCC].contains(&marker);
        if is_sof && at + 9 <= jpeg.len() {
            let height = u32::from(u16::from_be_bytes([jpeg[at + 5], jpeg[at + 6]]));
            let width = u32::from(u16::from_be_bytes([jpeg[at + 7], jpeg[at + 8]]));
            return Some((width, height));
        }
        at += 2 + length;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_counts_the_time_at_the_target() {
        let t = Instant::now();
        let s = |ms| t + Duration::from_millis(ms);
        // two in flight from 0 to 50 of 100 ms
        let events = [(s(0), 1), (s(0), 1), (s(50), -1), (s(100), -1)];
        assert!((busy(&events, 2) - 0.5).abs() < 1e-9);
    }
}
