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

from sparse_transfer.modifiers.base import Event, FieldError, Modifier, register_modifier

log = logging.getLogger(__name__)


@register_modifier("QuantizationModifier")
@dataclass
class QuantizationModifier(Modifier):
    """Quantization-aware training (SparseML's field names and defaults)."""

    start_epoch: float = -1.0
    end_epoch: float = -1.0
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
    activation_bits: int = 8
    weight_bits: int = 8
    num_calibration_steps: int | None = None
    exclude_batchnorm: bool = True
    exclude_module_types: list[str] | None = None
    activation_qconfig_kwargs: dict[str, Any] | None = field(default=None)
    tensorrt: bool = False

    def validate(self) -> None:
        super().validate()
        if self.end_epoch not in (-1, -1.0):
            # SparseML: QAT cannot be switched off again once the graph is quantized.
            raise FieldError(
                "end_epoch", f"QuantizationModifier runs to the end; use -1, got {self.end_epoch}"
            )
        for name in ("activation_bits", "weight_bits"):
            bits = getattr(self, name)
            if not 2 <= bits <= 8:
                raise FieldError(name, f"must be between 2 and 8 (int8 export), got {bits}")
        for name in ("disable_quantization_observer_epoch", "freeze_bn_stats_epoch"):
            value = getattr(self, name)
            if value is not None and value < max(self.start_epoch, 0):
                raise FieldError(name, f"{value} is before start_epoch {self.start_epoch}")

    # --- lifecycle -----------------------------------------------------------
    def _started(self, state: Any) -> bool:
        return self.start_epoch < 0 or float(state.epoch) >= self.start_epoch

    def _observers_frozen(self, state: Any) -> bool:
        epoch = self.disable_quantization_observer_epoch
        return epoch is not None and float(state.epoch) >= epoch

    def _prepare(self, state: Any) -> None:
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

    def _update(self, state: Any) -> None:
        from sparse_transfer.quantization import (
            freeze_bn_stats,
            observers_enabled,
            set_observers_enabled,
        )

        if not self._started(state):
            return
        self._prepare(state)
        if self._observers_frozen(state) and observers_enabled(state.model):
            set_observers_enabled(state.model, False)
            log.info("QuantizationModifier: observers frozen at epoch %.3f", float(state.epoch))
        bn_epoch = self.freeze_bn_stats_epoch
        if bn_epoch is not None and float(state.epoch) >= bn_epoch:
            freeze_bn_stats(state.model)

    def initialize(self, state: Any) -> None:
        self._update(state)

    def on_event(self, event: Event, state: Any) -> None:
        if event in (Event.BATCH_START, Event.EPOCH_END):
            self._update(state)
