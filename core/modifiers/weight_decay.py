"""SetWeightDecayModifier: the recipe's weight decay for the decaying param groups."""

from __future__ import annotations

from dataclasses import dataclass

from sparse_transfer.modifiers.base import FieldError, Modifier, register_modifier


@register_modifier("SetWeightDecayModifier")
@dataclass
class SetWeightDecayModifier(Modifier):
    """Sets `weight_decay` from `start_epoch` on groups that decay (not bias/LayerNorm)."""

    weight_decay: float
    start_epoch: float = -1.0
    param_groups: list[int] | None = None
    end_epoch: float = -1.0
    constant_logging: bool = False

    def validate(self) -> None:
        super().validate()
        if self.weight_decay < 0:
            raise FieldError("weight_decay", f"must be >= 0, got {self.weight_decay}")
