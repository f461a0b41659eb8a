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
from dataclasses import dataclass
from typing import Any, Literal

from sparse_transfer.modifiers.base import FieldError, Modifier, bounded, register_modifier

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
@dataclass(kw_only=True)
class LearningRateFunctionModifier(Modifier):
    """Sets every (selected) param group's LR from `lr_func` between start and end epoch.

    lr_func, with p = (epoch - start) / (end - start) in [0, 1]:
      linear:        init + (final - init) * p
      cosine:        final + (init - final) * (1 + cos(pi * p)) / 2
      cyclic_linear: per `cycle_epochs` cycle, init on its first step down to final on its
                     last (SparseML 1.8's step formula), restarting
      exponential:   init * (final / init) ** p
      step:          linear, but held constant within each `cycle_epochs` window
    `update_frequency` > 0 holds the LR constant within windows of that many epochs.
    """

    lr_func: Literal["linear", "cosine", "cyclic_linear", "exponential", "step"]
    init_lr: float = bounded(ge=0)
    final_lr: float = bounded(ge=0)
    cycle_epochs: float = bounded(1.0, gt=0)
    param_groups: list[int] | None = None

    required_fields = ("start_epoch", "end_epoch")

    def validate(self) -> None:
        super().validate()
        if self.end_epoch == -1 or self.end_epoch <= max(self.start_epoch, 0.0):
            raise FieldError(
                "end_epoch", f"must be after start_epoch {self.start_epoch}, got {self.end_epoch}"
            )
        if self.lr_func == "exponential" and (self.init_lr == 0 or self.final_lr == 0):
            raise FieldError("final_lr", "lr_func exponential needs init_lr and final_lr > 0")

    def lr_at(self, epoch: float, steps_per_epoch: int | None = None) -> float:
        """The closed-form LR at a fractional epoch (clamped to the range).

        `steps_per_epoch` is needed by ``cyclic_linear`` only (it counts steps).
        """
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
            return self._cyclic_linear(e - start, span, steps_per_epoch)
        if self.lr_func == "exponential":
            return init * (final / init) ** p
        # step: linear staircase with one value per cycle_epochs window
        stepped = math.floor((e - start) / self.cycle_epochs + 1e-9) * self.cycle_epochs
        return init + (final - init) * min(stepped / span, 1.0)

    def _cyclic_linear(self, since_start: float, span: float, steps_per_epoch: int | None) -> float:
        """SparseML 1.8's `_cyclic_linear`: per cycle, init_lr on its first step down to
        final_lr on its last (``init - k / (cycle_steps - 1) * (init - final)``); a
        shorter last cycle (span not a multiple of cycle_epochs) has its own length.
        Source: sparseml v1.8.0 src/sparseml/pytorch/sparsification/training/modifier_lr.py.
        """
        if steps_per_epoch is None:
            raise ValueError("cyclic_linear needs steps_per_epoch")
        total = span * steps_per_epoch
        cycle = self.cycle_epochs * steps_per_epoch
        step = since_start * steps_per_epoch
        nearest = round(step)
        if abs(step - nearest) < 1e-6:  # fractional epochs are k / steps_per_epoch
            step = float(nearest)
        if step > int(total / cycle) * cycle:
            cycle = total % cycle
        k = step % cycle
        if cycle <= 1:  # a one-step cycle (SparseML divides by zero here): init_lr
            return self.init_lr
        return self.init_lr - (k / (cycle - 1)) * (self.init_lr - self.final_lr)

    def on_update(self, state: Any) -> None:
        """Every clock tick in ``[start, end)`` (every window with `update_frequency`)."""
        if state.optimizer is None:
            return
        lr = self.lr_at(state.epoch, state.steps_per_epoch)
        set_group_values(state.optimizer, "lr", lr, self.param_groups)
        state.extras[_LR_SET_STEP] = state.global_step

    def on_end(self, state: Any) -> None:
        """`final_lr` once, unless a modifier covering this step already set the LR."""
        if state.optimizer is not None and state.extras.get(_LR_SET_STEP) != state.global_step:
            set_group_values(state.optimizer, "lr", self.final_lr, self.param_groups)


@register_modifier("SetLearningRateModifier")
@dataclass(kw_only=True)
class SetLearningRateModifier(Modifier):
    """Sets a constant LR once `start_epoch` is reached (every step while active)."""

    learning_rate: float = bounded(ge=0)
    param_groups: list[int] | None = None
    constant_logging: bool = False

    schedule_fields = ("start_epoch", "end_epoch")

    def on_update(self, state: Any) -> None:
        if state.optimizer is not None:
            set_group_values(state.optimizer, "lr", self.learning_rate, self.param_groups)
            state.extras[_LR_SET_STEP] = state.global_step
