"""What modifiers see of training: the model, optimizer, teacher and the clock."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any


@dataclass
class TrainingState:
    """Shared by the trainer bridge and every modifier.

    Attributes:
        model: the student being trained.
        optimizer: the torch optimizer (None in evaluation-only runs).
        teacher: the distillation teacher (eval mode, no grad) or None.
        steps_per_epoch: optimizer steps per epoch, counted exactly as the HF
            Trainer counts them (gradient accumulation included).
        global_step: optimizer steps completed. During OPTIMIZER_POST_STEP (and
            later events of that step) it already counts the step just taken.
        decay_param_ids: ids of the parameters in weight-decaying param groups
            (HF's grouping: not bias / LayerNorm).
        inputs / outputs / loss: the current micro-batch, student outputs and
            loss (LOSS_CALCULATED handlers may replace `loss`).
        grad_sampler: ``grad_sampler(n, batch_size=None)`` yields `n` times, each time
            with the model's ``.grad`` holding one fresh mini-batch gradient (for oBS;
            `batch_size` overrides the training batch size).
        log: ``log(dict)`` reports metrics through the Trainer's logger.
    """

    model: Any
    optimizer: Any = None
    teacher: Any = None
    steps_per_epoch: int = 1
    global_step: int = 0
    total_epochs: float | None = None
    decay_param_ids: set[int] | None = None
    inputs: dict[str, Any] | None = None
    outputs: Any = None
    loss: Any = None
    grad_sampler: Callable[..., Iterator[None]] | None = None
    log: Callable[[dict[str, float]], None] | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def epoch(self) -> float:
        """Fractional epoch: ``global_step / steps_per_epoch``."""
        return self.global_step / max(self.steps_per_epoch, 1)

    def epoch_at(self, step: int) -> float:
        return step / max(self.steps_per_epoch, 1)
