"""Quantization-aware training: int8 fake quantization that exports to int8 ONNX.

Public API: `prepare_qat`, `set_observers_enabled`,
`is_qat_prepared`, `save_qat_config`, `restore_qat`; plus helpers the
modifier and the exporter use.
"""

from sparse_transfer.quantization.fake_quant import (
    ActivationFakeQuant,
    quantize_weight,
    weight_qmax,
    weight_scale,
)
from sparse_transfer.quantization.qat import (
    QATEmbedding,
    QATLinear,
    activation_quants,
    calibrate,
    freeze_bn_stats,
    is_qat_prepared,
    observers_enabled,
    observers_paused,
    prepare_qat,
    qat_bypassed,
    qat_config,
    qat_modules,
    select_attention_modules,
    select_modules,
    set_observers_enabled,
    uninitialized_observers,
)
from sparse_transfer.quantization.state import CONFIG_NAME, STATE_NAME, restore_qat, save_qat_config

__all__ = [
    "CONFIG_NAME",
    "STATE_NAME",
    "ActivationFakeQuant",
    "QATEmbedding",
    "QATLinear",
    "activation_quants",
    "calibrate",
    "freeze_bn_stats",
    "is_qat_prepared",
    "observers_enabled",
    "observers_paused",
    "prepare_qat",
    "qat_bypassed",
    "qat_config",
    "qat_modules",
    "quantize_weight",
    "restore_qat",
    "save_qat_config",
    "select_attention_modules",
    "select_modules",
    "set_observers_enabled",
    "uninitialized_observers",
    "weight_qmax",
    "weight_scale",
]
