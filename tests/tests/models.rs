//! User models on ONNX Runtime: a tiny ONNX model built with the `onnx` package's helper
//! API, registered with `CREATE FUNCTION ... LANGUAGE onnx`, run on frames of a synthetic
//! video whose colours are known; batching, one load per process, clear errors; the same
//! answers on a cluster.

use std::path::{Path, PathBuf};

use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::datatypes::{Float32Type, Float64Type};
use datafusion::prelude::SessionContext;
use framefusion_engine::SessionContextExt;
use framefusion_tests::cluster::TestCluster;
use framefusion_tests::{ffmpeg, run_python};

/// A model with input `x` f32[N,3,8,8] and outputs `channels` (mean per channel, [N,3])
/// and `mean` (mean of everything, [N]).
fn tiny_model(dir: &Path) -> PathBuf {
    let path = dir.join("tiny.onnx");
    let script = r#"
import sys, onnx
from onnx import helper, TensorProto
x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])
channels = helper.make_tensor_value_info("channels", TensorProto.FLOAT, ["N", 3])
mean = helper.make_tensor_value_info("mean", TensorProto.FLOAT, ["N"])
nodes = [
    helper.make_node("ReduceMean", ["x"], ["channels"], axes=[2, 3], keepdims=0),
    helper.make_node("ReduceMean", ["x"], ["mean"], axes=[1, 2, 3], keepdims=0),
]
graph = helper.make_graph(nodes, "tiny", [x], [channels, mean])
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
model.ir_version = 8
onnx.checker.check_model(model)
onnx.save(model, sys.argv[1])
"#;
    run_python(
        "the onnx package building a model",
        script,
        &[path.as_os_str()],
    );
    path
}

/// One second of red, then one second of blue, 64x64 at 25 fps.
fn red_then_blue(dir: &Path) -> PathBuf {
    let path = dir.join("red_blue.mp4");
    ffmpeg(
        &[
            "-f",
            "lavfi",
            "-i",
            "color=c=red:s=64x64:r=25:d=1",
            "-f",
            "lavfi",
            "-i",
            "color=c=blue:s=64x64:r=25:d=1",
            "-filter_complex",
            "[0:v][1:v]concat=n=2:v=1:a=0,format=yuv420p[v]",
            "-map",
            "[v]",
            "-c:v",
            "libx264",
            "-crf",
            "0",
        ],
        &path,
    );
    path
}

fn register(model: &Path) -> String {
    let m = model.display();
    format!(
        "CREATE FUNCTION channels(VARCHAR, DOUBLE) RETURNS REAL[] LANGUAGE onnx AS 'model={m} size=8x8 output=channels';
         CREATE FUNCTION centred(VARCHAR, DOUBLE) RETURNS REAL[] LANGUAGE onnx AS 'model={m}, size=8x8, mean=0.5/0.5/0.5, std=0.5/0.5/0.5, output=channels';
         CREATE FUNCTION brightness(VARCHAR, DOUBLE) RETURNS DOUBLE LANGUAGE onnx AS 'model={m} size=8x8 output=mean';"
    )
}

fn list(batch: &RecordBatch, column: usize, row: usize) -> Vec<f32> {
    let lists = batch.column(column).as_list::<i32>();
    assert!(!lists.is_null(row), "row {row} of column {column} is null");
    lists
        .value(row)
        .as_primitive::<Float32Type>()
        .values()
        .to_vec()
}

fn close(got: &[f32], want: &[f32]) -> bool {
    got.len() == want.len() && got.iter().zip(want).all(|(g, w)| (g - w).abs() < 0.03)
}

async fn colours(ctx: &SessionContext, video: &Path) -> RecordBatch {
    let v = video.display();
    let batches = ctx
        .run_script(&format!(
            // from a table, not literals: the calls run where the rows are (executors)
            "SELECT channels(p, 0.5), channels(p, 1.5), centred(p, 0.5), brightness(p, 0.5), brightness(p || '.nope', 0.5) FROM (VALUES ('{v}')) AS t(p)"
        ))
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .collect()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    batches[0].clone()
}

fn check_colours(b: &RecordBatch) {
    assert!(
        close(&list(b, 0, 0), &[1.0, 0.0, 0.0]),
        "{:?}",
        list(b, 0, 0)
    );
    assert!(
        close(&list(b, 1, 0), &[0.0, 0.0, 1.0]),
        "{:?}",
        list(b, 1, 0)
    );
    assert!(
        close(&list(b, 2, 0), &[1.0, -1.0, -1.0]),
        "{:?}",
        list(b, 2, 0)
    );
    let bright = b.column(3).as_primitive::<Float64Type>().value(0);
    assert!((bright - 1.0 / 3.0).abs() < 0.03, "{bright}");
    assert!(
        b.column(4).is_null(0),
        "a video that cannot be read is a null row"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registered_model_runs_on_frames() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let model = tiny_model(dir.path());
    let video = red_then_blue(dir.path());
    let ctx = framefusion_engine::new_context().unwrap_or_else(|e| panic!("{e}"));
    ctx.run_script(&register(&model))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    check_colours(&colours(&ctx, &video).await);

    // 40 rows in batches of 8 (onnx.batch_size): every row answered, in a few passes; no new load (of this
    // model: other tests of this process load theirs meanwhile)
    let loads = framefusion_udfs::models::load_count_of(&model);
    assert_eq!(loads, 1, "the query above loaded the model once");
    let passes = || framefusion_udfs::media::pass::passes(&video.display().to_string());
    let passes_before = passes();
    let batches = ctx
        .run_script(&format!(
            "SELECT channels('{}', t) AS c FROM (SELECT CAST(value AS DOUBLE) / 20.0 AS t FROM generate_series(0, 39)) ORDER BY t",
            video.display()
        ))
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .collect()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let rows: Vec<Vec<f32>> = batches
        .iter()
        .flat_map(|b| (0..b.num_rows()).map(|r| list(b, 0, r)).collect::<Vec<_>>())
        .collect();
    assert_eq!(rows.len(), 40);
    let red = rows.iter().filter(|c| close(c, &[1.0, 0.0, 0.0])).count();
    let blue = rows.iter().filter(|c| close(c, &[0.0, 0.0, 1.0])).count();
    assert_eq!((red, blue), (20, 20));
    // the rows of one video read their frames in one pass per batch of rows, not a seek
    // each (the query's rows may be split among its partitions)
    let read = passes() - passes_before;
    assert!(
        (1..=4).contains(&read),
        "40 rows of one video took {read} decode passes"
    );
    assert_eq!(
        framefusion_udfs::models::load_count_of(&model),
        loads,
        "the model is loaded once per process"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_models_give_clear_errors() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let model = tiny_model(dir.path());
    let ctx = framefusion_engine::new_context().unwrap_or_else(|e| panic!("{e}"));
    let error = |sql: String| {
        let ctx = ctx.clone();
        async move {
            ctx.run_script(&sql)
                .await
                .err()
                .map(|e| framefusion_engine::user_message(&e))
                .unwrap_or_default()
        }
    };
    let missing = error(format!(
        "CREATE FUNCTION f(VARCHAR, DOUBLE) LANGUAGE onnx AS 'model={}/absent.onnx size=8x8'",
        dir.path().display()
    ))
    .await;
    assert!(
        missing.contains("absent.onnx' is missing") && missing.contains("setup"),
        "{missing}"
    );
    let shape = error(format!(
        "CREATE FUNCTION f(VARCHAR, DOUBLE) LANGUAGE onnx AS 'model={} size=16x16'",
        model.display()
    ))
    .await;
    assert!(
        shape.contains("[-1, 3, 8, 8]") && shape.contains("[1, 3, 16, 16]"),
        "{shape}"
    );
    let spec = error(format!(
        "CREATE FUNCTION f(VARCHAR, DOUBLE) LANGUAGE onnx AS 'model={} size=8x8 colour=red'",
        model.display()
    ))
    .await;
    assert!(spec.contains("unknown model option 'colour'"), "{spec}");
    let language = error("CREATE FUNCTION f(VARCHAR) LANGUAGE python AS 'x'".to_owned()).await;
    assert!(language.contains("LANGUAGE onnx"), "{language}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registered_model_runs_on_a_cluster() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let model = tiny_model(dir.path());
    let video = red_then_blue(dir.path());
    let cluster = TestCluster::start(2, 1, 10).await;
    let ctx = framefusion_engine::remote_context(&cluster.url())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    ctx.run_script(&register(&model))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    check_colours(&colours(&ctx, &video).await);
}

/// A row whose frame cannot be read is null and reported to the run's failure ledger, as
/// an operator's row is, so a manifest run writes its error row whatever the job's shape.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_model_row_that_fails_is_reported_to_the_run() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let model = tiny_model(dir.path());
    let video = red_then_blue(dir.path());
    let ctx = framefusion_engine::new_context().unwrap_or_else(|e| panic!("{e}"));
    ctx.run_script(&register(&model))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let sink = "models-test-user-model-failures";
    let missing = format!("{}.nope", video.display());
    let batches = ctx
        .run_script(&format!(
            "SET framefusion.failure_sink = '{sink}'; \
             SELECT p, brightness(p, 0.5) AS b FROM (VALUES ('{}'), ('{missing}')) AS t(p) ORDER BY p",
            video.display()
        ))
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .collect()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let b = &batches[0];
    assert_eq!(b.num_rows(), 2);
    assert!(b.column(1).is_valid(0), "the readable video has its value");
    assert!(b.column(1).is_null(1), "the missing file's row is null");
    let failures = framefusion_common::failures::take(sink);
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert_eq!(failures[0].path, missing);
    assert_eq!(failures[0].operator, "brightness");
    assert!(
        failures[0].message.contains(".nope"),
        "{}",
        failures[0].message
    );
}

/// An operator whose model is chosen per call: `'model=FILE'` runs FILE, `'backend=remote'`
/// runs none here (as a captioner served by a model server); it returns the models its
/// batch loaded.
#[derive(Debug)]
struct PerCallModel;

impl framefusion_udfs::VideoOperator for PerCallModel {
    fn name(&self) -> &'static str {
        "per_call_model"
    }
    fn description(&self) -> &'static str {
        "The models a call's options name (a test operator)."
    }
    fn args(&self) -> &'static [framefusion_udfs::operator::Arg] {
        use framefusion_udfs::operator::Arg;
        const ARGS: &[Arg] = &[Arg::path(), Arg::options("options")];
        ARGS
    }
    fn return_type(&self) -> datafusion::arrow::datatypes::DataType {
        datafusion::arrow::datatypes::DataType::Utf8
    }
    fn runs_model(&self) -> bool {
        true
    }
    fn models_for(
        &self,
        _config: &datafusion::common::config::ConfigOptions,
        options: Option<&str>,
    ) -> Vec<String> {
        options
            .and_then(|o| o.strip_prefix("model="))
            .map(|m| vec![m.to_owned()])
            .unwrap_or_default()
    }
    fn evaluate(
        &self,
        batch: &framefusion_udfs::operator::Batch<'_>,
    ) -> datafusion::common::Result<Vec<framefusion_udfs::operator::RowOutcome>> {
        let loaded: Vec<String> = batch.models().names().map(str::to_owned).collect();
        for name in &loaded {
            batch.model(name)?;
        }
        Ok(batch.each_row(|_| {
            Ok(datafusion::common::ScalarValue::Utf8(Some(
                loaded.join(","),
            )))
        }))
    }
}

/// What `per_call_model` answers with `options`, and whether its stage runs a model.
async fn per_call_answer(
    ctx: SessionContext,
    options: String,
) -> datafusion::common::Result<(String, bool)> {
    let sql = format!("SELECT per_call_model('a.mp4', '{options}') AS m");
    let df = ctx.sql(&sql).await?;
    let plan = df.clone().create_physical_plan().await?;
    let on_gpu = framefusion_engine::placement::stage_runs_model(&plan);
    let batches = df.collect().await?;
    let value = batches[0].column(0).as_string::<i32>().value(0).to_owned();
    Ok((value, on_gpu))
}

/// An operator that chooses its model per call: the scaffold loads the model a call's
/// options name (none for a remote backend), a missing one fails the query naming it, and
/// a cluster places only the calls that run a model on its GPU pool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_chooses_its_models_per_call() {
    use datafusion::logical_expr::ScalarUDF;
    use framefusion_udfs::VideoUdf;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let model = tiny_model(dir.path());
    let ctx = framefusion_engine::new_context().unwrap_or_else(|e| panic!("{e}"));
    ctx.register_udf(ScalarUDF::from(VideoUdf::new(std::sync::Arc::new(
        PerCallModel,
    ))));
    let answer = |options: String| per_call_answer(ctx.clone(), options);
    let path = model.display().to_string();
    let (loaded, on_gpu) = answer(format!("model={path}"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(loaded, path, "the model the options name is loaded");
    assert!(on_gpu, "a call that runs a model goes to the GPU pool");
    let (loaded, on_gpu) = answer("backend=remote".to_owned())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(loaded, "", "a remote backend loads no model");
    assert!(!on_gpu, "a call that runs no model stays off the GPU pool");
    let missing = dir.path().join("nope.onnx").display().to_string();
    let error = answer(format!("model={missing}"))
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        error.contains(&missing),
        "a missing model fails the query naming it: {error}"
    );
}
