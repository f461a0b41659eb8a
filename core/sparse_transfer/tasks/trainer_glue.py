"""Adapters between a task's numpy functions and the Hugging Face Trainer, and split naming."""

from __future__ import annotations

import numpy as np


def metrics_fn(spec, prepared):
    """Adapts a task's numpy metric function to the Trainer's `compute_metrics`."""

    def compute_metrics(prediction) -> dict:
        preds = prediction.predictions
        if not isinstance(preds, (tuple, list)):
            preds = (preds,)
        outputs = dict(zip(spec.output_names, (np.asarray(p) for p in preds), strict=False))
        return prepared.compute_metrics(outputs, prediction.label_ids, prepared.active_split)

    return compute_metrics


def logits_reducer(spec, prepared):
    """Per-batch reduction hook (MLM: argmax + NLL instead of full-vocab logits)."""
    from sparse_transfer.tasks.base import PreparedTask

    if type(prepared).reduce_batch is PreparedTask.reduce_batch:
        return None
    import torch

    def reduce(logits, labels):
        if isinstance(logits, (tuple, list)):
            logits = logits[0]
        out = prepared.reduce_batch(
            {"logits": logits.detach().float().cpu().numpy()}, labels.detach().cpu().numpy()
        )
        return torch.from_numpy(out["logits"]).to(logits.device)

    return reduce


def eval_splits(raw) -> list[str]:
    return [s for s in ("validation", "validation_mismatched") if s in raw]


def split_metric_suffix(split: str) -> str:
    """MNLI mismatched metrics get run_glue's ``_mm`` suffix (eval_accuracy_mm)."""
    return "_mm" if split == "validation_mismatched" else ""


def rename_split_metrics(metrics: dict, split: str) -> dict:
    suffix = split_metric_suffix(split)
    return {f"{k}{suffix}": v for k, v in metrics.items()} if suffix else dict(metrics)
