"""The YAML layer: a SafeLoader that keeps nodes (and so line numbers) and reads ``2e-5``.

We compose the document into nodes ourselves instead of calling ``yaml.load``: the
parser needs each key's line for error messages and node identity to tell that a
field is an alias (``*num_epochs``) of a variable's anchor. Values are still built by
PyYAML's safe constructor, so no Python objects can be instantiated from a recipe.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from sparse_transfer import safe_yaml
from sparse_transfer.errors import RecipeError
from sparse_transfer.safe_yaml import line_of, yaml_message

__all__ = ["RecipeLoader", "compose", "construct", "flatten", "line_of"]


class RecipeLoader(yaml.SafeLoader):
    """SafeLoader that also reads exponent floats without a dot (``2e-5``), as YAML 1.2 does.

    SparseML recipes write ``init_lr: 2e-5``; PyYAML's YAML 1.1 rules would make that
    the string ``"2e-5"``. Tags such as ``!ConstantPruningModifier`` are handled by the
    parser on the node tree; a tag anywhere else is an error (see `construct`).
    """


RecipeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def _reject_local_tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Any:
    raise yaml.constructor.ConstructorError(
        None,
        None,
        f"tag '!{suffix}' is only allowed on an item of a '*modifiers' list",
        node.start_mark,
    )


RecipeLoader.add_multi_constructor("!", _reject_local_tag)


def compose(text: str, source: str) -> yaml.Node | None:
    """Parses YAML text into its node tree (one document); returns None when empty.

    The shared guard (`sparse_transfer.safe_yaml`) refuses alias bombs, recursive
    aliases, oversized numbers and duplicate keys before anything is built.
    """
    return safe_yaml.compose(text, source, loader=RecipeLoader, error=RecipeError)


def construct(node: yaml.Node, source: str) -> Any:
    """Builds plain Python data (safe types only) from a node, merge keys included."""
    return safe_yaml.construct(node, source, loader=RecipeLoader, error=RecipeError)


def flatten(node: yaml.MappingNode, source: str) -> None:
    """Applies ``<<:`` merge keys in place so a modifier may inherit shared fields."""
    loader = RecipeLoader("")
    try:
        loader.flatten_mapping(node)
    except yaml.YAMLError as exc:
        raise RecipeError(f"{source}: {yaml_message(exc)}") from None
    finally:
        loader.dispose()
