"""EpochRangeModifier: the recipe's training length (start/end epoch)."""

from __future__ import annotations

from dataclasses import dataclass

from sparse_transfer.modifiers.base import Modifier, bounded, register_modifier


@register_modifier("EpochRangeModifier")
@dataclass(kw_only=True)
class EpochRangeModifier(Modifier):
    """Sets how long training runs; the trainer reads `end_epoch` as its epoch count."""

    start_epoch: float = bounded(0.0, ge=0, also=(-1,))
    end_epoch: float = bounded(-1.0, gt=0, also=(-1,))

    schedule_fields = ("start_epoch", "end_epoch")
