"""ConstantPruningModifier: keep the model's existing zeros exactly zero."""

from __future__ import annotations

from dataclasses import dataclass

from sparse_transfer.modifiers.base import Modifier, register_modifier


@register_modifier("ConstantPruningModifier")
@dataclass
class ConstantPruningModifier(Modifier):
    """Masks = the selected params' zeros at initialization; held through training."""

    params: str | list[str]
    start_epoch: float = -1.0
    end_epoch: float = -1.0
    update_frequency: float = -1.0
    log_types: str | list[str] = "__ALL__"
