"""The base class owns the schedule: start / update / end dispatch and declared field bounds."""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

import pytest

from sparse_transfer.modifiers import Event, FieldError, Modifier, modifier_class
from sparse_transfer.modifiers.base import bounded
from tests.unit._train_utils import mod


@dataclass(kw_only=True)
class _Probe(Modifier):
    """Records which hook ran at which epoch."""

    level: float = bounded(0.5, ge=0, lt=1)
    update_at_end = True

    def on_initialize(self, state):
        self.calls = [("initialize", state.epoch)]

    def on_start(self, state):
        self.calls.append(("start", state.epoch))

    def on_update(self, state):
        self.calls.append(("update", state.epoch))

    def on_end(self, state):
        self.calls.append(("end", state.epoch))

    def act(self, event, state):
        if event is Event.BATCH_END and self.running:
            self.calls.append(("act", state.epoch))


def _drive(probe: _Probe, steps: int, spe: int = 4) -> list[tuple[str, float]]:
    state = SimpleNamespace(epoch=0.0)
    probe.initialize(state)
    for step in range(steps):
        state.epoch = step / spe
        probe.on_event(Event.OPTIMIZER_PRE_STEP, state)  # the default clock event
        probe.on_event(Event.BATCH_END, state)
    return probe.calls


def test_start_update_end_dispatch_follows_the_epochs():
    calls = _drive(_Probe(start_epoch=0.5, end_epoch=1.5, update_frequency=0.5), steps=8)
    assert calls == [
        ("initialize", 0.0),
        ("start", 0.5),
        ("update", 0.5),
        ("act", 0.5),
        ("act", 0.75),
        ("update", 1.0),
        ("act", 1.0),
        ("act", 1.25),
        ("update", 1.5),  # update_at_end: one last update on reaching end_epoch
        ("end", 1.5),
    ]


def test_open_schedule_starts_at_initialize_and_updates_every_tick():
    probe = _Probe()  # start -1, end -1, update_frequency -1
    calls = _drive(probe, steps=3)
    assert calls[:3] == [("initialize", 0.0), ("start", 0.0), ("update", 0.0)]
    assert [c for c in calls if c[0] == "update"] == [("update", e) for e in (0.0, 0.0, 0.25, 0.5)]
    assert probe.started and not probe.ended and probe.running


def test_declared_bounds_and_schedule_fields_are_enforced():
    with pytest.raises(FieldError, match=r"field 'level': must be in \[0, 1\), got 1.0"):
        _Probe.from_fields({"level": 1.0})
    with pytest.raises(FieldError, match=r"start_epoch.*must be >= 0 \(or -1\), got -2"):
        _Probe.from_fields({"start_epoch": -2})
    with pytest.raises(FieldError, match="end_epoch 1.0 is before start_epoch 2.0"):
        _Probe.from_fields({"start_epoch": 2.0, "end_epoch": 1.0})
    with pytest.raises(FieldError, match="hardness.*must be in \\[0, 1\\], got 1.5"):
        mod("DistillationModifier", hardness=1.5)
    with pytest.raises(FieldError, match="temperature.*must be > 0"):
        mod("DistillationModifier", temperature=0.0)
    with pytest.raises(FieldError, match="finite"):
        mod("DistillationModifier", temperature=float("nan"))
    with pytest.raises(FieldError, match="weight_decay.*must be >= 0"):
        mod("SetWeightDecayModifier", weight_decay=-0.1)
    # A modifier accepts only its own schedule fields (SparseML's per-modifier set) ...
    with pytest.raises(FieldError, match="update_frequency.*unknown field"):
        mod("QuantizationModifier", update_frequency=1.0)
    # ... and the ones its recipe must give.
    with pytest.raises(FieldError, match="update_frequency.*missing required field"):
        mod("GMPruningModifier", init_sparsity=0.1, final_sparsity=0.5, start_epoch=0.0,
            end_epoch=1.0, params="__ALL_PRUNABLE__")  # fmt: skip
    assert "update_frequency" not in modifier_class("SetLearningRateModifier").field_names()
    assert modifier_class("EpochRangeModifier").from_fields({}).start_epoch == 0.0


def test_no_subclass_schedules_itself():
    """Every built-in modifier leaves initialize / on_event to the base."""
    from sparse_transfer.modifiers import known_modifiers

    for name in known_modifiers():
        cls = modifier_class(name)
        for method in ("initialize", "on_event", "finalize", "_advance"):
            assert getattr(cls, method) is getattr(Modifier, method), (name, method)
