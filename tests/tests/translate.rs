//! `translate`, both backends.
//!
//! `onnx`: in-process generation from a stand-in with the contract of a Hugging Face
//! Optimum export of a seq2seq translator (`tests/standins/seq2seq_translator.py`, Marian
//! opus-mt's: text encoder with an attention mask, merged decoder with
//! `encoder_attention_mask`, `.decoder`/`.encoder` cache names and `use_cache_branch`, a
//! tokenizer whose post-processor appends `</s>`, Marian's generation config with its pad
//! token banned, a forced end token and renormalised beam scores). framefusion's
//! translations equal the reference loop's in Python (`tests/standins/translate_reference.py`:
//! numpy, onnxruntime, the `tokenizers` package, greedy and beam search as `generate()`
//! does them) on the same texts, batched differently, greedy and with 3 beams, embedded and
//! on a 2-executor cluster. Words are distinct and the special tokens are skipped, so equal
//! texts are equal token ids.
//!
//! `openai`: against the strict test server in text mode: each distinct text asked once,
//! the prompt names the target; in a manifest run a refused text is its video's error row
//! and the call's settings are in `_SUCCESS`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use datafusion::prelude::SessionContext;
use framefusion_engine::SessionContextExt;
use framefusion_tests::chat::{ChatExpect, ChatServer};
use framefusion_tests::cluster::TestCluster;
use framefusion_tests::{ffmpeg, run_python};

const WORDS: &str = "a the red blue green small large dog cat car man woman child street field sky water tree house runs walks sits stands looks plays holds near under over with and in on at of bright dark slowly quickly two three people bird boat road";

/// Runs the stand-in script `name` (run from its file: it imports its neighbours).
fn run_standin(what: &str, name: &str, args: &[&std::ffi::OsStr]) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("standins")
        .join(name);
    let script = format!(
        "import runpy; runpy.run_path({:?}, run_name='__main__')",
        path.display().to_string()
    );
    run_python(what, &script, args)
}

/// The stand-in translator (64 positions: longer texts are cut).
fn translator(dir: &Path) -> PathBuf {
    let folder = dir.join("translator");
    run_standin(
        "the onnx package building a stand-in translator",
        "seq2seq_translator.py",
        &[folder.as_os_str()],
    );
    folder
}

/// 30 texts of 1 to 30 words (a pseudo-random sequence), two of them repeated, and one of
/// 90 words (cut to the model's 64 positions).
fn texts() -> Vec<String> {
    let words: Vec<&str> = WORDS.split(' ').collect();
    let mut state: u64 = 12345;
    let mut next = |n: usize| {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 33) as usize) % n
    };
    let mut out: Vec<String> = (0..30)
        .map(|_| {
            let n = 1 + next(30);
            (0..n)
                .map(|_| words[next(words.len())])
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    out.push(out[3].clone());
    out.push(out[17].clone());
    out.push(
        (0..90)
            .map(|_| words[next(words.len())])
            .collect::<Vec<_>>()
            .join(" "),
    );
    out
}

/// The Python loop's translations of `texts` with `beams` beams, 16 texts a batch.
fn reference(model: &Path, texts: &[String], beams: usize, dir: &Path) -> Vec<String> {
    let file = dir.join(format!("texts-{beams}.json"));
    std::fs::write(&file, serde_json::to_string(texts).unwrap_or_default())
        .unwrap_or_else(|e| panic!("{e}"));
    let printed = run_standin(
        "the Python reference loop (numpy, onnxruntime, tokenizers)",
        "translate_reference.py",
        &[
            model.as_os_str(),
            file.as_os_str(),
            "--beams".as_ref(),
            beams.to_string().as_ref(),
            "--batch".as_ref(),
            "16".as_ref(),
        ],
    );
    framefusion_tests::printed_texts(&printed)
}

/// framefusion's translations of `texts` with `beams` beams, 5 texts a batch.
async fn translations(ctx: &SessionContext, texts: &[String], beams: usize) -> Vec<String> {
    let rows: Vec<String> = texts
        .iter()
        .enumerate()
        .map(|(i, t)| format!("({i}, '{t}')"))
        .collect();
    let sql = format!(
        "SELECT i, translate(t, 'beams={beams},batch=5') FROM (VALUES {}) v(i, t) ORDER BY i",
        rows.join(", ")
    );
    framefusion_tests::second_column(ctx, &sql)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .into_iter()
        .enumerate()
        .map(|(i, t)| t.unwrap_or_else(|| panic!("row {i}: no translation")))
        .collect()
}

async fn agree(ctx: &SessionContext, model: &Path, dir: &Path) {
    ctx.run_script(&format!(
        "SET translate.backend = 'onnx'; SET translate.model = '{}';",
        model.display()
    ))
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let texts = texts();
    let greedy = reference(model, &texts, 1, dir);
    let beam = reference(model, &texts, 3, dir);
    assert_eq!(greedy.len(), texts.len());
    let distinct: std::collections::HashSet<&String> = greedy.iter().collect();
    assert!(
        distinct.len() >= 20,
        "the stand-in reads the text: {greedy:?}"
    );
    assert!(
        greedy.iter().all(|t| !t.contains("<pad>")),
        "the pad token is banned: {greedy:?}"
    );
    assert_ne!(
        greedy, beam,
        "beam search finds other translations than greedy"
    );
    assert_eq!(translations(ctx, &texts, 1).await, greedy, "greedy");
    assert_eq!(translations(ctx, &texts, 3).await, beam, "3 beams");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn onnx_translations_equal_the_python_loop_greedy_and_with_beams() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let model = translator(dir.path());
    let ctx = framefusion_engine::new_context().unwrap_or_else(|e| panic!("{e}"));
    agree(&ctx, &model, dir.path()).await;
    // a null text is a null row, an empty one an empty translation
    let rows = framefusion_tests::second_column(
        &ctx,
        "SELECT i, translate(t) FROM (VALUES (0, NULL), (1, ''), (2, '  ')) v(i, t) ORDER BY i",
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(rows, vec![None, Some(String::new()), Some(String::new())]);
    // a folder that is not an export fails the query, naming it
    let empty = dir.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap_or_else(|e| panic!("{e}"));
    let sql = format!("SELECT translate('a dog', 'model={}')", empty.display());
    let error = framefusion_tests::query_error(&ctx, &sql).await;
    assert!(error.contains(&empty.display().to_string()), "{error}");
    // caption refuses a text model, naming its folder
    let sql = format!(
        "SELECT caption('{}', 0.0, 1.0, 'model={}')",
        framefusion_tests::lossless_pattern(dir.path(), 32, 10.0, 1.0).display(),
        model.display()
    );
    let error =
        framefusion_tests::query_error(&ctx, &format!("SET caption.backend = 'onnx'; {sql}")).await;
    assert!(
        error.contains("holds a text model") && error.contains(&model.display().to_string()),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn onnx_translations_on_a_cluster_equal_the_python_loop() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let model = translator(dir.path());
    let cluster = TestCluster::start(2, 1, 10).await;
    let ctx = framefusion_engine::remote_context(&cluster.url())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    agree(&ctx, &model, dir.path()).await;
}

const MODEL: &str = "test-llm";
const PROMPT: &str = "Translate the following text into German. Answer with the translation only.";

async fn text_server() -> ChatServer {
    ChatServer::start(ChatExpect {
        model: MODEL.to_owned(),
        prompt: PROMPT.to_owned(),
        key: String::new(),
        frames: 0,
        size: (0, 0),
        latency: Duration::from_millis(20),
        fail_percent: 20,
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_translates_each_distinct_text_once_into_the_target() {
    let server = text_server().await;
    let ctx = framefusion_engine::new_context().unwrap_or_else(|e| panic!("{e}"));
    ctx.run_script(&format!(
        "SET translate.endpoint = '{}'; SET translate.model = '{MODEL}'; SET translate.concurrency = 4;",
        server.endpoint()
    ))
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let texts: Vec<String> = (0..40).map(|i| format!("text number {}", i % 25)).collect();
    let rows: Vec<String> = texts
        .iter()
        .enumerate()
        .map(|(i, t)| format!("({i}, '{t}')"))
        .collect();
    let sql = format!(
        "SELECT i, translate(t, 'to=German') FROM (VALUES {}, (40, 'please refuse me')) v(i, t) ORDER BY i",
        rows.join(", ")
    );
    let got = framefusion_tests::second_column(&ctx, &sql)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let mut wanted: Vec<Option<String>> = texts.iter().map(|t| Some(t.to_uppercase())).collect();
    wanted.push(None);
    assert_eq!(got, wanted, "a refused text is the row's failure (null)");
    let stats = server.stats(1);
    assert_eq!(stats.answers.len(), 25, "{:?}", stats.answers);
    assert!(
        stats.answers.values().all(|n| *n == 1),
        "each distinct text asked once: {:?}",
        stats.answers
    );
    assert!(stats.failed_once > 0, "some texts were answered 503 first");
    assert_eq!(stats.bad.len(), 1, "{:?}", stats.bad);
    // the default target is English: another prompt, which this server refuses (400)
    let got = framefusion_tests::second_column(&ctx, "SELECT 0, translate('hallo')")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(got, vec![None]);
    let bad = server.stats(1).bad;
    assert!(bad.len() == 2 && bad[1].contains("English"), "{bad:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_translation_is_its_videos_error_in_a_manifest() {
    let server = text_server().await;
    let work = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let corpus = work.path().join("corpus");
    std::fs::create_dir_all(&corpus).unwrap_or_else(|e| panic!("{e}"));
    for i in 0..3 {
        ffmpeg(
            &[
                "-f",
                "lavfi",
                "-i",
                "testsrc2=size=160x120:rate=10:duration=1",
                "-pix_fmt",
                "yuv420p",
                "-c:v",
                "libx264",
            ],
            &corpus.join(format!("v{i}.mp4")),
        );
    }
    let job = work.path().join("job.sql");
    std::fs::write(
        &job,
        format!(
            "SET translate.endpoint = '{}'; SET translate.model = '{MODEL}'; SET translate.target = 'German';
CREATE EXTERNAL TABLE src STORED AS VIDEO LOCATION '{}';
SELECT path, translate(CASE WHEN path LIKE '%v1.mp4' THEN 'please refuse me' ELSE 'hello from ' || path END) AS d FROM src",
            server.endpoint(),
            corpus.display()
        ),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let out = work.path().join("manifest");
    let output = std::process::Command::new(framefusion_tests::framefusion_bin())
        .arg("run")
        .arg(&job)
        .arg("--output")
        .arg(&out)
        .args(["--no-catalog", "--videos-per-part", "1"])
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let said = String::from_utf8_lossy(&output.stderr).to_string();
    let rows = crate::manifest::manifest_table(&out);
    assert_eq!(rows.len(), 3, "{said}\n{rows:?}");
    for row in &rows {
        let path = row["path"].as_str().unwrap_or_default();
        if path.ends_with("v1.mp4") {
            assert_eq!(row["status"], "error", "{row}");
            let error = row["error"].as_str().unwrap_or_default();
            assert!(
                error.starts_with("translate:") && error.contains("refused"),
                "{row}"
            );
            assert!(row["d"].is_null(), "{row}");
        } else {
            assert_eq!(row["status"], "ok", "{row}");
            assert_eq!(
                row["d"].as_str(),
                Some(format!("HELLO FROM {}", path.to_uppercase()).as_str()),
                "{row}"
            );
        }
    }
    let success = crate::manifest::success(&out);
    let operator = success["operators"]
        .as_array()
        .and_then(|ops| ops.iter().find(|o| o["name"] == "translate"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(operator["settings"]["target"], "German", "{success}");
    assert_eq!(operator["settings"]["prompt"], PROMPT, "{success}");
    assert_eq!(operator["settings"]["model"], MODEL, "{success}");
    assert!(
        std::fs::read_dir(out.join("_framefusion/answers"))
            .map(|d| d.count())
            .unwrap_or(0)
            == 0,
        "kept answers are removed once their videos are committed"
    );
}
