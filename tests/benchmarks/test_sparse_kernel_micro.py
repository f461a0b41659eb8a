"""Kernel micro-benchmark: ORT's dense int8 matmul (MLAS) vs our sparse int8 custom ops.

Run (CPU-heavy, a few minutes; run it alone):
``nice .venv/bin/python -m pytest -q -s -m benchmark tests/benchmarks/test_sparse_kernel_micro.py``
(env: BENCH_ROUNDS (7), BENCH_ITERS (5 per round), BENCH_THREADS ("1,2"), BENCH_OUT (JSON
path)). Shapes 128x768 @ 768x3072 and 128x3072 @ 3072x768 (BERT-base FFN, 128 tokens), 7-bit
random weights at 0/50/80/90/95% sparsity, unstructured and 1x4 blocks along K. Four
variants, all u8 activations: ORT ``MatMulInteger`` (int32 out) and ``MatMulInteger`` +
``Cast`` + ``Mul`` (float out: ORT fuses it to ``MatMulIntegerToFloat``), ours
``SparseMatMulInteger`` and ``SparseQLinearFromU8`` (float out, scale and bias fused). Speed
is GFLOP-equivalent/s, 2*M*N*K of the dense product whatever the sparsity, so the
crossover point reads off directly. Interleaved rounds: every variant gets the same share of
a shared machine's load; the figure is the median over all runs, of CPU time with one thread
(robust to the load of a shared machine) and of wall time with more; pool threads do not
spin (``session.intra_op.allow_spinning=0``), so the sessions run in turn do not steal each
other's cores.

On a CPU with AMX (Sapphire Rapids and newer) ORT's dense int8 runs on AMX tiles; to compare
with the AVX-512 VNNI dense kernels that CPUs without AMX run, deny the process AMX:
``gcc -O2 -shared -fPIC -o /tmp/libnoamx.so tests/benchmarks/noamx.c -ldl`` then prefix the
command with ``LD_PRELOAD=/tmp/libnoamx.so`` (MLAS asks Linux for AMX with arch_prctl).
"""

from __future__ import annotations

import json
import os
import time

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from sparse_transfer.kernels import build, kernel_status, spec

pytestmark = pytest.mark.benchmark
SHAPES = [(128, 768, 3072), (128, 3072, 768)]
PATTERNS = [(0.0, "dense")] + [
    (s, p) for s in (0.5, 0.8, 0.9, 0.95) for p in ("unstructured", "block4")
]


def _weight(rng, n, k, sparsity, pattern) -> np.ndarray:
    if pattern == "block4":
        mask = np.repeat(rng.random((n, k // 4)) >= sparsity, 4, axis=1)
    else:
        mask = rng.random((n, k)) >= sparsity
    return (rng.integers(-64, 65, (n, k)) * mask).astype(np.int8)


def _model(nodes, inits, k, out_type):
    graph = helper.make_graph(
        nodes, "bench", [helper.make_tensor_value_info("a", TensorProto.UINT8, [None, k])],
        [helper.make_tensor_value_info("y", out_type, None)], inits)  # fmt: skip
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid(spec.DOMAIN, 1)]
    return helper.make_model(graph, opset_imports=opsets).SerializeToString()


def _variants(w: np.ndarray, k: int) -> dict:
    n = w.shape[0]
    p = spec.pack_block4(w)
    zp, scale = np.array(3, np.uint8), np.array(0.02, np.float32)
    w_scale, bias = np.full(n, 0.01, np.float32), np.zeros(n, np.float32)
    b = numpy_helper.from_array(np.ascontiguousarray(w.T), "b")
    packed = [numpy_helper.from_array(a, nm) for nm, a in
              (("rp", p.row_ptr), ("bc", p.block_col), ("v", p.values))]  # fmt: skip
    z = numpy_helper.from_array(zp, "zp")
    mm = helper.make_node("MatMulInteger", ["a", "b", "zp"], ["i"])
    return {
        "ort_int32": _model(
            [helper.make_node("MatMulInteger", ["a", "b", "zp"], ["y"])],
            [b, z],
            k,
            TensorProto.INT32,
        ),  # fmt: skip
        "ort_float": _model(
            [
                mm,
                helper.make_node("Cast", ["i"], ["f"], to=TensorProto.FLOAT),
                helper.make_node("Mul", ["f", "s"], ["y"]),
            ],
            [b, z, numpy_helper.from_array(scale * w_scale, "s")],
            k,
            TensorProto.FLOAT,
        ),  # fmt: skip
        "ours_int32": _model(
            [
                helper.make_node(
                    "SparseMatMulInteger",
                    ["a", "zp", "rp", "bc", "v"],
                    ["y"],
                    domain=spec.DOMAIN,
                    K=k,
                )
            ],
            [z, *packed],
            k,
            TensorProto.INT32,
        ),  # fmt: skip
        "ours_float": _model(
            [
                helper.make_node(
                    "SparseQLinearFromU8",
                    ["a", "xs", "zp", "rp", "bc", "v", "ws", "bias"],
                    ["y"],
                    domain=spec.DOMAIN,
                    K=k,
                )
            ],
            [
                numpy_helper.from_array(scale, "xs"),
                z,
                *packed,
                numpy_helper.from_array(w_scale, "ws"),
                numpy_helper.from_array(bias, "bias"),
            ],
            k,
            TensorProto.FLOAT,
        ),  # fmt: skip
    }, p.block_density


def _sessions(models: dict, threads: int, lib: str) -> dict:
    out = {}
    for name, model in models.items():
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        # Idle pool threads of the other sessions must not spin on a shared 2-core machine.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if name.startswith("ours"):
            options.register_custom_ops_library(lib)
        out[name] = ort.InferenceSession(model, options, ["CPUExecutionProvider"])
    return out


def _time(sessions: dict, feeds: dict, rounds: int, iters: int, clock) -> dict:
    runs = {name: [] for name in sessions}
    for _ in range(rounds):
        for name, session in sessions.items():
            for _ in range(iters):
                start = clock()
                session.run(None, feeds)
                runs[name].append(clock() - start)
    return {name: float(np.median(t)) for name, t in runs.items()}


def _clock(threads: int):
    """One thread: the process's CPU time (ORT runs the op in the calling thread), which a
    shared machine's load barely moves; more threads: wall time (workers spin-wait)."""
    return time.process_time if threads == 1 else time.perf_counter


def test_sparse_kernel_micro():
    status = kernel_status()
    if not status.available and build.find_compiler() is None:
        pytest.skip(status.reason)
    lib = str(build.build())
    status = kernel_status()
    rounds, iters = int(os.environ.get("BENCH_ROUNDS", 7)), int(os.environ.get("BENCH_ITERS", 5))
    threads_list = [int(t) for t in os.environ.get("BENCH_THREADS", "1,2").split(",")]
    rng = np.random.default_rng(0)
    rows = []
    for m, k, n in SHAPES:
        a = rng.integers(0, 256, (m, k)).astype(np.uint8)
        flops = 2.0 * m * n * k
        for sparsity, pattern in PATTERNS:
            w = _weight(rng, n, k, sparsity, pattern)
            models, density = _variants(w, k)
            for threads in threads_list:
                sessions = _sessions(models, threads, lib)
                ref = sessions["ort_int32"].run(None, {"a": a})[0]
                np.testing.assert_array_equal(sessions["ours_int32"].run(None, {"a": a})[0], ref)
                t = _time(sessions, {"a": a}, rounds, iters, _clock(threads))
                rows.append({"shape": f"{m}x{k}@{k}x{n}", "threads": threads, "sparsity": sparsity,
                             "pattern": pattern, "block_density": round(density, 3),
                             **{f"gflops_{v}": flops / s / 1e9 for v, s in t.items()},
                             "ratio_int32": t["ort_int32"] / t["ours_int32"],
                             "ratio_float": t["ort_float"] / t["ours_float"]})  # fmt: skip
    print(f"\nISA {status.isa}, onnxruntime {status.onnxruntime}, rounds {rounds} x {iters}")
    print(f"{'shape':>18} {'thr':>3} {'sparsity':>8} {'pattern':>12} {'blocks':>6} "
          f"{'ORT i32':>8} {'ours i32':>8} {'ratio':>6} {'ORT f32':>8} {'ours f32':>8} {'ratio':>6}")  # fmt: skip
    for r in rows:
        print(f"{r['shape']:>18} {r['threads']:>3} {r['sparsity']:>8.2f} {r['pattern']:>12} "
              f"{r['block_density']:>6.2f} {r['gflops_ort_int32']:>8.1f} {r['gflops_ours_int32']:>8.1f} "
              f"{r['ratio_int32']:>5.2f}x {r['gflops_ort_float']:>8.1f} {r['gflops_ours_float']:>8.1f} "
              f"{r['ratio_float']:>5.2f}x")  # fmt: skip
    if os.environ.get("BENCH_OUT"):
        with open(os.environ["BENCH_OUT"], "w") as fh:
            json.dump({"isa": status.isa, "onnxruntime": status.onnxruntime, "rows": rows}, fh,
                      indent=1)  # fmt: skip
