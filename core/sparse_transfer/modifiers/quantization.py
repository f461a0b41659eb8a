"""QuantizationModifier: quantization-aware training from `start_epoch`.

Fields are SparseML's. The mechanism lives in `sparse_transfer.quantization`
(fake-quant int8 weights per output channel, symmetric so pruned zeros stay
exactly zero; activations per tensor); this module only decides *when*:
prepare QAT once ``state.epoch >= start_epoch``, freeze the observers at
``disable_quantization_observer_epoch``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from sparse_transfer.modifiers.base import Event, FieldError, Modifier, bounded, register_modifier

log = logging.getLogger(__name__)


@register_modifier("QuantizationModifier")
@dataclass(kw_only=True)
class QuantizationModifier(Modifier):
    """Quantization-aware training (SparseML's field names and defaults)."""

    submodules: list[str] | None = None
    model_fuse_fn_name: str | None = None
    disable_quantization_observer_epoch: float | None = None
    freeze_bn_stats_epoch: float | None = None
    quantize_embeddings: bool = True
    reduce_range: bool = False
    # Not SparseML's: 7-bit Linear weights (default) keep the int8 export exact on CPUs
    # without VNNI; false = full range, right only on VNNI/AMX (see prepare_qat).
    reduce_weight_range: bool = True
    quantize_linear_activations: bool = True
    quantize_conv_activations: bool = True
    quantize_embedding_activations: bool = True
    activation_bits: int = bounded(8, ge=2, le=8)
    weight_bits: int = bounded(8, ge=2, le=8)
    num_calibration_steps: int | None = None
    exclude_batchnorm: bool = True
    exclude_module_types: list[str] | None = None
    activation_qconfig_kwargs: dict[str, Any] | None = field(default=None)
    tensorrt: bool = False

    schedule_fields = ("start_epoch", "end_epoch")
    clock_events = frozenset({Event.BATCH_START, Event.EPOCH_END})

    def validate(self) -> None:
        super().validate()
        if self.end_epoch not in (-1, -1.0):
            # SparseML: QAT cannot be switched off again once the graph is quantized.
            raise FieldError(
                "end_epoch", f"QuantizationModifier runs to the end; use -1, got {self.end_epoch}"
            )
        for name in ("disable_quantization_observer_epoch", "freeze_bn_stats_epoch"):
            value = getattr(self, name)
            if value is not None and value < max(self.start_epoch, 0):
                raise FieldError(name, f"{value} is before start_epoch {self.start_epoch}")

    # --- actions (the schedule is the base's) -------------------------------------
    def on_start(self, state: Any) -> None:
        from sparse_transfer.quantization import is_qat_prepared, prepare_qat

        if is_qat_prepared(state.model):
            return
        prepare_qat(
            state.model,
            submodules=self.submodules,
            exclude_module_types=tuple(self.exclude_module_types or ()),
            quantize_embeddings=self.quantize_embeddings,
            quantize_linear_activations=self.quantize_linear_activations,
            quantize_embedding_activations=self.quantize_embedding_activations,
            weight_bits=self.weight_bits,
            activation_bits=self.activation_bits,
            reduce_range=self.reduce_range,
            reduce_weight_range=self.reduce_weight_range,
            activation_qconfig_kwargs=self.activation_qconfig_kwargs,
        )
        log.info("QuantizationModifier: QAT prepared at epoch %.3f", float(state.epoch))

    def on_update(self, state: Any) -> None:
        """Every clock tick once started: freeze observers / BN stats when their epoch comes."""
        from sparse_transfer.quantization import (
            freeze_bn_stats,
            observers_enabled,
            set_observers_enabled,
        )

        epoch = float(state.epoch)
        observer_epoch = self.disable_quantization_observer_epoch
        if (
            observer_epoch is not None
            and epoch >= observer_epoch
            and observers_enabled(state.model)
        ):
            set_observers_enabled(state.model, False)
            log.info("QuantizationModifier: observers frozen at epoch %.3f", epoch)
        bn_epoch = self.freeze_bn_stats_epoch
        if bn_epoch is not None and epoch >= bn_epoch:
            freeze_bn_stats(state.model)
