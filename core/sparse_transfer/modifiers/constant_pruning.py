"""ConstantPruningModifier: keep the model's existing zeros exactly zero."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sparse_transfer.modifiers.base import Event, Modifier, register_modifier


@register_modifier("ConstantPruningModifier")
@dataclass(kw_only=True)
class ConstantPruningModifier(Modifier):
    """Masks = the selected params' zeros when it starts; held through training.

    Gradients of masked weights are zeroed before every optimizer step (so AdamW
    moments stay zero) and the masks are re-applied right after it (so nothing,
    weight decay or QAT included, can move a pruned weight off zero), up to and
    including the step that reaches `end_epoch`.
    """

    params: str | list[str]
    log_types: str | list[str] = "__ALL__"
    masks: Any = field(default=None, init=False, repr=False, compare=False)

    def on_initialize(self, state: Any) -> None:
        from sparse_transfer.modifiers._masks import select_params

        self.masks = None
        # Resolve the patterns now so a bad one fails before any training step.
        self._selected = select_params(state.model, self.params)

    def on_start(self, state: Any) -> None:
        from sparse_transfer.modifiers._masks import ParamMasks

        self.masks = ParamMasks.from_zeros(self._selected)
        self._selected = {}

    def act(self, event: Event, state: Any) -> None:
        if self.masks is None:
            return
        if event is Event.OPTIMIZER_PRE_STEP and self.running:
            self.masks.mask_grads_()
        elif event is Event.OPTIMIZER_POST_STEP and (
            self.end_epoch == -1 or state.epoch <= self.end_epoch
        ):
            self.masks.apply_()
