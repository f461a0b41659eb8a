"""``model.sparse.onnx`` written beside ``model.onnx`` and verified against it.

Two comparisons, with the standard int8 graph's tolerances (`parity`):

1. *The rewrite is right*: the sparse graph under the exact reference
   (`parity.ReferenceGraph` evaluates the custom ops with `kernels.spec`'s numpy
   ops, no library needed) against the standard graph's exact reference on the
   same parity rows: within tolerance and every prediction equal.
2. *The library computes it right here* (when it loads): ONNX Runtime with the
   library against the sparse graph's reference, same tolerance. The library's
   kernels accumulate in int32 on every dispatch path, so a miss fails the export.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sparse_transfer.errors import ExportError
from sparse_transfer.export import parity
from sparse_transfer.export.sparse_graph import SPARSE_MODEL_FILE, sparsify


def write_sparse_graph(graph, tmp: Path) -> dict[str, Any]:
    """Rewrites a copy of the standard int8 `graph` into ``tmp/model.sparse.onnx``."""
    import numpy as np
    import onnx

    from sparse_transfer.runtime import cpu_features

    sparse = onnx.ModelProto()
    sparse.CopyFrom(graph)
    report = sparsify(sparse)
    if report["linears_left_standard"]:
        raise ExportError(
            f"sparse graph: {len(report['linears_left_standard'])} int8 Linears did not match "
            f"the rewrite (e.g. {report['linears_left_standard'][0]})"
        )
    try:
        onnx.checker.check_model(sparse, full_check=True)
    except Exception as exc:
        raise ExportError(f"the sparse graph fails onnx.checker: {exc}") from exc
    onnx.save(sparse, str(tmp / SPARSE_MODEL_FILE))
    values = [
        onnx.numpy_helper.to_array(i)
        for i in sparse.graph.initializer
        if i.name.endswith(".values")
    ]
    w_max = max((int(np.abs(v.astype(np.int16)).max()) for v in values if v.size), default=0)
    report["representation"] = cpu_features.representation(w_max)
    report["bytes"] = (tmp / SPARSE_MODEL_FILE).stat().st_size
    return report


def verify_sparse_graph(
    tmp: Path,
    rows: list[tuple[dict, Any, dict]],
    tolerance: dict[str, float],
    one_step: dict[str, float | None],
    outputs: list[str],
) -> dict[str, Any]:
    """Parity of ``tmp/model.sparse.onnx``; `rows` are (feeds, attention mask, standard
    graph's reference outputs) per parity batch. Raises ExportError when it fails."""
    import onnx

    reference = parity.ReferenceGraph(onnx.load(str(tmp / SPARSE_MODEL_FILE)))
    session, status = _library_session(tmp)
    vs_standard, runtime, weights = [], [], []
    for feeds, mask, standard in rows:
        r = reference(feeds)
        vs_standard.append(parity.compare(standard, r, mask, outputs))
        if session is not None:
            o = dict(zip(outputs, session.run(outputs, feeds), strict=True))
            runtime.append(parity.compare(r, o, mask, outputs))
        weights.append(len(mask))
    result: dict[str, Any] = {
        "graph_reference": "onnx.reference evaluator with kernels.spec's exact numpy ops",
        "graph_vs_standard": parity.judge(parity.merge(vs_standard, weights), tolerance, one_step),
        "library": {k: getattr(status, k) for k in ("available", "library", "isa", "reason")},
    }
    if runtime:
        result["runtime_vs_graph"] = parity.judge(
            parity.merge(runtime, weights), tolerance, one_step
        )
    return _verdict(result)


def _verdict(result: dict[str, Any]) -> dict[str, Any]:
    graph = result["graph_vs_standard"]
    ok = graph["within_tolerance"] and graph["agreement_min"] == 1.0
    summary = (
        f"sparse graph (exact reference) vs standard int8 graph: max abs diff "
        f"{graph['max_abs_diff_all']:.3g}, prediction agreement {graph['agreement_min']:.4f}"
    )
    runtime = result.get("runtime_vs_graph")
    if runtime is None:
        summary += f"; ONNX Runtime + kernel library not run ({result['library']['reason']})"
    else:
        ok = ok and runtime["within_tolerance"]
        summary += (
            f"; ONNX Runtime + kernel library here ({result['library']['isa']}) vs graph: max abs "
            f"diff {runtime['max_abs_diff_all']:.3g} "
            f"({'within' if runtime['within_tolerance'] else 'OUTSIDE'} tolerance)"
        )
    result["passed"], result["summary"] = ok, summary
    if not ok:
        raise ExportError(f"sparse graph parity check failed: {summary}")
    return result


def _library_session(tmp: Path):
    """(ORT session over the sparse graph with the library, status); (None, status) without."""
    import onnxruntime as ort

    from sparse_transfer.runtime.engines import kernel_status, register_library

    status = kernel_status()
    if not status.available:
        return None, status
    options = ort.SessionOptions()
    status = register_library(options)
    if not status.available:
        return None, status
    path = str(tmp / SPARSE_MODEL_FILE)
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"]), status
