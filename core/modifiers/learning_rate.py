"""Learning-rate modifiers: closed-form schedules over fractional epochs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from sparse_transfer.modifiers.base import FieldError, Modifier, register_modifier

LR_FUNCS = ("linear", "cosine", "cyclic_linear", "exponential", "step")


@register_modifier("LearningRateFunctionModifier")
@dataclass
class LearningRateFunctionModifier(Modifier):
    """Sets every (selected) param group's LR from `lr_func` between start and end epoch."""

    lr_func: Literal["linear", "cosine", "cyclic_linear", "exponential", "step"]
    init_lr: float
    final_lr: float
    start_epoch: float
    end_epoch: float
    cycle_epochs: float = 1.0
    param_groups: list[int] | None = None
    update_frequency: float = -1.0

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
        if self.lr_func == "cyclic_linear" and self.cycle_epochs <= 0:
            raise FieldError("cycle_epochs", f"must be > 0, got {self.cycle_epochs}")


@register_modifier("SetLearningRateModifier")
@dataclass
class SetLearningRateModifier(Modifier):
    """Sets a constant LR from `start_epoch` (until `end_epoch` when given)."""

    learning_rate: float
    start_epoch: float = -1.0
    end_epoch: float = -1.0
    param_groups: list[int] | None = None
    constant_logging: bool = False

    def validate(self) -> None:
        super().validate()
        if self.learning_rate < 0:
            raise FieldError("learning_rate", f"must be >= 0, got {self.learning_rate}")
