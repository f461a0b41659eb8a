#!/usr/bin/env bash
# The whole pipeline in containers of the shared image: build it (images/build-local.sh),
# expose podman's Docker-compatible API on a private socket, and run
# `sparse-transfer pipeline run --local CONFIG --runner docker`, so kfp's DockerRunner starts
# every step in the image. Slow (an image build and a full DAG): not part of `make test`.
#
#   images/e2e-containers.sh [CONFIG.yaml]        # default: the embedded-zoo demo config
#   SKIP_BUILD=1 images/e2e-containers.sh         # reuse the image already built
#
# The last result is written to $OUT/e2e-containers.txt (and printed).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export CONTAINERS_CONF="${CONTAINERS_CONF:-$ROOT/images/containers.conf}"
export IMAGE="${IMAGE:-localhost/sparse-transfer:dev}"
CONFIG="${1:-${E2E_CONFIG:-pipelines/configs/embedded-default.yaml}}"
OUT="${OUT:-$ROOT/demo-output/e2e-containers}"
CLI="${CLI:-$ROOT/.venv/bin/sparse-transfer}"

log() { printf '[e2e-containers] %s\n' "$*" >&2; }

[ -f "$CONFIG" ] || { log "run config $CONFIG not found"; exit 2; }
[ -x "$CLI" ] || { log "$CLI missing: run 'make install' first"; exit 2; }

if [ "${SKIP_BUILD:-0}" != 1 ]; then
    "$ROOT/images/build-local.sh"
fi
podman image exists "$IMAGE" || { log "image $IMAGE missing: run images/build-local.sh"; exit 2; }

SOCK_DIR="$(mktemp -d "${TMPDIR:-/tmp}/sparse-transfer-podman.XXXXXX")"
SOCK="$SOCK_DIR/podman.sock"
podman system service --time=0 "unix://$SOCK" >"$SOCK_DIR/service.log" 2>&1 &
SERVICE_PID=$!
cleanup() {
    kill "$SERVICE_PID" 2>/dev/null || true
    wait "$SERVICE_PID" 2>/dev/null || true
    rm -rf "$SOCK_DIR"
}
trap cleanup EXIT
for _ in $(seq 1 50); do
    [ -S "$SOCK" ] && break
    sleep 0.2
done
[ -S "$SOCK" ] || { cat "$SOCK_DIR/service.log" >&2; log "podman system service did not start"; exit 1; }

# kfp's DockerRunner finds the Docker API here; the steps' image is chosen when the pipeline
# is built in-process (components/_image.py reads SPARSE_TRANSFER_IMAGE).
export DOCKER_HOST="unix://$SOCK"
export SPARSE_TRANSFER_IMAGE="$IMAGE"

mkdir -p "$OUT"
rm -rf "$OUT/pipeline-root"
mkdir -p "$OUT/pipeline-root"
log "running $CONFIG in containers of $IMAGE"
start="$(date +%s)"
status=0
# Steps see the host only through the bind-mounted pipeline root (same absolute path), so
# the embedded zoo is seeded under it.
"$CLI" pipeline run --local "$CONFIG" --runner docker --pipeline-root "$OUT/pipeline-root" \
    --set "zoo_root=${E2E_ZOO_ROOT:-$OUT/pipeline-root/zoo}" 2>&1 | tee "$OUT/run.log" || status=$?
took=$(($(date +%s) - start))
image_id="$(podman image inspect --format '{{.Id}}' "$IMAGE" | cut -c1-12)"
steps="$(podman ps -a --filter "ancestor=$IMAGE" --format '{{.ID}}' 2>/dev/null | wc -l)"
{
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "config: $CONFIG"
    echo "image: $IMAGE ($image_id)"
    echo "result: $([ "$status" -eq 0 ] && echo passed || echo "failed (exit $status)")"
    echo "seconds: $took"
    echo "leftover containers: $steps"
    grep -E '^(artifacts|report|gate|published):' "$OUT/run.log" || true
} | tee "$OUT/e2e-containers.txt"
exit "$status"
