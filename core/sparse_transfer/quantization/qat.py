"""Quantization-aware training by class swap: the same modules, the same Parameters.

`prepare_qat` turns selected ``nn.Linear`` / ``nn.Embedding`` modules into
`QATLinear` / `QATEmbedding` *in place* (``module.__class__`` swap plus a few
non-persistent buffers), so the optimizer, the pruning masks and
``state_dict`` keep exactly the same tensors and names, and
``isinstance(m, nn.Linear)`` still holds. Scales live outside ``state_dict``;
`sparse_transfer.quantization.state` saves and restores them.
"""

from __future__ import annotations

import contextlib
import difflib
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from sparse_transfer.errors import RecipeError
from sparse_transfer.quantization import attention
from sparse_transfer.quantization.fake_quant import (
    ActivationFakeQuant,
    fake_quantize_weight,
    weight_scale,
)

QAT_ATTR = "_sparse_transfer_qat"


def _autocast_on(x: torch.Tensor) -> bool:
    return x.is_floating_point() and torch.is_autocast_enabled(x.device.type)


class _QATMixin:
    """Weight fake quantization state shared by the swapped module classes."""

    weight: nn.Parameter
    weight_scale: torch.Tensor
    qat_weight_bits: int
    qat_weight_axis: int
    weight_observer_enabled: bool

    def current_weight_scale(self) -> torch.Tensor:
        """Observer on: max|w| per channel now (and remembered). Off: the frozen scale."""
        if self.weight_observer_enabled:
            with torch.no_grad():
                self.weight_scale.copy_(
                    weight_scale(self.weight, self.qat_weight_axis, self.qat_weight_bits)
                )
        return self.weight_scale


class QATLinear(_QATMixin, nn.Linear):
    """Linear with fake-quant input (per tensor), weight (per output channel), optional output."""

    input_quant: ActivationFakeQuant | None
    output_quant: ActivationFakeQuant | None

    def _qat_forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_quant is not None:
            x = self.input_quant(x)
        w = fake_quantize_weight(self.weight, self.current_weight_scale(), 0, self.qat_weight_bits)
        y = F.linear(x, w, self.bias)
        if self.output_quant is not None:
            y = self.output_quant(y)
        return y

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _autocast_on(x):  # int8 simulation needs fp32: no fp16 autocast in here
            with torch.autocast(x.device.type, enabled=False):
                return self._qat_forward(x.float())
        return self._qat_forward(x)


class QATEmbedding(_QATMixin, nn.Embedding):
    """Embedding whose rows are fake-quantized per hidden channel after the lookup.

    Quantizing after the gather costs O(tokens) instead of O(vocab) per step
    and is the same arithmetic as the exported ``Gather(int8) -> Cast -> Mul``.
    """

    input_quant: None
    output_quant: ActivationFakeQuant | None

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        rows = F.embedding(
            input, self.weight, self.padding_idx, self.max_norm, self.norm_type,
            self.scale_grad_by_freq, self.sparse,
        )  # fmt: skip
        scale = self.current_weight_scale()
        y = fake_quantize_weight(rows, scale, rows.dim() - 1, self.qat_weight_bits)
        if self.output_quant is not None:
            y = self.output_quant(y)
        return y


_SWAP = {nn.Linear: QATLinear, nn.Embedding: QATEmbedding}

# Largest |int8 weight| for which ONNX Runtime's u8 x s8 kernels are exact on every x86 CPU:
# without VNNI (AVX2; AVX-512 without VNNI) MLAS multiplies with ``vpmaddubsw``, which adds
# two u8*s8 products in int16 and saturates (onnxruntime/core/mlas/lib/amd64/
# SymQgemmU8KernelAvx512.asm, MultiplyAccumulateCellU8S8Avx512Core; the AVX2 kernels alike).
# Activations reach 255 (uint8 QuantizeLinear), so 2 * 255 * 64 = 32640 <= 32767 needs
# |w| <= 64: 7-bit symmetric weights, [-63, 63]. Measured under qemu -cpu Haswell: 100% of
# full-range outputs wrong, 0% with 7-bit weights (see README, "int8 on every CPU").
REDUCED_WEIGHT_BITS = 7


def linear_weight_bits(weight_bits: int, reduce_weight_range: bool) -> int:
    """Bits a quantized Linear's weights really use: at most 7 with `reduce_weight_range`.

    This is ONNX Runtime's ``reduce_range`` (7-bit weights, for CPUs without VNNI), not
    SparseML's QuantizationModifier ``reduce_range``, which reduces the *activation*
    observer to 7 bits and passes ``False`` for weights (sparseml/pytorch/sparsification/
    quantization/helpers.py, ``get_qat_qconfig``). Both are exact on AVX2, but activations
    are per tensor and outlier-bound, weights per channel: losing a bit hurts them less.
    """
    return min(weight_bits, REDUCED_WEIGHT_BITS) if reduce_weight_range else weight_bits


QAT_TYPES = (QATLinear, QATEmbedding)


def _attach(
    module: nn.Module,
    *,
    weight_bits: int,
    reduce_weight_range: bool,
    activation_bits: int,
    reduce_range: bool,
    quantize_input: bool,
    quantize_output: bool,
    averaging_constant: float,
) -> None:
    new_cls = _SWAP[type(module)]
    axis = 1 if new_cls is QATEmbedding else 0
    module.__class__ = new_cls
    # Linear weights feed u8 x s8 MatMulInteger: 7 bits keep it exact on every CPU (see
    # `linear_weight_bits`). Embedding weights are only gathered, so they keep all 8.
    module.qat_weight_bits = (
        linear_weight_bits(weight_bits, reduce_weight_range)
        if new_cls is QATLinear
        else weight_bits
    )
    module.qat_weight_axis = axis
    module.weight_observer_enabled = True
    module.register_buffer(
        "weight_scale",
        weight_scale(module.weight, axis, module.qat_weight_bits),
        persistent=False,
    )

    def act() -> ActivationFakeQuant:
        return ActivationFakeQuant(activation_bits, reduce_range, averaging_constant).to(
            module.weight.device
        )

    # Embedding inputs are token ids: never quantized.
    module.input_quant = act() if quantize_input and new_cls is QATLinear else None
    module.output_quant = act() if quantize_output else None


def _resolve_roots(
    model: nn.Module, submodules: Sequence[str] | None
) -> list[tuple[str, nn.Module]]:
    if not submodules:
        return [("", model)]
    names = dict(model.named_modules())
    roots, missing = [], []
    for name in submodules:
        if name in names:
            roots.append((name, names[name]))
        else:
            missing.append(name)
    if missing:
        hints = {m: difflib.get_close_matches(m, list(names), n=3) for m in missing}
        raise RecipeError(
            "QuantizationModifier.submodules: no such module "
            + "; ".join(f"'{m}' (nearest: {', '.join(h) or 'none'})" for m, h in hints.items())
            + f". Top-level modules are: {', '.join(n for n, _ in model.named_children())}"
        )
    return roots


def _type_names(module: nn.Module) -> set[str]:
    return {cls.__name__ for cls in type(module).__mro__}


def select_modules(
    model: nn.Module,
    submodules: Sequence[str] | None = None,
    exclude_module_types: Iterable[str] = (),
    quantize_embeddings: bool = True,
) -> list[str]:
    """Names of the Linear/Embedding modules `prepare_qat` would quantize."""
    exclude = set(exclude_module_types)
    chosen: dict[str, None] = {}
    for root_name, root in _resolve_roots(model, submodules):
        for name, module in root.named_modules():
            full = f"{root_name}.{name}".strip(".") if name else root_name
            kind = type(module)
            if kind not in _SWAP or (kind is nn.Embedding and not quantize_embeddings):
                continue
            if _type_names(module) & exclude:
                continue
            chosen[full] = None
    return list(chosen)


def select_attention_modules(
    model: nn.Module,
    submodules: Sequence[str] | None = None,
    exclude_module_types: Iterable[str] = (),
) -> list[str]:
    """Names of the attention modules whose matmuls `prepare_qat` would quantize."""
    exclude = set(exclude_module_types)
    if exclude & attention.EXCLUDE_NAMES:
        return []
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    chosen: dict[str, None] = {}
    for root_name, root in _resolve_roots(model, submodules):
        for name, module in attention.attention_candidates(root, model_type):
            if not _type_names(module) & exclude:
                chosen[f"{root_name}.{name}".strip(".")] = None
    return list(chosen)


def prepare_qat(
    model: nn.Module,
    *,
    submodules: Sequence[str] | None = None,
    exclude_module_types: Iterable[str] = (),
    quantize_embeddings: bool = True,
    quantize_linear_activations: bool = False,
    quantize_embedding_activations: bool = False,
    weight_bits: int = 8,
    activation_bits: int = 8,
    reduce_range: bool = False,
    reduce_weight_range: bool = True,
    activation_qconfig_kwargs: dict[str, Any] | None = None,
    modules: Sequence[str] | None = None,
    attention_modules: Sequence[str] | None = None,
) -> list[str]:
    """Makes `model` quantization-aware in place; returns the quantized module names.

    Linear inputs are always fake-quantized (per tensor); their outputs only
    with `quantize_linear_activations` (SparseML's meaning). Weights are int8
    per output channel (Embedding: per hidden channel), symmetric. The
    attention matmuls of supported encoders (BERT family) are quantized too,
    like SparseML's ``QATMatMul`` (which SparseML 1.8 applies to ``BertModel`` and
    ``BertForQuestionAnswering`` only; every head here is our choice), unless
    ``QATMatMul`` is excluded.

    Args:
        model: an HF model (or any module tree).
        submodules: quantize only inside these (dotted names); None = whole model.
        exclude_module_types: class names whose modules stay float (e.g. ``Linear``).
        quantize_embeddings: also fake-quantize ``nn.Embedding`` weights.
        quantize_linear_activations: also fake-quantize Linear outputs.
        quantize_embedding_activations: fake-quantize Embedding outputs.
        weight_bits / activation_bits: 8 for int8 export.
        reduce_range: activations use 7 bits (SparseML's meaning).
        reduce_weight_range: Linear weights use 7 bits, [-63, 63] (default): the exported
            int8 model then computes the same integers on every CPU ONNX Runtime runs on.
            False gives full-range weights, exact only on CPUs with VNNI/AMX (or without
            AVX2); the export report records which one a deployment is.
        activation_qconfig_kwargs: ``{"averaging_constant": float}`` for the observers.
        modules: explicit module names (used by `restore_qat`); overrides the selection.
        attention_modules: explicit attention module names (with `modules`; None = none).
    """
    if is_qat_prepared(model):
        return list(getattr(model, QAT_ATTR)["modules"])
    averaging_constant = _averaging_constant(activation_qconfig_kwargs)
    if modules is None:
        modules = select_modules(model, submodules, exclude_module_types, quantize_embeddings)
        attention_modules = select_attention_modules(model, submodules, exclude_module_types)
    config = {
        "modules": list(modules),
        "attention_modules": list(attention_modules or ()),
        "weight_bits": weight_bits,
        "activation_bits": activation_bits,
        "reduce_range": reduce_range,
        "reduce_weight_range": bool(reduce_weight_range),
        "quantize_linear_activations": bool(quantize_linear_activations),
        "quantize_embedding_activations": bool(quantize_embedding_activations),
        "averaging_constant": averaging_constant,
    }
    _attach_all(model, config)
    # Plain attribute (not a buffer/submodule): invisible to state_dict and parameters().
    object.__setattr__(model, QAT_ATTR, config)
    return list(modules)


def _averaging_constant(activation_qconfig_kwargs: dict[str, Any] | None) -> float:
    """The observers' averaging constant (0.01 unless given); any other key is a recipe
    error now, not an option silently ignored."""
    kwargs = dict(activation_qconfig_kwargs or {})
    averaging_constant = float(kwargs.pop("averaging_constant", 0.01))
    if kwargs:
        raise RecipeError(
            f"QuantizationModifier.activation_qconfig_kwargs: unsupported keys {sorted(kwargs)}; "
            "supported: averaging_constant"
        )
    return averaging_constant


def _attach_all(model: nn.Module, config: dict[str, Any]) -> None:
    """Fake-quantizes the selected modules and attention matmuls as `config` (the record
    `restore_qat` reads back) says, so a restored model is prepared exactly alike."""
    named = dict(model.named_modules())
    for name in config["modules"]:
        module = named[name]
        _attach(
            module,
            weight_bits=config["weight_bits"],
            reduce_weight_range=config["reduce_weight_range"],
            activation_bits=config["activation_bits"],
            reduce_range=config["reduce_range"],
            quantize_input=True,
            quantize_output=(
                config["quantize_embedding_activations"]
                if type(module) is nn.Embedding
                else config["quantize_linear_activations"]
            ),
            averaging_constant=config["averaging_constant"],
        )
    for name in config["attention_modules"]:
        attention.attach(
            named[name], config["activation_bits"], config["reduce_range"],
            config["averaging_constant"],
        )  # fmt: skip
    if config["attention_modules"]:
        attention.use_qat_attention(model)


def qat_modules(model: nn.Module) -> dict[str, nn.Module]:
    """Quantized modules by name, in model order."""
    return {n: m for n, m in model.named_modules() if isinstance(m, QAT_TYPES)}


def is_qat_prepared(model: nn.Module) -> bool:
    return hasattr(model, QAT_ATTR) or any(isinstance(m, QAT_TYPES) for m in model.modules())


def qat_config(model: nn.Module) -> dict[str, Any] | None:
    """The settings `prepare_qat` used (None for a float model)."""
    config = getattr(model, QAT_ATTR, None)
    return dict(config) if config is not None else None


def _activation_quants(module: nn.Module) -> Iterator[tuple[str, ActivationFakeQuant]]:
    for attr in ("input_quant", "output_quant"):
        aq = getattr(module, attr, None)
        if aq is not None:
            yield attr, aq


def activation_quants(model: nn.Module) -> Iterator[tuple[str, ActivationFakeQuant]]:
    """Every activation fake quantizer of `model`, as (dotted name, quantizer)."""
    for name, module in qat_modules(model).items():
        for attr, aq in _activation_quants(module):
            yield f"{name}.{attr}", aq
    for name, holder in attention.attention_quants(model).items():
        for attr, aq in holder.quants():
            yield f"{name}.{attention.ATTR}.{attr}", aq


def set_observers_enabled(model: nn.Module, enabled: bool) -> None:
    """Turns every weight and activation observer on or off (off = scales frozen)."""
    for module in qat_modules(model).values():
        if not enabled and module.weight_observer_enabled:
            module.current_weight_scale()  # freeze at the weights as they are now
        module.weight_observer_enabled = bool(enabled)
    for _, aq in activation_quants(model):
        aq.observer_enabled = bool(enabled)


def observers_enabled(model: nn.Module) -> bool:
    """True while any observer still updates."""
    for module in qat_modules(model).values():
        if module.weight_observer_enabled:
            return True
    return any(aq.observer_enabled for _, aq in activation_quants(model))


@contextlib.contextmanager
def observers_paused(model: nn.Module) -> Iterator[None]:
    """Runs a block with activation observers off (export parity must not move scales)."""
    saved = []
    for _, aq in activation_quants(model):
        saved.append((aq, aq.observer_enabled))
        aq.observer_enabled = False
    try:
        yield
    finally:
        for aq, flag in saved:
            aq.observer_enabled = flag


def uninitialized_observers(model: nn.Module) -> list[str]:
    """Activation observers that never saw data (their scales are meaningless)."""
    return [name for name, aq in activation_quants(model) if not bool(aq.initialized)]


def freeze_bn_stats(model: nn.Module) -> None:
    """Stops BatchNorm running statistics from moving (momentum 0); BERT has none."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.momentum = 0.0


@torch.no_grad()
def calibrate(model: nn.Module, batches: Iterable[dict[str, torch.Tensor]]) -> int:
    """Runs batches through `model` in eval mode with the observers recording.

    Returns the number of batches seen. Dropout stays off (eval); only the
    activation observers are put in training mode so they update.
    """
    was_training = model.training
    model.eval()
    quants = [aq for _, aq in activation_quants(model)]
    for aq in quants:
        aq.train()
    n = 0
    try:
        for batch in batches:
            model(**batch)
            n += 1
    finally:
        model.train(was_training)
    return n


_BASE = {QATLinear: nn.Linear, QATEmbedding: nn.Embedding}


@contextlib.contextmanager
def qat_bypassed(model: nn.Module) -> Iterator[None]:
    """Runs a block with the quantized modules behaving as plain float modules.

    Used to trace the float graph for export (the int8 graph is then built
    from it with the QAT scales), so the tracer never sees fake-quant ops.
    """
    swapped = [(m, type(m)) for m in qat_modules(model).values()]
    holders = [(h, h.enabled) for h in attention.attention_quants(model).values()]
    for module, cls in swapped:
        module.__class__ = _BASE[cls]
    for holder, _ in holders:
        holder.enabled = False
    try:
        yield
    finally:
        for module, cls in swapped:
            module.__class__ = cls
        for holder, enabled in holders:
            holder.enabled = enabled
