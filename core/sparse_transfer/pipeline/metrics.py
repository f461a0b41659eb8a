"""Metric naming shared by the evaluate step, the gate and the report.

Evaluation results come as HF-style dicts (``eval_accuracy``, ``eval_f1``, ...);
these helpers find a metric whatever its prefix, pick each task's headline
metric, and turn predictions into the confusion matrix the KFP UI draws.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sparse_transfer.errors import PipelineError

# Headline metric per task, first match wins (multi-label text classification has no accuracy).
PRIMARY_METRICS: dict[str, tuple[str, ...]] = {
    "text-classification": ("accuracy", "avgF1", "pearson", "f1"),
    "token-classification": ("f1", "overall_f1", "accuracy", "overall_accuracy"),
    "question-answering": ("f1", "exact_match"),
    "masked-language-modeling": ("accuracy", "perplexity"),
}
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


def primary_metric(task: str, metrics: Mapping[str, Any], name: str = "") -> tuple[str, float]:
    """The metric the gate and the report lead with.

    Args:
        task: the task name (picks the default metric).
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
        candidates = PRIMARY_METRICS.get(task, ("accuracy", "f1"))
    for candidate in candidates:
        value = find_metric(metrics, candidate)
        if value is not None:
            return candidate, value
    available = ", ".join(sorted(numeric_metrics(metrics))) or "none"
    raise PipelineError(
        f"metric {' / '.join(candidates)} not found in the evaluation results of task {task} "
        f"(available: {available}); set gate_metric to one of them"
    )


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
