//! `embed_clip`: a stand-in image embedder with the contract of a CLIP vision tower
//! exported to one ONNX file (`pixel_values` [N, 3, H, W] -> `image_embeds` [N, D]), made
//! here with the `onnx` package, whose output depends on every pixel; framefusion's clip
//! embeddings agree with a reference loop in Python (the frames ffmpeg decodes, numpy's
//! normalisation, onnxruntime, mean and L2 norm) within 1e-5, embedded and on a
//! 2-executor cluster.

use std::path::{Path, PathBuf};

use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::Float32Type;
use datafusion::prelude::SessionContext;
use framefusion_engine::SessionContextExt;
use framefusion_tests::cluster::TestCluster;
use framefusion_tests::run_python;

const SIDE: usize = 16;
const DIM: usize = 8;
const FPS: f64 = 10.0;
const MEAN: f32 = 0.45;
const STD: f32 = 0.27;

/// The stand-in embedder: a random linear map of the normalised pixels, seeded.
fn embedder(dir: &Path) -> PathBuf {
    let path = dir.join("vision_model.onnx");
    let script = format!(
        r#"
import sys, numpy as np, onnx
from onnx import helper, numpy_helper, TensorProto
rng = np.random.default_rng(7)
w = rng.normal(0, 0.05, size=(3 * {SIDE} * {SIDE}, {DIM})).astype(np.float32)
b = rng.normal(0, 0.1, size=({DIM},)).astype(np.float32)
x = helper.make_tensor_value_info("pixel_values", TensorProto.FLOAT, ["N", 3, {SIDE}, {SIDE}])
y = helper.make_tensor_value_info("image_embeds", TensorProto.FLOAT, ["N", {DIM}])
nodes = [
    helper.make_node("Flatten", ["pixel_values"], ["flat"], axis=1),
    helper.make_node("MatMul", ["flat", "w"], ["proj"]),
    helper.make_node("Add", ["proj", "b"], ["image_embeds"]),
]
graph = helper.make_graph(nodes, "embedder", [x], [y],
                          [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
model.ir_version = 8
onnx.checker.check_model(model)
onnx.save(model, sys.argv[1])
"#
    );
    run_python(
        "the onnx package building an embedder",
        &script,
        &[path.as_os_str()],
    );
    path
}

/// Four seconds of moving test pattern at the model's size, stored losslessly in RGB, so
/// that ffmpeg's frames and framefusion's are the same bytes.
fn pattern(dir: &Path) -> PathBuf {
    framefusion_tests::lossless_pattern(dir, SIDE, FPS, 4.0)
}

/// The clips asked: (start_s, end_s, frames).
const CLIPS: [(f64, f64, usize); 3] = [(0.0, 4.0, 4), (1.0, 3.0, 2), (0.5, 2.6, 3)];

/// Python's embeddings of [`CLIPS`]: the first frame at or after each time (constant frame
/// rate from 0: index ceil(t * fps)), normalised, embedded, averaged, normalised.
fn reference(model: &Path, video: &Path) -> Vec<Vec<f32>> {
    let clips: Vec<String> = CLIPS
        .iter()
        .map(|(s, e, n)| format!("({s}, {e}, {n})"))
        .collect();
    let script = format!(
        r#"
import sys, json, subprocess, numpy as np, onnxruntime as ort
raw = subprocess.run(["ffmpeg", "-v", "error", "-i", sys.argv[2], "-f", "rawvideo",
                      "-pix_fmt", "rgb24", "pipe:"], check=True, capture_output=True).stdout
frames = np.frombuffer(raw, np.uint8).reshape(-1, {SIDE}, {SIDE}, 3)
session = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
out = []
for start, end, n in [{clips}]:
    step = (end - start) / n
    picked = [frames[int(np.ceil((start + i * step) * {FPS} - 1e-9))] for i in range(n)]
    x = (np.stack(picked).astype(np.float32) / np.float32(255) - np.float32({MEAN})) / np.float32({STD})
    x = x.transpose(0, 3, 1, 2).copy()
    y = np.concatenate([session.run(None, {{"pixel_values": x[i:i + 1]}})[0] for i in range(n)])
    m = y.astype(np.float64).mean(axis=0)
    out.append((m / np.linalg.norm(m)).tolist())
print(json.dumps(out))
"#,
        clips = clips.join(", ")
    );
    let printed = run_python(
        "the Python reference loop (numpy, onnxruntime)",
        &script,
        &[model.as_os_str(), video.as_os_str()],
    );
    serde_json::from_str(printed.trim()).unwrap_or_else(|e| panic!("{printed}: {e}"))
}

/// framefusion's embeddings of [`CLIPS`], in order.
async fn embeddings(ctx: &SessionContext, model: &Path, video: &Path) -> Vec<Vec<f32>> {
    embeddings_with(ctx, video, |n| {
        format!(
            "model={} size={SIDE}x{SIDE} mean={MEAN} std={STD} frames={n}",
            model.display()
        )
    })
    .await
}

/// framefusion's embeddings of [`CLIPS`] with the options `options(frames)`, in order.
async fn embeddings_with(
    ctx: &SessionContext,
    video: &Path,
    options: impl Fn(usize) -> String,
) -> Vec<Vec<f32>> {
    let rows: Vec<String> = CLIPS
        .iter()
        .enumerate()
        .map(|(i, (s, e, n))| format!("({i}, '{}', {s}, {e}, '{}')", video.display(), options(*n)))
        .collect();
    let sql = format!(
        "SELECT i, embed_clip(path, s, e, o) AS v FROM (VALUES {}) t(i, path, s, e, o) ORDER BY i",
        rows.join(", ")
    );
    collect_embeddings(ctx, &sql).await
}

/// framefusion's embeddings of [`CLIPS`], each call with literal options
/// `options(frames)`, in order.
async fn embeddings_literal(
    ctx: &SessionContext,
    video: &Path,
    options: impl Fn(usize) -> String,
) -> Vec<Vec<f32>> {
    let calls: Vec<String> = CLIPS
        .iter()
        .enumerate()
        .map(|(i, (s, e, n))| {
            format!(
                "SELECT {i} AS i, embed_clip('{}', {s}, {e}, '{}') AS v",
                video.display(),
                options(*n)
            )
        })
        .collect();
    let sql = format!(
        "SELECT i, v FROM ({}) ORDER BY i",
        calls.join(" UNION ALL ")
    );
    collect_embeddings(ctx, &sql).await
}

/// The vectors of the rows of `sql` (`i`, `v`).
async fn collect_embeddings(ctx: &SessionContext, sql: &str) -> Vec<Vec<f32>> {
    let batches = ctx
        .run_script(sql)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .collect()
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    let mut out = Vec::new();
    for b in &batches {
        let lists = b.column(1).as_list::<i32>();
        for row in 0..b.num_rows() {
            assert!(lists.is_valid(row), "row {row}: no embedding");
            let v = lists.value(row);
            out.push(v.as_primitive::<Float32Type>().values().to_vec());
        }
    }
    out
}

fn check(got: &[Vec<f32>], want: &[Vec<f32>]) {
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(g.len(), DIM, "clip {i}: {g:?}");
        let worst = g
            .iter()
            .zip(w)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(worst <= 1e-5, "clip {i}: off by {worst}: {g:?} vs {w:?}");
        let norm: f32 = g.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "clip {i}: norm {norm}");
    }
    // the clips differ (the embedder reads the pixels)
    assert!(
        got[0]
            .iter()
            .zip(&got[1])
            .any(|(a, b)| (a - b).abs() > 1e-3),
        "two different clips gave the same embedding"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clip_embeddings_agree_with_python() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let model = embedder(dir.path());
    let video = pattern(dir.path());
    let want = reference(&model, &video);
    let ctx = framefusion_engine::new_context().unwrap_or_else(|e| panic!("{e}"));
    check(&embeddings(&ctx, &model, &video).await, &want);
    // a registered REAL[] model function as the embedder: the same vectors
    ctx.run_script(&format!(
        "CREATE FUNCTION clip_embedder(VARCHAR, DOUBLE) RETURNS REAL[] LANGUAGE onnx AS 'model={} size={SIDE}x{SIDE} mean={MEAN} std={STD}'",
        model.display()
    ))
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let via = embeddings_literal(&ctx, &video, |n| {
        format!("function=clip_embedder frames={n}")
    })
    .await;
    check(&via, &want);
    let error = framefusion_tests::query_error(
        &ctx,
        "SELECT embed_clip('x.mp4', 0.0, 1.0, 'function=nothing_here')",
    )
    .await;
    assert!(
        error.contains("function=nothing_here: no such function"),
        "{error}"
    );
    // a missing model fails the query, naming it
    let missing = dir.path().join("nope.onnx");
    let sql = format!(
        "SELECT embed_clip('{}', 0.0, 1.0, 'model={} size=16x16')",
        video.display(),
        missing.display()
    );
    let error = framefusion_tests::query_error(&ctx, &sql).await;
    assert!(
        error.contains(&missing.display().to_string()),
        "a missing model must fail the query naming it: {error}"
    );
    // a video that cannot be read is that row's null, the others are answered
    let sql = format!(
        "SELECT embed_clip(p, 0.0, 1.0, 'model={} size=16x16') AS v FROM (VALUES ('{}'), ('{}')) t(p)",
        model.display(),
        video.display(),
        dir.path().join("absent.mp4").display()
    );
    let batches = ctx
        .run_script(&sql)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .collect()
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    let valid: Vec<bool> = batches
        .iter()
        .flat_map(|b| (0..b.num_rows()).map(move |r| b.column(0).is_valid(r)))
        .collect();
    assert_eq!(valid, vec![true, false], "{sql}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clip_embeddings_on_a_cluster_equal_the_embedded_ones() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let model = embedder(dir.path());
    let video = pattern(dir.path());
    let want = reference(&model, &video);
    let cluster = TestCluster::start(2, 1, 10).await;
    let ctx = framefusion_engine::remote_context(&cluster.url())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    check(&embeddings(&ctx, &model, &video).await, &want);
}

/// A transformers.js embedder folder (`onnx/vision_model.onnx`, `preprocessor_config.json`
/// of a CLIP image processor: shortest edge, centre crop, rescale, per-channel mean and
/// std; the model's `image_embeds` after another output): frames of a 24x16 video are
/// scaled to a shortest edge of 16 (their size already), cropped to their centre 16x16 and
/// normalised as the processor says; the embeddings equal Python's within 1e-5. With
/// `dim=8` the call returns a fixed-size list; a wrong `dim` fails the query naming the
/// model.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transformers_js_folder_is_fed_as_its_processor_says() {
    const MEANS: [f32; 3] = [0.481, 0.458, 0.408];
    const STDS: [f32; 3] = [0.269, 0.261, 0.276];
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let folder = dir.path().join("clip-vision");
    let script = format!(
        r#"
import sys, os, json, numpy as np, onnx
from onnx import helper, numpy_helper, TensorProto
folder = sys.argv[1]
os.makedirs(os.path.join(folder, "onnx"), exist_ok=True)
rng = np.random.default_rng(9)
w = rng.normal(0, 0.05, size=(3 * {SIDE} * {SIDE}, {DIM})).astype(np.float32)
x = helper.make_tensor_value_info("pixel_values", TensorProto.FLOAT, ["N", 3, {SIDE}, {SIDE}])
h = helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, ["N", 3 * {SIDE} * {SIDE}])
y = helper.make_tensor_value_info("image_embeds", TensorProto.FLOAT, ["N", {DIM}])
nodes = [helper.make_node("Flatten", ["pixel_values"], ["last_hidden_state"], axis=1),
         helper.make_node("MatMul", ["last_hidden_state", "w"], ["image_embeds"])]
graph = helper.make_graph(nodes, "vision", [x], [h, y], [numpy_helper.from_array(w, "w")])
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
model.ir_version = 8
onnx.save(model, os.path.join(folder, "onnx", "vision_model.onnx"))
json.dump({{"image_processor_type": "CLIPImageProcessor", "do_resize": True,
           "size": {{"shortest_edge": {SIDE}}}, "resample": 3, "do_center_crop": True,
           "crop_size": {{"height": {SIDE}, "width": {SIDE}}}, "do_rescale": True,
           "rescale_factor": 1 / 255, "do_normalize": True,
           "image_mean": {MEANS:?}, "image_std": {STDS:?}}},
          open(os.path.join(folder, "preprocessor_config.json"), "w"))
"#
    );
    run_python(
        "the onnx package building an embedder folder",
        &script,
        &[folder.as_os_str()],
    );
    let video = dir.path().join("wide.mkv");
    framefusion_tests::ffmpeg(
        &[
            "-f",
            "lavfi",
            "-i",
            &format!("testsrc2=size=24x{SIDE}:rate={FPS}:duration=4"),
            "-c:v",
            "libx264rgb",
            "-qp",
            "0",
            "-pix_fmt",
            "rgb24",
        ],
        &video,
    );
    let clips: Vec<String> = CLIPS
        .iter()
        .map(|(s, e, n)| format!("({s}, {e}, {n})"))
        .collect();
    let reference = format!(
        r#"
import sys, os, json, subprocess, numpy as np, onnxruntime as ort
raw = subprocess.run(["ffmpeg", "-v", "error", "-i", sys.argv[2], "-f", "rawvideo",
                      "-pix_fmt", "rgb24", "pipe:"], check=True, capture_output=True).stdout
frames = np.frombuffer(raw, np.uint8).reshape(-1, {SIDE}, 24, 3)
cfg = json.load(open(os.path.join(sys.argv[1], "preprocessor_config.json")))
session = ort.InferenceSession(os.path.join(sys.argv[1], "onnx", "vision_model.onnx"),
                               providers=["CPUExecutionProvider"])
mean = np.array(cfg["image_mean"], np.float32)
std = np.array(cfg["image_std"], np.float32)
out = []
for start, end, n in [{clips}]:
    step = (end - start) / n
    picked = [frames[int(np.ceil((start + i * step) * {FPS} - 1e-9))] for i in range(n)]
    left = (24 - {SIDE}) // 2
    x = np.stack(picked)[:, :, left:left + {SIDE}, :]
    x = (x.astype(np.float64) * cfg["rescale_factor"]).astype(np.float32)
    x = ((x - mean) / std).transpose(0, 3, 1, 2).copy()
    y = np.concatenate([session.run(["image_embeds"], {{"pixel_values": x[i:i + 1]}})[0] for i in range(n)])
    m = y.astype(np.float64).mean(axis=0)
    out.append((m / np.linalg.norm(m)).tolist())
print(json.dumps(out))
"#,
        clips = clips.join(", ")
    );
    let printed = run_python(
        "the Python reference loop (numpy, onnxruntime)",
        &reference,
        &[folder.as_os_str(), video.as_os_str()],
    );
    let want: Vec<Vec<f32>> =
        serde_json::from_str(printed.trim()).unwrap_or_else(|e| panic!("{printed}: {e}"));
    let ctx = framefusion_engine::new_context().unwrap_or_else(|e| panic!("{e}"));
    let got = embeddings_with(&ctx, &video, |n| {
        format!("folder={} frames={n}", folder.display())
    })
    .await;
    check(&got, &want);
    // dim=8: a fixed-size list of the same vectors
    let sql = format!(
        "SELECT embed_clip('{}', 0.0, 4.0, 'folder={} frames=4 dim={DIM}') AS v",
        video.display(),
        folder.display()
    );
    let batches = ctx
        .run_script(&sql)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .collect()
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    let fixed = batches[0].column(0).as_fixed_size_list();
    assert_eq!(fixed.value_length(), DIM as i32);
    let first = fixed
        .value(0)
        .as_primitive::<Float32Type>()
        .values()
        .to_vec();
    check(&[first, got[1].clone()], &want[..2]);
    // a dim that is not the model's fails the query, naming the model
    let sql = format!(
        "SELECT embed_clip('{}', 0.0, 4.0, 'folder={} dim=9')",
        video.display(),
        folder.display()
    );
    let error = framefusion_tests::query_error(&ctx, &sql).await;
    assert!(
        error.contains("not dim=9") && error.contains("vision_model.onnx"),
        "{error}"
    );
}
