"""Export parity: the graph against the model it came from, independent of the exporting CPU.

FP32 graphs must match the torch model to ``FP32_TOLERANCE`` on every output.

int8 graphs are judged in two comparisons, neither of which depends on the
CPU the export runs on:

1. *The graph computes what QAT trained*: the graph evaluated by an exact
   integer reference (`ReferenceGraph`: ONNX's numpy reference evaluator, with
   ``MatMulInteger`` summed exactly, as every correct kernel must) against the
   fake-quantized torch model. Every output must lie within `logit_tolerances`:
   the change ``1 + L`` quantization steps on *every* input of the output's last
   quantized Linear could make, ``(1 + L) * s_x * max_j sum_i |w_ji|`` (from the
   graph's own scales; ``L`` = attention layers, one Softmax each). Float rounding
   (softmax, GELU, LayerNorm differ in the last bits between numpy, torch and ONNX
   Runtime) flips an intermediate value by one step here and there, and each layer
   passes such flips on through the residual stream: one step at the head alone was
   too tight for all-MiniLM-L6-v2 (graph vs torch 0.070 against 0.032; 7 steps:
   0.22). A wrong integer (a saturated sum, a wrong scale) moves outputs far further.
   The report also gives ``one_step``, ``s_x * max_ji |w_ji|``: a difference
   above it means some integer feeding the head differs (measured on the tiny
   models: ~1e-8 when the integers agree, far below it).
2. *This machine runs the graph right*: ONNX Runtime here against the same
   reference, same tolerance. A full-range deployment on a CPU whose kernel
   saturates fails this one; the export records it (see
   `sparse_transfer.runtime.cpu_features`) instead of passing a graph that is
   only wrong on this machine, or failing one that is only wrong here.

Prediction agreement over the positions that count (examples for sequence
heads, unpadded tokens for token heads, answers for QA) is reported; on
labelled data (``--verify_dataset``) the task metric of torch and ONNX must be
within ``METRIC_TOLERANCE`` points: agreement on a handful of random rows is no
verdict (one near-tie flips it).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from sparse_transfer.errors import ExportError

FP32_TOLERANCE = 1e-4
METRIC_TOLERANCE = 0.5  # points (metrics in percent)
# Fallback when an output's last Linear is not quantized: this fraction of its range.
UNQUANTIZED_HEAD_RELATIVE = 1e-2


class ReferenceGraph:
    """Exact evaluation of an (int8) ONNX graph in numpy, the same on every CPU.

    ``onnx.reference.ReferenceEvaluator`` implements every op from the spec in
    numpy; ``MatMulInteger`` is replaced by a float64 product of the integers
    (exact: partial sums stay far below 2**53; numpy's int32 matmul is exact
    too but 50x slower) and ``Erf`` by scipy's vectorised one when available.
    """

    def __init__(self, model):
        from onnx.reference import ReferenceEvaluator

        self.evaluator = ReferenceEvaluator(model, new_ops=_exact_ops())
        self.input_names = list(self.evaluator.input_names)
        self.output_names = list(self.evaluator.output_names)

    def __call__(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        feeds = {n: feeds[n] for n in self.input_names}
        outputs = self.evaluator.run(None, feeds)
        return dict(zip(self.output_names, outputs, strict=True))


def _exact_ops() -> list[type]:
    from onnx.reference.op_run import OpRun

    class MatMulInteger(OpRun):
        def _run(self, A, B, a_zero_point=None, b_zero_point=None):  # noqa: N803 (ONNX names)
            a = A.astype(np.float64)
            if a_zero_point is not None:
                zp = np.asarray(a_zero_point, dtype=np.float64)
                a = a - (zp.reshape(-1, 1) if zp.ndim == 1 and zp.size > 1 else zp)
            b = B.astype(np.float64)
            if b_zero_point is not None:
                b = b - np.asarray(b_zero_point, dtype=np.float64)
            return (np.matmul(a, b).astype(np.int32),)

    def per_axis(v: np.ndarray, x: np.ndarray, axis: int) -> np.ndarray:
        if v.ndim == 0 or v.size == 1:
            return v.reshape(())
        shape = [1] * x.ndim
        shape[axis % x.ndim] = -1
        return v.reshape(shape)

    # The evaluator implements these from opset 19 on; opset 13's are the same for
    # (u)int8: round half to even, saturate (QuantizeLinear), (x - zp) * scale.
    class QuantizeLinear(OpRun):
        def _run(self, x, y_scale, y_zero_point=None, axis=None, **_):
            axis = 1 if axis is None else axis
            dtype = np.uint8 if y_zero_point is None else np.asarray(y_zero_point).dtype
            info = np.iinfo(dtype)
            zp = 0 if y_zero_point is None else per_axis(np.asarray(y_zero_point), x, axis)
            q = np.rint(x / per_axis(np.asarray(y_scale), x, axis)).astype(np.int64) + zp
            return (np.clip(q, info.min, info.max).astype(dtype),)

    class DequantizeLinear(OpRun):
        def _run(self, x, x_scale, x_zero_point=None, axis=None, **_):
            axis = 1 if axis is None else axis
            scale = per_axis(np.asarray(x_scale), x, axis)
            q = x.astype(np.int64)
            if x_zero_point is not None:
                q = q - per_axis(np.asarray(x_zero_point).astype(np.int64), x, axis)
            return ((q.astype(np.float32) * scale).astype(np.float32),)

    from sparse_transfer.kernels.spec import reference_ops

    ops: list[type] = [MatMulInteger, QuantizeLinear, DequantizeLinear, *reference_ops()]
    try:
        from scipy.special import erf
    except ImportError:  # onnx's own Erf (np.vectorize over math.erf) is right, just slow
        return ops

    class Erf(OpRun):
        def _run(self, x):
            return (erf(x).astype(x.dtype),)

    ops.append(Erf)
    return ops


def logit_tolerances(model_proto, output_names: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Per output: the tolerance its last quantized Linear's scales allow (see module doc).

    Walks back from each graph output to the first ``MatMulInteger`` whose
    weight is an int8 initializer, reads its input scale (the QuantizeLinear
    feeding it) and per-channel weight scales, and returns ``{"tolerance": t,
    "head": node name, "input_scale": s_x}``; ``{"tolerance": None}`` when a
    float matmul comes first (then `compare` falls back to a relative bound).
    """
    from onnx import numpy_helper

    graph = model_proto.graph
    inits = {i.name: i for i in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, list] = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)

    def const(name: str) -> np.ndarray | None:
        return numpy_helper.to_array(inits[name]) if name in inits else None

    def head_of(tensor: str):
        seen, frontier = set(), [tensor]
        while frontier:
            name = frontier.pop(0)
            node = producer.get(name)
            if node is None or node.name in seen:
                continue
            seen.add(node.name)
            if node.op_type == "MatMulInteger" and node.input[1] in inits:
                return node
            if node.op_type in ("MatMul", "Gemm") and any(i in inits for i in node.input[1:2]):
                return None  # a float Linear comes first
            frontier.extend(i for i in node.input if i and i not in inits)
        return None

    depth = sum(n.op_type == "Softmax" for n in graph.node)  # attention layers
    out: dict[str, dict[str, Any]] = {}
    for name in output_names:
        node = head_of(name)
        if node is None:
            out[name] = {"tolerance": None, "one_step": None, "head": None}
            continue
        q_node = producer[node.input[0]]
        s_x = float(const(q_node.input[1]))
        w = const(node.input[1]).astype(np.float64)  # [in, out]
        (cast,) = consumers[node.output[0]]
        (mul,) = consumers[cast.output[0]]
        rescale = producer[next(i for i in mul.input if i != cast.output[0])]
        w_scale = next(const(i) for i in rescale.input if const(i) is not None and i in inits)
        # |one step on every input| through the dequantized weights, per output channel
        w_dq = np.abs(w) * np.asarray(w_scale, dtype=np.float64)
        out[name] = {
            "tolerance": float((1 + depth) * s_x * w_dq.sum(axis=0).max()),
            "steps": 1 + depth,
            # one head input one step off moves a logit by up to this: a larger difference
            # means some integer differs; float rounding alone stays far below it
            "one_step": float(s_x * w_dq.max()),
            "head": node.name,
            "input_scale": s_x,
        }
    return out


def predictions(name: str, output: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
    """The argmax decisions an output stands for, flattened over the positions that count."""
    if output.ndim == 2 and name in ("start_logits", "end_logits"):
        masked = np.where(attention_mask.astype(bool), output, -np.inf)
        return masked.argmax(-1)
    if output.ndim == 3:  # token classification / MLM: unpadded tokens only
        return output.argmax(-1)[attention_mask.astype(bool)]
    return output.argmax(-1)


def compare(
    torch_out: dict[str, np.ndarray],
    onnx_out: dict[str, np.ndarray],
    attention_mask: np.ndarray,
    output_names: Sequence[str],
) -> dict[str, Any]:
    """Max abs difference and prediction agreement per output (`a` is the reference)."""
    result: dict[str, Any] = {"max_abs_diff": {}, "agreement": {}}
    for name in output_names:
        a, b = np.asarray(torch_out[name]), np.asarray(onnx_out[name])
        if a.shape != b.shape:
            raise ValueError(f"output {name}: torch shape {a.shape} vs ONNX {b.shape}")
        if not (np.isfinite(a).all() and np.isfinite(b).all()):
            raise ExportError(f"parity: output {name} has non-finite values (NaN or inf)")
        result["max_abs_diff"][name] = float(np.abs(a - b).max()) if a.size else 0.0
        pa, pb = predictions(name, a, attention_mask), predictions(name, b, attention_mask)
        result["agreement"][name] = float((pa == pb).mean()) if pa.size else 1.0
    result["max_abs_diff_all"] = max(result["max_abs_diff"].values())
    result["agreement_min"] = min(result["agreement"].values())
    return result


def merge(results: list[dict[str, Any]], weights: list[int]) -> dict[str, Any]:
    """Combines `compare` results of several batches (max of diffs, weighted agreement)."""
    names = list(results[0]["max_abs_diff"])
    total = float(sum(weights))
    merged = {
        "max_abs_diff": {n: max(r["max_abs_diff"][n] for r in results) for n in names},
        "agreement": {
            n: sum(r["agreement"][n] * w for r, w in zip(results, weights, strict=True)) / total
            for n in names
        },
    }
    merged["max_abs_diff_all"] = max(merged["max_abs_diff"].values())
    merged["agreement_min"] = min(merged["agreement"].values())
    return merged


def verdict(result: dict[str, Any], quantized: bool) -> tuple[bool, str]:
    """(passed, reason) for an FP32 graph, or for an int8 graph's `int8_result`."""
    if not quantized:
        ok = result["max_abs_diff_all"] <= FP32_TOLERANCE
        return ok, (
            f"max abs diff {result['max_abs_diff_all']:.3g} "
            f"{'<=' if ok else '>'} {FP32_TOLERANCE:g} (FP32 vs torch)"
        )
    graph, runtime = result["graph_vs_torch"], result["runtime_vs_graph"]
    ok = graph["within_tolerance"]
    reason = (
        f"graph (exact integer reference) vs fake-quantized torch: max abs diff "
        f"{graph['max_abs_diff_all']:.3g} {'within' if ok else 'outside'} the scale-derived "
        f"tolerance ({_tolerance_text(result['tolerance'])}), prediction agreement "
        f"{graph['agreement_min']:.4f}; ONNX Runtime here ({result['cpu']}) vs graph: "
        f"max abs diff {runtime['max_abs_diff_all']:.3g} "
        f"({'within' if runtime['within_tolerance'] else 'OUTSIDE'} tolerance)"
    )
    if not runtime["within_tolerance"]:
        if result["runtime_expected_exact"]:
            ok = False  # this CPU should compute the graph exactly, and it does not
            reason += " although this CPU should compute it exactly"
        else:
            reason += f" as expected: {result['runtime_note']}"
    metric = result.get("metric")
    if metric is not None:
        m_ok = abs(metric["torch"] - metric["onnx"]) <= METRIC_TOLERANCE
        ok = ok and m_ok
        reason += (
            f"; {metric['name']} on {metric['examples']} labelled examples: torch "
            f"{metric['torch']:.2f} vs graph {metric['onnx']:.2f} "
            f"({'within' if m_ok else 'outside'} {METRIC_TOLERANCE} points), ONNX Runtime "
            f"here {metric['onnx_runtime_here']:.2f}"
        )
    return ok, reason


def _tolerance_text(tolerance: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.3g}" for k, v in tolerance.items())


def judge(
    result: dict[str, Any], tolerance: dict[str, float], one_step: dict[str, float | None]
) -> dict[str, Any]:
    """Adds ``within_tolerance`` (the verdict) and ``below_one_step`` (informational: no
    integer feeding the head differs, as far as the logits can tell) to `result`."""
    diffs = result["max_abs_diff"]
    result["within_tolerance"] = all(diffs[n] <= tolerance[n] for n in diffs)
    result["below_one_step"] = all(
        one_step.get(n) is not None and diffs[n] < one_step[n] for n in diffs
    )
    return result


def resolve_tolerances(
    heads: dict[str, dict[str, Any]], reference_outputs: list[dict[str, np.ndarray]]
) -> dict[str, float]:
    """`logit_tolerances` with the relative fallback filled in from the reference outputs."""
    out = {}
    for name, head in heads.items():
        if head["tolerance"] is not None:
            out[name] = float(head["tolerance"])
        else:
            peak = max(float(np.abs(r[name]).max()) for r in reference_outputs)
            out[name] = UNQUANTIZED_HEAD_RELATIVE * peak
    return out


def label_metric(
    name: str,
    outputs: dict[str, np.ndarray],
    labels: np.ndarray,
    attention_mask: np.ndarray,
) -> float:
    """Accuracy in percent of the `logits` decisions against labels (-100 ignored)."""
    pred = outputs["logits"].argmax(-1)
    labels = np.asarray(labels)
    keep = labels != -100
    if pred.ndim == 2:
        keep = keep & attention_mask.astype(bool)
    return float((pred[keep] == labels[keep]).mean() * 100.0) if keep.any() else 0.0
