#!/usr/bin/env bash
# The reference curation job on the sample corpus (run by `make demo` after a release build).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
home=${FRAMEFUSION_HOME:-$HOME/.cache/framefusion}
bin=${CARGO_TARGET_DIR:-$root/target}/release/framefusion
out=$home/demo
mkdir -p "$out"
corpus=$home/corpus

register="CREATE OR REPLACE EXTERNAL TABLE corpus STORED AS VIDEO LOCATION '$corpus';"

echo "== the sample corpus ($corpus), probed"
"$bin" sql "$register
SELECT regexp_replace(path, '.*/', '') AS file, round(duration_s, 2) AS duration_s, width, height,
       round(fps, 3) AS fps, video_codec, audio_codec, probe_error
FROM corpus ORDER BY file"

"$bin" sql "$register SELECT * FROM corpus ORDER BY path" --format parquet --output "$out/probe.parquet"
echo "demo: the full probe table (one row per file, errors included) is in $out/probe.parquet"

echo "== the curation job (examples/curate.sql): shots, motion, quality, pHash -> a resumable manifest"
"$bin" sql "CREATE OR REPLACE EXTERNAL TABLE raw STORED AS VIDEO LOCATION '$corpus'"
"$bin" run "$root/examples/curate.sql" --output "$out/manifest"
"$bin" sql --no-catalog "CREATE EXTERNAL TABLE m STORED AS PARQUET LOCATION '$out/manifest/';
SELECT regexp_replace(path, '.*/', '') AS file, count(*) AS clips, round(avg(motion), 3) AS motion,
       round(avg(sharpness), 1) AS sharpness, max(status) AS status
FROM m GROUP BY file ORDER BY file"
echo "demo: the manifest is in $out/manifest (run the same command again: it resumes, or reports it is complete)"
