"""Learning-rate modifiers: closed-form schedules over fractional epochs.

The LR for optimizer step ``k`` is computed at OPTIMIZER_PRE_STEP from the
fractional epoch ``k / steps_per_epoch`` (steps completed before this one), so
step 0 trains with `init_lr` and the schedule reaches `final_lr` at `end_epoch`.
Several LearningRateFunctionModifiers may cover consecutive ranges: the one
whose range contains the epoch wins; a modifier that has ended sets its
`final_lr` once unless another one already set the LR for that step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

from sparse_transfer.modifiers.base import Event, FieldError, Modifier, register_modifier

LR_FUNCS = ("linear", "cosine", "cyclic_linear", "exponential", "step")
_LR_SET_STEP = "lr_set_step"  # key in state.extras: the global_step whose LR was set


def set_group_values(optimizer: Any, key: str, value: float, groups: list[int] | None) -> None:
    """Sets ``param_group[key] = value`` on the chosen (default: all) groups."""
    param_groups = optimizer.param_groups
    indices = range(len(param_groups)) if groups is None else groups
    for i in indices:
        if not 0 <= i < len(param_groups):
            raise FieldError(
                "param_groups", f"index {i} out of range: optimizer has {len(param_groups)} groups"
            )
        param_groups[i][key] = value


@register_modifier("LearningRateFunctionModifier")
@dataclass
class LearningRateFunctionModifier(Modifier):
    """Sets every (selected) param group's LR from `lr_func` between start and end epoch.

    lr_func, with p = (epoch - start) / (end - start) in [0, 1]:
      linear:        init + (final - init) * p
      cosine:        final + (init - final) * (1 + cos(pi * p)) / 2
      cyclic_linear: linear from init to final over each `cycle_epochs`, restarting
      exponential:   init * (final / init) ** p
      step:          linear, but held constant within each `cycle_epochs` window
    `update_frequency` > 0 holds the LR constant within windows of that many epochs.
    """

    lr_func: Literal["linear", "cosine", "cyclic_linear", "exponential", "step"]
    init_lr: float
    final_lr: float
    start_epoch: float
    end_epoch: float
    cycle_epochs: float = 1.0
    param_groups: list[int] | None = None
    update_frequency: float = -1.0
    _ended: bool = field(default=False, init=False, repr=False, compare=False)

    def validate(self) -> None:
        super().validate()
        if self.end_epoch == -1 or self.end_epoch <= max(self.start_epoch, 0.0):
            raise FieldError(
                "end_epoch", f"must be after start_epoch {self.start_epoch}, got {self.end_epoch}"
            )
        if self.init_lr < 0:
            raise FieldError("init_lr", f"must be >= 0, got {self.init_lr}")
        if self.final_lr < 0:
            raise FieldError("final_lr", f"must be >= 0, got {self.final_lr}")
        if self.lr_func == "exponential" and (self.init_lr == 0 or self.final_lr == 0):
            raise FieldError("final_lr", "lr_func exponential needs init_lr and final_lr > 0")
        if self.lr_func in ("cyclic_linear", "step") and self.cycle_epochs <= 0:
            raise FieldError("cycle_epochs", f"must be > 0, got {self.cycle_epochs}")

    def lr_at(self, epoch: float) -> float:
        """The closed-form LR at a fractional epoch (clamped to the range)."""
        start = max(self.start_epoch, 0.0)
        end = self.end_epoch
        e = min(max(epoch, start), end)
        if self.update_frequency > 0:
            e = (
                start
                + math.floor((e - start) / self.update_frequency + 1e-9) * self.update_frequency
            )
        span = end - start
        p = (e - start) / span
        init, final = self.init_lr, self.final_lr
        if self.lr_func == "linear":
            return init + (final - init) * p
        if self.lr_func == "cosine":
            return final + (init - final) * 0.5 * (1.0 + math.cos(math.pi * p))
        if self.lr_func == "cyclic_linear":
            cycle = ((e - start) % self.cycle_epochs) / self.cycle_epochs
            return init + (final - init) * cycle
        if self.lr_func == "exponential":
            return init * (final / init) ** p
        # step: linear staircase with one value per cycle_epochs window
        stepped = math.floor((e - start) / self.cycle_epochs + 1e-9) * self.cycle_epochs
        return init + (final - init) * min(stepped / span, 1.0)

    def initialize(self, state: Any) -> None:
        self._ended = False
        self._apply(state)

    def on_event(self, event: Event, state: Any) -> None:
        if event is Event.OPTIMIZER_PRE_STEP:
            self._apply(state)

    def _apply(self, state: Any) -> None:
        if state.optimizer is None:
            return
        epoch = state.epoch
        if self.active(epoch):
            set_group_values(state.optimizer, "lr", self.lr_at(epoch), self.param_groups)
            state.extras[_LR_SET_STEP] = state.global_step
        elif epoch >= self.end_epoch and not self._ended:
            self._ended = True
            if state.extras.get(_LR_SET_STEP) != state.global_step:
                set_group_values(state.optimizer, "lr", self.final_lr, self.param_groups)


@register_modifier("SetLearningRateModifier")
@dataclass
class SetLearningRateModifier(Modifier):
    """Sets a constant LR once `start_epoch` is reached (every step while active)."""

    learning_rate: float
    start_epoch: float = -1.0
    end_epoch: float = -1.0
    param_groups: list[int] | None = None
    constant_logging: bool = False

    def validate(self) -> None:
        super().validate()
        if self.learning_rate < 0:
            raise FieldError("learning_rate", f"must be >= 0, got {self.learning_rate}")

    def initialize(self, state: Any) -> None:
        self._apply(state)

    def on_event(self, event: Event, state: Any) -> None:
        if event is Event.OPTIMIZER_PRE_STEP:
            self._apply(state)

    def _apply(self, state: Any) -> None:
        if state.optimizer is not None and self.active(state.epoch):
            set_group_values(state.optimizer, "lr", self.learning_rate, self.param_groups)
            state.extras[_LR_SET_STEP] = state.global_step
