"""Sparsity report over a model's prunable weights (written as sparsity.json)."""

from __future__ import annotations

from typing import Any


def sparsity_report(model: Any) -> dict[str, Any]:
    """Per-layer and overall sparsity of every prunable ``.weight``.

    Prunable = Linear, Embedding, ConvNd and HF Conv1D weights (SparseML's
    ``__ALL_PRUNABLE__``); tied weights are counted once.

    Returns:
        ``{"overall_sparsity", "prunable_params", "zeros", "layers": {name:
        {"numel", "zeros", "sparsity"}}}``
    """
    from sparse_transfer.modifiers._masks import prunable_params

    layers = {}
    total = zeros = 0
    for name, (param, _) in prunable_params(model).items():
        n = param.numel()
        z = int(n - param.detach().count_nonzero())
        layers[name] = {"numel": n, "zeros": z, "sparsity": z / n if n else 0.0}
        total += n
        zeros += z
    return {
        "overall_sparsity": zeros / total if total else 0.0,
        "prunable_params": total,
        "zeros": zeros,
        "layers": layers,
    }


def compare_sparsity(before: dict, after: dict) -> dict[str, Any]:
    """Overall sparsity before/after and whether every layer kept its zeros."""
    lost = 0
    for name, layer in before["layers"].items():
        if name in after["layers"]:
            lost += max(0, layer["zeros"] - after["layers"][name]["zeros"])
    lost = max(lost, before["zeros"] - after["zeros"])
    return {
        "before": before["overall_sparsity"],
        "after": after["overall_sparsity"],
        "zeros_before": before["zeros"],
        "zeros_after": after["zeros"],
        "prunable_params": after["prunable_params"],
        "zeros_lost": lost,
        "kept": lost == 0,
    }
