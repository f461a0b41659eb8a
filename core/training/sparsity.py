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
