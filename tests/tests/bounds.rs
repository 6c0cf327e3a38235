//! What a long-lived server keeps per video stays within its documented bounds: one
//! session runs 2,000 queries over 2,000 distinct video files, then the sizes of the
//! per-video structures are read.

use framefusion_tests::ffmpeg;
use framefusion_udfs::analysis::{CACHE_BYTES, CACHE_ENTRIES, FeatureCache};
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
    // the cross-query feature cache (the session's runtime's)
    let (entries, bytes) = FeatureCache::of(ctx.state().config_options()).size();
    assert!(
        (1..=CACHE_ENTRIES).contains(&entries) && bytes <= CACHE_BYTES,
        "the feature cache holds {entries} passes, {bytes} bytes"
    );
}

/// The feature cache is a runtime's, not the process's: a second session of the same
/// runtime (a server's) reads the first one's features without decoding, a session of
/// another runtime decodes the video again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_feature_cache_is_the_runtimes() {
    use framefusion_engine::SessionContextExt;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let file = dir.path().join("shared.mp4");
    ffmpeg(
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=64x48:rate=10:duration=1",
            "-pix_fmt",
            "yuv420p",
            "-c:v",
            "libx264",
        ],
        &file,
    );
    let uri = file.display().to_string();
    let sql = format!("SELECT motion_score('{uri}', 0.0, 1.0) AS motion");
    let motion = |ctx: datafusion::prelude::SessionContext| {
        let sql = sql.clone();
        async move {
            let batches = ctx
                .run_script(&sql)
                .await
                .unwrap_or_else(|e| panic!("{e}"))
                .collect()
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
            assert!(batches[0].column(0).is_valid(0), "{sql}: no motion score");
        }
    };
    let server = framefusion_common::shared::Shared::new();
    let first = framefusion_engine::new_context_in(&server).unwrap_or_else(|e| panic!("{e}"));
    let second = framefusion_engine::new_context_in(&server).unwrap_or_else(|e| panic!("{e}"));
    motion(first.clone()).await;
    assert_eq!(passes(&uri), 1, "{uri}");
    motion(second.clone()).await;
    assert_eq!(
        passes(&uri),
        1,
        "a session of the same runtime decoded again"
    );
    assert_eq!(
        FeatureCache::of(second.state().config_options()).size().0,
        1,
        "one pass kept, in the runtime both sessions share"
    );
    let other = framefusion_engine::new_context().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(FeatureCache::of(other.state().config_options()).size().0, 0);
    motion(other).await;
    assert_eq!(passes(&uri), 2, "another runtime has a cache of its own");
}
