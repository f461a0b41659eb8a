"""Recipe modifiers: one module each, one shared lifecycle (see `base`)."""

from sparse_transfer.modifiers import (  # noqa: F401  (importing registers them)
    constant_pruning,
    distillation,
    epoch_range,
    learning_rate,
    magnitude_pruning,
    obs_pruning,
    weight_decay,
)
from sparse_transfer.modifiers.base import (
    Event,
    FieldError,
    Modifier,
    known_modifiers,
    modifier_class,
    register_modifier,
)
from sparse_transfer.modifiers.constant_pruning import ConstantPruningModifier
from sparse_transfer.modifiers.distillation import DistillationModifier
from sparse_transfer.modifiers.epoch_range import EpochRangeModifier
from sparse_transfer.modifiers.learning_rate import (
    LearningRateFunctionModifier,
    SetLearningRateModifier,
)
from sparse_transfer.modifiers.magnitude_pruning import GMPruningModifier, MagnitudePruningModifier
from sparse_transfer.modifiers.obs_pruning import OBSPruningModifier
from sparse_transfer.modifiers.quantization import QuantizationModifier
from sparse_transfer.modifiers.weight_decay import SetWeightDecayModifier

__all__ = [
    "ConstantPruningModifier",
    "DistillationModifier",
    "EpochRangeModifier",
    "Event",
    "FieldError",
    "GMPruningModifier",
    "LearningRateFunctionModifier",
    "MagnitudePruningModifier",
    "Modifier",
    "OBSPruningModifier",
    "QuantizationModifier",
    "SetLearningRateModifier",
    "SetWeightDecayModifier",
    "known_modifiers",
    "modifier_class",
    "register_modifier",
]
