"""Fitting a sequence-classification recipe to another task's model before training.

The reference recipes name SST-2's outputs and head; `load_task_recipe` points
distillation and quantization at this task's outputs and head instead, and logs
every change (the saved recipe.yaml shows the result).
"""

from __future__ import annotations

import logging

from sparse_transfer.errors import DataError

logger = logging.getLogger(__name__)

HEAD_MODULES = ("classifier", "qa_outputs", "cls", "lm_head")


def resolve_recipe(ref: str | None, zoo: str | None = None) -> str | None:
    """Where a recipe reference points: a built-in name (``sst2_pruned90_quant``) to its
    shipped file, an existing path as is, stubs and URIs through the zoo. The one resolver
    of every command and step that takes a recipe."""
    if ref is None:
        return None
    from pathlib import Path

    from sparse_transfer.recipe import builtin_recipe_path, builtin_recipes
    from sparse_transfer.zoo import resolve

    if Path(ref).exists() or ref.startswith(("zoo:", "s3://", "file://")):
        return resolve(ref, "recipe", root=zoo)
    if ref.removesuffix(".yaml") in builtin_recipes():
        return str(builtin_recipe_path(ref))
    return ref  # a missing file (load_recipe names it) or YAML text


def inert_modifier_warnings(
    recipe_ref: str, recipe_args: str | dict | None = None, zoo: str | None = None
) -> list[str]:
    """`sparse_transfer.recipe.inert_modifiers` of a recipe reference with its args."""
    from sparse_transfer.recipe import inert_modifiers, load_recipe

    return inert_modifiers(load_recipe(resolve_recipe(recipe_ref, zoo), recipe_args or None))


def load_task_recipe(recipe_ref: str | None, recipe_args: str | None, spec, model, teacher):
    """Loads the recipe and fits task-independent parts of it to this task's model.

    The reference recipes are written for sequence classification; reused for
    another head, their ``distill_output_keys`` become the task's outputs and
    QuantizationModifier ``submodules`` that this model lacks (a pooler, another
    task's head) are dropped, this head added. Every change is logged and ends
    up in the saved recipe.yaml.
    """
    if recipe_ref is None:
        if recipe_args:
            raise DataError("--recipe_args given without --recipe")
        return None
    from sparse_transfer.recipe import inert_modifiers, load_recipe

    recipe = load_recipe(recipe_ref, recipe_args)
    for line in inert_modifiers(recipe):
        logger.warning("recipe: %s", line)
    distill = recipe.find("DistillationModifier") + recipe.find("PerLayerDistillationModifier")
    if distill and teacher is None:
        logger.warning(
            "the recipe has %s but no teacher is given "
            "(--distill_teacher unset or 'disable'): distillation is off for this run",
            " and ".join(sorted({m.recipe_name for m in distill})),
        )
        recipe.modifiers = [m for m in recipe.modifiers if m not in distill]
    elif teacher is not None and not distill:
        logger.warning("--distill_teacher is set but the recipe has no DistillationModifier")
    for mod in recipe.find("DistillationModifier"):
        keys = list(mod.distill_output_keys or [])
        if keys and not set(keys) <= set(spec.output_names):
            logger.warning(
                "DistillationModifier distill_output_keys %s are not outputs of a %s model; "
                "distilling %s instead",
                keys,
                spec.name,
                list(spec.distill_output_keys),
            )
            mod.distill_output_keys = list(spec.distill_output_keys)
    names = dict(model.named_modules())
    own_head = next((h for h in HEAD_MODULES if h in names), None)
    for mod in recipe.find("QuantizationModifier"):
        if not mod.submodules:
            continue
        kept, dropped = [], []
        for sub in mod.submodules:
            (kept if sub in names else dropped).append(sub)
        if not dropped:
            continue
        if (
            any(d.split(".")[0] in HEAD_MODULES for d in dropped)
            and own_head
            and own_head not in kept
        ):
            kept.append(own_head)
        logger.warning(
            "QuantizationModifier submodules %s do not exist in this %s model; quantizing %s",
            dropped,
            spec.name,
            kept,
        )
        mod.submodules = kept
    return recipe
