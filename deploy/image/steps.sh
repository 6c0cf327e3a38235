#!/usr/bin/env bash
# The build steps of framefusion's container image (deploy/Containerfile runs each one in its
# stage; deploy/image/check-on-host.sh exercises them on a host without a container engine).
#
#   steps.sh build-packages      the Debian packages the builder stage installs
#   steps.sh runtime-packages    the Debian packages the runtime stage installs
#   steps.sh install PACKAGES..  apt-get install, without recommends, lists cleaned
#   steps.sh build OUT           release build of the CLI, the binary copied to OUT
#   steps.sh assets DIR [cuda]   ONNX Runtime (CPU, or the CUDA build) and the models into DIR,
#                                by scripts/fetch-assets.sh (the asset list and sha256 checks of
#                                scripts/setup.sh)
#   steps.sh user UID            the non-root user the image runs as, with a writable /data
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)

build_packages=(
    ca-certificates pkg-config clang libclang-dev protobuf-compiler mold
    libavcodec-dev libavformat-dev libavutil-dev libavfilter-dev libavdevice-dev
    libswscale-dev libswresample-dev
)
# ffmpeg 5.1's libraries the binary links (Debian 12), and what the asset stage needs
runtime_packages=(
    ca-certificates
    libavcodec59 libavformat59 libavutil57 libavfilter8 libavdevice59 libswscale6 libswresample4
)

case ${1:-} in
    build-packages) printf '%s\n' "${build_packages[@]}" ;;
    runtime-packages) printf '%s\n' "${runtime_packages[@]}" ;;
    install)
        shift
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"
        rm -rf /var/lib/apt/lists/*
        ;;
    build)
        out=${2:?steps.sh build OUT}
        cd "$repo"
        cargo build --release --locked -p framefusion-cli
        install -D -m 0755 "${CARGO_TARGET_DIR:-target}/release/framefusion" "$out/framefusion"
        ;;
    assets)
        dir=${2:?steps.sh assets DIR [cuda]}
        if [[ ${3:-} == cuda ]]; then
            FRAMEFUSION_HOME=$dir "$repo/scripts/fetch-assets.sh" cuda/lib/ models/
            # the CUDA build where the binary looks for the library
            mkdir -p "$dir/lib"
            mv "$dir"/cuda/lib/* "$dir/lib/" && rm -rf "$dir/cuda"
            # CUDA 13 and cuDNN 9 user-space libraries from PyPI, as onnxruntime-gpu 1.31.1's
            # [cuda,cudnn] extras name them (the driver comes from the host through the NVIDIA
            # container toolkit), linked into one folder on LD_LIBRARY_PATH
            python3 -m venv /tmp/cuda-venv
            /tmp/cuda-venv/bin/pip install --disable-pip-version-check -q --no-deps --target "$dir/cuda" \
                -r "$here/cuda-requirements.txt"
            rm -rf /tmp/cuda-venv
            mkdir -p "$dir/cuda/lib"
            find "$dir/cuda/nvidia" -name '*.so*' -exec ln -sf {} "$dir/cuda/lib/" \;
        else
            FRAMEFUSION_HOME=$dir "$repo/scripts/fetch-assets.sh" lib/ models/
        fi
        chmod -R a+rX "$dir"
        ;;
    user)
        uid=${2:?steps.sh user UID}
        groupadd --gid "$uid" framefusion
        useradd --uid "$uid" --gid "$uid" --home-dir /data --no-create-home --shell /usr/sbin/nologin framefusion
        install -d -o "$uid" -g "$uid" -m 0750 /data
        ;;
    *)
        sed -n '2,13p' "$0" >&2
        exit 2
        ;;
esac
