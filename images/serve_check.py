"""Sends real requests to a running `sparse-transfer serve` (text classification) and checks them.

Used by images/e2e-containers.sh against the server it started inside the built image:
waits for ``/v2/health/ready``, then sends one Open Inference Protocol v2 ``infer`` request and
one KServe v1 ``predict`` request with the same sentences, and requires both to answer 200 with
one prediction per sentence and the same predictions (same model, same inputs).

    python images/serve_check.py http://127.0.0.1:8080 MODEL_NAME [TIMEOUT_SECONDS]

Prints ``serve: ...`` lines; exit 0 when every check holds, 1 otherwise.
"""

from __future__ import annotations

import json
import sys
import time
import urllib.error
import urllib.request

SENTENCES = ["a gripping, beautifully acted film", "dull, flat and far too long"]


def _call(url: str, body: dict | None = None) -> tuple[int, dict]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - loopback
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, {"error": exc.read().decode(errors="replace")[:300]}


def wait_ready(base: str, model: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if _call(f"{base}/v2/models/{model}/ready")[0] == 200:
                return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(1)
    raise SystemExit(f"serve: not ready within {timeout:.0f} s at {base}")


def main() -> int:
    base, model = sys.argv[1].rstrip("/"), sys.argv[2]
    wait_ready(base, model, float(sys.argv[3]) if len(sys.argv) > 3 else 180.0)
    v2_body = {"id": "e2e-1", "inputs": [{"name": "text", "shape": [len(SENTENCES)],
                                          "datatype": "BYTES", "data": SENTENCES}]}  # fmt: skip
    status, v2 = _call(f"{base}/v2/models/{model}/infer", v2_body)
    print(f"serve: v2 infer HTTP {status}")
    if status != 200:
        print(f"serve: v2 answer {v2}")
        return 1
    outputs = {o["name"]: o for o in v2["outputs"]}
    v2_predictions = [json.loads(s) for s in outputs["prediction"]["data"]]
    status, v1 = _call(
        f"{base}/v1/models/{model}:predict", {"instances": [{"text": s} for s in SENTENCES]}
    )
    print(f"serve: v1 predict HTTP {status}")
    if status != 200:
        print(f"serve: v1 answer {v1}")
        return 1
    v1_predictions = v1["predictions"]
    for sentence, prediction in zip(SENTENCES, v1_predictions, strict=True):
        print(f"serve: {sentence!r} -> {json.dumps(prediction, sort_keys=True)[:160]}")
    same = v2_predictions == v1_predictions and len(v1_predictions) == len(SENTENCES)
    print(f"serve: v2 and v1 agree: {same}")
    return 0 if same and v2.get("id") == "e2e-1" else 1


if __name__ == "__main__":
    sys.exit(main())
