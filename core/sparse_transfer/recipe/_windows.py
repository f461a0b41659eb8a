"""Modifiers that would never act: their window starts where training has already ended.

A recipe shortened with ``--recipe_args '{"num_epochs": 2}'`` keeps, say,
``qat_start_epoch: 8.0``: training stops at epoch 2 and quantization never
starts. `inert_modifiers` finds such modifiers and names the recipe variable
to set, so `recipe check`, `train` and the pipeline's configure step can say so.
"""

from __future__ import annotations

import re

from sparse_transfer.recipe._model import Recipe

_EPS = 1e-6


def training_epochs(recipe: Recipe) -> float | None:
    """The training window's end: EpochRangeModifier's end, else the latest ``end_epoch``
    (what `sparse_transfer.training.SparseTrainer` trains for); None when unbounded."""
    ranges = [m.end_epoch for m in recipe.find("EpochRangeModifier") if m.end_epoch > 0]
    if ranges:
        return float(max(ranges))
    ends = [getattr(m, "end_epoch", -1) for m in recipe.modifiers]
    ends = [e for e in ends if isinstance(e, (int, float)) and e > 0]
    return float(max(ends)) if ends else None


def _variable(recipe: Recipe, field: str, value: float) -> str | None:
    """The recipe variable a modifier's `field` was set from (``eval(name)``), when one
    variable of that value is written there; None for a literal."""
    written = re.findall(rf"^\s*{field}:\s*eval\(\s*(\w+)\s*\)", recipe.text or "", re.M)
    matches = [
        name
        for name in dict.fromkeys(written)
        if isinstance(recipe.variables.get(name), (int, float))
        and abs(float(recipe.variables[name]) - value) < _EPS
    ]
    return matches[0] if len(matches) == 1 else None


def inert_modifiers(recipe: Recipe, epochs: float | None = None) -> list[str]:
    """One line per modifier whose window lies outside the training window.

    Args:
        recipe: the loaded recipe (recipe args applied).
        epochs: the training length (default: `training_epochs`).
    """
    end = training_epochs(recipe) if epochs is None else epochs
    if end is None:
        return []
    lines = []
    for mod in recipe.modifiers:
        start = getattr(mod, "start_epoch", -1)
        if type(mod).__name__ == "EpochRangeModifier" or start is None or start < 0:
            continue
        if start < end - _EPS:
            continue
        name = _variable(recipe, "start_epoch", float(start))
        fix = (
            f"set recipe variable {name} below {end:g} (--recipe_args '{{\"{name}\": ...}}')"
            if name
            else f"set its start_epoch below {end:g}"
        )
        lines.append(
            f"{mod.recipe_name} starts at epoch {start:g} but training ends at epoch {end:g}, "
            f"so it never runs: {fix}"
        )
    return lines
