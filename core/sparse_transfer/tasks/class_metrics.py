"""Per-class scores for single-label classification, so imbalanced data is not judged by accuracy.

For every class: ``precision_<label>``, ``recall_<label>``, ``f1_<label>``,
``support_<label>`` (rows of that class in the evaluated data). Over the
classes: ``macro_f1`` (unweighted mean of the per-class F1 over the classes
that occur in the labels or the predictions, as scikit-learn's
``f1_score(average="macro")``), ``balanced_accuracy`` (mean recall over the
classes present in the labels, scikit-learn's ``balanced_accuracy_score``)
and ``majority_class_share`` (the largest class's share of the rows; the
report warns when accuracy is judged on data above 80%). Binary data also
gets ``positive_f1`` (the F1 of label id 1, scikit-learn's default
``pos_label``; GLUE's ``f1``) and ``minority_f1`` (the F1 of the class with
the fewest rows; ties go to the higher id). A class that is never predicted
scores precision 0 (scikit-learn's ``zero_division=0``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

#: Metric names every single-label classification reports besides the per-class ones.
SUMMARY_METRICS = ("accuracy", "macro_f1", "balanced_accuracy", "majority_class_share")
BINARY_METRICS = ("positive_f1", "minority_f1")
PER_CLASS_PREFIXES = ("precision_", "recall_", "f1_", "support_")


def metric_label(name: str) -> str:
    """A label name as it appears in a metric key (``f1_<label>``): runs of other characters
    than letters, digits, ``.``, ``-`` and ``_`` become one ``_``."""
    return re.sub(r"[^0-9A-Za-z_.-]+", "_", str(name)).strip("_") or "_"


def per_class_table(
    labels: np.ndarray, preds: np.ndarray, n_classes: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(precision, recall, f1, support)`` per class id 0..n_classes-1, zero where undefined."""
    labels = np.asarray(labels, dtype=int).reshape(-1)
    preds = np.asarray(preds, dtype=int).reshape(-1)
    ids = np.arange(n_classes)
    true_pos = np.array([np.sum((labels == c) & (preds == c)) for c in ids], dtype=float)
    support = np.array([np.sum(labels == c) for c in ids], dtype=float)
    predicted = np.array([np.sum(preds == c) for c in ids], dtype=float)
    precision = np.divide(true_pos, predicted, out=np.zeros(n_classes), where=predicted > 0)
    recall = np.divide(true_pos, support, out=np.zeros(n_classes), where=support > 0)
    total = precision + recall
    f1 = np.divide(2 * precision * recall, total, out=np.zeros(n_classes), where=total > 0)
    return precision, recall, f1, support


def single_label_metrics(
    preds: np.ndarray, labels: np.ndarray, label_names: Sequence[str] | None = None
) -> dict[str, float]:
    """Accuracy, macro-F1, balanced accuracy and per-class scores of class-id predictions.

    Args:
        preds / labels: class ids, one per row.
        label_names: the class names by id (default: the ids); they name the per-class keys.
    """
    labels = np.asarray(labels, dtype=int).reshape(-1)
    preds = np.asarray(preds, dtype=int).reshape(-1)
    n = max(len(label_names or ()), int(labels.max(initial=-1)) + 1, int(preds.max(initial=-1)) + 1)
    names = [metric_label(x) for x in (label_names or [str(i) for i in range(n)])]
    names += [str(i) for i in range(len(names), n)]
    precision, recall, f1, support = per_class_table(labels, preds, n)
    occurring = (support > 0) | np.isin(np.arange(n), preds)
    out = {
        "accuracy": float((preds == labels).mean()) if len(labels) else 0.0,
        "macro_f1": float(f1[occurring].mean()) if occurring.any() else 0.0,
        "balanced_accuracy": float(recall[support > 0].mean()) if (support > 0).any() else 0.0,
        "majority_class_share": float(support.max() / support.sum()) if support.sum() else 0.0,
    }
    for i, name in enumerate(names):
        out[f"precision_{name}"] = float(precision[i])
        out[f"recall_{name}"] = float(recall[i])
        out[f"f1_{name}"] = float(f1[i])
        out[f"support_{name}"] = float(support[i])
    if n == 2:
        out["positive_f1"] = float(f1[1])
        minority = 0 if support[0] < support[1] else 1
        out["minority_f1"] = float(f1[minority])
    return out


def is_metric_name(name: str, binary: bool | None = None) -> bool:
    """True when `name` is one this module reports (per-class names by their prefix)."""
    if name in SUMMARY_METRICS or (binary is not False and name in BINARY_METRICS):
        return True
    return any(name.startswith(p) and len(name) > len(p) for p in PER_CLASS_PREFIXES)
