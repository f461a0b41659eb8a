"""EpochRangeModifier: the recipe's training length (start/end epoch)."""

from __future__ import annotations

from dataclasses import dataclass

from sparse_transfer.modifiers.base import FieldError, Modifier, register_modifier


@register_modifier("EpochRangeModifier")
@dataclass
class EpochRangeModifier(Modifier):
    """Sets how long training runs; the trainer reads `end_epoch` as its epoch count."""

    start_epoch: float = 0.0
    end_epoch: float = -1.0

    def validate(self) -> None:
        super().validate()
        if self.end_epoch != -1 and self.end_epoch <= 0:
            raise FieldError("end_epoch", f"must be > 0, got {self.end_epoch}")
