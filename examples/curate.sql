-- The reference curation job: every video of the table `raw` split into shots, each shot
-- of at least one second scored for motion, sharpness, exposure and duplicates.
-- A file that cannot be probed, or whose frames do not decode, stays in the manifest as
-- an error row; a file shorter than 2 s, or without a shot of a second or more, gives no
-- row (the manifest's parts still list it as done).
--
--   framefusion sql "CREATE EXTERNAL TABLE raw STORED AS VIDEO LOCATION '/data/videos'"
--   framefusion run examples/curate.sql --output /data/manifests/run-1
--
-- Killed or interrupted, the same command continues where it stopped.
WITH videos AS (
  SELECT path, duration_s, width, height, fps, probe_error FROM raw
),
listed AS (
  SELECT path, width, height, detect_shots(path) AS found
  FROM videos
  WHERE probe_error IS NULL AND duration_s >= 2
),
-- one row per shot; a video whose shots could not be detected (nothing decodes) keeps
-- one row, with a null shot, that becomes its error row below
shots AS (
  SELECT path, width, height, found,
         unnest(range(CAST(greatest(coalesce(cardinality(found), 0), 1) AS BIGINT))) AS i
  FROM listed
),
clips AS (
  SELECT path, width, height, found IS NULL OR cardinality(found) = 0 AS failed,
         found[i + 1]['start_s'] AS start_s, found[i + 1]['end_s'] AS end_s
  FROM shots
),
scored AS (
  SELECT path, width, height, failed, start_s, end_s,
         clip_signals(path, start_s, end_s) AS sig
  FROM clips
  WHERE failed OR end_s - start_s >= 1.0
)
SELECT path, start_s, end_s, end_s - start_s AS clip_s, width, height,
       sig['motion_score'] AS motion, sig['motion_source'] AS motion_source,
       sig['sharpness'] AS sharpness, sig['brightness'] AS brightness,
       sig['black_fraction'] AS black_fraction, sig['frozen_fraction'] AS frozen_fraction,
       sig['phash'] AS phash,
       CASE WHEN failed THEN 'detect_shots: no frame of the video decodes (see the log)'
            ELSE sig['error'] END AS error
FROM scored
UNION ALL
SELECT path, CAST(NULL AS DOUBLE), CAST(NULL AS DOUBLE), CAST(NULL AS DOUBLE), width, height,
       CAST(NULL AS DOUBLE), CAST(NULL AS VARCHAR), CAST(NULL AS DOUBLE), CAST(NULL AS DOUBLE),
       CAST(NULL AS DOUBLE), CAST(NULL AS DOUBLE), CAST(NULL AS BIGINT), probe_error
FROM videos
WHERE probe_error IS NOT NULL
