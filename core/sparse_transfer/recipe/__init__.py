"""SparseML-compatible recipes: load, evaluate safely, validate, save.

    >>> from sparse_transfer.recipe import builtin_recipe_path, load_recipe
    >>> recipe = load_recipe(builtin_recipe_path("sst2_pruned90_quant"), {"num_epochs": 1})

Sources: a .yaml/.yml path, a Markdown path (YAML front matter between ``---`` lines)
or a YAML string. Zoo stubs and s3:// URIs are resolved by `sparse_transfer.zoo`
before they get here. See `_parse` for the layout rules, recipe args and alias
semantics, and `_expr` for what ``eval(...)`` may contain.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sparse_transfer.recipe._expr import ExpressionError, evaluate
from sparse_transfer.recipe._model import Recipe
from sparse_transfer.recipe._parse import RecipeProblems, parse, parse_recipe_args, read_source
from sparse_transfer.recipe._windows import inert_modifiers, training_epochs

__all__ = [
    "BUILTIN_DIR",
    "ExpressionError",
    "Recipe",
    "RecipeProblems",
    "builtin_recipe_path",
    "builtin_recipes",
    "evaluate",
    "inert_modifiers",
    "load_recipe",
    "parse_recipe_args",
    "training_epochs",
]

#: Folder of the recipes shipped with the package.
BUILTIN_DIR = Path(__file__).parent / "builtin"


def load_recipe(
    source: str | Path | Recipe | None,
    recipe_args: dict[str, Any] | str | None = None,
) -> Recipe | None:
    """Loads, evaluates and validates a recipe.

    Args:
        source: a local .yaml/.yml/.md path, a YAML string, an already loaded `Recipe`
            (re-parsed from its text when `recipe_args` are given), or None.
        recipe_args: variable overrides (a dict or a JSON object string) applied before
            any ``eval(...)``; e.g. ``{"num_epochs": 1}``.

    Returns:
        The `Recipe`, or None when `source` is None.

    Raises:
        RecipeError: naming file, line, modifier and field for every problem found.
    """
    if source is None:
        return None
    if isinstance(source, Recipe):
        if not recipe_args:
            return source
        if source.text is None:
            raise ValueError("this Recipe was built in code; it has no text to re-parse")
        recipe = parse(source.text, source.source_path or "<string>", recipe_args)
        recipe.source_path = source.source_path
        return recipe
    text, name, path = read_source(source)
    recipe = parse(text, name, recipe_args)
    recipe.source_path = path
    return recipe


def builtin_recipes() -> list[str]:
    """Names of the recipes shipped with the package (without the .yaml suffix)."""
    return sorted(p.stem for p in BUILTIN_DIR.glob("*.yaml"))


def builtin_recipe_path(name: str) -> Path:
    """Path of a shipped recipe, e.g. ``builtin_recipe_path("dense_teacher")``."""
    from sparse_transfer.errors import RecipeError

    stem = name[: -len(".yaml")] if name.endswith(".yaml") else name
    path = BUILTIN_DIR / f"{stem}.yaml"
    if "/" in stem or "\\" in stem or not path.is_file():
        raise RecipeError(f"no built-in recipe '{name}'; available: {', '.join(builtin_recipes())}")
    return path
