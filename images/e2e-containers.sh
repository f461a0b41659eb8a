#!/usr/bin/env bash
# The whole pipeline in containers of the shared image: build it (images/build-local.sh),
# expose podman's Docker-compatible API on a private socket, and run
# `sparse-transfer pipeline run --local CONFIG --runner docker`, so kfp's DockerRunner starts
# every step in the image. Then the image serves: a container imports everything the
# deploy_serving step needs and builds its KServe manifests, and another runs
# `sparse-transfer serve` on the stub the run published, answering one v2 infer and one v1
# predict request (images/serve_check.py). Slow (an image build and a full DAG): not part of
# `make test`.
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
PYTHON="${PYTHON:-$(dirname "$CLI")/python}"
SERVE_PORT="${E2E_SERVE_PORT:-18080}"
SERVE_NAME="sparse-transfer-e2e-serve-$$"

# The deploy_serving step's imports (kserve, kubernetes, the serving modules) and the three
# objects it applies, built inside the image without a cluster.
DEPLOY_CHECK='
import kserve, kubernetes
from components.deploy_serving import deploy_serving
from sparse_transfer.serving import kube
from sparse_transfer.serving.deploy import S3Access, deploy_inference_service
from sparse_transfer.serving.inference_service import ServingSettings, inference_service, service_account, storage_secret
s = ServingSettings(name="st-e2e", namespace="e2e", storage_uri="s3://zoo/e", image="i", model_name="text-classification")
objects = [storage_secret(s, "http://s3:9000", "us-east-1", "a", "b"), service_account(s), inference_service(s)]
print("deploy_serving: imports ok; builds", ", ".join(o["kind"] for o in objects))
'

# `serve` inside the image on the published stub (the zoo is under the bind-mounted root).
serve_check() {
    local published="$1" zoo="$2"
    podman run --rm --network none --entrypoint python "$IMAGE" -c "$DEPLOY_CHECK" || return 1
    podman run -d --name "$SERVE_NAME" --network host -v "$OUT/pipeline-root:$OUT/pipeline-root" \
        -e SPARSE_TRANSFER_ZOO="$zoo" "$IMAGE" serve "$published" --host 127.0.0.1 \
        --http_port "$SERVE_PORT" --model_name text-classification >/dev/null || return 1
    local rc=0
    "$PYTHON" "$ROOT/images/serve_check.py" "http://127.0.0.1:$SERVE_PORT" text-classification 300 || rc=$?
    [ "$rc" -eq 0 ] || podman logs --tail 30 "$SERVE_NAME" >&2 || true
    podman rm -f "$SERVE_NAME" >/dev/null 2>&1 || true
    return "$rc"
}

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
    podman rm -f "$SERVE_NAME" >/dev/null 2>&1 || true
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
ZOO="${E2E_ZOO_ROOT:-$OUT/pipeline-root/zoo}"
"$CLI" pipeline run --local "$CONFIG" --runner docker --pipeline-root "$OUT/pipeline-root" \
    --set "zoo_root=$ZOO" 2>&1 | tee "$OUT/run.log" || status=$?
took=$(($(date +%s) - start))
serve_result="not run (the pipeline failed)"
published="$(sed -n 's/^published: *//p' "$OUT/run.log" | tail -1)"
if [ "$status" -eq 0 ] && [ -n "$published" ] && [ "$published" != "(nothing)" ]; then
    log "serving $published in $IMAGE"
    if serve_check "$published" "$ZOO" 2>&1 | tee "$OUT/serve.log"; then
        serve_result=passed
    else
        serve_result=failed
        status=1
    fi
elif [ "$status" -eq 0 ]; then
    serve_result="failed (the run published nothing)"
    status=1
fi
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
    echo "serve in the image: $serve_result"
    grep -E '^(serve|deploy_serving):' "$OUT/serve.log" 2>/dev/null || true
} | tee "$OUT/e2e-containers.txt"
exit "$status"
