"""YAML from users (recipes, run configs), read within fixed bounds, before any value is built.

`yaml.safe_load` never runs code, but it will still follow aliases into billions of
values ("billion laughs"), recurse on deeply nested flow collections, spend quadratic
time on a long YAML 1.1 sexagesimal integer (``1:0:0:...``) and keep the last of two
equal keys without a word. `compose` parses into nodes and checks all of that first,
so every loader of user YAML gets the same guard from this one place.
"""

from __future__ import annotations

from typing import Any

import yaml

from sparse_transfer.errors import SparseTransferError

#: Most nodes a document may expand to once aliases are followed.
MAX_EXPANDED_NODES = 100_000
#: Deepest nesting of lists and mappings (a recipe needs five or so).
MAX_NESTING = 100
#: Longest number written in YAML (a 1024-bit integer has 309 digits).
MAX_NUMBER_CHARS = 400

_NUMBER_TAGS = ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float")
_MERGE_TAG = "tag:yaml.org,2002:merge"


def compose(
    text: str,
    source: str,
    *,
    loader: type[yaml.SafeLoader] = yaml.SafeLoader,
    error: type[SparseTransferError] = SparseTransferError,
) -> yaml.Node | None:
    """Parses one YAML document into its node tree and checks it (see `check`).

    Args:
        text: the YAML text.
        source: file name for messages.
        loader: a SafeLoader subclass (its resolvers decide the tags).
        error: the caller's error family, raised with a one-line message naming `source`.

    Returns:
        The root node, or None for an empty document.
    """
    parser = loader(text)
    _limit_nesting(parser, source, error)
    try:
        node = parser.get_single_node()
    except yaml.YAMLError as exc:
        raise error(f"{source}: invalid YAML: {yaml_message(exc)}") from None
    except RecursionError:  # a backstop: `_limit_nesting` stops far earlier
        raise error(f"{source}: invalid YAML: nested too deeply") from None
    finally:
        parser.dispose()
    if node is not None:
        check(node, source, error)
    return node


def _limit_nesting(parser: yaml.SafeLoader, source: str, error: type[SparseTransferError]) -> None:
    """Stops composing past `MAX_NESTING` levels (PyYAML's composer recurses per level,
    and reaching Python's recursion limit that way took seconds)."""
    compose_node = parser.compose_node
    depth = 0

    def limited(parent: yaml.Node | None, index: Any) -> yaml.Node:
        nonlocal depth
        depth += 1
        try:
            if depth > MAX_NESTING:
                mark = parser.peek_event().start_mark
                raise error(f"{source}:{mark.line + 1}: values nested more than {MAX_NESTING} deep")
            return compose_node(parent, index)
        finally:
            depth -= 1

    parser.compose_node = limited  # the composer's recursive calls go through it


def check(node: yaml.Node, source: str, error: type[SparseTransferError]) -> None:
    """Refuses alias bombs, aliases of themselves, oversized numbers and duplicate keys."""
    if _expanded_size(node, {}, source, error) > MAX_EXPANDED_NODES:
        raise error(
            f"{source}: expands to more than {MAX_EXPANDED_NODES} values through aliases; "
            "refusing to load it"
        )


def load(
    text: str,
    source: str,
    *,
    loader: type[yaml.SafeLoader] = yaml.SafeLoader,
    error: type[SparseTransferError] = SparseTransferError,
) -> Any:
    """`compose` then build plain Python data (safe types only); None for an empty document."""
    node = compose(text, source, loader=loader, error=error)
    if node is None:
        return None
    return construct(node, source, loader=loader, error=error)


def construct(
    node: yaml.Node,
    source: str,
    *,
    loader: type[yaml.SafeLoader] = yaml.SafeLoader,
    error: type[SparseTransferError] = SparseTransferError,
) -> Any:
    """Builds plain Python data from a checked node, merge keys included."""
    builder = loader("")
    try:
        return builder.construct_object(node, deep=True)
    except yaml.YAMLError as exc:
        raise error(f"{source}: {yaml_message(exc)}") from None
    except (ValueError, RecursionError) as exc:  # e.g. int() refusing > 4300 digits
        raise error(f"{source}:{line_of(node)}: cannot read value: {exc}") from None
    finally:
        builder.dispose()


def line_of(node: yaml.Node) -> int:
    """1-based line of a node."""
    return node.start_mark.line + 1


def yaml_message(exc: yaml.YAMLError) -> str:
    """``line L, column C: problem`` for a PyYAML error, on one line."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).replace("\n", " ")
    if mark is not None:
        return f"line {mark.line + 1}, column {mark.column + 1}: {problem}"
    return problem


def _expanded_size(
    node: yaml.Node, memo: dict[int, int | None], source: str, error: type[SparseTransferError]
) -> int:
    """Number of nodes after alias expansion (memoised, so shared subtrees are walked once)."""
    if id(node) in memo:
        size = memo[id(node)]
        if size is None:
            raise error(f"{source}:{line_of(node)}: a value contains an alias of itself")
        return size
    memo[id(node)] = None  # in progress: meeting it again means a recursive alias
    size = 1
    if isinstance(node, yaml.ScalarNode):
        if node.tag in _NUMBER_TAGS and len(node.value) > MAX_NUMBER_CHARS:
            raise error(
                f"{source}:{line_of(node)}: number longer than {MAX_NUMBER_CHARS} characters "
                f"({node.value[:20]}...)"
            )
    elif isinstance(node, yaml.SequenceNode):
        size += sum(_expanded_size(n, memo, source, error) for n in node.value)
    elif isinstance(node, yaml.MappingNode):
        _refuse_duplicate_keys(node, source, error)
        size += sum(
            _expanded_size(k, memo, source, error) + _expanded_size(v, memo, source, error)
            for k, v in node.value
        )
    memo[id(node)] = size = min(size, MAX_EXPANDED_NODES + 1)
    return size


def _refuse_duplicate_keys(
    node: yaml.MappingNode, source: str, error: type[SparseTransferError]
) -> None:
    """Two equal plain keys in one mapping: YAML forbids it, PyYAML keeps the last silently.

    Keys brought in by a ``<<:`` merge are not compared: overriding them is what a
    merge is for.
    """
    first: dict[tuple[str, str], int] = {}
    for key, _ in node.value:
        if not isinstance(key, yaml.ScalarNode) or key.tag == _MERGE_TAG:
            continue
        ident = (key.tag, key.value)
        if ident in first:
            raise error(
                f"{source}:{line_of(key)}: duplicate key '{key.value}' (first on line "
                f"{first[ident]}); a mapping takes each key once"
            )
        first[ident] = line_of(key)
