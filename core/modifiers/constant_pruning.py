"""ConstantPruningModifier: keep the model's existing zeros exactly zero."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sparse_transfer.modifiers.base import Event, Modifier, register_modifier


@register_modifier("ConstantPruningModifier")
@dataclass
class ConstantPruningModifier(Modifier):
    """Masks = the selected params' zeros when it starts; held through training.

    Gradients of masked weights are zeroed before every optimizer step (so AdamW
    moments stay zero) and the masks are re-applied right after it (so nothing,
    weight decay or QAT included, can move a pruned weight off zero).
    """

    params: str | list[str]
    start_epoch: float = -1.0
    end_epoch: float = -1.0
    update_frequency: float = -1.0
    log_types: str | list[str] = "__ALL__"
    masks: Any = field(default=None, init=False, repr=False, compare=False)

    def initialize(self, state: Any) -> None:
        from sparse_transfer.modifiers._masks import select_params

        self.masks = None
        # Resolve the patterns now so a bad one fails before any training step.
        self._selected = select_params(state.model, self.params)
        self._maybe_start(state)

    def _maybe_start(self, state: Any) -> None:
        if self.masks is None and (self.start_epoch == -1 or state.epoch >= self.start_epoch):
            from sparse_transfer.modifiers._masks import ParamMasks

            self.masks = ParamMasks.from_zeros(self._selected)
            self._selected = {}

    def on_event(self, event: Event, state: Any) -> None:
        if event is Event.OPTIMIZER_PRE_STEP:
            self._maybe_start(state)
            if self.masks is not None and self.active(state.epoch):
                self.masks.mask_grads_()
        elif event is Event.OPTIMIZER_POST_STEP:
            if self.masks is not None and (self.end_epoch == -1 or state.epoch <= self.end_epoch):
                self.masks.apply_()
