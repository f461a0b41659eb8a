"""Metric naming shared by the evaluate step, the gate and the report.

Evaluation results come as HF-style dicts (``eval_accuracy``, ``eval_f1``, ...);
these helpers find a metric whatever its prefix, pick each task's headline
metric, and turn predictions into the confusion matrix the KFP UI draws.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sparse_transfer.errors import PipelineError

PREFIXES = ("", "eval_", "test_", "validation_")


def numeric_metrics(results: Mapping[str, Any]) -> dict[str, float]:
    """The scalar numbers of an evaluation result, prefixes kept; nested and text values dropped."""
    return {
        str(k): float(v)
        for k, v in results.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool)
    }


def find_metric(metrics: Mapping[str, Any], name: str) -> float | None:
    """`name` looked up as given and with the usual prefixes (``eval_``...); None if absent."""
    for prefix in PREFIXES:
        value = metrics.get(prefix + name)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    return None


def primary_metric(spec, metrics: Mapping[str, Any], name: str = "") -> tuple[str, float]:
    """The metric the gate and the report lead with.

    Args:
        spec: the task's `TaskSpec` (its ``primary_metrics`` pick the default metric).
        metrics: evaluation results; a ``primary_metric`` entry naming the task's
            own headline metric (e.g. ``matthews_correlation`` for CoLA) is honoured.
        name: explicit metric name (overrides both).

    Raises:
        PipelineError: when the metric is not in the results (lists what is).
    """
    declared = metrics.get("primary_metric")
    if name:
        candidates: tuple[str, ...] = (name,)
    elif isinstance(declared, str) and declared:
        candidates = (declared,)
    else:
        candidates = tuple(spec.primary_metrics)
    for candidate in candidates:
        value = find_metric(metrics, candidate)
        if value is not None:
            return candidate, value
    available = ", ".join(sorted(numeric_metrics(metrics))) or "none"
    raise PipelineError(
        f"gate_metric {' / '.join(candidates)} not found in the evaluation results of task "
        f"{spec.name} (available: {available}); set gate_metric to one of them"
    )


def per_class_rows(metrics: Mapping[str, Any]) -> list[tuple[str, float, float, float, int]]:
    """``(label, precision, recall, f1, support)`` per class, from the ``support_<label>``
    family single-label classification reports (empty for other tasks)."""
    labels = dict.fromkeys(
        key.removeprefix("eval_").removeprefix("support_")
        for key in numeric_metrics(metrics)
        if key.removeprefix("eval_").startswith("support_")
    )
    rows = []
    for label in labels:
        values = [find_metric(metrics, f"{m}_{label}") for m in ("precision", "recall", "f1")]
        if None not in values:
            rows.append((label, *values, int(find_metric(metrics, f"support_{label}") or 0)))
    return rows


def confusion_matrix(
    labels: Sequence[int], predictions: Sequence[int], label_names: Sequence[str]
) -> list[list[int]]:
    """Counts ``matrix[true][predicted]`` over single-label predictions.

    Raises:
        PipelineError: on different lengths or a class id outside `label_names`.
    """
    if len(labels) != len(predictions):
        raise PipelineError(
            f"confusion matrix needs as many labels as predictions ({len(labels)} != {len(predictions)})"
        )
    size = len(label_names)
    matrix = [[0] * size for _ in range(size)]
    for truth, guess in zip(labels, predictions, strict=True):
        if not (0 <= int(truth) < size and 0 <= int(guess) < size):
            raise PipelineError(
                f"class id {truth if not 0 <= int(truth) < size else guess} outside the "
                f"{size} labels {list(label_names)}"
            )
        matrix[int(truth)][int(guess)] += 1
    return matrix
