#!/usr/bin/env bash
# Builds the shared image with podman on a machine that reaches no image registry.
#
#   images/build-local.sh                      # -> localhost/sparse-transfer:dev
#   IMAGE=localhost/sparse-transfer:x images/build-local.sh
#   images/build-local.sh --base-only          # only step 1
#
# 1. makes a Debian bookworm base with python3 (debootstrap + `podman import`), once;
# 2. copies the CPU torch wheel on disk into images/wheels/ (the build finds it there);
# 3. `podman build --network host --build-arg BASE_IMAGE=<that base>`.
# Podman runs with images/containers.conf (through CONTAINERS_CONF); system files stay as
# they are. Missing Debian packages (debootstrap, podman, runc) are installed when root.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
IMAGES="$ROOT/images"
export CONTAINERS_CONF="${CONTAINERS_CONF:-$IMAGES/containers.conf}"

IMAGE="${IMAGE:-localhost/sparse-transfer:dev}"
BASE_IMAGE="${BASE_IMAGE:-localhost/sparse-transfer-base:bookworm}"
DEBIAN_MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
TORCH_VERSION="${TORCH_VERSION:-2.13.0}"
# Where a CPU torch wheel may already lie (pip's find-links here, a wheelhouse, ...).
TORCH_WHEEL_DIRS="${TORCH_WHEEL_DIRS:-/opt/wheels ${PIP_FIND_LINKS:-}}"
# A CA bundle for a TLS-intercepting proxy, handed to pip as a build secret (not baked in).
CA_BUNDLE="${CA_BUNDLE:-${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}}"

log() { printf '[build-local] %s\n' "$*" >&2; }

ensure_tools() {
    local missing=()
    command -v podman >/dev/null || missing+=(podman)
    command -v runc >/dev/null || missing+=(runc)
    command -v debootstrap >/dev/null || missing+=(debootstrap)
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ "$(id -u)" -ne 0 ]; then
        log "missing ${missing[*]}: install them (sudo apt-get install ${missing[*]}) and rerun"
        exit 2
    fi
    log "installing Debian packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
}

# A minimal bookworm root with python3 (+venv) and CA certificates, imported as an image.
make_base() {
    if podman image exists "$BASE_IMAGE"; then
        log "base image $BASE_IMAGE exists (podman rmi it to rebuild)"
        return 0
    fi
    ROOTFS="$(mktemp -d "${TMPDIR:-/tmp}/sparse-transfer-rootfs.XXXXXX")"
    trap 'rm -rf "$ROOTFS" "$ROOTFS.log"' EXIT
    local rootfs="$ROOTFS"
    log "debootstrap bookworm -> $rootfs"
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
        bookworm "$rootfs" "$DEBIAN_MIRROR" >"$rootfs.log" 2>&1 || {
        tail -20 "$rootfs.log" >&2
        exit 1
    }
    rm -f "$rootfs.log"
    # Slim it like the official images: no apt lists or caches in the base layer.
    rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin \
        "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/*
    log "podman import -> $BASE_IMAGE"
    tar -C "$rootfs" --numeric-owner -cf - . | podman import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' \
        --change 'CMD ["/bin/bash"]' \
        - "$BASE_IMAGE" >/dev/null
}

# Copy a CPU torch wheel matching the base's Python into images/wheels/, if one is on disk.
stage_torch_wheel() {
    local pyver dir wheel
    pyver="$(podman run --rm --network none "$BASE_IMAGE" \
        python3 -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')"
    for dir in $TORCH_WHEEL_DIRS; do
        for wheel in "$dir"/torch-"$TORCH_VERSION"+cpu-"$pyver"-"$pyver"-*linux*_x86_64.whl; do
            [ -f "$wheel" ] || continue
            cp -u "$wheel" "$IMAGES/wheels/"
            log "torch wheel: $(basename "$wheel")"
            echo "$TORCH_VERSION+cpu"
            return 0
        done
    done
    log "no local torch $TORCH_VERSION+cpu wheel for $pyver: pip uses the PyTorch CPU index"
    echo ""
}

main() {
    ensure_tools
    local start torch_pin build_args=()
    start="$(date +%s)"
    make_base
    if [ "${1:-}" = "--base-only" ]; then
        return 0
    fi
    torch_pin="$(stage_torch_wheel)"
    build_args+=(--build-arg "BASE_IMAGE=$BASE_IMAGE")
    if [ -n "$torch_pin" ]; then
        # The wheel in images/wheels/ is the only candidate: no index for torch at all.
        build_args+=(--build-arg "TORCH_VERSION=$torch_pin" --build-arg "TORCH_INDEX_URL=")
    fi
    if [ -s "$CA_BUNDLE" ]; then
        build_args+=(--secret "id=ca_bundle,src=$CA_BUNDLE")
    fi
    log "podman build $IMAGE"
    podman build --network host --layers --format docker -f "$IMAGES/Dockerfile" "${build_args[@]}" \
        -t "$IMAGE" "$ROOT"
    local took size
    took=$(($(date +%s) - start))
    size="$(podman image inspect --format '{{.Size}}' "$IMAGE")"
    log "built $IMAGE in ${took}s, $((size / 1024 / 1024)) MiB"
    podman run --rm --network none "$IMAGE" --help >/dev/null
    log "smoke test passed: '$IMAGE --help' runs as $(podman run --rm --network none --entrypoint id "$IMAGE" -u)"
}

main "$@"
