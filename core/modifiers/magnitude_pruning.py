"""Gradual magnitude pruning (GMP, Zhu & Gupta 2017) as in SparseML."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from sparse_transfer.modifiers.base import FieldError, Modifier, register_modifier

MASK_TYPES = ("unstructured", "block4", "block")


@dataclass
class _GradualPruningFields(Modifier):
    """Schedule fields shared by GMP and oBS (SparseML names and defaults)."""

    init_sparsity: float | str
    final_sparsity: float | dict[str, Any]
    start_epoch: float
    end_epoch: float
    update_frequency: float
    params: str | list[str]
    leave_enabled: bool = True
    inter_func: Literal["linear", "cubic"] = "cubic"
    mask_type: str | list[int] = "unstructured"
    global_sparsity: bool = False
    log_types: str | list[str] = "__ALL__"

    def validate(self) -> None:
        super().validate()
        if isinstance(self.init_sparsity, str):
            if self.init_sparsity != "auto":
                raise FieldError(
                    "init_sparsity",
                    f"expected a number in [0, 1) or 'auto', got {self.init_sparsity!r}",
                )
        elif not 0.0 <= self.init_sparsity < 1.0:
            raise FieldError("init_sparsity", f"must be in [0, 1), got {self.init_sparsity}")
        finals = (
            self.final_sparsity.keys()
            if isinstance(self.final_sparsity, dict)
            else [self.final_sparsity]
        )
        for value in finals:
            try:
                value = float(value)
            except (TypeError, ValueError):
                raise FieldError(
                    "final_sparsity", f"expected a number in (0, 1), got {value!r}"
                ) from None
            if not 0.0 < value < 1.0:
                raise FieldError("final_sparsity", f"must be in (0, 1), got {value}")
        if self.end_epoch == -1 or self.end_epoch < self.start_epoch or self.start_epoch < 0:
            raise FieldError(
                "end_epoch",
                f"needs 0 <= start_epoch <= end_epoch, got {self.start_epoch}..{self.end_epoch}",
            )
        if self.update_frequency <= 0 and self.end_epoch > self.start_epoch:
            raise FieldError("update_frequency", f"must be > 0, got {self.update_frequency}")
        if isinstance(self.mask_type, str) and self.mask_type not in MASK_TYPES:
            raise FieldError(
                "mask_type",
                f"expected one of {', '.join(MASK_TYPES)} or [1, N], got {self.mask_type!r}",
            )
        if isinstance(self.mask_type, list) and (
            len(self.mask_type) != 2 or self.mask_type[0] != 1 or self.mask_type[1] < 1
        ):
            raise FieldError("mask_type", f"block shapes must be [1, N], got {self.mask_type!r}")


@register_modifier("GMPruningModifier")
@dataclass
class GMPruningModifier(_GradualPruningFields):
    """Gradual magnitude pruning from init to final sparsity."""


@register_modifier("MagnitudePruningModifier")
@dataclass
class MagnitudePruningModifier(GMPruningModifier):
    """SparseML's per-layer GMP alias (same fields, `global_sparsity` defaults False)."""
