-- Shots, then per shot its motion, sharpness and the share of its frames covered by
-- burned-in text (PP-OCRv4 detection at 1 fps): the job of benches/benches/curation_floor.rs.
-- Each video is decoded once for all of it (docs/sql-reference.md, "One decode per video").
--
--   framefusion sql "CREATE EXTERNAL TABLE raw STORED AS VIDEO LOCATION '/data/videos'"
--   framefusion run examples/shots_text.sql --output /data/manifests/text-1
WITH shots AS (
  SELECT path, unnest(detect_shots(path)) AS shot
  FROM raw
  WHERE probe_error IS NULL
)
SELECT path, shot['start_s'] AS start_s, shot['end_s'] AS end_s,
       motion_score(path, shot['start_s'], shot['end_s']) AS motion,
       clip_quality(path, shot['start_s'], shot['end_s'])['sharpness'] AS sharpness,
       text_area_ratio(path, shot['start_s'], shot['end_s']) AS text_ratio
FROM shots
