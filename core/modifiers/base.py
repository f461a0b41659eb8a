"""The modifier contract: validated recipe fields plus one lifecycle.

A modifier is a dataclass whose fields are exactly the recipe fields it
accepts (SparseML's names). The recipe parser builds it with
`from_fields`, which rejects unknown, missing and mistyped fields so a typo in a
recipe fails loudly instead of silently doing nothing.

Lifecycle (driven by `sparse_transfer.training`, never by the modifier itself):
``initialize(state) -> on_event(event, state)* -> finalize(state)``.
Modifiers only ever see `TrainingState` and `Event`; they never reach into the
Trainer's loop.
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from typing import Any, ClassVar


class FieldError(ValueError):
    """A single bad recipe field; the parser adds file, line and modifier name."""

    def __init__(self, field: str, message: str):
        super().__init__(f"field '{field}': {message}")
        self.field = field
        self.message = message


class Event(enum.Enum):
    """Points in training at which modifiers may act."""

    BATCH_START = "batch_start"
    LOSS_CALCULATED = "loss_calculated"
    OPTIMIZER_PRE_STEP = "optimizer_pre_step"
    OPTIMIZER_POST_STEP = "optimizer_post_step"
    BATCH_END = "batch_end"
    EPOCH_END = "epoch_end"


_MISSING = dataclasses.MISSING


def _type_ok(value: Any, annotation: Any) -> bool:
    """Checks a YAML value against a (simple) field annotation."""
    origin = typing.get_origin(annotation)
    if annotation is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, a) for a in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if origin is typing.Literal:
        return value in typing.get_args(annotation)
    if origin in (list, tuple):
        (item,) = typing.get_args(annotation)[:1] or (Any,)
        return isinstance(value, (list, tuple)) and all(_type_ok(v, item) for v in value)
    if origin is dict:
        return isinstance(value, dict)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is bool:
        # SparseML recipes write booleans as 0/1 (e.g. quantize_embeddings: 1).
        return isinstance(value, bool) or value in (0, 1)
    if isinstance(annotation, type):
        return isinstance(value, annotation)
    return True


def _coerce(value: Any, annotation: Any) -> Any:
    if annotation is bool and not isinstance(value, bool):
        return bool(value)
    if annotation is float and isinstance(value, int):
        return float(value)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = typing.get_args(annotation)
        if float in args and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
    return value


class Modifier:
    """Base class of every recipe modifier (subclasses are dataclasses)."""

    #: Name used in recipes (``!ConstantPruningModifier``); set by `register_modifier`.
    recipe_name: ClassVar[str] = ""

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls) if f.init]  # type: ignore[arg-type]

    @classmethod
    def from_fields(cls, fields: dict[str, Any]) -> Modifier:
        """Builds a modifier from resolved recipe fields, validating every one.

        Raises:
            FieldError: on an unknown, missing or mistyped field, or when
                `validate` rejects the combination.
        """
        hints = typing.get_type_hints(cls)
        known = {f.name: f for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
        for name in fields:
            if name not in known:
                raise FieldError(
                    name, f"unknown field; {cls.recipe_name} accepts: {', '.join(sorted(known))}"
                )
        kwargs = {}
        for name, f in known.items():
            if name not in fields:
                if f.default is _MISSING and f.default_factory is _MISSING:  # type: ignore[misc]
                    raise FieldError(name, "missing required field")
                continue
            value = fields[name]
            if not _type_ok(value, hints[name]):
                raise FieldError(name, f"expected {_type_name(hints[name])}, got {value!r}")
            kwargs[name] = _coerce(value, hints[name])
        modifier = cls(**kwargs)
        modifier.validate()
        return modifier

    def validate(self) -> None:
        """Cross-field checks; raise `FieldError` naming the offending field."""
        start = getattr(self, "start_epoch", None)
        end = getattr(self, "end_epoch", None)
        if isinstance(start, (int, float)) and start < 0 and start != -1:
            raise FieldError(
                "start_epoch", f"must be >= 0 (or -1 for 'from the start'), got {start}"
            )
        if isinstance(end, (int, float)) and end < 0 and end != -1:
            raise FieldError("end_epoch", f"must be >= 0 (or -1 for 'until the end'), got {end}")
        if (
            isinstance(start, (int, float))
            and isinstance(end, (int, float))
            and end != -1
            and start > end
        ):
            raise FieldError("end_epoch", f"end_epoch {end} is before start_epoch {start}")

    def active(self, epoch: float) -> bool:
        """Whether `epoch` lies in ``[start_epoch, end_epoch)`` (-1 = open ended)."""
        start = getattr(self, "start_epoch", -1.0)
        end = getattr(self, "end_epoch", -1.0)
        if start is not None and start != -1 and epoch < start:
            return False
        return end is None or end == -1 or epoch < end

    def resolved_fields(self) -> dict[str, Any]:
        """The recipe-facing view: every field under its recipe name."""
        return {name: getattr(self, name) for name in self.field_names()}

    # --- lifecycle (overridden as needed) ---------------------------------
    def initialize(self, state: Any) -> None:
        """Called once the model, optimizer and step counts are known."""

    def on_event(self, event: Event, state: Any) -> None:
        """Called at every training event; check `state.epoch` for scheduling."""

    def finalize(self, state: Any) -> None:
        """Called after training (or evaluation-only runs) ends."""


def _type_name(annotation: Any) -> str:
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation).replace("typing.", "")


_REGISTRY: dict[str, type[Modifier]] = {}


def register_modifier(name: str, *aliases: str):
    """Class decorator registering a modifier under its recipe tag name(s)."""

    def wrap(cls: type[Modifier]) -> type[Modifier]:
        cls.recipe_name = name
        for n in (name, *aliases):
            _REGISTRY[n] = cls
        return cls

    return wrap


def modifier_class(name: str) -> type[Modifier]:
    """Looks up a modifier class by recipe tag; KeyError lists nothing (the parser does)."""
    _ensure_loaded()
    return _REGISTRY[name]


def known_modifiers() -> list[str]:
    _ensure_loaded()
    return sorted(_REGISTRY)


def _ensure_loaded() -> None:
    # Importing the package registers every built-in modifier.
    import sparse_transfer.modifiers  # noqa: F401
