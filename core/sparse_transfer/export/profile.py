"""Where a deployment's time goes: ONNX Runtime's profiler, summed per operator type.

Issue 22 sized its fusions from this view (the Linears' ``MatMulIntegerToFloat``,
``QuantizeLinear``, GELU, LayerNorm shares at sequence 64/128); the same numbers for
the sparse graph say what is left to fuse. The profiler records one ``Node`` event per
kernel run (``*_kernel_time``, microseconds, ``args.op_name``: the op after ORT's own
fusions), see onnxruntime/core/common/profiler.cc.
"""

from __future__ import annotations

import json
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any


def profile_ops(
    deployment_dir: str | Path,
    engine: str = "onnxruntime",
    batch: int = 1,
    sequence_length: int = 128,
    threads: int | None = None,
    runs: int = 20,
    warmup: int = 3,
) -> dict[str, Any]:
    """Kernel time per op type over `runs` timed runs, largest share first."""
    import onnxruntime as ort

    from sparse_transfer.export.benchmark import _inputs, _vocab_size
    from sparse_transfer.runtime.onnx_model import OnnxModel, session_options

    model = OnnxModel(deployment_dir, threads=threads, check_cpu=False, engine=engine)
    feeds = _inputs(model, batch, sequence_length, _vocab_size(model.directory))
    with tempfile.TemporaryDirectory(prefix="sparse-transfer-profile-") as tmp:
        options = session_options(threads, model.engine)
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(tmp) / "ort")
        session = ort.InferenceSession(str(model.path), options, providers=["CPUExecutionProvider"])
        for _ in range(warmup + runs):
            session.run(None, feeds)
        events = _events(session.end_profiling())
    per_run = len(events) // (warmup + runs)  # every run launches the same kernels
    return _summary(
        events[len(events) - per_run * runs :], runs, model.engine, batch, sequence_length
    )


def _events(path: str) -> list[dict[str, Any]]:
    """The profile's kernel-run events, in file order (the file is deleted after reading)."""
    file = Path(path)
    data = json.loads(file.read_text())
    file.unlink()
    return [
        e
        for e in data
        if e.get("cat") == "Node" and str(e.get("name", "")).endswith("_kernel_time")
    ]


def _summary(events, runs: int, engine: str, batch: int, length: int) -> dict[str, Any]:
    per_op: dict[str, float] = defaultdict(float)
    for e in events:
        per_op[e.get("args", {}).get("op_name", "?")] += float(e.get("dur", 0))
    total = sum(per_op.values()) or 1.0
    ops = sorted(per_op.items(), key=lambda kv: -kv[1])
    return {
        "engine": engine,
        "batch": batch,
        "sequence_length": length,
        "kernel_ms_per_run": round(total / 1000.0 / runs, 3),
        "ops": [
            {"op": op, "share": round(us / total, 4), "ms_per_run": round(us / 1000.0 / runs, 3)}
            for op, us in ops
        ],
    }
