"""Quantized attention matmuls (SparseML's ``QATMatMul`` idea) for every HF encoder we support.

SparseML 1.8 patches only ``BertModel``/``BertForQuestionAnswering`` to quantize the
two activation-by-activation products of self-attention (``Q @ K^T`` and
``softmax @ V``): the first operand asymmetric uint8, the second symmetric int8.
Doing it for every BERT-family encoder and head (sequence classification too) is
our choice: the exported graph then runs them as ``MatMulInteger`` and DeepSparse
runs a 90%-sparse BERT-base markedly faster (measured here, batch 1, seq 128:
16.5-17.1 -> 14.6-15.1 ms best of 40 runs; see the README). A quantized attention module gets a
`QATAttentionMatMuls` child (four observers, no parameters, nothing in
``state_dict``) and the model's attention implementation becomes
``sparse_transfer_qat``: eager attention with those fake quantizers, registered
with transformers' ``AttentionInterface`` (and the eager mask builder), so the
model's own ``forward`` is untouched. Excluding the module type ``QATMatMul``
(SparseML's name) in a recipe turns this off.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from sparse_transfer.quantization.fake_quant import ActivationFakeQuant

ATTENTION_IMPLEMENTATION = "sparse_transfer_qat"
EXCLUDE_NAMES = frozenset({"QATMatMul", "MatMul"})  # exclude_module_types that switch it off
# Encoders whose eager attention is exactly `eager_attention_forward` below ([B, H, S, D]).
SUPPORTED_MODEL_TYPES = frozenset(
    {"bert", "roberta", "xlm-roberta", "camembert", "distilbert", "electra"}
)
QUANT_NAMES = ("query", "key", "probs", "value")


class QATAttentionMatMuls(nn.Module):
    """Fake quantizers of the attention products' inputs.

    ``query`` and ``probs`` (first operands) are uint8 asymmetric; ``key`` and
    ``value`` (second operands) int8 symmetric, zero point 0 (exported as the
    same integers in uint8 with zero point 128). ``enabled`` False makes all
    four identity (used while tracing the float graph).
    """

    def __init__(self, bits: int, reduce_range: bool, averaging_constant: float):
        super().__init__()
        for name in QUANT_NAMES:
            symmetric = name in ("key", "value")
            setattr(
                self,
                name,
                ActivationFakeQuant(bits, reduce_range, averaging_constant, symmetric=symmetric),
            )
        self.enabled = True

    def quants(self) -> Iterator[tuple[str, ActivationFakeQuant]]:
        for name in QUANT_NAMES:
            yield name, getattr(self, name)


ATTR = "qat_attention"


def _calls_attention_interface(module: nn.Module) -> bool:
    try:
        return "ALL_ATTENTION_FUNCTIONS" in inspect.getsource(type(module).forward)
    except (OSError, TypeError):
        return False


def attention_candidates(root: nn.Module, model_type: str | None) -> list[tuple[str, nn.Module]]:
    """(relative name, module) of the attention modules under `root` we can quantize."""
    if model_type not in SUPPORTED_MODEL_TYPES:
        return []
    return [
        (name, m)
        for name, m in root.named_modules()
        if "Attention" in type(m).__name__ and _calls_attention_interface(m)
    ]


def attach(module: nn.Module, bits: int, reduce_range: bool, averaging_constant: float) -> None:
    device = next((p.device for p in module.parameters()), torch.device("cpu"))
    module.add_module(ATTR, QATAttentionMatMuls(bits, reduce_range, averaging_constant).to(device))


def attention_quants(model: nn.Module) -> dict[str, QATAttentionMatMuls]:
    """Quantized attention modules by name (the holder's parent), in model order."""
    return {
        name: getattr(m, ATTR)
        for name, m in model.named_modules()
        if isinstance(getattr(m, ATTR, None), QATAttentionMatMuls)
    }


def _eager_of(module: nn.Module):
    return sys.modules[type(module).__module__].eager_attention_forward


def qat_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Eager attention with fake-quantized matmul operands (HF's signature and result)."""
    quant = getattr(module, ATTR, None)
    if not isinstance(quant, QATAttentionMatMuls) or not quant.enabled:
        return _eager_of(module)(
            module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs
        )
    if torch.is_autocast_enabled(query.device.type):
        # int8 simulation needs fp32 (as in QATLinear): no fp16/bf16 autocast in here
        with torch.autocast(query.device.type, enabled=False):
            mask = attention_mask.float() if attention_mask is not None else None
            return qat_attention_forward(
                module, query.float(), key.float(), value.float(), mask, scaling, dropout, **kwargs
            )
    if scaling is None:
        scaling = query.size(-1) ** -0.5
    scores = torch.matmul(quant.query(query), quant.key(key).transpose(2, 3)) * scaling
    if attention_mask is not None:
        scores = scores + attention_mask
    probs = nn.functional.softmax(scores, dim=-1)
    probs = nn.functional.dropout(probs, p=dropout, training=module.training)
    output = torch.matmul(quant.probs(probs), quant.value(value))
    return output.transpose(1, 2).contiguous(), probs


def register() -> None:
    """Makes ``sparse_transfer_qat`` a valid attention implementation (idempotent)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, eager_mask

    AttentionInterface.register(ATTENTION_IMPLEMENTATION, qat_attention_forward)
    AttentionMaskInterface.register(ATTENTION_IMPLEMENTATION, eager_mask)


def use_qat_attention(model: nn.Module) -> None:
    """Switches `model` to the quantized attention (not saved: config.json stays plain)."""
    config = getattr(model, "config", None)
    if config is not None:
        register()
        config._attn_implementation = ATTENTION_IMPLEMENTATION
