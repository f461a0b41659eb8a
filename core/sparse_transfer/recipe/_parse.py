"""Recipe parsing: source -> YAML nodes -> variables (with overrides) -> validated modifiers.

Layout understood (SparseML 1.x):

- ``version``: the recipe version (kept as a string).
- Modifier groups: any top-level key ending in ``modifiers`` (``modifiers`` itself
  included), each a list of ``!ModifierName`` tagged mappings (or ``{ModifierName:
  {fields}}`` single-key mappings).
- Stages: a top-level key whose mapping holds its own ``*modifiers`` groups; its other
  keys are stage variables, which override global variables of the same name for
  that stage's modifiers.
- Every other top-level key is a variable. Values written ``eval(expr)`` (in
  variables and modifier fields, also inside lists and mappings) are computed by the
  safe evaluator in `_expr` over the variables; variables may use each other in any
  order (cycles are an error).

Recipe args override variables *before* evaluation. A plain name overrides that
variable globally and in every stage defining it; ``stage.name`` overrides one stage's
variable only. Naming a variable the recipe does not define is an error; modifier
fields are never touched by overrides.

Aliases: YAML copies an alias's value at parse time, so in SparseML ``end_epoch:
*num_epochs`` would keep 13 even when ``num_epochs`` is overridden. Here a field (or
variable) whose value is an alias of a *variable's own anchor* (``num_epochs:
&num_epochs 13``) means "the value of that variable", exactly like
``eval(num_epochs)``, so overrides reach it too. Aliases of any other node (a list, a
nested value) are plain YAML copies.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from sparse_transfer.errors import RecipeError
from sparse_transfer.modifiers import FieldError, known_modifiers, modifier_class
from sparse_transfer.recipe._expr import Budget, evaluate
from sparse_transfer.recipe._model import Recipe
from sparse_transfer.recipe._yaml import compose, construct, flatten, line_of
from sparse_transfer.safe_yaml import MAX_NUMBER_CHARS
from sparse_transfer.validation import require_finite

_EVAL = re.compile(r"^\s*eval\((.*)\)\s*$", re.DOTALL)
_FRONT_MATTER_FENCE = re.compile(r"^---\s*$")
_RECIPE_SUFFIXES = (".yaml", ".yml", ".md")
MAX_RECIPE_BYTES = 2_000_000


class RecipeProblems(RecipeError):
    """Several problems found in one recipe; `problems` holds one message per problem."""

    def __init__(self, source: str, problems: list[str]):
        if len(problems) == 1:  # one line: the problem names file and line itself
            super().__init__(problems[0])
        else:
            head = f"{len(problems)} problem(s) in recipe {source}:"
            super().__init__(head + "\n" + "\n".join(f"  - {p}" for p in problems))
        self.source = source
        self.problems = problems


# --- sources -----------------------------------------------------------------------------


def read_source(source: str | Path) -> tuple[str, str, str | None]:
    """Returns ``(yaml_text, display_name, path_or_None)`` for a path or a YAML string.

    A string is a path when it has no newline and either exists or ends in .yaml/.yml/.md.
    Markdown yields its front matter with the lines before it blanked, so YAML line
    numbers are the Markdown file's line numbers.
    """
    if isinstance(source, str) and "\n" not in source:
        stripped = source.strip()
        if stripped.startswith(("zoo:", "s3://", "file://")):
            raise RecipeError(
                f"recipe '{stripped}' is a zoo stub / URI: resolve it to a local file first "
                "(sparse_transfer.zoo.resolve(ref, 'recipe'))"
            )
        if Path(stripped).exists() or stripped.lower().endswith(_RECIPE_SUFFIXES):
            source = Path(stripped)
    if isinstance(source, Path):
        if not source.is_file():
            raise RecipeError(f"recipe file not found: {source}")
        if source.stat().st_size > MAX_RECIPE_BYTES:
            raise RecipeError(f"recipe file {source} is larger than {MAX_RECIPE_BYTES} bytes")
        try:
            text = source.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise RecipeError(f"cannot read recipe {source}: {exc}") from None
        name = str(source)
        if source.suffix.lower() == ".md":
            text = front_matter(text, name, required=True)
        else:
            text = front_matter(text, name, required=False)
        return text, name, str(source)
    return front_matter(source, "<string>", required=False), "<string>", None


def front_matter(text: str, name: str, *, required: bool) -> str:
    """Extracts YAML front matter (between ``---`` lines at the top) keeping line numbers.

    Text that does not start with a ``---`` line followed later by another ``---`` line
    is returned unchanged (plain YAML), unless `required` (a Markdown file).
    """
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip()), None)
    if start is not None and _FRONT_MATTER_FENCE.match(lines[start]):
        end = next(
            (i for i in range(start + 1, len(lines)) if _FRONT_MATTER_FENCE.match(lines[i])),
            None,
        )
        if end is not None:
            return "\n" * (start + 1) + "\n".join(lines[start + 1 : end]) + "\n"
    if required:
        raise RecipeError(
            f"{name}: no YAML front matter found; a Markdown recipe starts with a '---' line, "
            "then the YAML recipe, then a closing '---' line"
        )
    return text


def parse_recipe_args(recipe_args: dict[str, Any] | str | None) -> dict[str, Any]:
    """Recipe args as a dict; a string must be a JSON object. Numbers must be finite.

    Python's `json` accepts ``NaN``/``Infinity`` (not JSON) by default; here they are
    refused, as are numbers too long to be a recipe value.
    """
    if recipe_args is None or recipe_args == "":
        return {}
    if isinstance(recipe_args, str):
        try:
            recipe_args = json.loads(
                recipe_args, parse_constant=_refuse_constant, parse_int=_bounded_int
            )
        except json.JSONDecodeError as exc:
            raise RecipeError(
                f"recipe_args is not valid JSON ({exc.msg} at column {exc.colno}): "
                f"{_clip(recipe_args)}; example: '{{\"num_epochs\": 1}}'"
            ) from None
        except RecursionError:
            raise RecipeError(_TOO_DEEP) from None
        except ValueError as exc:
            raise RecipeError(f"recipe_args: {exc}") from None
    if _nesting(recipe_args) > MAX_ARGS_NESTING:  # checks below recurse per level
        raise RecipeError(_TOO_DEEP)
    if not isinstance(recipe_args, dict):
        raise RecipeError(
            f"recipe_args must be a JSON object mapping variable names to values, got "
            f"{type(recipe_args).__name__}: {_clip(recipe_args)}"
        )
    for name, value in recipe_args.items():
        require_finite(value, f"recipe_args: '{name}'", RecipeError)
    return dict(recipe_args)


#: Deepest lists/objects accepted in recipe args (Python recursion stays far away).
MAX_ARGS_NESTING = 32


_TOO_DEEP = (
    f"recipe_args: values nested more than {MAX_ARGS_NESTING} deep; a recipe variable is a "
    "number, a string or a short list"
)


def _nesting(value: Any) -> int:
    """Depth of nested lists/dicts, walked without recursion."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        if deepest > MAX_ARGS_NESTING:
            return deepest
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend((v, depth + 1) for v in item)
    return deepest


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows; only finite numbers are accepted")


def _bounded_int(text: str) -> int:
    if len(text) > MAX_NUMBER_CHARS:
        raise ValueError(f"number longer than {MAX_NUMBER_CHARS} characters ({text[:20]}...)")
    return int(text)


def _clip(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 200 else text[:197] + "..."


# --- raw structure ---------------------------------------------------------------------------


@dataclass
class _Value:
    """A variable or field before evaluation."""

    raw: Any
    line: int
    ref: str | None = None  # the variable this value aliases (`*anchor` of a variable)


@dataclass
class _ModifierSpec:
    name: str
    line: int
    where: str  # "training_modifiers[1]" or "stage_1.pruning_modifiers[0]"
    stage: str | None
    fields: dict[str, _Value] = field(default_factory=dict)


@dataclass
class _Raw:
    version: str | None = None
    variables: dict[str, _Value] = field(default_factory=dict)
    stages: dict[str, dict[str, _Value]] = field(default_factory=dict)
    modifiers: list[_ModifierSpec] = field(default_factory=list)


def _is_group(key: Any) -> bool:
    return isinstance(key, str) and key.endswith("modifiers")


def _key(node: yaml.Node) -> Any:
    return node.value if isinstance(node, yaml.ScalarNode) else None


class _Parser:
    """Walks the composed node tree, collecting problems instead of stopping at the first."""

    def __init__(self, source: str):
        self.source = source
        self.problems: list[str] = []
        self.var_nodes: dict[int, str] = {}

    def at(self, line: int) -> str:
        return f"{self.source}:{line}"

    def problem(self, line: int, message: str) -> None:
        self.problems.append(f"{self.at(line)}: {message}")

    def construct(self, node: yaml.Node) -> Any:
        return construct(node, self.source)

    def value(self, key_node: yaml.Node, node: yaml.Node) -> _Value:
        """A variable or field value; an alias of a variable's anchor becomes a reference."""
        ref = self.var_nodes.get(id(node))
        return _Value(raw=None if ref else self.construct(node), line=line_of(key_node), ref=ref)

    def parse(self, root: yaml.Node | None) -> _Raw:
        raw = _Raw()
        if root is None:
            return raw
        if not isinstance(root, yaml.MappingNode):
            raise RecipeError(
                f"{self.at(line_of(root))}: a recipe is a YAML mapping (version, variables, "
                f"'*modifiers' lists), got {root.tag.rsplit(':', 1)[-1]}"
            )
        flatten(root, self.source)
        groups: list[tuple[str, yaml.Node]] = []
        stages: list[tuple[str, yaml.MappingNode]] = []
        seen: set[str] = set()
        for key_node, value_node in root.value:
            key = _key(key_node)
            if not isinstance(key, str):
                self.problem(line_of(key_node), "top-level keys must be plain names")
                continue
            if key in seen:
                self.problem(line_of(key_node), f"duplicate top-level key '{key}'")
                continue
            seen.add(key)
            if key == "version":
                version = self.construct(value_node)
                raw.version = None if version is None else str(version)
            elif _is_group(key):
                groups.append((key, value_node))
            elif self._is_stage(value_node):
                stages.append((key, value_node))
            else:
                raw.variables[key] = self.value(key_node, value_node)
                self.var_nodes.setdefault(id(value_node), key)
        # Stage variables first (their anchors may be aliased inside the stage).
        stage_groups: list[tuple[str, list[tuple[str, yaml.Node]]]] = []
        for stage, node in stages:
            flatten(node, self.source)
            stage_vars: dict[str, _Value] = {}
            its_groups: list[tuple[str, yaml.Node]] = []
            for key_node, value_node in node.value:
                key = _key(key_node)
                if _is_group(key):
                    its_groups.append((key, value_node))
                elif isinstance(key, str):
                    stage_vars[key] = self.value(key_node, value_node)
                    self.var_nodes.setdefault(id(value_node), key)
                else:
                    self.problem(line_of(key_node), f"stage '{stage}': keys must be plain names")
            raw.stages[stage] = stage_vars
            stage_groups.append((stage, its_groups))
        # Top-level groups and stages in file order.
        order = {id(n): i for i, (_, n) in enumerate(root.value)}
        blocks: list[tuple[int, str | None, list[tuple[str, yaml.Node]]]] = [
            (order[id(n)], None, [(g, n)]) for g, n in groups
        ]
        blocks += [
            (order[id(node)], stage, gs)
            for (stage, node), (_, gs) in zip(stages, stage_groups, strict=True)
        ]
        for _, stage, gs in sorted(blocks, key=lambda b: b[0]):
            for group, node in gs:
                self._group(raw, stage, group, node)
        return raw

    def _is_stage(self, node: yaml.Node) -> bool:
        return (
            isinstance(node, yaml.MappingNode)
            and not node.tag.startswith("!")
            and any(_is_group(_key(k)) for k, _ in node.value)
        )

    def _group(self, raw: _Raw, stage: str | None, group: str, node: yaml.Node) -> None:
        prefix = f"{stage}.{group}" if stage else group
        if isinstance(node, yaml.ScalarNode) and node.value in ("", "~", "null"):
            return  # an empty group
        if not isinstance(node, yaml.SequenceNode):
            self.problem(
                line_of(node), f"'{prefix}' must be a list of modifiers (items '- !ModifierName')"
            )
            return
        for i, item in enumerate(node.value):
            spec = self._modifier(item, f"{prefix}[{i}]", stage)
            if spec is not None:
                raw.modifiers.append(spec)

    def _modifier(self, item: yaml.Node, where: str, stage: str | None) -> _ModifierSpec | None:
        body: yaml.Node | None
        if item.tag.startswith("!") and not item.tag.startswith("!!"):
            name, body = item.tag[1:], item
        elif (
            isinstance(item, yaml.MappingNode)
            and len(item.value) == 1
            and isinstance(_key(item.value[0][0]), str)
            and _key(item.value[0][0]).endswith("Modifier")
        ):
            name, body = _key(item.value[0][0]), item.value[0][1]
        else:
            self.problem(
                line_of(item),
                f"{where}: expected a modifier such as '- !ConstantPruningModifier' with its "
                "fields indented below it",
            )
            return None
        spec = _ModifierSpec(name=name, line=line_of(item), where=where, stage=stage)
        if isinstance(body, yaml.ScalarNode) and body.value in ("", "~", "null"):
            return spec  # a modifier with all-default fields
        if not isinstance(body, yaml.MappingNode):
            self.problem(line_of(body), f"{name} ({where}): its fields must be a mapping")
            return None
        flatten(body, self.source)
        for key_node, value_node in body.value:
            key = _key(key_node)
            if not isinstance(key, str):
                self.problem(line_of(key_node), f"{name} ({where}): field names must be text")
                continue
            if key in spec.fields:
                self.problem(line_of(key_node), f"{name} ({where}) field '{key}': given twice")
                continue
            try:
                spec.fields[key] = self.value(key_node, value_node)
            except RecipeError as exc:
                self.problem(line_of(key_node), f"{name} ({where}) field '{key}': {exc}")
        return spec


# --- evaluation ----------------------------------------------------------------------------


class _Failed(RecipeError):
    """A variable whose own error is already reported (so dependents stay quiet)."""


class _Scope:
    """Lazily resolves variables: globals, or one stage's variables over the globals."""

    def __init__(self, parser: _Parser, raw: _Raw):
        self.parser = parser
        self.raw = raw
        self.done: dict[tuple[str | None, str], Any] = {}
        self.failed: set[tuple[str | None, str]] = set()
        self.active: list[tuple[str | None, str]] = []
        self.budget = Budget()  # one for the whole recipe: its expressions are bounded together

    def lookup(self, stage: str | None) -> Callable[[str], Any]:
        def get(name: str) -> Any:
            # Inside stage variable X, "X" itself means the global X (stage X overrides it).
            if (
                stage is not None
                and name in self.raw.stages[stage]
                and (stage, name) not in self.active
            ):
                return self.resolve(stage, name)
            if name in self.raw.variables:
                return self.resolve(None, name)
            raise KeyError(name)

        return get

    def resolve(self, stage: str | None, name: str) -> Any:
        key = (stage, name)
        if key in self.done:
            return self.done[key]
        if key in self.failed:
            raise _Failed(name)
        if key in self.active:
            chain = " -> ".join(n for _, n in self.active[self.active.index(key) :])
            raise RecipeError(f"variables reference each other in a cycle: {chain} -> {name}")
        value = (self.raw.stages[stage] if stage else self.raw.variables)[name]
        self.active.append(key)
        try:
            result = self.compute(value, stage)
        except _Failed:
            self.failed.add(key)
            raise
        except RecipeError as exc:
            self.failed.add(key)
            label = f"{stage}.{name}" if stage else name
            self.parser.problem(value.line, f"variable '{label}': {exc}")
            raise _Failed(name) from None
        finally:
            self.active.pop()
        self.done[key] = result
        return result

    def compute(self, value: _Value, stage: str | None) -> Any:
        if value.ref is not None:
            try:
                return self.lookup(stage)(value.ref)
            except KeyError:
                raise RecipeError(f"alias of variable '{value.ref}', not visible here") from None
        result = self._evaluate_tree(value.raw, self.lookup(stage))
        return require_finite(result, "value", RecipeError)  # `.nan`, `.inf`, 1e999

    def _evaluate_tree(self, raw: Any, get: Callable[[str], Any]) -> Any:
        if isinstance(raw, str):
            match = _EVAL.match(raw)
            return evaluate(match.group(1), get, self.budget) if match else raw
        if isinstance(raw, list):
            return [self._evaluate_tree(v, get) for v in raw]
        if isinstance(raw, dict):
            return {k: self._evaluate_tree(v, get) for k, v in raw.items()}
        return raw


def _apply_overrides(raw: _Raw, overrides: dict[str, Any], source: str) -> None:
    known = list(raw.variables)
    known += [f"{s}.{n}" for s, vs in raw.stages.items() for n in vs]
    for name, value in overrides.items():
        targets: list[dict[str, _Value]] = []
        if name in raw.variables:
            targets.append(raw.variables)
        targets += [vs for vs in raw.stages.values() if name in vs]
        stage, _, var = name.partition(".")
        if not targets and var and stage in raw.stages and var in raw.stages[stage]:
            targets, name = [raw.stages[stage]], var
        if not targets:
            hint = difflib.get_close_matches(name, known, n=1)
            raise RecipeError(
                f"recipe_args: '{name}' is not a variable of recipe {source}"
                + (f"; did you mean '{hint[0]}'?" if hint else "")
                + f" Known variables: {', '.join(known) or '(none)'}. Recipe args override "
                "recipe variables only, never modifier fields."
            )
        for target in targets:
            target[name] = _Value(raw=value, line=target[name].line)


def _build(parser: _Parser, scope: _Scope, spec: _ModifierSpec) -> Any:
    label = f"{spec.name} ({spec.where})"
    known = known_modifiers()
    try:
        cls = modifier_class(spec.name)
    except KeyError:
        hint = difflib.get_close_matches(spec.name, known, n=1)
        parser.problem(
            spec.line,
            f"unknown modifier '{spec.name}' in {spec.where}"
            + (f"; did you mean '{hint[0]}'?" if hint else "")
            + f" Known modifiers: {', '.join(known) or '(none registered)'}",
        )
        return None
    accepted = cls.field_names()
    resolved: dict[str, Any] = {}
    ok = True
    for name, value in spec.fields.items():
        if name not in accepted:
            hint = difflib.get_close_matches(name, accepted, n=1)
            parser.problem(
                value.line,
                f"{label} field '{name}': unknown field"
                + (f"; did you mean '{hint[0]}'?" if hint else "")
                + f" {spec.name} accepts: {', '.join(sorted(accepted))}",
            )
            ok = False
            continue
        try:
            resolved[name] = scope.compute(value, spec.stage)
        except _Failed:
            parser.problem(value.line, f"{label} field '{name}': uses a variable that failed")
            ok = False
        except RecipeError as exc:
            parser.problem(value.line, f"{label} field '{name}': {exc}")
            ok = False
    if not ok:
        return None
    try:
        return cls.from_fields(resolved)
    except FieldError as exc:
        line = spec.fields[exc.field].line if exc.field in spec.fields else spec.line
        parser.problem(line, f"{label} field '{exc.field}': {exc.message}")
    except (TypeError, ValueError) as exc:
        parser.problem(spec.line, f"{label}: {exc}")
    return None


def parse(text: str, source: str, recipe_args: dict[str, Any] | str | None = None) -> Recipe:
    """Parses, evaluates and validates recipe text; raises one RecipeError listing all problems."""
    overrides = parse_recipe_args(recipe_args)
    parser = _Parser(source)
    raw = parser.parse(compose(text, source))
    if parser.problems:
        raise RecipeProblems(source, parser.problems)
    _apply_overrides(raw, overrides, source)
    scope = _Scope(parser, raw)
    variables: dict[str, Any] = {}
    for name in raw.variables:
        try:
            variables[name] = scope.resolve(None, name)
        except RecipeError:
            pass  # reported (a cycle is reported where it closes)
    for stage, stage_vars in raw.stages.items():
        for name in stage_vars:
            try:
                variables[f"{stage}.{name}"] = scope.resolve(stage, name)
            except RecipeError:
                pass
    modifiers = [m for m in (_build(parser, scope, s) for s in raw.modifiers) if m is not None]
    if parser.problems:
        raise RecipeProblems(source, parser.problems)
    return Recipe(version=raw.version, variables=variables, modifiers=modifiers, text=text)
