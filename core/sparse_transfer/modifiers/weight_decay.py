"""SetWeightDecayModifier: the recipe's weight decay for the decaying param groups."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from sparse_transfer.modifiers.base import FieldError, Modifier, bounded, register_modifier

logger = logging.getLogger(__name__)


def decaying_groups(optimizer: Any, decay_param_ids: set[int] | None) -> list[int]:
    """Indices of the param groups that decay (HF grouping: not bias / LayerNorm).

    Uses the trainer's decay-parameter set when known (robust when the CLI's
    weight decay is 0 and both HF groups start at 0), else groups with a
    non-zero weight decay, else every group.
    """
    groups = optimizer.param_groups
    if decay_param_ids is not None:
        return [
            i
            for i, g in enumerate(groups)
            if g["params"] and all(id(p) in decay_param_ids for p in g["params"])
        ]
    nonzero = [i for i, g in enumerate(groups) if g.get("weight_decay", 0)]
    if nonzero:
        return nonzero
    logger.warning(
        "SetWeightDecayModifier: cannot tell decaying param groups apart; applying to all groups"
    )
    return list(range(len(groups)))


@register_modifier("SetWeightDecayModifier")
@dataclass(kw_only=True)
class SetWeightDecayModifier(Modifier):
    """Sets `weight_decay` from `start_epoch` on groups that decay (not bias/LayerNorm).

    `param_groups` (indices into the optimizer's groups) overrides the choice.
    `end_epoch` is accepted for SparseML compatibility; the value stays set.
    """

    weight_decay: float = bounded(ge=0)
    param_groups: list[int] | None = None
    constant_logging: bool = False
    _applied: bool = field(default=False, init=False, repr=False, compare=False)

    schedule_fields = ("start_epoch", "end_epoch")

    def on_initialize(self, state: Any) -> None:
        self._applied = False

    def on_update(self, state: Any) -> None:
        if state.optimizer is None or self._applied:
            return
        groups = self.param_groups
        if groups is None:
            groups = decaying_groups(state.optimizer, state.decay_param_ids)
        for i in groups:
            if not 0 <= i < len(state.optimizer.param_groups):
                raise FieldError("param_groups", f"index {i} out of range")
            state.optimizer.param_groups[i]["weight_decay"] = self.weight_decay
        self._applied = True
