"""`sparse-transfer serve` under load on 127.0.0.1: locust (headless) against the real server.

Run (CPU-heavy, about 5 minutes; run it alone):
``nice .venv/bin/python -m pytest -q -m benchmark tests/benchmarks/test_serving_load.py -s``
(env: BENCH_LAYERS (6), BENCH_HIDDEN (384): MiniLM-L6's shape; BENCH_SECONDS (12) per point;
BENCH_BATCHING (on,off); BENCH_ROUNDS (1): interleaved passes, every server up at once and
idle outside its turn, median per point;
BENCH_CONCURRENCY (1,8,32); BENCH_ENGINES for the sparse int8 deployment (onnxruntime; add
onnxruntime-sparse for our kernel library, deepsparse where it runs);
BENCH_OUT (JSON result path)). Random weights are fine for speed. With BENCH_DENSE and
BENCH_SPARSE naming deployment folders (the real-results run's dense FP32 ONNX and its
published 90% sparse int8 deployment) those are served instead, and BENCH_TEXTS names a
JSONL file whose ``sentence`` fields are the requests (the real validation sentences);
BENCH_MAX_SEQ_LENGTH sets the server's ``--max_seq_length`` (what DeepSparse compiles for);
BENCH_LOCUST_USER (FastHttpUser) names locust's user class (or HttpUser). Every server alike:
BENCH_THREADS sets ``--threads`` (default: serve's, all cores shared out between the engine
workers), BENCH_ENGINE_WORKERS ``--engine_workers`` (1), BENCH_MAX_LATENCY_MS batching's
``--max_latency_ms`` (5).

For dense FP32, ORT's dynamic int8 of it (the yardstick) and 90%-sparse int8 (QAT export;
under every engine of BENCH_ENGINES), batching on (max 16 instances, 5 ms) and off
(one request per engine call), and each concurrency, locust's users post v2 inference
requests with no think time for a bounded number of seconds; we record requests/s, p50/p99
latency (locust's, so HTTP and tokenisation included), failures (must be 0) and the
server's resident memory before and after each point (must stay flat).
"""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import requests
import torch

from sparse_transfer.embedded.fixtures import (
    NEGATIVE,
    NEUTRAL,
    POSITIVE,
    prune_by_magnitude,
    write_tokenizer,
)
from sparse_transfer.export import export_onnx
from sparse_transfer.export.onnx_export import input_names_for, sample_inputs
from sparse_transfer.quantization import (
    calibrate,
    prepare_qat,
    save_qat_config,
    set_observers_enabled,
)

pytestmark = pytest.mark.benchmark

LAYERS = int(os.environ.get("BENCH_LAYERS", "6"))
HIDDEN = int(os.environ.get("BENCH_HIDDEN", "384"))
SECONDS = int(os.environ.get("BENCH_SECONDS", "12"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "1"))
CONCURRENCY = [int(c) for c in os.environ.get("BENCH_CONCURRENCY", "1,8,32").split(",")]
ENGINES = os.environ.get("BENCH_ENGINES", "onnxruntime").split(",")
MAX_LATENCY_MS = os.environ.get("BENCH_MAX_LATENCY_MS", "5")
ENGINE_WORKERS = os.environ.get("BENCH_ENGINE_WORKERS", "1")
BATCHING = {"on": ["--max_batch_size", "16", "--max_latency_ms", MAX_LATENCY_MS],
            "off": ["--max_batch_size", "1", "--max_latency_ms", "0"]}  # fmt: skip
BATCHING = {k: v for k, v in BATCHING.items()
            if k in os.environ.get("BENCH_BATCHING", "on,off").split(",")}  # fmt: skip
# locust's geventhttpclient user costs the shared 2 cores about half the CPU per request of
# its requests-based HttpUser (0.7-0.9 vs 1.5 ms, measured): less of the server's CPU goes
# to the load generator, which in production runs elsewhere.
LOCUST_USER = os.environ.get("BENCH_LOCUST_USER", "FastHttpUser")
assert LOCUST_USER in ("FastHttpUser", "HttpUser"), f"BENCH_LOCUST_USER={LOCUST_USER}"
SPARSE = "90% sparse int8"
YARDSTICK = "ORT dynamic int8 of dense"

LOCUSTFILE = """
import json, random
from locust import %s, constant, task

TEXTS = json.loads(%r)

class Client(%s):
    wait_time = constant(0)

    @task
    def infer(self):
        body = {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES",
                            "data": [random.choice(TEXTS)]}]}
        with self.client.post("/v2/models/m/infer", json=body, catch_response=True) as r:
            if r.status_code != 200 or "outputs" not in r.text:
                r.failure(f"{r.status_code}: {r.text[:200]}")
"""


def _model(directory: Path, sparsity: float, qat: bool) -> Path:
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    write_tokenizer(directory)
    config = BertConfig(vocab_size=30522, hidden_size=HIDDEN, num_hidden_layers=LAYERS,
                        num_attention_heads=HIDDEN // 32, intermediate_size=4 * HIDDEN,
                        num_labels=2, id2label={0: "negative", 1: "positive"},
                        label2id={"negative": 0, "positive": 1})  # fmt: skip
    model = BertForSequenceClassification(config).eval()
    if sparsity:
        prune_by_magnitude(model, sparsity, prefix="bert.")
    if qat:
        tokenizer = AutoTokenizer.from_pretrained(str(directory))
        prepare_qat(model, submodules=["bert.embeddings", "bert.encoder", "bert.pooler", "classifier"],
                    exclude_module_types=["LayerNorm", "Tanh"], quantize_linear_activations=False,
                    quantize_embedding_activations=True)  # fmt: skip
        names = input_names_for(model, tokenizer)
        calibrate(model, [{k: torch.from_numpy(v) for k, v in
                           sample_inputs(tokenizer, names, 4, 64, seed=s).items()} for s in range(4)])  # fmt: skip
        set_observers_enabled(model, False)
        save_qat_config(model, directory)
    model.save_pretrained(str(directory))
    return export_onnx(directory, "text-classification", sequence_length=128)


def _texts(n: int = 64) -> list[str]:
    import random

    if os.environ.get("BENCH_TEXTS"):
        lines = Path(os.environ["BENCH_TEXTS"]).read_text().splitlines()
        return [json.loads(line)["sentence"] for line in lines if line.strip()][:512]

    rng = random.Random(0)
    words = NEUTRAL + POSITIVE + NEGATIVE
    return [" ".join(rng.choices(words, k=rng.randint(12, 40))) + " ." for _ in range(n)]


def _rss_mb(pid: int) -> float:
    text = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+)", text).group(1)) / 1024


def _start(deployment: Path, log: Path, flags: list[str]) -> tuple[subprocess.Popen, str]:
    handle = log.open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "sparse_transfer", "serve", str(deployment), "--http_port", "0",
         "--model_name", "m", "--max_queue", "512", *flags],
        stdout=handle, stderr=subprocess.STDOUT,
    )  # fmt: skip
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        found = re.search(r"listening on (http://127\.0\.0\.1:\d+)", log.read_text())
        if found:
            url = found.group(1)
            try:
                if requests.get(f"{url}/v2/models/m/ready", timeout=5).status_code == 200:
                    return proc, url
            except requests.ConnectionError:
                pass
        assert proc.poll() is None, log.read_text()[-2000:]
        time.sleep(0.2)
    raise AssertionError(log.read_text()[-2000:])


def _locust(url: str, users: int, seconds: int, work: Path) -> dict:
    locustfile = work / "locustfile.py"
    locustfile.write_text(LOCUSTFILE % (LOCUST_USER, json.dumps(_texts()), LOCUST_USER))
    prefix = work / f"run-{users}"
    subprocess.run(
        [str(Path(sys.executable).with_name("locust")), "-f", str(locustfile), "--headless",
         "-u", str(users), "-r", str(users), "-t", f"{seconds}s", "--host", url,
         "--csv", str(prefix), "--only-summary", "--stop-timeout", "5", "--loglevel", "WARNING"],
        check=False, capture_output=True, timeout=seconds + 60,
    )  # fmt: skip
    with open(f"{prefix}_stats.csv") as handle:
        row = next(r for r in csv.DictReader(handle) if r["Name"] == "Aggregated")
    return {
        "requests": int(row["Request Count"]),
        "failures": int(row["Failure Count"]),
        "rps": float(row["Requests/s"]),
        "p50_ms": float(row["50%"]),
        "p99_ms": float(row["99%"]),
    }


def _models(tmp_path: Path) -> tuple[dict[str, Path], str]:
    """The deployments served: real-results folders when named, else random MiniLM shapes;
    ORT's dynamic int8 of the dense one beside them as the yardstick."""
    from sparse_transfer.export.benchmark import dynamic_int8_copy

    if os.environ.get("BENCH_DENSE") and os.environ.get("BENCH_SPARSE"):
        models = {"dense FP32": Path(os.environ["BENCH_DENSE"]),
                  SPARSE: Path(os.environ["BENCH_SPARSE"])}  # fmt: skip
        shape = "real-results deployments"
    else:
        models = {"dense FP32": _model(tmp_path / "dense", 0.0, False),
                  SPARSE: _model(tmp_path / "int8", 0.9, True)}  # fmt: skip
        shape = f"MiniLM shape, random weights ({LAYERS} layers, hidden {HIDDEN})"
    models[YARDSTICK] = dynamic_int8_copy(models["dense FP32"], tmp_path / "dynamic-int8")
    return models, shape


def _servers(models: dict[str, Path], tmp_path: Path) -> list[dict]:
    """One warm server per (model, engine, batching); the engines (our kernel library,
    DeepSparse) are for the sparse int8 deployment, the others run on ONNX Runtime."""
    servers = []
    for name, deployment in models.items():
        for engine in ENGINES if name == SPARSE else ["onnxruntime"]:
            for batching, flags in BATCHING.items():
                # not serve's default engine, auto
                flags = [*flags, "--engine", engine, "--engine_workers", ENGINE_WORKERS]
                if os.environ.get("BENCH_MAX_SEQ_LENGTH"):
                    flags += ["--max_seq_length", os.environ["BENCH_MAX_SEQ_LENGTH"]]
                if os.environ.get("BENCH_THREADS"):  # every server alike
                    flags += ["--threads", os.environ["BENCH_THREADS"]]
                log = tmp_path / f"{name}-{engine}-{batching}.log".replace(" ", "_")
                proc, url = _start(deployment, log, flags)
                servers.append({"model": name, "engine": engine, "batching": batching,
                                "proc": proc, "url": url})  # fmt: skip
                _locust(url, 2, 3, tmp_path)  # warm-up
    return servers


def _rounds(servers: list[dict], tmp_path: Path) -> list[dict]:
    """ROUNDS interleaved passes over every server and concurrency (the others idle), so a
    neighbour's load falls on every variant alike; per point the median over rounds."""
    raw: dict[tuple, list[dict]] = {}
    for _ in range(ROUNDS):
        for srv in servers:
            for users in CONCURRENCY:
                time.sleep(1.0)  # the previous server's pool threads stop spinning
                before = _rss_mb(srv["proc"].pid)
                point = _locust(srv["url"], users, SECONDS, tmp_path)
                point.update(rss_before_mb=before, rss_after_mb=_rss_mb(srv["proc"].pid))
                raw.setdefault((id(srv), users), []).append(point)
                print(srv["model"], srv["engine"], srv["batching"], users, point, flush=True)
    results = []
    for srv in servers:
        for users in CONCURRENCY:
            points = raw[(id(srv), users)]
            results.append({
                "model": srv["model"], "engine": srv["engine"], "batching": srv["batching"],
                "users": users, "rounds": len(points),
                "rps": float(np.median([p["rps"] for p in points])),
                "rps_rounds": [p["rps"] for p in points],
                "p50_ms": float(np.median([p["p50_ms"] for p in points])),
                "p99_ms": float(np.median([p["p99_ms"] for p in points])),
                "requests": sum(p["requests"] for p in points),
                "failures": sum(p["failures"] for p in points),
                "rss_growth_mb": max(p["rss_after_mb"] - p["rss_before_mb"] for p in points),
                "rss_after_mb": points[-1]["rss_after_mb"],
            })  # fmt: skip
    return results


def _report(results: list[dict], shape: str, isa: list[str]) -> str:
    lines = [f"serve load, {shape}, {ROUNDS} interleaved rounds of {SECONDS} s per point, "
             f"locust {LOCUST_USER}, {ENGINE_WORKERS} engine worker(s), batching latency "
             f"{MAX_LATENCY_MS} ms, CPU {os.cpu_count()} cores ({', '.join(isa)})",
             f"{'model':<26}{'engine':>19}{'batching':>9}{'users':>6}{'req/s':>8}{'p50 ms':>8}"
             f"{'p99 ms':>8}{'fail':>6}{'vs FP32':>9}"]  # fmt: skip
    dense = {(r["batching"], r["users"]): r["rps"] for r in results if r["model"] == "dense FP32"}
    for r in results:
        r["rps_vs_dense_fp32"] = round(r["rps"] / dense[(r["batching"], r["users"])], 3)
        lines.append(
            f"{r['model']:<26}{r['engine']:>19}{r['batching']:>9}{r['users']:>6}{r['rps']:>8.1f}"
            f"{r['p50_ms']:>8.0f}{r['p99_ms']:>8.0f}{r['failures']:>6}"
            f"{r['rps_vs_dense_fp32']:>8.2f}x"
        )
    return "\n".join(lines)


def test_serving_load_dense_fp32_vs_sparse_int8(tmp_path):
    isa = sorted(
        set(re.findall(r"avx2|avx512[a-z0-9_]*|avx_vnni", Path("/proc/cpuinfo").read_text()))
    )
    models, shape = _models(tmp_path)
    servers = _servers(models, tmp_path)
    try:
        results = _rounds(servers, tmp_path)
    finally:
        for srv in servers:
            srv["proc"].terminate()
            srv["proc"].wait(30)
    print("\n" + _report(results, shape, isa))
    if os.environ.get("BENCH_OUT"):
        Path(os.environ["BENCH_OUT"]).write_text(
            json.dumps(
                {
                    "isa": isa,
                    "rounds": ROUNDS,
                    "seconds": SECONDS,
                    "locust_user": LOCUST_USER,
                    "engine_workers": int(ENGINE_WORKERS),
                    "threads": os.environ.get("BENCH_THREADS", "default"),
                    "max_latency_ms": float(MAX_LATENCY_MS),
                    "points": results,
                },
                indent=2,
            )  # fmt: skip
        )
    for r in results:
        assert r["requests"] > 0 and r["failures"] == 0, r
        # flat memory: a point may grow the heap a little, not keep growing it
        assert r["rss_growth_mb"] < 100, r
