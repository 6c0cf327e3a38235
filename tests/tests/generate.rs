//! `caption` with the `onnx` backend: in-process generation from a stand-in with the
//! contract of a Hugging Face Optimum export of a vision-encoder-decoder model
//! (`tests/standins/vision_encoder_decoder.py`: encoder, merged decoder with its key/value
//! cache and `use_cache_branch`, word-level `tokenizer.json`, `preprocessor_config.json`,
//! `generation_config.json`; random weights, real attention blocks, captions that depend
//! on the pixels and end at different lengths). framefusion's captions equal those of the
//! reference loop in Python (`tests/standins/generate_reference.py`: numpy, onnxruntime,
//! the `tokenizers` package, greedy and beam search as `generate()` does them) on the same
//! frames, greedy and with 3 beams, embedded and on a 2-executor cluster. The tokenizer's
//! words are distinct and the end token is special, so equal texts are equal token ids.

use std::path::{Path, PathBuf};

use datafusion::arrow::array::{Array, AsArray};
use datafusion::prelude::SessionContext;
use framefusion_engine::SessionContextExt;
use framefusion_tests::cluster::TestCluster;
use framefusion_tests::run_python;

const SIDE: usize = 32;
const FPS: f64 = 10.0;
/// The clips: (start_s, end_s); two frames each.
const CLIPS: [(f64, f64); 6] = [
    (0.0, 1.0),
    (1.0, 2.0),
    (2.0, 3.0),
    (0.5, 3.5),
    (3.0, 4.0),
    (1.5, 2.5),
];

fn standin(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("standins")
        .join(name)
}

fn script(name: &str) -> String {
    std::fs::read_to_string(standin(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// The stand-in export, at the video's size (no scaling: the same pixels on both sides).
fn captioner(dir: &Path) -> PathBuf {
    let folder = dir.join("captioner");
    run_python(
        "the onnx package building a stand-in captioner",
        &script("vision_encoder_decoder.py"),
        &[
            folder.as_os_str(),
            "--height".as_ref(),
            SIDE.to_string().as_ref(),
            "--width".as_ref(),
            SIDE.to_string().as_ref(),
        ],
    );
    folder
}

/// Four seconds of moving test pattern at the model's size, stored losslessly in RGB, so
/// that ffmpeg's frames and framefusion's are the same bytes.
fn pattern(dir: &Path) -> PathBuf {
    framefusion_tests::lossless_pattern(dir, SIDE, FPS, 4.0)
}

/// The Python loop's captions of [`CLIPS`] with `beams` beams.
fn reference(model: &Path, video: &Path, beams: usize) -> Vec<String> {
    let clips: Vec<String> = CLIPS
        .iter()
        .map(|(s, e)| format!("[{s}, {e}, 2]"))
        .collect();
    let printed = run_python(
        "the Python reference loop (numpy, onnxruntime, tokenizers)",
        &script("generate_reference.py"),
        &[
            model.as_os_str(),
            video.as_os_str(),
            FPS.to_string().as_ref(),
            format!("[{}]", clips.join(", ")).as_ref(),
            "--beams".as_ref(),
            beams.to_string().as_ref(),
        ],
    );
    framefusion_tests::printed_texts(&printed)
}

/// framefusion's captions of [`CLIPS`] with `beams` beams, in order.
async fn captions(ctx: &SessionContext, model: &Path, video: &Path, beams: usize) -> Vec<String> {
    ctx.run_script(&format!(
        "SET caption.backend = 'onnx'; SET caption.model = '{}'; SET caption.frames = 2;",
        model.display()
    ))
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let rows: Vec<String> = CLIPS
        .iter()
        .enumerate()
        .map(|(i, (s, e))| format!("({i}, '{}', {s}, {e})", video.display()))
        .collect();
    let sql = format!(
        "SELECT i, caption(path, s, e, 'beams={beams}') AS c FROM (VALUES {}) t(i, path, s, e) ORDER BY i",
        rows.join(", ")
    );
    let batches = ctx
        .run_script(&sql)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .collect()
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    let mut out = Vec::new();
    for b in &batches {
        let c = b.column(1).as_string::<i32>();
        for row in 0..b.num_rows() {
            assert!(c.is_valid(row), "row {row}: no caption");
            out.push(c.value(row).to_owned());
        }
    }
    out
}

async fn agree(ctx: &SessionContext, model: &Path, video: &Path) {
    let greedy = reference(model, video, 1);
    let beam = reference(model, video, 3);
    assert_eq!(greedy.len(), CLIPS.len());
    let distinct: std::collections::HashSet<&String> = greedy.iter().collect();
    assert!(
        distinct.len() >= 3,
        "the stand-in reads the pixels: {greedy:?}"
    );
    assert_ne!(greedy, beam, "beam search finds other captions than greedy");
    assert_eq!(captions(ctx, model, video, 1).await, greedy, "greedy");
    assert_eq!(captions(ctx, model, video, 3).await, beam, "3 beams");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn onnx_captions_equal_the_python_loop_greedy_and_with_beams() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let model = captioner(dir.path());
    let video = pattern(dir.path());
    let ctx = framefusion_engine::new_context().unwrap_or_else(|e| panic!("{e}"));
    agree(&ctx, &model, &video).await;
    // a folder that is not an export fails the query, naming it
    let empty = dir.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap_or_else(|e| panic!("{e}"));
    let sql = format!(
        "SELECT caption('{}', 0.0, 1.0, 'model={}')",
        video.display(),
        empty.display()
    );
    let error = framefusion_tests::query_error(&ctx, &sql).await;
    assert!(error.contains(&empty.display().to_string()), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn onnx_captions_on_a_cluster_equal_the_python_loop() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let model = captioner(dir.path());
    let video = pattern(dir.path());
    let cluster = TestCluster::start(2, 1, 10).await;
    let ctx = framefusion_engine::remote_context(&cluster.url())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    agree(&ctx, &model, &video).await;
}
