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
- ``SparseQLinearU8x3(X u8, x_scale, x_zero_point, row_ptr, block_col, values, w_scale,
  bias, y_scale_1, y_zero_point_1, y_scale_2, y_zero_point_2, y_scale_3, y_zero_point_3)
  -> (Y1, Y2, Y3)`` uint8, attributes ``K`` and ``activation``: three ``SparseQLinearU8`` that
  read one input (a layer's query, key and value), their weights stacked along N: output
  part p is rows ``[p * N/3, (p + 1) * N/3)`` of ``SparseQLinear``'s steps 1-4, quantized with
  its own ``y_scale_p``, ``y_zero_point_p``. N/3 must be a multiple of 16. The same bits as
  the three ops; the input is repacked once and the work is one parallel loop.
- ``Int8Attention(q, q_zero_point, k, k_zero_point, v, v_zero_point, mask, qk_scale,
  score_mul, p_scale, p_zero_point, pv_scale) -> context f32[B, S, H*D]``, attribute
  ``head_dim`` (D): the standard graph's int8 attention (`export.int8_attention`) from the
  quantized projections to the context, in one op. q, k, v are uint8 ``[B, S, H*D]`` (k and v
  int8 stored with zero point 128), mask float32 ``[B, 1, 1, S]`` (additive). Per head, in the
  graph's order: ``acc = (q - q_zp) @ (k - 128)^T`` (int32, exact); ``x = float32(acc) *
  qk_scale``; ``x = x * score_mul``; ``x = x + mask``; ``p = softmax(x)`` over keys
  (``exp(x - max) / sum``); ``pq = QuantizeLinear(p, p_scale, p_zp)``; ``ctx = float32((pq -
  p_zp) @ (v - 128)) * pv_scale``, laid out as ``[B, S, H*D]``. Every step but the exp is
  exact or one float32 rounding, as in the graph; the kernels' exp is within about 1 ulp of
  numpy's, so a probability on a rounding boundary may land one quantization step apart.
  ``Int8AttentionToU8(..., y_scale f32[], y_zero_point u8[]) -> uint8`` also applies the next
  Linear's ``QuantizeLinear`` to the context (a quarter of the bytes to write and read back).
- ``ResidualLayerNorm(x, residual, gamma f32[N], beta f32[N]) -> y`` and
  ``ResidualLayerNormToU8(..., y_scale f32[], y_zero_point u8[]) -> (y, y_u8)``, attribute
  ``epsilon``: the residual ``Add`` and the exported LayerNorm in the graph's steps (``s = x +
  residual``; ``m = mean(s)``; ``d = s - m``; ``v = mean(d ** 2)``; ``y = d / sqrt(v +
  epsilon) * gamma + beta``, over the last axis) and, for ``ToU8``, ``QuantizeLinear(y)`` for
  the next Linear. The kernels sum in float32 lanes, not numpy's pairwise order, so mean and
  variance may differ in the last bits.
- ``SparseQLinear[FromU8]LayerNorm[ToU8](X, x_scale, x_zero_point, row_ptr, block_col,
  values, w_scale, bias, residual, gamma, beta [, y_scale, y_zero_point]) -> y [, y_u8]``,
  attributes ``K`` and ``epsilon``: ``SparseQLinear[FromU8]`` (activation none) whose float
  output is ``ResidualLayerNorm[ToU8]``'s x, in one op; the same steps and bits as the two
  ops, without the Linear's output making a round trip through memory (issue 22).
- ``EmbeddingsLayerNormToU8(input_ids i64, token_type_ids i64, position_ids i64, word u8[V, H],
  word_scale f32[], word_zero_point u8[], type u8[T, H], type_scale, type_zero_point,
  position u8[P, H], position_scale, position_zero_point, gamma f32[H], beta f32[H], y_scale
  f32[], y_zero_point u8[]) -> (y f32[..., H], y_u8)``, attribute ``epsilon``: BERT's
  embeddings in the graph's steps. Each table's rows are gathered as ``Gather`` does (negative
  ids count from the end; an id outside the table is an error) and dequantized, ``float32(c -
  zp) * scale``; ``x = word + type``; then ``ResidualLayerNormToU8(x, position)``. position_ids
  have input_ids' shape or are one row of the sequence's ids, shared by every sequence. The
  tables are the graph's fake-quantized embeddings, ``QuantizeLinear(Cast(W) * w_scale)``,
  computed once at export by ONNX Runtime itself (`export.embedding_fusion`).
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
ATTENTION_OP = "Int8Attention"
# op type -> its output is the quantized context
ATTENTION_OPS = {ATTENTION_OP: False, "Int8AttentionToU8": True}
# op type -> has the quantized second output
LAYERNORM_OPS = {"ResidualLayerNorm": False, "ResidualLayerNormToU8": True}
# op type -> (input is uint8, has the quantized second output)
LINEAR_NORM_OPS = {
    "SparseQLinearLayerNorm": (False, False),
    "SparseQLinearLayerNormToU8": (False, True),
    "SparseQLinearFromU8LayerNorm": (True, False),
    "SparseQLinearFromU8LayerNormToU8": (True, True),
}
EMBEDDINGS_OP = "EmbeddingsLayerNormToU8"
# op type -> number of uint8 outputs its stacked weight's rows are split into
PARTS_OPS = {"SparseQLinearU8x3": 3}
PART_ROWS = 16  # each part's rows: a multiple of the kernels' row group
OP_TYPES = (MATMUL_OP, *QLINEAR_OPS, *PARTS_OPS, *ATTENTION_OPS, *LAYERNORM_OPS,
            *LINEAR_NORM_OPS, EMBEDDINGS_OP)  # fmt: skip


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
    """ONNX QuantizeLinear to uint8: round half to even, saturate (clipped before the integer
    cast: a quotient past int64, 1 / 1e-36, must saturate, not wrap)."""
    q = np.rint(np.asarray(x, np.float32) / np.float32(scale))
    q = np.clip(q, -(2.0**40), 2.0**40).astype(np.int64)
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


def parts_reference(
    x, x_scale, x_zp, row_ptr, block_col, values, w_scale, bias, k, activation, quant
) -> tuple[np.ndarray, ...]:
    """What ``SparseQLinearU8x3`` computes: `quant` holds each part's (y_scale, y_zp)."""
    n, parts = np.size(row_ptr) - 1, len(quant)
    if n % parts or (n // parts) % PART_ROWS:
        raise ValueError(f"N = {n} is not {parts} parts of a multiple of {PART_ROWS} rows")
    y = qlinear_reference(x, x_scale, x_zp, row_ptr, block_col, values, w_scale, bias, k,
                          activation)  # fmt: skip
    split = np.split(y, parts, axis=-1)
    return tuple(quantize_u8(part, s, zp) for part, (s, zp) in zip(split, quant, strict=True))


def _heads(x: np.ndarray, head_dim: int) -> np.ndarray:
    """[B, S, H*D] -> [B, H, S, D] as float64 (exact for the integers here)."""
    b, s, width = x.shape
    return x.reshape(b, s, width // head_dim, head_dim).transpose(0, 2, 1, 3).astype(np.float64)


def attention_reference(
    q, q_zp, k, k_zp, v, v_zp, mask, qk_scale, score_mul, p_scale, p_zp, pv_scale, head_dim
) -> np.ndarray:
    """What ``Int8Attention`` computes (module docstring): numpy's float32 steps are those of
    ONNX's reference evaluator for the standard graph's nodes, so both graphs give equal bits."""
    if int(k_zp) != 128 or int(v_zp) != 128:
        raise ValueError(f"Int8Attention: k and v zero points must be 128, got {k_zp}, {v_zp}")
    b, s, width = q.shape
    if head_dim <= 0 or width % head_dim:
        raise ValueError(f"Int8Attention: width {width} is not a multiple of head_dim {head_dim}")
    if np.shape(mask) != (b, 1, 1, s):
        raise ValueError(f"Int8Attention: mask shape {np.shape(mask)}, expected {(b, 1, 1, s)}")
    acc = np.matmul(_heads(q, head_dim) - float(q_zp), (_heads(k, head_dim) - 128.0)
                    .transpose(0, 1, 3, 2)).astype(np.int32)  # fmt: skip
    x = acc.astype(np.float32) * np.float32(qk_scale)
    x = x * np.float32(score_mul)
    x = x + np.asarray(mask, np.float32)
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    e /= e.sum(axis=-1, keepdims=True)
    pq = quantize_u8(e, p_scale, p_zp).astype(np.float64) - float(p_zp)
    ctx = np.matmul(pq, _heads(v, head_dim) - 128.0).astype(np.int32)
    out = ctx.astype(np.float32) * np.float32(pv_scale)
    return np.ascontiguousarray(out.transpose(0, 2, 1, 3).reshape(b, s, width))


def layernorm_reference(x, residual, gamma, beta, epsilon, y_scale=None, y_zp=None):
    """What ``ResidualLayerNorm*`` computes: numpy's steps are the ONNX reference evaluator's
    for the graph's Add, ReduceMean, Sub, Pow, ReduceMean, Add, Sqrt, Div, Mul, Add."""
    s = np.asarray(x, np.float32) + np.asarray(residual, np.float32)
    if np.shape(gamma) != s.shape[-1:] or np.shape(beta) != s.shape[-1:]:
        raise ValueError(f"ResidualLayerNorm: gamma/beta must have shape {s.shape[-1:]}")
    d = s - np.mean(s, axis=-1, keepdims=True, dtype=np.float32)
    v = np.mean(np.power(d, np.float32(2)), axis=-1, keepdims=True, dtype=np.float32)
    y = d / np.sqrt(v + np.float32(epsilon)) * np.asarray(gamma, np.float32)
    y = y + np.asarray(beta, np.float32)
    return y if y_scale is None else (y, quantize_u8(y, y_scale, y_zp))


def _embedding_rows(codes, ids, scale, zero_point, name: str) -> np.ndarray:
    """``Gather(codes, ids)`` dequantized: float32(c - zp) * scale."""
    ids = np.asarray(ids, np.int64)
    rows = codes.shape[0]
    if ids.size and (ids.min() < -rows or ids.max() >= rows):
        bad = ids[(ids < -rows) | (ids >= rows)][0]
        raise ValueError(f"EmbeddingsLayerNormToU8: {name} id {bad} is outside the table's "
                         f"{rows} rows")  # fmt: skip
    c = np.asarray(codes)[np.where(ids < 0, ids + rows, ids)].astype(np.int32)
    return (c - np.int32(zero_point)).astype(np.float32) * np.float32(scale)


def embeddings_reference(input_ids, token_type_ids, position_ids, word, word_scale, word_zp,
                         types, type_scale, type_zp, positions, position_scale, position_zp,
                         gamma, beta, epsilon, y_scale, y_zp):  # fmt: skip
    """What ``EmbeddingsLayerNormToU8`` computes: the graph's Gather, Cast, Mul,
    QuantizeLinear, DequantizeLinear (as uint8 codes), Add, Add and LayerNorm."""
    x = _embedding_rows(word, input_ids, word_scale, word_zp, "word")
    x = x + _embedding_rows(types, token_type_ids, type_scale, type_zp, "token type")
    p = _embedding_rows(positions, position_ids, position_scale, position_zp, "position")
    return layernorm_reference(x, np.broadcast_to(p, x.shape), gamma, beta, epsilon, y_scale,
                               y_zp)  # fmt: skip


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

    def parts(name: str) -> type:
        def _run(self, x, x_scale, x_zp, row_ptr, block_col, values, w_scale, bias, *quant,
                 K=None, activation=None):  # noqa: N803  # fmt: skip
            act = activation.decode() if isinstance(activation, bytes) else activation
            pairs = list(zip(quant[0::2], quant[1::2], strict=True))
            return parts_reference(x, x_scale, x_zp, row_ptr, block_col, values, w_scale, bias,
                                   int(K), act or "none", pairs)  # fmt: skip

        return type(name, (OpRun,), {"op_domain": DOMAIN, "_run": _run})

    class Int8Attention(OpRun):
        op_domain = DOMAIN

        def _run(self, *inputs, head_dim=None):
            return (attention_reference(*inputs, int(head_dim)),)

    class Int8AttentionToU8(OpRun):
        op_domain = DOMAIN

        def _run(self, *inputs, head_dim=None):
            *attention, y_scale, y_zp = inputs
            return (quantize_u8(attention_reference(*attention, int(head_dim)), y_scale, y_zp),)

    def layernorm(name: str, quantized_out: bool) -> type:
        def _run(self, x, residual, gamma, beta, *rest, epsilon=None):
            out = layernorm_reference(x, residual, gamma, beta, epsilon, *rest)
            return tuple(out) if quantized_out else (out,)

        return type(name, (OpRun,), {"op_domain": DOMAIN, "_run": _run})

    def linear_norm(name: str, quantized_out: bool) -> type:
        def _run(self, x, x_scale, x_zp, row_ptr, block_col, values, w_scale, bias, residual,
                 gamma, beta, *rest, K=None, epsilon=None, activation=None):  # noqa: N803  # fmt: skip
            y = qlinear_reference(x, x_scale, x_zp, row_ptr, block_col, values, w_scale, bias,
                                  int(K))  # fmt: skip
            out = layernorm_reference(y, residual, gamma, beta, epsilon, *rest)
            return tuple(out) if quantized_out else (out,)

        return type(name, (OpRun,), {"op_domain": DOMAIN, "_run": _run})

    class EmbeddingsLayerNormToU8(OpRun):
        op_domain = DOMAIN

        def _run(self, *inputs, epsilon=None):
            *tables, gamma, beta, y_scale, y_zp = inputs
            return tuple(embeddings_reference(*tables, gamma, beta, epsilon, y_scale, y_zp))

    qlinears = [qlinear(n, out) for n, (_, out) in QLINEAR_OPS.items()]
    qlinears += [parts(n) for n in PARTS_OPS]
    norms = [layernorm(n, out) for n, out in LAYERNORM_OPS.items()]
    fused = [linear_norm(n, out) for n, (_, out) in LINEAR_NORM_OPS.items()]
    return [SparseMatMulInteger, *qlinears, Int8Attention, Int8AttentionToU8, *norms, *fused,
            EmbeddingsLayerNormToU8]  # fmt: skip
