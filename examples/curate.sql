-- The reference curation job: every video of the table `raw` split into shots, each shot
-- of at least one second scored for motion, sharpness, exposure and duplicates.
-- Written the way it reads: a file that cannot be probed, or whose frames do not decode,
-- drops out of the query, and the run still records it as an error row naming the file
-- and the reason (every failure of a video is reported to the run's failure ledger); a
-- file shorter than 2 s, or without a shot of a second or more, gives no row and is
-- counted as such in _SUCCESS.
--
--   framefusion sql "CREATE EXTERNAL TABLE raw STORED AS VIDEO LOCATION '/data/videos'"
--   framefusion run examples/curate.sql --output /data/manifests/run-1
--
-- Killed or interrupted, the same command continues where it stopped.
WITH shots AS (
  SELECT path, width, height, unnest(detect_shots(path)) AS shot
  FROM raw
  WHERE probe_error IS NULL AND duration_s >= 2
),
clips AS (
  SELECT path, width, height, shot['start_s'] AS start_s, shot['end_s'] AS end_s
  FROM shots
  WHERE shot['end_s'] - shot['start_s'] >= 1.0
),
scored AS (
  SELECT *, clip_signals(path, start_s, end_s) AS sig FROM clips
)
SELECT path, start_s, end_s, end_s - start_s AS clip_s, width, height,
       sig['motion_score'] AS motion, sig['motion_source'] AS motion_source,
       sig['sharpness'] AS sharpness, sig['brightness'] AS brightness,
       sig['black_fraction'] AS black_fraction, sig['frozen_fraction'] AS frozen_fraction,
       sig['phash'] AS phash, sig['error'] AS error
FROM scored
