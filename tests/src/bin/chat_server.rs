//! The caption tests' chat-completions server as a process, for benches/caption_busy.py:
//!
//! ```text
//! chat-server MODEL PROMPT KEY FRAMES WIDTH HEIGHT LATENCY_MS FAIL_PERCENT
//! ```
//!
//! prints its port on the first line, then serves `POST /v1/chat/completions` and
//! `GET /stats?target=N` until killed.

use std::time::Duration;

use framefusion_tests::chat::{ChatExpect, ChatServer};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let number = |i: usize| -> u64 {
        args.get(i)
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("argument {} must be a number; see the module docs", i + 1))
    };
    let text = |i: usize| args.get(i).cloned().unwrap_or_default();
    let expect = ChatExpect {
        model: text(0),
        prompt: text(1),
        key: text(2),
        frames: number(3) as usize,
        size: (number(4) as u32, number(5) as u32),
        latency: Duration::from_millis(number(6)),
        fail_percent: number(7),
    };
    let server = ChatServer::start(expect).await;
    println!("{}", server.port);
    let _ = tokio::signal::ctrl_c().await;
}
