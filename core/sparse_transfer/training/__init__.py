"""Training bridge: recipe modifiers on the Hugging Face Trainer.

`SparseTrainer` and `RecipeManager` import transformers/torch, so they load
lazily; `sparsity_report` and `TrainingState` are light.
"""

from __future__ import annotations

from typing import Any

from sparse_transfer.training.sparsity import compare_sparsity, sparsity_report
from sparse_transfer.training.state import TrainingState

__all__ = ["RecipeManager", "SparseTrainer", "TrainingState", "compare_sparsity", "sparsity_report"]


def __getattr__(name: str) -> Any:
    if name == "SparseTrainer":
        from sparse_transfer.training.trainer import SparseTrainer

        return SparseTrainer
    if name == "RecipeManager":
        from sparse_transfer.training.manager import RecipeManager

        return RecipeManager
    raise AttributeError(name)
