"""Optimal BERT Surgeon pruning (Kurtic et al. 2022, arXiv 2203.07259)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from sparse_transfer.modifiers.base import FieldError, register_modifier
from sparse_transfer.modifiers.magnitude_pruning import _GradualPruningFields


@register_modifier("OBSPruningModifier")
@dataclass
class OBSPruningModifier(_GradualPruningFields):
    """Second-order pruning with a block-diagonal empirical Fisher."""

    inter_func: Literal["linear", "cubic"] = "cubic"
    global_sparsity: bool = True
    num_grads: int = 64
    damp: float = 1e-7
    fisher_block_size: int = 50
    grad_sampler_kwargs: dict[str, Any] = field(default_factory=dict)
    num_recomputations: int = 1

    def validate(self) -> None:
        super().validate()
        if self.num_grads < 1:
            raise FieldError("num_grads", f"must be >= 1, got {self.num_grads}")
        if self.damp <= 0:
            raise FieldError("damp", f"must be > 0, got {self.damp}")
        if self.fisher_block_size < 1:
            raise FieldError("fisher_block_size", f"must be >= 1, got {self.fisher_block_size}")
        if self.num_recomputations < 1:
            raise FieldError("num_recomputations", f"must be >= 1, got {self.num_recomputations}")
