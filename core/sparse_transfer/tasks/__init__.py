"""Tasks: text classification, token classification, question answering, masked LM.

Public API: `train` (typed arguments -> `TrainResult`), `evaluate`
(`EvaluateArguments` -> `EvaluationResult`), `load_model`, `load_tokenizer`;
`get_task` returns a task's `TaskSpec` (the table in `registry.py`); each task
module holds its preprocessing and metric functions.
"""

from __future__ import annotations

from typing import Any

from sparse_transfer.tasks.registry import BUILTIN_TASK_NAMES as TASK_NAMES

__all__ = [
    "TASK_NAMES",
    "evaluate",
    "get_task",
    "load_model",
    "load_tokenizer",
    "train",
]


def __getattr__(name: str) -> Any:
    # Lazy: `import sparse_transfer.tasks` must not import torch/transformers.
    if name == "train":
        from sparse_transfer.tasks.training import train

        return train
    if name == "evaluate":
        from sparse_transfer.tasks.evaluation import evaluate

        return evaluate
    if name in {"load_model", "load_tokenizer"}:
        from sparse_transfer.tasks import models

        return getattr(models, name)
    if name == "get_task":
        from sparse_transfer.tasks.registry import get_task

        return get_task
    raise AttributeError(name)
