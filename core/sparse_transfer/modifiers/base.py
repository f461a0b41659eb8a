"""The modifier contract: declared recipe fields plus one lifecycle owned here.

A modifier is a dataclass whose fields are exactly the recipe fields it
accepts (SparseML's names). The recipe parser builds it with `from_fields`,
which rejects unknown, missing and mistyped fields, and out-of-range values
declared with `bounded(...)`, so a typo in a recipe fails loudly instead of
silently doing nothing.

The base owns the schedule, as llm-compressor's ``Modifier`` does
(src/llmcompressor/modifiers/modifier.py: ``should_start``/``should_end``,
``started_``/``ended_``, ``on_start``/``on_update``/``on_end``): the fields
`start_epoch`, `end_epoch` and `update_frequency`, the `started`/`ended` state,
and the dispatch. Subclasses only act:

* `on_initialize(state)` once the model and optimizer exist,
* `on_start(state)` when `start_epoch` is reached (-1: at once),
* `on_update(state)` at the start and then every `update_frequency` epochs (every
  clock tick when it is -1), and once more at `end_epoch` if `update_at_end`,
* `on_end(state)` when `end_epoch` is reached (-1: never),
* `act(event, state)` at every event, for per-step work (masking, distillation),
* `on_finalize(state)` after training.

The clock advances at `initialize` and at the events in `clock_events`; the
epoch is ``state.epoch``. Driven by `sparse_transfer.training`, never by the
modifier itself; modifiers only ever see `TrainingState` and `Event`.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import types
import typing
from dataclasses import dataclass
from typing import Any, ClassVar

#: Epoch comparisons tolerate float rounding of ``step / steps_per_epoch``.
EPS = 1e-9


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


@dataclass(frozen=True)
class Bounds:
    """Declared numeric limits of a recipe field (checked by `Modifier.from_fields`)."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    also: tuple[float, ...] = ()  # values accepted outside the range (e.g. -1 = open)

    def check(self, value: float) -> str | None:
        """None when `value` is allowed, else the reason (``must be >= 0``)."""
        if value in self.also:
            return None
        if (
            (self.ge is None or value >= self.ge)
            and (self.gt is None or value > self.gt)
            and (self.le is None or value <= self.le)
            and (self.lt is None or value < self.lt)
        ):
            return None
        low = f"[{self.ge}" if self.ge is not None else f"({self.gt}" if self.gt is not None else ""
        high = (
            f"{self.le}]" if self.le is not None else f"{self.lt})" if self.lt is not None else ""
        )
        if low and high:
            text = f"must be in {low}, {high}"
        elif low:
            text = f"must be {'>=' if self.ge is not None else '>'} {low[1:]}"
        else:
            text = f"must be {'<=' if self.le is not None else '<'} {high[:-1]}"
        if self.also:
            text += f" (or {' / '.join(repr(a) for a in self.also)})"
        return text


def bounded(default: Any = dataclasses.MISSING, **limits: Any) -> Any:
    """A dataclass field with declared `Bounds` (``ge``, ``gt``, ``le``, ``lt``, ``also``)."""
    if "also" in limits:
        limits["also"] = tuple(limits["also"])
    return dataclasses.field(default=default, metadata={"bounds": Bounds(**limits)})


@dataclass(kw_only=True)
class Modifier:
    """Base class of every recipe modifier (subclasses are dataclasses)."""

    start_epoch: float = bounded(-1.0, ge=0, also=(-1,))
    end_epoch: float = bounded(-1.0, ge=0, also=(-1,))
    update_frequency: float = -1.0

    # Schedule state (instance attributes once `initialize` ran; not recipe fields).
    started = False
    ended = False
    _last_update = -1

    #: Name used in recipes (``!ConstantPruningModifier``); set by `register_modifier`.
    recipe_name: ClassVar[str] = ""
    #: The schedule fields a recipe may set on this modifier (SparseML's per-modifier set).
    schedule_fields: ClassVar[tuple[str, ...]] = ("start_epoch", "end_epoch", "update_frequency")
    #: Fields a recipe must give even though the dataclass has a default.
    required_fields: ClassVar[tuple[str, ...]] = ()
    #: Events at which the clock advances (start / update / end checks).
    clock_events: ClassVar[frozenset[Event]] = frozenset({Event.OPTIMIZER_PRE_STEP})
    #: Whether reaching `end_epoch` triggers one last `on_update` (pruning: the final target).
    update_at_end: ClassVar[bool] = False

    @classmethod
    def field_names(cls) -> list[str]:
        return [
            f.name
            for f in dataclasses.fields(cls)  # type: ignore[arg-type]
            if f.init and (f.name in cls.schedule_fields or f.name not in _SCHEDULE)
        ]

    @classmethod
    def from_fields(cls, fields: dict[str, Any]) -> Modifier:
        """Builds a modifier from resolved recipe fields, validating every one.

        Raises:
            FieldError: on an unknown, missing, mistyped or out-of-range field,
                or when `validate` rejects the combination.
        """
        hints = typing.get_type_hints(cls)
        accepted = set(cls.field_names())
        known = {f.name: f for f in dataclasses.fields(cls) if f.name in accepted}  # type: ignore[arg-type]
        for name in fields:
            if name not in known:
                raise FieldError(
                    name, f"unknown field; {cls.recipe_name} accepts: {', '.join(sorted(known))}"
                )
        kwargs = {}
        for name, f in known.items():
            if name not in fields:
                no_default = f.default is _MISSING and f.default_factory is _MISSING  # type: ignore[misc]
                if no_default or name in cls.required_fields:
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
        """Declared bounds, then cross-field checks; raise `FieldError` naming the field.

        Subclasses add checks the bounds cannot express (and call ``super()``).
        """
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            if not math.isfinite(value):
                raise FieldError(f.name, f"must be a finite number, got {value}")
            bounds = f.metadata.get("bounds")
            problem = bounds.check(value) if bounds is not None else None
            if problem:
                raise FieldError(f.name, f"{problem}, got {value}")
        start, end = self.start_epoch, self.end_epoch
        if end != -1 and start > end:
            raise FieldError("end_epoch", f"end_epoch {end} is before start_epoch {start}")

    def resolved_fields(self) -> dict[str, Any]:
        """The recipe-facing view: every field under its recipe name."""
        return {name: getattr(self, name) for name in self.field_names()}

    # --- schedule (owned here) --------------------------------------------------------
    def should_start(self, epoch: float) -> bool:
        return self.start_epoch == -1 or epoch >= self.start_epoch - EPS

    def should_end(self, epoch: float) -> bool:
        return self.end_epoch != -1 and epoch >= self.end_epoch - EPS

    def active(self, epoch: float) -> bool:
        """Whether `epoch` lies in ``[start_epoch, end_epoch)`` (-1 = open ended)."""
        return self.should_start(epoch) and not self.should_end(epoch)

    @property
    def running(self) -> bool:
        """Started and not yet ended (the clock's view at its last tick)."""
        return self.started and not self.ended

    def _update_point(self, epoch: float) -> int:
        """Which update point `epoch` has reached (every tick counts when frequency <= 0)."""
        if self.should_end(epoch):
            return 1 << 30 if self.update_at_end else self._last_update
        if self.update_frequency <= 0:
            return self._last_update + 1
        since = epoch - max(self.start_epoch, 0.0)
        return int(math.floor(since / self.update_frequency + EPS))

    def _advance(self, state: Any) -> None:
        epoch = float(state.epoch)
        if not self.started:
            if not self.should_start(epoch):
                return
            self.started = True
            self.on_start(state)
        if self.ended:
            return
        point = self._update_point(epoch)
        if point > self._last_update:
            self._last_update = point
            self.on_update(state)
        if self.should_end(epoch):
            self.ended = True
            self.on_end(state)

    # --- lifecycle (called by the training loop; not overridden) ------------------------
    def initialize(self, state: Any) -> None:
        """Once the model, optimizer and step counts are known; may start at once."""
        self.started = False
        self.ended = False
        self._last_update = -1
        self.on_initialize(state)
        self._advance(state)

    def on_event(self, event: Event, state: Any) -> None:
        """Every training event: advance the clock if it is a clock event, then act."""
        if event in self.clock_events:
            self._advance(state)
        self.act(event, state)

    def finalize(self, state: Any) -> None:
        """After training (or evaluation-only runs) ends."""
        self.on_finalize(state)

    # --- actions (overridden as needed) ---------------------------------------------------
    def on_initialize(self, state: Any) -> None:
        """Resolve parameters, check the model; nothing scheduled yet."""

    def on_start(self, state: Any) -> None:
        """`start_epoch` reached."""

    def on_update(self, state: Any) -> None:
        """An update point reached (see the module docstring)."""

    def on_end(self, state: Any) -> None:
        """`end_epoch` reached."""

    def act(self, event: Event, state: Any) -> None:
        """Per-event work; check `self.started` / `self.running`."""

    def on_finalize(self, state: Any) -> None:
        """Training over."""


_SCHEDULE = frozenset({"start_epoch", "end_epoch", "update_frequency"})


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
