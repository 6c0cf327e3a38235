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
