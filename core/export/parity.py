"""ONNX Runtime vs PyTorch on the same tokenized inputs.

FP32 graphs must match the torch model to ``FP32_TOLERANCE`` on every output.
int8 graphs are compared with the *fake-quantized* torch model (what QAT
trained): predictions must agree on ``INT8_AGREEMENT`` of the positions that
count (examples for sequence heads, unpadded tokens for token heads, answers
for QA), and with labels the task metric must be within ``METRIC_TOLERANCE``
points.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

FP32_TOLERANCE = 1e-4
INT8_AGREEMENT = 0.99
METRIC_TOLERANCE = 0.5  # points (metrics in percent)


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
    """Max abs difference and prediction agreement per output."""
    result: dict[str, Any] = {"max_abs_diff": {}, "agreement": {}}
    for name in output_names:
        a, b = np.asarray(torch_out[name]), np.asarray(onnx_out[name])
        if a.shape != b.shape:
            raise ValueError(f"output {name}: torch shape {a.shape} vs ONNX {b.shape}")
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
    """(passed, reason) under the thresholds for float or int8 graphs."""
    if not quantized:
        ok = result["max_abs_diff_all"] <= FP32_TOLERANCE
        return ok, (
            f"max abs diff {result['max_abs_diff_all']:.3g} "
            f"{'<=' if ok else '>'} {FP32_TOLERANCE:g} (FP32 vs torch)"
        )
    ok = result["agreement_min"] >= INT8_AGREEMENT
    reason = (
        f"prediction agreement {result['agreement_min']:.4f} "
        f"{'>=' if ok else '<'} {INT8_AGREEMENT} (int8 vs fake-quantized torch)"
    )
    metric = result.get("metric")
    if metric is not None:
        m_ok = abs(metric["torch"] - metric["onnx"]) <= METRIC_TOLERANCE
        ok = ok and m_ok
        reason += (
            f"; {metric['name']} torch {metric['torch']:.2f} vs ONNX {metric['onnx']:.2f} "
            f"({'within' if m_ok else 'outside'} {METRIC_TOLERANCE} points)"
        )
    return ok, reason


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
