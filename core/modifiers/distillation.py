"""DistillationModifier: blend the task loss with KL to a teacher's outputs."""

from __future__ import annotations

from dataclasses import dataclass

from sparse_transfer.modifiers.base import FieldError, Modifier, register_modifier


@register_modifier("DistillationModifier")
@dataclass
class DistillationModifier(Modifier):
    """loss = (1 - hardness) * task + hardness * T^2 * KL(teacher_T || student_T)."""

    hardness: float = 0.5
    temperature: float = 2.0
    distill_output_keys: list[str] | None = None
    teacher_input_keys: list[str] | None = None
    start_epoch: float = -1.0
    end_epoch: float = -1.0
    update_frequency: float = -1.0

    def validate(self) -> None:
        super().validate()
        if not 0.0 <= self.hardness <= 1.0:
            raise FieldError("hardness", f"must be in [0, 1], got {self.hardness}")
        if self.temperature <= 0:
            raise FieldError("temperature", f"must be > 0, got {self.temperature}")
