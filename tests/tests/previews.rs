//! Previews: `contact_sheet` and `thumbnail` give JPEG files that ffmpeg and Pillow
//! decode, whose tiles are the frames ffmpeg extracts at the tiles' times (in the right
//! cells, not their neighbours'), the same bytes embedded and on a cluster; a bad row is
//! null and the query goes on; an invalid option value fails the query.

use std::path::Path;

use datafusion::arrow::array::{Array, BinaryArray, RecordBatch};
use framefusion_engine::SessionContextExt;
use framefusion_tests::cluster::TestCluster;
use framefusion_tests::{ffmpeg, ffprobe, run_python, sample};

/// The range of the sheet: six tiles 2 s apart over a part of the trailer with cuts and
/// motion, so that neighbouring tiles differ.
const START: f64 = 20.0;
const END: f64 = 32.0;
const TILES: usize = 6;
const COLUMNS: usize = 3;
/// The trailer (1280x720) at a tile's longest side of 320.
const TILE: (usize, usize) = (320, 180);

fn sheet_sql(path: &str) -> String {
    format!(
        "SELECT contact_sheet(p, {START}, {END}, 'frames={TILES},columns={COLUMNS},size=320,quality=2') AS sheet, \
         thumbnail(p, 12.0) AS thumb, \
         contact_sheet(p, 3, 1) AS bad_range, \
         contact_sheet(p || '.missing', 0, 2) AS missing \
         FROM (VALUES ('{path}')) AS t(p)"
    )
}

fn binaries(batches: &[RecordBatch]) -> Vec<Option<Vec<u8>>> {
    let batch = &batches[0];
    (0..batch.num_columns())
        .map(|c| {
            let col = batch
                .column(c)
                .as_any()
                .downcast_ref::<BinaryArray>()
                .unwrap_or_else(|| panic!("column {c} is not Binary"));
            (!col.is_null(0)).then(|| col.value(0).to_vec())
        })
        .collect()
}

async fn run(ctx: &datafusion::prelude::SessionContext, sql: &str) -> Vec<Option<Vec<u8>>> {
    let batches = ctx
        .run_script(sql)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .collect()
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    binaries(&batches)
}

/// ffmpeg's frame at `at` seconds of `video` scaled to the tile size, as raw RGB24.
fn reference(video: &Path, at: f64, dir: &Path, i: usize) -> std::path::PathBuf {
    let out = dir.join(format!("ref-{i}.rgb"));
    let scale = format!("scale={}:{}", TILE.0, TILE.1);
    let at = format!("{at}");
    let video = video.display().to_string();
    ffmpeg(
        &[
            "-ss",
            &at,
            "-i",
            &video,
            "-frames:v",
            "1",
            "-vf",
            &scale,
            "-f",
            "rawvideo",
            "-pix_fmt",
            "rgb24",
        ],
        &out,
    );
    out
}

/// Mean absolute difference of every tile of the sheet (its upper two thirds: the label
/// sits at the bottom) against every reference frame, as a matrix, by Pillow and numpy.
const COMPARE: &str = r#"
import json, sys
import numpy as np
from PIL import Image
sheet, thumb = sys.argv[1], sys.argv[2]
tw, th, cols, gap = (int(v) for v in sys.argv[3:7])
refs = sys.argv[7:]
img = Image.open(sheet); img.load()
a = np.asarray(img.convert("RGB"), dtype=np.float64)
keep = th * 2 // 3
out = {"size": [img.width, img.height], "format": img.format, "diff": []}
for i in range(len(refs) - 1):
    x, y = gap + (i % cols) * (tw + gap), gap + (i // cols) * (th + gap)
    tile = a[y:y + keep, x:x + tw]
    row = []
    for r in refs[:-1]:
        ref = np.fromfile(r, dtype=np.uint8).reshape(th, tw, 3)[:keep].astype(np.float64)
        row.append(float(np.abs(tile - ref).mean()))
    out["diff"].append(row)
t = Image.open(thumb); t.load()
b = np.asarray(t.convert("RGB"), dtype=np.float64)
ref = np.fromfile(refs[-1], dtype=np.uint8).reshape(th, tw, 3).astype(np.float64)
out["thumb"] = [t.width, t.height, float(np.abs(b - ref).mean()) if b.shape == ref.shape else 999.0]
print(json.dumps(out))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contact_sheet_tiles_are_ffmpegs_frames_at_their_times() {
    let video = sample("trailer_bbb.mp4");
    let path = video.display().to_string();
    let ctx = framefusion_engine::new_context().unwrap_or_else(|e| panic!("{e}"));
    let values = run(&ctx, &sheet_sql(&path)).await;
    let [Some(sheet), Some(thumb), bad_range, missing] = &values[..] else {
        panic!(
            "a sheet and a thumbnail: {:?}",
            values.iter().map(Option::is_some).collect::<Vec<_>>()
        );
    };
    assert!(
        bad_range.is_none() && missing.is_none(),
        "bad rows are null"
    );
    // an invalid option value is the same for every row: it fails the query (code setup)
    let failed = ctx
        .run_script(&format!(
            "SELECT contact_sheet('{path}', 1, 3, 'frames=0') AS bad_options"
        ))
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .collect()
        .await
        .err()
        .unwrap_or_else(|| panic!("an invalid option must fail the query"));
    assert_eq!(
        framefusion_engine::error::error_code(&failed),
        framefusion_engine::error::ErrorCode::Setup
    );
    assert!(
        failed
            .to_string()
            .contains("bad contact_sheet option 'frames=0'"),
        "{failed}"
    );

    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (sheet_file, thumb_file) = (dir.path().join("sheet.jpg"), dir.path().join("thumb.jpg"));
    std::fs::write(&sheet_file, sheet).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(&thumb_file, thumb).unwrap_or_else(|e| panic!("{e}"));

    // ffmpeg reads it as one MJPEG picture of the documented size
    let rows = TILES.div_ceil(COLUMNS);
    let want = (COLUMNS * (TILE.0 + 4) + 4, rows * (TILE.1 + 4) + 4);
    let probed = ffprobe(&sheet_file).unwrap_or_else(|| panic!("ffprobe cannot read the sheet"));
    let stream = &probed["streams"][0];
    assert_eq!(stream["codec_name"], "mjpeg", "{probed}");
    assert_eq!(
        (stream["width"].as_u64(), stream["height"].as_u64()),
        (Some(want.0 as u64), Some(want.1 as u64)),
        "{probed}"
    );

    // each tile is ffmpeg's frame at the middle of its part of the range
    let step = (END - START) / TILES as f64;
    let mut args = vec![
        sheet_file.clone().into_os_string(),
        thumb_file.clone().into_os_string(),
    ];
    args.extend([TILE.0, TILE.1, COLUMNS, 4].map(|v| std::ffi::OsString::from(v.to_string())));
    for i in 0..TILES {
        let at = START + (i as f64 + 0.5) * step;
        args.push(reference(&video, at, dir.path(), i).into_os_string());
    }
    args.push(reference(&video, 12.0, dir.path(), TILES).into_os_string());
    let args: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
    let out: serde_json::Value = serde_json::from_str(&run_python(
        "comparing the sheet with ffmpeg's frames",
        COMPARE,
        &args,
    ))
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(out["format"], "JPEG", "{out}");
    assert_eq!(out["size"], serde_json::json!([want.0, want.1]), "{out}");
    let diff: Vec<Vec<f64>> =
        serde_json::from_value(out["diff"].clone()).unwrap_or_else(|e| panic!("{e}"));
    for (i, row) in diff.iter().enumerate() {
        // its own frame, up to scaling and JPEG
        assert!(
            row[i] < 6.0,
            "tile {i} differs from ffmpeg's frame by {:.2}: {diff:?}",
            row[i]
        );
        // and clearly not another tile's
        for (j, d) in row.iter().enumerate() {
            if j != i {
                assert!(
                    *d > 2.0 * row[i] + 2.0,
                    "tile {i} is as close to frame {j}: {diff:?}"
                );
            }
        }
    }
    // the thumbnail: the frame at 12 s, longest side 320
    let t = &out["thumb"];
    assert_eq!(
        (t[0].as_u64(), t[1].as_u64()),
        (Some(320), Some(180)),
        "{out}"
    );
    assert!(
        t[2].as_f64().unwrap_or(999.0) < 6.0,
        "thumbnail vs ffmpeg: {out}"
    );

    // the same bytes from a cluster's executors
    let cluster = TestCluster::start(1, 1, 30).await;
    let remote = framefusion_engine::remote_context(&cluster.url())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        run(&remote, &sheet_sql(&path)).await,
        values,
        "{}",
        cluster.logs()
    );
}
