#!/usr/bin/env bash
# Builds the CPU image with podman on a machine that reaches only the package registries (see
# the README, "Deploy on Kubernetes"), and runs podman the way this machine can.
#
#   build-with-podman.sh build BINARY TAG   the image TAG from deploy/Containerfile
#   build-with-podman.sh podman ARGS...     podman ARGS, with this machine's runtime settings
#
# What differs from `podman build -f deploy/Containerfile .`:
# - the base image: Docker Hub (docker.io/library/debian:bookworm-slim) is not reachable, so
#   the runtime stages start from Debian bookworm made here by debootstrap from Debian's
#   mirror (a minimal system, imported once as localhost/framefusion-base:bookworm);
# - the builder stage: its image (rust:1.95-bookworm) is on Docker Hub too, and its release
#   build takes about 50 minutes on 2 cores, so BINARY (built on this host, Debian 12 as the
#   image) takes its place; the asset and runtime stages are the Containerfile's, verbatim;
# - a TLS-intercepting egress proxy: the host's extra CA certificates
#   (/usr/local/share/ca-certificates) are trusted in the asset stage, which downloads from
#   PyPI;
# - podman itself runs containers here with runc and cgroupfs (crun refuses this machine's
#   hybrid cgroups) and explicit ulimits (the defaults exceed what the sandbox allows).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
base=localhost/framefusion-base:bookworm

log() { printf 'build-with-podman: %s\n' "$*" >&2; }
die() { printf 'build-with-podman: error: %s\n' "$*" >&2; exit 1; }

podman_() {
    command -v podman >/dev/null || die "podman is missing (scripts/setup.sh installs it)"
    podman --runtime runc --cgroup-manager cgroupfs "$@"
}
limits=(--ulimit nofile=1024:1024 --ulimit nproc=1024:1024)

case ${1:-} in
    podman)
        shift
        if [[ ${1:-} == run || ${1:-} == build ]]; then
            verb=$1
            shift
            podman_ "$verb" "${limits[@]}" "$@"
        else
            podman_ "$@"
        fi
        ;;
    build)
        binary=${2:?build-with-podman.sh build BINARY TAG}
        tag=${3:?build-with-podman.sh build BINARY TAG}
        [[ -x $binary ]] || die "no binary at $binary"
        if ! podman_ image exists "$base"; then
            command -v debootstrap >/dev/null || die "debootstrap is missing (scripts/setup.sh installs it)"
            rootfs=$(mktemp -d)
            trap 'rm -rf "$rootfs"' EXIT
            log "making the base image $base with debootstrap (once, a few minutes)"
            debootstrap --variant=minbase bookworm "$rootfs" http://deb.debian.org/debian >/dev/null
            tar -C "$rootfs" -c . | podman_ import - "$base" >/dev/null
            rm -rf "$rootfs"
            trap - EXIT
        fi
        context=$(mktemp -d)
        trap 'rm -rf "$context"' EXIT
        mkdir -p "$context/deploy/image" "$context/scripts" "$context/host-ca"
        cp "$repo/deploy/image/steps.sh" "$context/deploy/image/"
        cp "$repo/scripts/fetch-assets.sh" "$repo/scripts/assets.tsv" "$context/scripts/"
        cp "$binary" "$context/framefusion"
        cp /usr/local/share/ca-certificates/*.crt "$context/host-ca/" 2>/dev/null || true
        # the Containerfile with its builder stage replaced by the binary, and the host's CAs
        # trusted in the asset stage
        python3 - "$repo/deploy/Containerfile" "$context/Containerfile" <<'EOF'
import sys
text = open(sys.argv[1]).read()
start = text.index("FROM ${BUILDER} AS build")
end = text.index("FROM ${RUNTIME} AS assets")
text = text[:start] + "FROM ${RUNTIME} AS build\nCOPY framefusion /out/framefusion\n\n" + text[end:]
fetch = "COPY scripts/fetch-assets.sh"
assert text.count(fetch) == 1, "the asset stage's COPY of fetch-assets.sh moved"
text = text.replace(
    fetch,
    "COPY host-ca/ /usr/local/share/ca-certificates/\nRUN update-ca-certificates >/dev/null\n" + fetch,
)
open(sys.argv[2], "w").write(text)
EOF
        log "building $tag"
        podman_ build "${limits[@]}" --build-arg RUNTIME="$base" \
            -f "$context/Containerfile" -t "$tag" "$context" >&2
        ;;
    *)
        die "usage: build-with-podman.sh build BINARY TAG | podman ARGS..."
        ;;
esac
