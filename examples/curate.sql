-- The reference curation job: every video of the table `raw` split into shots, each shot
-- of at least one second scored for motion, sharpness, exposure and duplicates.
-- A file that cannot be probed stays in the manifest as an error row.
--
--   framefusion sql "CREATE EXTERNAL TABLE raw STORED AS VIDEO LOCATION '/data/videos'"
--   framefusion run examples/curate.sql --output /data/manifests/run-1
--
-- Killed or interrupted, the same command continues where it stopped.
WITH videos AS (
  SELECT path, duration_s, width, height, fps, probe_error FROM raw
),
shots AS (
  SELECT path, width, height, unnest(detect_shots(path)) AS shot
  FROM videos
  WHERE probe_error IS NULL AND duration_s >= 2
),
clips AS (
  SELECT path, width, height, shot['start_s'] AS start_s, shot['end_s'] AS end_s,
         clip_signals(path, shot['start_s'], shot['end_s']) AS sig
  FROM shots
  WHERE shot['end_s'] - shot['start_s'] >= 1.0
)
SELECT path, start_s, end_s, end_s - start_s AS clip_s, width, height,
       sig['motion_score'] AS motion, sig['motion_source'] AS motion_source,
       sig['sharpness'] AS sharpness, sig['brightness'] AS brightness,
       sig['black_fraction'] AS black_fraction, sig['frozen_fraction'] AS frozen_fraction,
       sig['phash'] AS phash, sig['error'] AS error
FROM clips
UNION ALL
SELECT path, CAST(NULL AS DOUBLE), CAST(NULL AS DOUBLE), CAST(NULL AS DOUBLE), width, height,
       CAST(NULL AS DOUBLE), CAST(NULL AS VARCHAR), CAST(NULL AS DOUBLE), CAST(NULL AS DOUBLE),
       CAST(NULL AS DOUBLE), CAST(NULL AS DOUBLE), CAST(NULL AS BIGINT), probe_error
FROM videos
WHERE probe_error IS NOT NULL
