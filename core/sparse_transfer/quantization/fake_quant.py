"""Fake quantization primitives shared by QAT (torch) and int8 export (ONNX).

Weights: int8, symmetric (zero point 0), one scale per output channel;
Linear weights use 7 bits, [-63, 63], by default so that the exported integer
matmuls are exact on CPUs without VNNI (`sparse_transfer.quantization.qat.
linear_weight_bits`). A weight that is exactly zero (pruned) quantizes to exactly zero, and a
non-zero weight never rounds to zero: it keeps at least one quantization
step of its sign. So the int8 tensor has *the same zero positions* as the
sparse FP32 tensor, which the export checks per initializer.

Activations: uint8, asymmetric, one scale per tensor, from a moving-average
min/max observer (the form ONNX ``QuantizeLinear`` + ``MatMulInteger`` take
directly, and the u8 x s8 kernel ONNX Runtime runs fastest on x86). The second
operand of an attention matmul is an activation too: int8, symmetric (zero
point 0), as SparseML quantizes it.
"""

from __future__ import annotations

import torch
from torch import nn

_EPS = float(torch.finfo(torch.float32).eps)


def weight_qmax(bits: int) -> int:
    """Largest int for a symmetric signed range (127 for 8 bits; -128 unused)."""
    return 2 ** (bits - 1) - 1


def weight_scale(weight: torch.Tensor, axis: int, bits: int) -> torch.Tensor:
    """Per-channel symmetric scale along `axis`: max|w| / qmax (never 0)."""
    dims = [d for d in range(weight.dim()) if d != axis]
    amax = weight.detach().abs().amax(dim=dims)
    return amax.clamp_min(_EPS) / weight_qmax(bits)


def _broadcast(scale: torch.Tensor, ndim: int, axis: int) -> torch.Tensor:
    shape = [1] * ndim
    shape[axis] = -1
    return scale.view(shape)


def quantize_weight(
    weight: torch.Tensor, scale: torch.Tensor, axis: int, bits: int
) -> torch.Tensor:
    """Integer values (as float) of `weight`: round half to even, zeros kept zero.

    ``torch.round`` rounds half to even like ONNX ``QuantizeLinear``. A
    non-zero weight that would round to 0 gets ``sign(w)`` (one step) instead,
    and ``sign(0) == 0`` keeps pruned weights at 0: the sparsity pattern is exact.
    """
    qmax = weight_qmax(bits)
    with torch.no_grad():
        q = weight.detach() / _broadcast(scale, weight.dim(), axis)
        q.round_().clamp_(-qmax, qmax)
        return torch.where(q == 0, torch.sign(weight.detach()), q)


class _StraightThrough(torch.autograd.Function):
    """Forward: the fake-quantized value; backward: the gradient unchanged (STE)."""

    @staticmethod
    def forward(ctx, weight: torch.Tensor, dequantized: torch.Tensor) -> torch.Tensor:
        return dequantized

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad, None


def fake_quantize_weight(
    weight: torch.Tensor, scale: torch.Tensor, axis: int, bits: int
) -> torch.Tensor:
    """Dequantized int8 weight with a straight-through gradient."""
    dq = quantize_weight(weight, scale, axis, bits).mul_(_broadcast(scale, weight.dim(), axis))
    return _StraightThrough.apply(weight, dq)


def fake_quantize_activation(
    x: torch.Tensor, scale: float, zero_point: int, qmin: int, qmax: int
) -> torch.Tensor:
    """``(clamp(round(x / s) + zp) - zp) * s`` with a straight-through gradient.

    Same arithmetic as ONNX ``QuantizeLinear`` (division, round half to even)
    followed by ``DequantizeLinear``. In-place vectorised ops: on CPU this is
    several times faster than ``torch.fake_quantize_per_tensor_affine`` and
    its backward. The gradient is passed unchanged (no clipping mask): the
    ranges come from observers, not from learning.
    """
    with torch.no_grad():
        dq = x.detach() / scale
        dq.round_().add_(zero_point).clamp_(qmin, qmax).sub_(zero_point).mul_(scale)
    return _StraightThrough.apply(x, dq)


def symmetric_activation_qparams(
    min_val: torch.Tensor, max_val: torch.Tensor, qmin: int, qmax: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-tensor (scale, 0): max|x| / ((qmax - qmin) / 2), PyTorch's convention."""
    amax = torch.maximum(min_val.abs(), max_val.abs())
    scale = (amax / ((qmax - qmin) / 2)).clamp_min(_EPS)
    return scale.float(), torch.zeros((), dtype=torch.int32)


def activation_qparams(
    min_val: torch.Tensor, max_val: torch.Tensor, qmin: int, qmax: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Asymmetric per-tensor (scale, zero_point) covering [min, max] and 0."""
    lo = torch.clamp(min_val, max=0.0)
    hi = torch.clamp(max_val, min=0.0)
    scale = ((hi - lo) / float(qmax - qmin)).clamp_min(_EPS)
    zero_point = (qmin - torch.round(lo / scale)).clamp(qmin, qmax).to(torch.int32)
    return scale.float(), zero_point


def _global_range(lo: float, hi: float) -> tuple[float, float]:
    """(min, max) over every data-parallel rank's batch: one all-reduce of ``(-lo, hi)``.

    Under ``torchrun`` each rank sees a shard of the global batch. Reducing the
    batch's min and max across ranks gives exactly the range one process would
    observe on the whole global batch, so every rank holds the same scales and
    they match a single-process run. (Broadcasting rank 0's range instead would
    be cheaper to reason about but would set scales from 1/world of the data.)
    A no-op in one process; every rank runs the same forwards, so the
    collectives line up.
    """
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return lo, hi
    device = "cuda" if dist.get_backend() == "nccl" else "cpu"
    pair = torch.tensor([-lo, hi], dtype=torch.float64, device=device)
    dist.all_reduce(pair, op=dist.ReduceOp.MAX)
    return -float(pair[0]), float(pair[1])


class ActivationFakeQuant(nn.Module):
    """Per-tensor fake quantization with a moving-average min/max observer.

    The observer updates only while enabled *and* in training mode (so
    evaluation never moves the scales; `sparse_transfer.quantization.calibrate`
    puts observers in training mode on purpose). Until it has seen data it is
    uninitialised: the forward pass is the identity and export refuses the
    model. Buffers are non-persistent so ``state_dict`` (and so
    ``save_pretrained``) stays the plain HF layout; `save_qat_config` stores them.
    """

    def __init__(
        self,
        bits: int = 8,
        reduce_range: bool = False,
        averaging_constant: float = 0.01,
        symmetric: bool = False,
    ):
        super().__init__()
        levels = 2 ** (bits - 1 if reduce_range else bits)
        self.symmetric = bool(symmetric)
        # asymmetric: uint8 [0, 255]; symmetric: int8 [-128, 127] with zero point 0
        self.qmin = -(levels // 2) if symmetric else 0
        self.qmax = levels // 2 - 1 if symmetric else levels - 1
        self.averaging_constant = float(averaging_constant)
        self.observer_enabled = True
        self.register_buffer("min_val", torch.zeros(()), persistent=False)
        self.register_buffer("max_val", torch.zeros(()), persistent=False)
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool), persistent=False)

    @torch.no_grad()
    def observe(self, x: torch.Tensor) -> None:
        # Python floats: a dozen scalar tensor ops per call would cost more than
        # the pass over `x` on small models.
        lo, hi = _global_range(*(float(v) for v in torch.aminmax(x.detach())))
        if not bool(self.initialized):
            self.initialized.fill_(True)
        else:
            c = self.averaging_constant
            lo = float(self.min_val) * (1 - c) + lo * c
            hi = float(self.max_val) * (1 - c) + hi * c
        self.min_val.fill_(lo)
        self.max_val.fill_(hi)
        self._cached = None

    def qparams(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(scale float32 scalar tensor, zero point int32 scalar tensor)."""
        if self.symmetric:
            return symmetric_activation_qparams(self.min_val, self.max_val, self.qmin, self.qmax)
        return activation_qparams(self.min_val, self.max_val, self.qmin, self.qmax)

    def _float_qparams(self) -> tuple[float, int]:
        cached = getattr(self, "_cached", None)
        key = (float(self.min_val), float(self.max_val))
        if cached is None or cached[0] != key:
            scale, zero_point = self.qparams()
            cached = (key, (float(scale), int(zero_point)))
            self._cached = cached
        return cached[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.observer_enabled and self.training:
            self.observe(x)
        if not bool(self.initialized):
            return x
        scale, zero_point = self._float_qparams()
        return fake_quantize_activation(x, scale, zero_point, self.qmin, self.qmax)

    def extra_repr(self) -> str:
        kind = "symmetric" if self.symmetric else "asymmetric"
        return f"{kind}, range=[{self.qmin}, {self.qmax}], observer_enabled={self.observer_enabled}"
