"""Recipe modifiers: one module each, one shared lifecycle (see `base`)."""

from sparse_transfer.modifiers import (  # noqa: F401  (importing registers them)
    constant_pruning,
    distillation,
    epoch_range,
    learning_rate,
    magnitude_pruning,
    obs_pruning,
    per_layer_distillation,
    weight_decay,
)
from sparse_transfer.modifiers.base import (
    _REGISTRY,
    Event,
    FieldError,
    Modifier,
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
from sparse_transfer.modifiers.per_layer_distillation import PerLayerDistillationModifier
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
    "PerLayerDistillationModifier",
    "QuantizationModifier",
    "SetLearningRateModifier",
    "SetWeightDecayModifier",
    "known_modifiers",
    "modifier_class",
    "register_modifier",
]


def modifier_class(name: str) -> type[Modifier]:
    """Looks up a modifier class by recipe tag; KeyError lists nothing (the parser does).

    Lives here, not in `base`: importing this package has registered every built-in.
    """
    return _REGISTRY[name]


def known_modifiers() -> list[str]:
    return sorted(_REGISTRY)
