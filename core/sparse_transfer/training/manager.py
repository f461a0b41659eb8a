"""RecipeManager: owns a recipe's modifiers and drives their lifecycle."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from sparse_transfer.errors import RecipeError
from sparse_transfer.modifiers.base import Event, FieldError, Modifier

logger = logging.getLogger(__name__)


class RecipeManager:
    """Holds modifiers in recipe order; `initialize -> event* -> finalize`.

    Args:
        recipe: a `sparse_transfer.recipe.Recipe`, an iterable of modifiers, or None.
    """

    def __init__(self, recipe: Any = None):
        self.recipe = recipe
        if recipe is None:
            self.modifiers: list[Modifier] = []
        elif hasattr(recipe, "modifiers"):
            self.modifiers = list(recipe.modifiers)
        else:
            self.modifiers = list(recipe)
        self.source = getattr(recipe, "source_path", None) or "recipe"
        self.initialized = False

    def __bool__(self) -> bool:
        return bool(self.modifiers)

    def find(self, *names: str) -> list[Modifier]:
        """Modifiers whose recipe name (or a base class name) is one of `names`."""
        out = []
        for m in self.modifiers:
            mro = {c.__name__ for c in type(m).__mro__} | {m.recipe_name}
            if mro & set(names):
                out.append(m)
        return out

    @property
    def total_epochs(self) -> float | None:
        """Training length: EpochRangeModifier's end, else the latest end_epoch."""
        ranges = [m.end_epoch for m in self.find("EpochRangeModifier") if m.end_epoch > 0]
        if ranges:
            return float(max(ranges))
        ends = [getattr(m, "end_epoch", -1) for m in self.modifiers]
        ends = [e for e in ends if isinstance(e, (int, float)) and e > 0]
        return float(max(ends)) if ends else None

    @property
    def controls_lr(self) -> bool:
        return bool(self.find("LearningRateFunctionModifier", "SetLearningRateModifier"))

    def _wrap(self, modifier: Modifier, exc: Exception) -> RecipeError:
        return RecipeError(f"{self.source}: {modifier.recipe_name}: {exc}")

    def initialize(self, state: Any) -> None:
        for m in self.modifiers:
            try:
                m.initialize(state)
            except FieldError as exc:
                raise self._wrap(m, exc) from None
        self.initialized = True

    def event(self, event: Event, state: Any) -> None:
        order = self.modifiers if event is not Event.LOSS_CALCULATED else self.loss_order
        for m in order:
            m.on_event(event, state)

    @property
    def loss_order(self) -> list[Modifier]:
        """The modifiers in SparseML's order, which decides how loss changes compose.

        SparseML sorts its modifiers (sparseml/optim/manager.py, `_sort_modifiers_list`
        with `BaseModifier.comparator`: end epoch, never-ending last; then start epoch;
        then the class-name-led identifier) and each one's ``loss_update`` transforms the
        loss the previous left. So a ``DistillationModifier`` at ``hardness: 1.0`` replaces
        the task loss, and a ``PerLayerDistillationModifier`` of the same schedule adds to
        that. Other events keep recipe order.
        """
        return sorted(
            self.modifiers,
            key=lambda m: (m.end_epoch == -1, m.end_epoch, m.start_epoch, type(m).__name__),
        )

    def finalize(self, state: Any) -> None:
        for m in self.modifiers:
            m.finalize(state)

    def describe(self) -> Iterable[str]:
        for m in self.modifiers:
            yield f"{m.recipe_name}({', '.join(f'{k}={v!r}' for k, v in m.resolved_fields().items())})"
