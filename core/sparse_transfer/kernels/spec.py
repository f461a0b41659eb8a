"""The sparse int8 custom ops: their contract, weight format and exact numpy reference.

One place says what every implementation computes: the C++ kernels in ``csrc/`` (run by
ONNX Runtime through the custom-op library), the export's graph rewrite that emits the ops,
and the parity check, which evaluates the ops with the numpy classes below (exact integers,
the same on every CPU, no library needed).

Weights travel as **1x4 blocks along K** (block-sparse rows): for an int8 weight ``W[N, K]``
(output row n, input column k; K padded with zeros to a multiple of 4) a block ``(n, kb)``
is kept when any of ``W[n, 4kb:4kb+4]`` is non-zero. Three initializers hold it:
``row_ptr`` int32 [N+1] (blocks of row n are ``row_ptr[n]:row_ptr[n+1]``), ``block_col``
int32 [nnzb] (kb of each block, ascending within a row) and ``values`` int8 [nnzb, 4]
(the block's four weights; zeros inside a kept block stay). The layout suits u8 x s8
dot products of four bytes (AVX-512 VNNI ``vpdpbusd``; AVX2 ``vpmaddubsw`` + ``vpmaddwd``,
exact with our 7-bit weights); each kernel may repack it once at load time.

Ops (domain ``DOMAIN``, version 1; attribute ``K`` is the true input width):

- ``SparseMatMulInteger(A u8[..., K], a_zero_point u8[], row_ptr, block_col, values)
  -> Y int32[..., N]``: ``Y = sum_k (A - a_zp) * W^T``, exactly ``MatMulInteger(A, W^T, a_zp, 0)``.
- ``SparseQLinear*``: a quantized Linear with what surrounds it, inputs
  ``(X, x_scale f32[], x_zero_point u8[], row_ptr, block_col, values, w_scale f32[N],
  bias f32[N] [, y_scale f32[], y_zero_point u8[]])``, attribute ``activation`` in
  ``("none", "gelu")``:

  1. ``xq = X`` when X is uint8, else ``QuantizeLinear(X, x_scale, x_zp)`` (round half to
     even of ``X / x_scale``, plus zp, saturated to [0, 255]);
  2. ``acc = sum_k (xq - x_zp) * W[n, k]`` in int32 (exact);
  3. ``y = float32(acc) * float32(x_scale * w_scale[n]) + bias[n]`` (float32, in this order,
     as ONNX Runtime's ``MatMulIntegerToFloat``);
  4. ``activation == "gelu"``: ``y = 0.5 * y * (1 + erf(y / sqrt(2)))``;
  5. ``*ToU8`` variants: ``QuantizeLinear(y, y_scale, y_zp)`` (the next Linear's input).

  ``SparseQLinear`` f32 -> f32, ``SparseQLinearToU8`` f32 -> u8, ``SparseQLinearFromU8``
  u8 -> f32, ``SparseQLinearU8`` u8 -> u8.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DOMAIN = "com.sparse_transfer"
OPSET_VERSION = 1
BLOCK = 4
ACTIVATIONS = ("none", "gelu")
# op type -> (input is uint8, output is uint8)
QLINEAR_OPS = {
    "SparseQLinear": (False, False),
    "SparseQLinearToU8": (False, True),
    "SparseQLinearFromU8": (True, False),
    "SparseQLinearU8": (True, True),
}
MATMUL_OP = "SparseMatMulInteger"
OP_TYPES = (MATMUL_OP, *QLINEAR_OPS)


@dataclass(frozen=True)
class BlockSparseWeight:
    """An int8 weight [N, K] in 1x4 blocks along K (see the module docstring)."""

    row_ptr: np.ndarray  # int32 [N+1]
    block_col: np.ndarray  # int32 [nnzb]
    values: np.ndarray  # int8 [nnzb, 4]
    k: int

    @property
    def n(self) -> int:
        return int(self.row_ptr.size - 1)

    @property
    def block_density(self) -> float:
        """Kept blocks over all blocks: the fraction of the dense work a 1x4 kernel does."""
        total = self.n * (-(-self.k // BLOCK))
        return float(self.block_col.size / total) if total else 0.0


def pack_block4(weight: np.ndarray) -> BlockSparseWeight:
    """Packs an int8 ``W[N, K]`` (output rows) into 1x4 blocks; exact, zeros kept as zeros."""
    w = np.asarray(weight)
    if w.dtype != np.int8 or w.ndim != 2:
        raise ValueError(f"pack_block4 wants an int8 [N, K] weight, got {w.dtype} {w.shape}")
    n, k = w.shape
    kb = -(-k // BLOCK)
    padded = np.zeros((n, kb * BLOCK), np.int8)
    padded[:, :k] = w
    blocks = padded.reshape(n, kb, BLOCK)
    kept = blocks.any(axis=2)
    row_ptr = np.zeros(n + 1, np.int32)
    np.cumsum(kept.sum(axis=1), out=row_ptr[1:])
    rows, cols = np.nonzero(kept)  # row-major: ascending kb within each row
    return BlockSparseWeight(
        row_ptr=row_ptr,
        block_col=cols.astype(np.int32),
        values=np.ascontiguousarray(blocks[rows, cols]),
        k=int(k),
    )


def unpack_block4(row_ptr, block_col, values, k: int) -> np.ndarray:
    """The dense int8 ``W[N, K]`` a packed weight stands for."""
    row_ptr = np.asarray(row_ptr)
    n = row_ptr.size - 1
    kb = -(-k // BLOCK)
    dense = np.zeros((n, kb, BLOCK), np.int8)
    rows = np.repeat(np.arange(n), np.diff(row_ptr))
    dense[rows, np.asarray(block_col)] = np.asarray(values).reshape(-1, BLOCK)
    return dense.reshape(n, kb * BLOCK)[:, :k]


def quantize_u8(x: np.ndarray, scale, zero_point) -> np.ndarray:
    """ONNX QuantizeLinear to uint8: round half to even, saturate."""
    q = np.rint(np.asarray(x, np.float32) / np.float32(scale)).astype(np.int64)
    return np.clip(q + int(zero_point), 0, 255).astype(np.uint8)


def integer_matmul(a_u8: np.ndarray, a_zero_point, w: np.ndarray) -> np.ndarray:
    """Exact ``sum_k (a - zp) * W[n, k]`` as int32 (float64 products are exact here)."""
    a = a_u8.astype(np.float64) - float(a_zero_point)
    return np.matmul(a, w.astype(np.float64).T).astype(np.int32)


def gelu(y: np.ndarray) -> np.ndarray:
    from scipy.special import erf

    return (0.5 * y * (1.0 + erf(y / np.float32(np.sqrt(2.0))))).astype(np.float32)


def qlinear_reference(
    x, x_scale, x_zp, row_ptr, block_col, values, w_scale, bias, k, activation="none",
    y_scale=None, y_zp=None,
) -> np.ndarray:  # fmt: skip
    """What every ``SparseQLinear*`` op computes (steps 1-5 of the module docstring)."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation {activation!r}: choose one of {ACTIVATIONS}")
    xq = x if np.asarray(x).dtype == np.uint8 else quantize_u8(x, x_scale, x_zp)
    acc = integer_matmul(xq, x_zp, unpack_block4(row_ptr, block_col, values, k))
    scale = (np.float32(x_scale) * np.asarray(w_scale, np.float32)).astype(np.float32)
    y = (acc.astype(np.float32) * scale + np.asarray(bias, np.float32)).astype(np.float32)
    if activation == "gelu":
        y = gelu(y)
    return y if y_scale is None else quantize_u8(y, y_scale, y_zp)


def reference_ops() -> list[type]:
    """``onnx.reference`` implementations of every op, for ``ReferenceEvaluator(new_ops=...)``."""
    from onnx.reference.op_run import OpRun

    class SparseMatMulInteger(OpRun):
        op_domain = DOMAIN

        def _run(self, a, a_zero_point, row_ptr, block_col, values, K=None):  # noqa: N803
            w = unpack_block4(row_ptr, block_col, values, int(K))
            return (integer_matmul(a, a_zero_point, w),)

    def qlinear(name: str, quantized_out: bool) -> type:
        def _run(self, x, x_scale, x_zp, row_ptr, block_col, values, w_scale, bias, *rest,
                 K=None, activation=None):  # noqa: N803  # fmt: skip
            act = activation.decode() if isinstance(activation, bytes) else activation
            y_scale, y_zp = rest if quantized_out else (None, None)
            y = qlinear_reference(x, x_scale, x_zp, row_ptr, block_col, values, w_scale, bias,
                                  int(K), act or "none", y_scale, y_zp)  # fmt: skip
            return (y,)

        return type(name, (OpRun,), {"op_domain": DOMAIN, "_run": _run})

    return [SparseMatMulInteger] + [qlinear(n, out) for n, (_, out) in QLINEAR_OPS.items()]
