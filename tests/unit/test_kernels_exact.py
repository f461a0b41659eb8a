"""The native sparse int8 kernels, run by ONNX Runtime, compute exactly what spec.py says.

Integer outputs of ``SparseMatMulInteger`` equal ORT's ``MatMulInteger`` and the spec's
reference bit for bit; ``SparseQLinear*`` equal ``spec.qlinear_reference`` bit for bit
without GELU (the epilogue is the spec's float32 steps, multiply then add, no FMA). With GELU
the float erf may differ from scipy's in its last bits: float outputs stay within
``|y| * 2**-22 + 4 ulp`` (half the pre-activation times the erf error bound 2**-21, plus the
rounding of the products) and u8 outputs within one quantization step (a last-bit change can
cross a rounding boundary, never more). Every dispatch path this CPU has runs in a subprocess
(``SPARSE_TRANSFER_KERNELS_ISA``), and the AVX2 / SSE4.1 / scalar paths under qemu-user's
emulated Haswell and Nehalem (tests/integration/test_cross_cpu.py does the same for whole
deployments).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from sparse_transfer.kernels import build, library, spec
from tests.emulated_cpu import QEMU, emulated, venv_python

RUNNER = Path(__file__).with_name("kernels_runner.py")
PATHS = ("amx", "avx512vnni", "avx512bw", "avx2", "sse41", "scalar")


@pytest.fixture(scope="module")
def lib_path() -> str:
    if build.find_built() is None and build.find_compiler() is None:
        pytest.skip("no C++ compiler here: the native kernels cannot be built")
    return str(build.build())


def _weight(rng, n, k, density, block=False, low=-64, high=64) -> np.ndarray:
    """`block`: True for 1x4 blocks along K, or the int R for R x 4 blocks (R output rows)."""
    if block:
        rows = 1 if block is True else block
        keep = np.repeat(rng.random((-(-n // rows), -(-k // 4))) < density, rows, axis=0)[:n]
        mask = np.repeat(keep, 4, axis=1)[:, :k]
    else:
        mask = rng.random((n, k)) < density
    return (rng.integers(low, high + 1, (n, k)) * mask).astype(np.int8)


def _model(op: str, inputs: list, feeds: dict, out_type: int, **attrs) -> onnx.ModelProto:
    """One custom-op node; `inputs` are (name, array) with array None for graph inputs."""
    inits = [numpy_helper.from_array(a, name) for name, a in inputs if a is not None]
    graph_inputs = [
        helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(feeds[name].dtype),
                                      [None] * (feeds[name].ndim - 1) + [feeds[name].shape[-1]])
        for name, a in inputs if a is None
    ]  # fmt: skip
    node = helper.make_node(op, [n for n, _ in inputs], ["y"], domain=spec.DOMAIN, **attrs)
    graph = helper.make_graph([node], op, graph_inputs,
                              [helper.make_tensor_value_info("y", out_type, None)], inits)  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid(spec.DOMAIN, 1)])  # fmt: skip
    model.ir_version = 8  # readable by every supported ORT (1.17+)
    return model


def _packed_inputs(w: np.ndarray) -> list:
    p = spec.pack_block4(w)
    return [("row_ptr", p.row_ptr), ("block_col", p.block_col), ("values", p.values)]


def _matmul_case(rng, shape, n, density, zp, block=False, low=-64, high=64, a=None):
    k = shape[-1]
    w = _weight(rng, n, k, density, block, low, high)
    a = rng.integers(0, 256, shape).astype(np.uint8) if a is None else a
    zp_arr = np.array(zp, np.uint8)
    inputs = [("a", None), ("a_zero_point", zp_arr), *_packed_inputs(w)]
    model = _model(spec.MATMUL_OP, inputs, {"a": a}, TensorProto.INT32, K=k)
    return model, {"a": a}, {"y": spec.integer_matmul(a, zp, w)}, w


def _qlinear_case(
    rng, op, shape, n, density, activation, block=False, bias_spread=1.0, y_quant=(0.015, 100)
):
    in_u8, out_u8 = spec.QLINEAR_OPS[op]
    k = shape[-1]
    w = _weight(rng, n, k, density, block)
    x_scale, x_zp = np.array(0.02, np.float32), np.array(rng.integers(0, 256), np.uint8)
    x = (rng.integers(0, 256, shape).astype(np.uint8) if in_u8
         else (rng.standard_normal(shape) * 1.5).astype(np.float32))  # fmt: skip
    w_scale = (rng.random(n) * 0.01 + 0.001).astype(np.float32)
    bias = (rng.standard_normal(n) * bias_spread).astype(np.float32)
    inputs = [("x", None), ("x_scale", x_scale), ("x_zero_point", x_zp), *_packed_inputs(w),
              ("w_scale", w_scale), ("bias", bias)]  # fmt: skip
    y_scale = y_zp = None
    if out_u8:
        y_scale, y_zp = np.array(y_quant[0], np.float32), np.array(y_quant[1], np.uint8)
        inputs += [("y_scale", y_scale), ("y_zero_point", y_zp)]
    p = spec.pack_block4(w)
    args = (x, x_scale, x_zp, p.row_ptr, p.block_col, p.values, w_scale, bias, k)
    y = spec.qlinear_reference(*args, activation, y_scale, y_zp)
    expected = {"y": y}
    if activation == "gelu" and not out_u8:
        pre = np.abs(spec.qlinear_reference(*args, "none"))
        expected["tol"] = pre * 2.0**-22 + 4 * np.spacing(np.abs(y)) + 1e-30
    out_type = TensorProto.UINT8 if out_u8 else TensorProto.FLOAT
    return _model(op, inputs, {"x": x}, out_type, K=k, activation=activation), {"x": x}, expected


PART_QUANT = ((0.015, 100), (0.02, 128), (0.011, 37))  # each output's own y_scale, y_zp


def _parts_case(rng, shape, part_n, density, activation="none", block=False):
    """One ``SparseQLinearU8x3`` (three parts of `part_n` rows, each quantized its own way),
    its outputs concatenated into y; expected: ``spec.parts_reference``."""
    model, feeds, _ = _qlinear_case(rng, "SparseQLinearU8", shape, 3 * part_n, density,
                                    activation, block=block)  # fmt: skip
    node = model.graph.node[0]
    del model.graph.initializer[-2:]  # the single output's y_scale, y_zero_point
    quant = [(np.array(s, np.float32), np.array(z, np.uint8)) for s, z in PART_QUANT]
    names = [f"{kind}_{p}" for p in range(3) for kind in ("y_scale", "y_zero_point")]
    model.graph.initializer.extend(numpy_helper.from_array(a, name)
                                   for name, a in zip(names, (a for q in quant for a in q), strict=True))  # fmt: skip
    fused = helper.make_node("SparseQLinearU8x3", [*node.input[:8], *names],
                             ["y0", "y1", "y2"], domain=spec.DOMAIN)  # fmt: skip
    fused.attribute.extend(node.attribute)
    del model.graph.node[:]
    model.graph.node.extend([fused, helper.make_node("Concat", ["y0", "y1", "y2"], ["y"], axis=-1)])
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    args = [feeds["x"], *(inits[name] for name in node.input[1:8])]
    k = next(a.i for a in node.attribute if a.name == "K")
    want = spec.parts_reference(*args, k, activation, quant)
    return model, feeds, {"y": np.concatenate(want, axis=-1)}


def _attention_case(
    rng, b, s, heads, d, qk_scale, masked=0, tol=False, p_scale=1 / 255, q_zp=None, **qkv
):
    """One ``Int8Attention``; the last `masked` keys of batch 1 on are masked (finfo.min);
    `qkv` may give q, k or v (else random)."""
    width = heads * d
    q, k, v = (qkv[n] if n in qkv else rng.integers(0, 256, (b, s, width)).astype(np.uint8)
               for n in "qkv")  # fmt: skip
    mask = np.zeros((b, 1, 1, s), np.float32)
    if masked:
        mask[1:, ..., s - masked :] = np.finfo(np.float32).min
    q_zp = rng.integers(0, 256) if q_zp is None else q_zp
    scalars = {"q_zero_point": np.array(q_zp, np.uint8),
               "k_zero_point": np.array(128, np.uint8), "v_zero_point": np.array(128, np.uint8),
               "qk_scale": np.array(qk_scale, np.float32),
               "score_mul": np.array(0.125, np.float32), "p_scale": np.array(p_scale, np.float32),
               "p_zero_point": np.array(0, np.uint8), "pv_scale": np.array(3e-4, np.float32)}  # fmt: skip
    feeds = {"q": q, "k": k, "v": v, "mask": mask}
    order = ["q", "q_zero_point", "k", "k_zero_point", "v", "v_zero_point", "mask", "qk_scale",
             "score_mul", "p_scale", "p_zero_point", "pv_scale"]  # fmt: skip
    inputs = [(n, scalars.get(n)) for n in order]
    y = spec.attention_reference(*[feeds[n] if n in feeds else scalars[n] for n in order], d)
    expected = {"y": y}
    if tol:  # a probability on a rounding boundary: one step of one key moves a context value
        expected["tol"] = np.full(y.shape, 2 * 128 * 3e-4, np.float32)
    model = _model(spec.ATTENTION_OP, inputs, feeds, TensorProto.FLOAT, head_dim=d)
    return model, feeds, expected


def _attention_cases(rng) -> dict:
    """Exact cases make the softmax exact in any float arithmetic: scores so far apart
    (qk_scale 1000) that it is one-hot at the integer argmax (1/n on ties), every key equal
    (1/S each), or one key left unmasked; so they check the integer products bit for bit."""
    full = np.full((2, 24, 32), 255, np.uint8)

    def same_keys(s, width):
        return np.broadcast_to(
            rng.integers(0, 256, (1, 1, width)), (2 if s < 100 else 1, s, width)
        ).astype(np.uint8)

    def two_keys(q, k0, k1, v1):  # one head of 4 columns; key 0's value row is zero (128)
        def rows(a, b):
            return np.array([[[a] * 4, [b] * 4]], np.uint8)

        return {"q": rows(q, q), "k": rows(k0, k1), "v": rows(128, v1)}

    return {
        # p_scale below 2^-113: key 1 scores 82 below key 0, so its p = e^-82 (2.4e-36) is
        # 2.45 steps of p_scale and quantizes to 2; the softmax's exp floor (e^-80 reads 0,
        # to keep denormals out) must stay off there
        "attn_tiny_p_scale_keeps_e_minus_82": _attention_case(
            rng, 1, 2, 1, 4, 8.2, **two_keys(129, 138, 118, 200), p_scale=1e-36, q_zp=128
        ),
        "attn_onehot_ragged": _attention_case(rng, 2, 37, 3, 20, 1000.0, masked=9),
        "attn_onehot_odd_head_dim": _attention_case(rng, 2, 5, 2, 7, 1000.0),
        "attn_onehot_long": _attention_case(rng, 1, 150, 2, 64, 1000.0),
        "attn_tiles": _attention_case(rng, 2, 128, 2, 64, 2e-3, masked=40, tol=True),
        "attn_all_255": _attention_case(rng, 2, 24, 2, 16, 0.01, q=full, k=full, v=full),
        "attn_one_key_left": _attention_case(rng, 2, 33, 4, 8, 0.01, masked=32),
        "attn_tol_realistic": _attention_case(rng, 2, 64, 4, 16, 2e-3, masked=20, tol=True),
        # p / p_scale beyond int32: the top probability saturates to 255, never wraps to 0
        "attn_onehot_tiny_p_scale": _attention_case(rng, 2, 21, 2, 8, 1000.0, p_scale=1e-12),
        # every key scores alike, so p = 1 / S exactly; with these p_scales (1 / S) / p_scale
        # is 12.5000009 (rounds to 13) where (1 / S) * (1 / p_scale) reads 12.5 (to 12): the
        # softmax's multiplications must fall back to the divisions (VNNI head; tiles at 192)
        "attn_half_integer_3_keys": _attention_case(
            rng, 2, 3, 2, 16, 0.01, k=same_keys(3, 32), p_scale=0.026666665449738503
        ),
        "attn_half_integer_192_keys": _attention_case(
            rng, 1, 192, 2, 64, 0.01, k=same_keys(192, 128), p_scale=0.0004166666476521641
        ),
    }


def _attention_u8_case(rng, b, s, heads, d, qk_scale, y_scale, masked=0):
    """``Int8AttentionToU8`` beside ``Int8Attention -> QuantizeLinear`` (ONNX Runtime's own)
    in one graph whose output is ``|fused - pair|`` as float: all zeros when the op's
    quantized context has the pair's bits (a tiny y_scale saturates most values)."""
    model, feeds, _ = _attention_case(rng, b, s, heads, d, qk_scale, masked=masked)
    node = model.graph.node[0]
    model.graph.initializer.extend([
        numpy_helper.from_array(np.array(y_scale, np.float32), "y_scale"),
        numpy_helper.from_array(np.array(130, np.uint8), "y_zero_point")])  # fmt: skip
    nodes = [
        helper.make_node("Int8AttentionToU8", [*node.input, "y_scale", "y_zero_point"],
                         ["fused"], domain=spec.DOMAIN, head_dim=d),
        helper.make_node(spec.ATTENTION_OP, list(node.input), ["ctx"], domain=spec.DOMAIN,
                         head_dim=d),
        helper.make_node("QuantizeLinear", ["ctx", "y_scale", "y_zero_point"], ["pair"]),
        *[helper.make_node("Cast", [t], [f"{t}_f"], to=TensorProto.FLOAT) for t in ("fused", "pair")],
        helper.make_node("Sub", ["fused_f", "pair_f"], ["d"]),
        helper.make_node("Abs", ["d"], ["y"]),
    ]  # fmt: skip
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return model, feeds, {"y": np.zeros((b, s, heads * d), np.float32)}


def _layernorm_case(rng, shape, quantized: bool, gamma_scale=1.0, beta=None):
    """One ``ResidualLayerNorm*``; the ToU8 case's graph returns only the uint8 output. With
    `beta` given, gamma is 0: the normalised value is exactly beta."""
    n = shape[-1]
    x, res = ((rng.standard_normal(shape) * 3 + 1).astype(np.float32) for _ in range(2))
    gamma = (rng.random(n) + 0.5) * gamma_scale if beta is None else np.zeros(n)
    beta = rng.standard_normal(n) if beta is None else beta
    consts = [("gamma", gamma.astype(np.float32)), ("beta", beta.astype(np.float32))]
    args = [x, res, consts[0][1], consts[1][1], 1e-12]
    if quantized:
        consts += [
            ("y_scale", np.array(LN_Y_SCALE, np.float32)),
            ("y_zero_point", np.array(120, np.uint8)),
        ]
        args += [consts[2][1], consts[3][1]]
    inputs = [("x", None), ("residual", None), *consts]
    op = "ResidualLayerNormToU8" if quantized else "ResidualLayerNorm"
    model = _model(op, inputs, {"x": x, "residual": res},
                   TensorProto.UINT8 if quantized else TensorProto.FLOAT, epsilon=1e-12)  # fmt: skip
    out = spec.layernorm_reference(*args)
    if quantized:
        node = model.graph.node[0]
        node.output[:] = ["y_float", "y"]
        return model, {"x": x, "residual": res}, {"y": out[1]}
    # float32 lane sums vs numpy's pairwise ones: a few ulp of the normalised value
    return model, {"x": x, "residual": res}, {"y": out, "tol": (np.abs(out) + 1) * 2e-6}


LN_Y_SCALE = 0.03


def _embeddings_case(rng, batch, seq, n, quantized: bool):
    """``EmbeddingsLayerNormToU8`` on random uint8-coded tables: negative ids (Gather's from
    the end), position ids one row shared by the batch; the uint8 output, or the float one."""
    tables = {"word": 50, "type": 2, "position": 40}
    ids = {
        "input_ids": rng.integers(-50, 50, (batch, seq)),
        "token_type_ids": rng.integers(0, 2, (batch, seq)),
        "position_ids": np.arange(seq)[None, :],
    }
    feeds = {k: v.astype(np.int64) for k, v in ids.items()}
    consts, args = [], list(feeds.values())
    for name, rows in tables.items():
        table = [(name, rng.integers(0, 256, (rows, n)).astype(np.uint8)),
                 (f"{name}_scale", np.array(rng.random() * 0.02 + 0.001, np.float32)),
                 (f"{name}_zero_point", np.array(rng.integers(100, 156), np.uint8))]  # fmt: skip
        consts += table
        args += [a for _, a in table]
    consts += [("gamma", (rng.random(n) + 0.5).astype(np.float32)),
               ("beta", rng.standard_normal(n).astype(np.float32)),
               ("y_scale", np.array(LN_Y_SCALE, np.float32)),
               ("y_zero_point", np.array(120, np.uint8))]  # fmt: skip
    inputs = [(k, None) for k in feeds] + consts
    model = _model(spec.EMBEDDINGS_OP, inputs, feeds, TensorProto.UINT8 if quantized
                   else TensorProto.FLOAT, epsilon=1e-12)  # fmt: skip
    gamma, beta, y_scale, y_zp = (a for _, a in consts[9:])
    y, yq = spec.embeddings_reference(*args, gamma, beta, 1e-12, y_scale, y_zp)
    node = model.graph.node[0]
    node.output[:] = ["y_float", "y"] if quantized else ["y", "y_u8"]
    if quantized:
        return model, feeds, {"y": yq}
    return model, feeds, {"y": y, "tol": (np.abs(y) + 1) * 2e-6}


def _half_integer_betas(n: int) -> np.ndarray:
    """n floats v near (k + 1/2) * LN_Y_SCALE where v / LN_Y_SCALE and v * (1 / LN_Y_SCALE)
    round to different integers (the kernels' multiplication must fall back to the division)."""
    ys, f = np.float32(LN_Y_SCALE), np.float32
    found = []
    for k in range(-120, 130):
        v = f(f(k + 0.5) * ys)
        for step in range(-2, 3):
            w = v
            for _ in range(abs(step)):
                w = np.nextafter(w, f(np.sign(step) * 9))
            if np.rint(w / ys) != np.rint(w * (f(1) / ys)):
                found.append(w)
    assert len(found) >= n
    return np.array(found[:n], np.float32)


def _linear_norm_case(rng, op, shape, n, density, block=False):
    """One ``SparseQLinear*LayerNorm*`` beside the two ops it fuses, in one graph whose output
    is ``|y_fused - y_two_ops|`` (+ the same for the uint8 output): all zeros when the fused
    op gives the two ops' bits. Shapes of one token tile take the op's two-pass path, several
    tiles its tile-per-task path (on a host with no more cores than tiles)."""
    in_u8, quantized = spec.LINEAR_NORM_OPS[op]
    linear_op = "SparseQLinearFromU8" if in_u8 else "SparseQLinear"
    model, feeds, _ = _qlinear_case(rng, linear_op, shape, n, density, "none", block=block)
    linear = model.graph.node[0]
    res = (rng.standard_normal((*shape[:-1], n)) * 3).astype(np.float32)
    tail = [("gamma", (rng.random(n) + 0.5).astype(np.float32)),
            ("beta", rng.standard_normal(n).astype(np.float32))]  # fmt: skip
    if quantized:
        tail += [("y_scale", np.array(0.03, np.float32)), ("y_zero_point", np.array(120, np.uint8))]
    model.graph.initializer.extend(numpy_helper.from_array(a, name) for name, a in tail)
    model.graph.input.append(helper.make_tensor_value_info(
        "residual", TensorProto.FLOAT, [None] * (res.ndim - 1) + [n]))  # fmt: skip
    names = [name for name, _ in tail]
    outs = lambda tag: [f"{tag}_f", f"{tag}_q"] if quantized else [f"{tag}_f"]  # noqa: E731
    k = next(a.i for a in linear.attribute if a.name == "K")
    norm = "ResidualLayerNormToU8" if quantized else "ResidualLayerNorm"
    nodes = [
        helper.make_node(op, [*linear.input, "residual", *names], outs("fused"),
                         domain=spec.DOMAIN, K=k, epsilon=1e-12),
        helper.make_node(linear_op, list(linear.input), ["lin"], domain=spec.DOMAIN, K=k),
        helper.make_node(norm, ["lin", "residual", *names], outs("pair"), domain=spec.DOMAIN,
                         epsilon=1e-12),
        helper.make_node("Sub", ["fused_f", "pair_f"], ["d_f"]),
        helper.make_node("Abs", ["d_f"], ["y" if not quantized else "a_f"]),
    ]  # fmt: skip
    if quantized:
        nodes += [helper.make_node("Cast", [f"{t}_q"], [f"{t}_qf"], to=TensorProto.FLOAT)
                  for t in ("fused", "pair")]  # fmt: skip
        nodes += [helper.make_node("Sub", ["fused_qf", "pair_qf"], ["d_q"]),
                  helper.make_node("Abs", ["d_q"], ["a_q"]),
                  helper.make_node("Add", ["a_f", "a_q"], ["y"])]  # fmt: skip
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    feeds = {**feeds, "residual": res}
    return model, feeds, {"y": np.zeros((*shape[:-1], n), np.float32)}


def _cases(rng) -> dict:
    ones = np.full((64, 64), 255, np.uint8)
    zero_rows = _weight(rng, 24, 40, 0.6)
    zero_rows[[0, 5, 6, 23]] = 0
    zero_rows[:, [0, 1, 2, 3, 17, 39]] = 0
    cases = {
        "ragged": _matmul_case(rng, (5, 37), 23, 0.5, 7),
        "k_below_4": _matmul_case(rng, (70, 3), 17, 0.7, 128),
        "all_255_7bit": _matmul_case(rng, (64, 64), 16, 1.0, 0, low=64, high=64, a=ones),
        "all_255_minus64": _matmul_case(rng, (64, 64), 16, 1.0, 0, low=-64, high=-64, a=ones),
        "wide_weights": _matmul_case(rng, (9, 40), 33, 0.5, 3, low=-128, high=127),
        "dense": _matmul_case(rng, (33, 96), 48, 1.0, 250),
        "empty_weight": _matmul_case(rng, (20, 30), 20, 0.0, 9),
        "batch_3d": _matmul_case(rng, (2, 67, 52), 36, 0.3, 128),
        "block4_90": _matmul_case(rng, (130, 128), 80, 0.1, 5, block=True),
        "unstructured_90": _matmul_case(rng, (129, 256), 70, 0.1, 77),
        # a tile's tokens in 1, 2 or 3 groups of 16 (the row kernels compute only those)
        "unstructured_m20": _matmul_case(rng, (20, 256), 70, 0.1, 77),
        "unstructured_m47": _matmul_case(rng, (47, 200), 40, 0.2, 3),
        "block4_m27": _matmul_case(rng, (27, 128), 80, 0.1, 5, block=True),
        "block4_m40": _matmul_case(rng, (40, 96), 50, 0.3, 200, block=True),
        "block4_m1": _matmul_case(rng, (1, 128), 33, 0.2, 9, block=True),
        # 16 output rows sharing their blocks: the amx path's tiles (several chunks of 16
        # blocks, a partial last chunk, N and K ragged, 1-64 tokens, full-range weights)
        "rows16_90": _matmul_case(rng, (130, 768), 96, 0.1, 5, block=16),
        "rows16_ragged": _matmul_case(rng, (77, 301), 61, 0.3, 200, block=16, low=-128, high=127),
        "rows16_m1": _matmul_case(rng, (1, 256), 48, 0.2, 9, block=16),
        "rows16_m27": _matmul_case(rng, (27, 512), 32, 0.15, 77, block=16),
        "dense_wide": _matmul_case(rng, (70, 192), 40, 1.0, 13, low=-128, high=127),
    }
    a = rng.integers(0, 256, (40, 40)).astype(np.uint8)
    inputs = [("a", None), ("a_zero_point", np.array(11, np.uint8)), *_packed_inputs(zero_rows)]
    cases["zero_rows_cols"] = (_model(spec.MATMUL_OP, inputs, {"a": a}, TensorProto.INT32, K=40),
                               {"a": a}, {"y": spec.integer_matmul(a, 11, zero_rows)}, zero_rows)  # fmt: skip
    for op in spec.QLINEAR_OPS:
        for act in spec.ACTIVATIONS:
            cases[f"{op}_{act}"] = _qlinear_case(rng, op, (3, 45, 50), 40, 0.4, act)
    cases["SparseQLinearToU8_gelu_block"] = _qlinear_case(
        rng, "SparseQLinearToU8", (70, 64), 96, 0.2, "gelu", block=True
    )
    # query/key/value as one op: unstructured (quads), 1x4 blocks over several token tiles,
    # 16-row blocks (AMX tiles), GELU (one quantization step, as the other GELU cases)
    cases["parts_x3"] = _parts_case(rng, (3, 45, 50), 48, 0.4)
    cases["parts_x3_block_tiles"] = _parts_case(rng, (150, 64), 32, 0.2, block=True)
    cases["parts_x3_rows16"] = _parts_case(rng, (2, 40, 256), 64, 0.2, block=16)
    cases["parts_x3_gelu"] = _parts_case(rng, (1, 20, 72), 16, 0.3, "gelu")
    cases["SparseQLinear_rows16"] = _qlinear_case(
        rng, "SparseQLinear", (2, 45, 256), 80, 0.2, "none", block=16
    )
    # pre-activations over [-20, 20]: every interval of the vector erf's table, and past it
    cases["SparseQLinear_gelu_wide"] = _qlinear_case(
        rng, "SparseQLinear", (2, 40, 72), 160, 0.3, "gelu", bias_spread=7.0
    )
    # y / y_scale beyond int32 (y_scale 1e-9): 0 / 255 as QuantizeLinear, never wrapped
    cases["SparseQLinearToU8_saturating"] = _qlinear_case(
        rng, "SparseQLinearToU8", (40, 64), 48, 0.3, "none", bias_spread=7.0, y_quant=(1e-9, 3)
    )
    cases["ln_ragged"] = _layernorm_case(rng, (3, 7, 37), False)
    cases["ln_hidden_768"] = _layernorm_case(rng, (40, 768), False)
    cases["ln_u8_ragged"] = _layernorm_case(rng, (5, 50), True)
    cases["ln_u8_hidden_384"] = _layernorm_case(rng, (2, 30, 384), True)
    # y / y_scale beyond int32 (gamma 1e9): saturates to 0 / 255 as QuantizeLinear, never wraps
    cases["ln_u8_saturating"] = _layernorm_case(rng, (3, 100), True, gamma_scale=1e9)
    cases["ln_u8_half_integer"] = _layernorm_case(rng, (3, 64), True, beta=_half_integer_betas(64))
    cases["ln_embeddings_u8"] = _embeddings_case(rng, 3, 20, 72, True)
    cases["ln_embeddings_float"] = _embeddings_case(rng, 2, 17, 40, False)
    for i, op in enumerate(spec.LINEAR_NORM_OPS):  # one tile, then many; ragged N, block4
        cases[f"linear_norm_{op}_one_tile"] = _linear_norm_case(rng, op, (1, 9, 52), 37, 0.4)
        cases[f"linear_norm_{op}_tiles"] = _linear_norm_case(
            rng, op, (3, 150, 64), 96 + 8 * i, 0.2, block=i % 2 == 1
        )
    cases["attn_u8_realistic"] = _attention_u8_case(rng, 2, 64, 4, 16, 2e-3, 0.01, masked=20)
    cases["attn_u8_odd_head_dim"] = _attention_u8_case(rng, 2, 37, 3, 20, 2e-3, 0.02, masked=9)
    cases["attn_u8_long_saturating"] = _attention_u8_case(rng, 1, 150, 2, 64, 2e-3, 1e-9)
    cases["attn_u8_tiles"] = _attention_u8_case(rng, 2, 120, 2, 32, 2e-3, 0.01, masked=7)
    return {**cases, **_attention_cases(rng)}


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    root = tmp_path_factory.mktemp("kernel-cases")
    built = _cases(np.random.default_rng(22))
    for name, (model, feeds, expected, *_) in built.items():
        (root / name).mkdir()
        onnx.save(model, str(root / name / "model.onnx"))
        np.savez(root / name / "inputs.npz", **feeds)
        np.savez(root / name / "expected.npz", **expected)
    return root, built


def test_reference_equals_ort_matmul_integer(cases):
    """The spec's integer reference is ORT's own MatMulInteger (natively, exact here)."""
    _, built = cases
    for name, case in built.items():
        if len(case) != 4:
            continue
        _, feeds, expected, w = case
        a = feeds["a"]
        zp = int(onnx.numpy_helper.to_array(case[0].graph.initializer[0]))
        node = helper.make_node("MatMulInteger", ["a", "b", "a_zp", "b_zp"], ["y"])
        graph = helper.make_graph(
            [node], "mmi", [helper.make_tensor_value_info("a", TensorProto.UINT8, None)],
            [helper.make_tensor_value_info("y", TensorProto.INT32, None)],
            [numpy_helper.from_array(np.ascontiguousarray(w.T), "b"),
             numpy_helper.from_array(np.array(zp, np.uint8), "a_zp"),
             numpy_helper.from_array(np.array(0, np.int8), "b_zp")])  # fmt: skip
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        session = ort.InferenceSession(
            model.SerializeToString(), providers=["CPUExecutionProvider"]
        )
        (got,) = session.run(None, {"a": a})
        np.testing.assert_array_equal(got, expected["y"], err_msg=name)


def _run(
    lib_path: str,
    cases_dir: Path,
    isa: str | None,
    cpu: str | None = None,
    save: Path | None = None,
) -> dict:
    command = [venv_python(), str(RUNNER), lib_path, str(cases_dir),
               *([str(save)] if save else [])]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != library.ISA_ENV}
    command, env = emulated(command, cpu, env)
    if isa:
        env[library.ISA_ENV] = isa
    done = subprocess.run(command, capture_output=True, text=True, timeout=900, env=env,
                          check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _check(report: dict, built: dict, isa: str) -> None:
    assert report["isa"] == isa
    assert set(report["cases"]) == set(built)
    for name, got in report["cases"].items():
        expected = built[name][2]
        assert got["shape"] == list(expected["y"].shape), name
        assert got["dtype"] == str(expected["y"].dtype), name
        if got["dtype"] == "uint8" and name.startswith("ln_"):  # last-bit sums: rare steps
            assert got["max_abs"] <= 1 and got["differ"] <= 0.01 * expected["y"].size, (name, got)
        elif got["dtype"] == "uint8" and name.endswith(("gelu", "gelu_block")):
            assert got["max_abs"] <= 1, (name, got)  # one step where float rounding differs
        elif "tol" in expected:
            assert got["max_over_tol"] <= 1.0, (name, got)
            if name.startswith("attn_"):  # boundary cases are rare
                assert got["differ"] <= 0.02 * expected["y"].size, (name, got)
        else:
            assert got["differ"] == 0, (name, got)  # exact


def _native_paths() -> list[str]:
    status = library.kernel_status()
    best = status.isa or "scalar"
    return list(PATHS[PATHS.index(best) :])


@pytest.mark.parametrize("isa", PATHS)
def test_every_native_path_equals_the_reference(lib_path, cases, isa):
    if isa not in _native_paths():
        pytest.skip(f"this CPU has no {isa}")
    root, built = cases
    _check(_run(lib_path, root, isa), built, isa)


def test_amx_attention_gives_the_vnni_paths_bits(lib_path, cases, tmp_path):
    """On an AMX host the attention's products, and the Linears the planner puts on tiles,
    run on AMX; the rest is the VNNI path's, so every case, the realistic attention ones
    included, has the same bits."""
    if "amx" not in _native_paths():
        pytest.skip("this CPU (or this kernel) gives no AMX tiles")
    root, built = cases
    for isa in ("amx", "avx512vnni"):
        (tmp_path / isa).mkdir()
        _run(lib_path, root, isa, save=tmp_path / isa)
    for name in built:
        amx, vnni = (np.load(tmp_path / isa / f"{name}.npy") for isa in ("amx", "avx512vnni"))
        np.testing.assert_array_equal(amx, vnni, err_msg=name)


def test_amx_planner_puts_row_blocks_and_dense_weights_on_tiles(lib_path, cases, monkeypatch):
    """What the cases above run on: on an AMX host the 16-row block cases take the tiles of
    their kept columns, dense and scattered weights the expanded tiles (so the amx path's
    exactness covers both: ragged K, 1-64 tokens, several tiles, zero rows and columns, every
    fused op), 90% 1x4 blocks and 95% scattered weights stay on VNNI; a path without AMX never
    plans tiles."""
    if "amx" not in _native_paths():
        pytest.skip("this CPU (or this kernel) gives no AMX tiles")
    _, built = cases

    def form(w: np.ndarray) -> str:
        p = spec.pack_block4(w)
        return library.weight_form(Path(lib_path), p.row_ptr, p.block_col, p.values, w.shape[1])

    forms = {name: form(built[name][3]) for name in (
        "rows16_90", "rows16_ragged", "rows16_m1", "rows16_m27", "dense_wide", "block4_90",
        "unstructured_90", "ragged", "zero_rows_cols", "unstructured_m20", "unstructured_m47",
        "batch_3d", "wide_weights")}  # fmt: skip
    assert forms == {"rows16_90": "amx", "rows16_ragged": "amx", "rows16_m1": "amx",
                     "rows16_m27": "amx", "dense_wide": "amx-expanded", "block4_90": "blocks",
                     "unstructured_90": "amx-expanded", "ragged": "amx-expanded",
                     "zero_rows_cols": "amx-expanded", "unstructured_m20": "amx-expanded",
                     "unstructured_m47": "amx-expanded", "batch_3d": "amx-expanded",
                     "wide_weights": "amx-expanded"}  # fmt: skip
    rng = np.random.default_rng(3)  # BERT-base's shapes: 16x4 and scattered 90% on tiles
    for block, density, expected in ((16, 0.1, "amx"), (True, 0.1, "blocks"),
                                     (False, 0.1, "amx-expanded"), (False, 0.05, "quads")):  # fmt: skip
        assert form(_weight(rng, 768, 768, density, block=block)) == expected, (block, density)
    monkeypatch.setenv(library.ISA_ENV, "avx512vnni")
    assert form(built["rows16_90"][3]) == "blocks"
    assert form(built["dense_wide"][3]) == "blocks"


def test_weight_form_reports_a_malformed_weight(lib_path):
    """PackWeight's checks, through the form probe: a row_ptr that overshoots nnzb and comes
    back (it used to be read past block_col before the decrease was seen)."""
    with pytest.raises(ValueError, match=r"stay within nnzb = 1, got 2 after 0"):
        library.weight_form(Path(lib_path), np.array([0, 2, 1], np.int32),
                            np.array([0], np.int32), np.zeros(4, np.int8), 8)  # fmt: skip
    with pytest.raises(ValueError, match="values must be int8"):  # sizes checked, not assumed
        library.weight_form(Path(lib_path), np.array([0, 1], np.int32),
                            np.array([0], np.int32), np.zeros(3, np.int8), 8)  # fmt: skip


@pytest.mark.parametrize(("cpu", "isa"), [("Haswell", None), ("Nehalem", None),
                                          ("Nehalem", "scalar")])  # fmt: skip
def test_emulated_cpus_equal_the_reference(lib_path, cases, cpu, isa):
    if QEMU is None or platform.machine() != "x86_64":
        pytest.skip("qemu-x86_64 not installed (make install adds qemu-user where it can)")
    root, built = cases
    _check(_run(lib_path, root, isa, cpu), built, isa or {"Haswell": "avx2"}.get(cpu, "sse41"))


OLD_ORT_ENV = "SPARSE_TRANSFER_TEST_OLD_ORT"
# Where `make install` puts it (the Makefile's OLD_ORT_DIR, inside the venv).
OLD_ORT_DEFAULT = Path(sys.prefix) / "old-onnxruntime"


def test_oldest_supported_onnxruntime(lib_path, cases):
    """The library on the oldest ORT it supports (1.17: C API 17), installed aside by ``make
    install`` (``pip install --no-deps --target DIR onnxruntime==1.17.3 'numpy<2'``) or in the
    folder this variable names."""
    old = os.environ.get(OLD_ORT_ENV) or str(OLD_ORT_DEFAULT)
    if not Path(old, "onnxruntime").is_dir():
        pytest.skip(f"no older ORT in {old} (make install puts 1.17.3 there; or set {OLD_ORT_ENV})")
    root, built = cases
    env = {**os.environ, "PYTHONPATH": old}
    env.pop(library.ISA_ENV, None)
    python = str(Path(sys.prefix) / "bin" / "python")
    version = subprocess.run([python, "-c", "import onnxruntime; print(onnxruntime.__version__)"],
                             capture_output=True, text=True, env=env, check=True).stdout.strip()  # fmt: skip
    assert library._version_tuple(version) >= library.MIN_ORT
    done = subprocess.run([python, str(RUNNER), lib_path, str(root)], capture_output=True,
                          text=True, timeout=600, env=env, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    _check(json.loads(done.stdout.strip().splitlines()[-1]), built, _native_paths()[0])
