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
from sparse_transfer.errors import RecipeError


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


#: Most nodes a recipe may expand to once aliases are followed ("billion laughs" guard).
MAX_EXPANDED_NODES = 100_000


def compose(text: str, source: str) -> yaml.Node | None:
    """Parses YAML text into its node tree (one document); returns None when empty."""
    loader = RecipeLoader(text)
    try:
        node = loader.get_single_node()
    except yaml.YAMLError as exc:
        raise RecipeError(f"{source}: invalid YAML: {_yaml_message(exc, source)}") from None
    finally:
        loader.dispose()
    if node is not None and _expanded_size(node, {}, source) > MAX_EXPANDED_NODES:
        raise RecipeError(
            f"{source}: recipe expands to more than {MAX_EXPANDED_NODES} values through "
            "aliases; refusing to load it"
        )
    return node


def _expanded_size(node: yaml.Node, memo: dict[int, int | None], source: str) -> int:
    """Number of nodes after alias expansion (memoised, so shared subtrees cost once)."""
    if id(node) in memo:
        size = memo[id(node)]
        if size is None:
            raise RecipeError(f"{source}:{line_of(node)}: a value contains an alias of itself")
        return size
    memo[id(node)] = None  # in progress: meeting it again means a recursive alias
    size = 1
    if isinstance(node, yaml.SequenceNode):
        size += sum(_expanded_size(n, memo, source) for n in node.value)
    elif isinstance(node, yaml.MappingNode):
        size += sum(
            _expanded_size(k, memo, source) + _expanded_size(v, memo, source) for k, v in node.value
        )
    memo[id(node)] = size = min(size, MAX_EXPANDED_NODES + 1)
    return size


def construct(node: yaml.Node, source: str) -> Any:
    """Builds plain Python data (safe types only) from a node, merge keys included."""
    loader = RecipeLoader("")
    try:
        return loader.construct_object(node, deep=True)
    except yaml.YAMLError as exc:
        raise RecipeError(_yaml_message(exc, source)) from None
    finally:
        loader.dispose()


def flatten(node: yaml.MappingNode, source: str) -> None:
    """Applies ``<<:`` merge keys in place so a modifier may inherit shared fields."""
    loader = RecipeLoader("")
    try:
        loader.flatten_mapping(node)
    except yaml.YAMLError as exc:
        raise RecipeError(_yaml_message(exc, source)) from None
    finally:
        loader.dispose()


def line_of(node: yaml.Node) -> int:
    """1-based line of a node."""
    return node.start_mark.line + 1


def _yaml_message(exc: yaml.YAMLError, source: str) -> str:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    if mark is not None:
        return f"{source}:{mark.line + 1}:{mark.column + 1}: {problem}"
    return f"{source}: {problem}"
