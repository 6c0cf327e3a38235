//! What a long-lived server keeps per video stays within its documented bounds: one
//! session runs 2,000 queries over 2,000 distinct video files, then the sizes of the
//! per-video structures are read.

use framefusion_tests::ffmpeg;
use framefusion_udfs::analysis::{CACHE_BYTES, CACHE_ENTRIES, cache_size};
use framefusion_udfs::media::pass::{PASS_RECORD, pass_record_len, passes};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_videos_keep_every_per_video_structure_bounded() {
    use framefusion_engine::SessionContextExt;
    const VIDEOS: usize = 2000;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let first = dir.path().join("v0000.mp4");
    ffmpeg(
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=64x48:rate=10:duration=0.5",
            "-pix_fmt",
            "yuv420p",
            "-c:v",
            "libx264",
        ],
        &first,
    );
    // distinct files (paths), the same bytes: hard links
    for i in 1..VIDEOS {
        std::fs::hard_link(&first, dir.path().join(format!("v{i:04}.mp4")))
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let ctx = framefusion_engine::new_context().unwrap_or_else(|e| panic!("{e}"));
    for i in 0..VIDEOS {
        let file = dir.path().join(format!("v{i:04}.mp4"));
        let sql = format!(
            "SELECT motion_score('{}', 0.0, 0.5) AS motion",
            file.display()
        );
        let batches = ctx
            .run_script(&sql)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .collect()
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
        assert_eq!(rows, 1, "{sql}");
        let motion = batches[0].column(0);
        assert!(motion.is_valid(0), "{sql}: no motion score");
    }
    // the record of recent passes is full and no larger (the oldest videos forgotten)
    let record = pass_record_len();
    assert_eq!(record, PASS_RECORD, "passes recorded for {record} videos");
    let last = dir.path().join("v1999.mp4").display().to_string();
    assert_eq!(passes(&last), 1, "{last}");
    assert_eq!(
        passes(&first.display().to_string()),
        0,
        "the first video is forgotten"
    );
    // the cross-query feature cache
    let (entries, bytes) = cache_size();
    assert!(
        (1..=CACHE_ENTRIES).contains(&entries) && bytes <= CACHE_BYTES,
        "the feature cache holds {entries} passes, {bytes} bytes"
    );
}
