"""The confusion matrix the evaluate step shows in the KFP UI (single-label classification).

Built from the predictions and labels the evaluation itself returned
(`sparse_transfer.tasks.evaluation.EvaluationResult`), so the matrix and the
metrics describe the same forward pass.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sparse_transfer.pipeline.metrics import confusion_matrix

SINGLE_LABEL = "single_label_classification"


def classification_confusion(result) -> dict[str, Any] | None:
    """``{"labels": [...], "matrix": [[...]]}`` for single-label text classification, else None.

    Args:
        result: an `EvaluationResult`; its first evaluated split is used (MNLI: matched).
            Other tasks, multi-label and regression heads, and splits without labels give None.
    """
    if result.problem_type != SINGLE_LABEL:  # only single-label classification has one
        return None
    if not result.outputs:
        return None
    split = next(iter(result.outputs))
    labels = result.label_ids.get(split)
    if labels is None:
        return None
    predictions = np.argmax(result.outputs[split]["logits"], axis=-1).reshape(-1)
    names = list(result.label_names)
    matrix = confusion_matrix(np.asarray(labels).reshape(-1).tolist(), predictions.tolist(), names)
    return {"labels": names, "matrix": matrix}
