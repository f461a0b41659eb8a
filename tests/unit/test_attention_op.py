"""``Int8Attention`` (issue 22): the spec's reference is the standard graph's int8 attention,
the rewrite replaces exactly that chain, and bad inputs are refused in one line.

The standard chain is built here as `export.int8_attention` writes it (Reshape, Transpose,
QuantizeLinear, MatMulInteger, Cast, Mul, Mul, Add(mask), Softmax, QuantizeLinear,
MatMulInteger, Cast, Mul, Transpose, Reshape). The C++ op's own results on every dispatch
path and under qemu are in test_kernels_exact.py.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from sparse_transfer.export.parity import ReferenceGraph
from sparse_transfer.export.sparse_graph import sparsify
from sparse_transfer.kernels import build, library, spec

B, S, H, D = 2, 11, 3, 8
SCALES = {"q": (0.05, 120), "k": (0.04, 128), "p": (1 / 255, 0), "v": (0.03, 128)}


def _node(op, inputs, output, **attrs):
    return helper.make_node(op, inputs, [output], name=f"attn/{output}", **attrs)


def _quant(x: str, role: str, out: str) -> list:
    return [_node("QuantizeLinear", [x, f"{role}_scale", f"{role}_zp"], out)]


def _standard_graph(score_op: str = "Mul", qk_scale: float | None = None) -> onnx.ModelProto:
    """The standard int8 attention over float q, k, v [B, S, H*D] and mask [B, 1, 1, S]."""
    inits = [numpy_helper.from_array(np.array([0, 0, -1, D], np.int64), "heads_shape"),
             numpy_helper.from_array(np.array([0, 0, H * D], np.int64), "merge_shape"),
             numpy_helper.from_array(np.array(1 / np.sqrt(D), np.float32), "score_mul")]  # fmt: skip
    for role, (scale, zp) in SCALES.items():
        inits += [numpy_helper.from_array(np.array(scale, np.float32), f"{role}_scale"),
                  numpy_helper.from_array(np.array(zp, np.uint8), f"{role}_zp")]  # fmt: skip
    qk = SCALES["q"][0] * SCALES["k"][0] if qk_scale is None else qk_scale
    inits += [numpy_helper.from_array(np.array(qk, np.float32), "qk_scale"),
              numpy_helper.from_array(np.array(SCALES["p"][0] * SCALES["v"][0], np.float32), "pv_scale")]  # fmt: skip
    nodes = []
    for role, perm in (("q", [0, 2, 1, 3]), ("k", [0, 2, 3, 1]), ("v", [0, 2, 1, 3])):
        nodes += [_node("Reshape", [role, "heads_shape"], f"{role}_r"),
                  _node("Transpose", [f"{role}_r"], f"{role}_t", perm=perm),
                  *_quant(f"{role}_t", role, f"{role}_q")]  # fmt: skip
    nodes += [
        _node("MatMulInteger", ["q_q", "k_q", "q_zp", "k_zp"], "scores_i"),
        _node("Cast", ["scores_i"], "scores_f", to=TensorProto.FLOAT),
        _node("Mul", ["scores_f", "qk_scale"], "scores_s"),
        _node(score_op, ["scores_s", "score_mul"], "scores_m"),
        _node("Add", ["scores_m", "mask"], "scores_a"),
        _node("Softmax", ["scores_a"], "probs", axis=-1),
        *_quant("probs", "p", "probs_q"),
        _node("MatMulInteger", ["probs_q", "v_q", "p_zp", "v_zp"], "ctx_i"),
        _node("Cast", ["ctx_i"], "ctx_f", to=TensorProto.FLOAT),
        _node("Mul", ["ctx_f", "pv_scale"], "ctx_s"),
        _node("Transpose", ["ctx_s"], "ctx_t", perm=[0, 2, 1, 3]),
        _node("Reshape", ["ctx_t", "merge_shape"], "context"),
    ]
    dims = {"q": ["batch", "seq", H * D], "mask": ["batch", 1, 1, "seq"]}
    inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, dims.get(n, dims["q"]))
              for n in ("q", "k", "v", "mask")]  # fmt: skip
    graph = helper.make_graph(nodes, "attention", inputs,
                              [helper.make_tensor_value_info("context", TensorProto.FLOAT, dims["q"])], inits)  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


def _feeds(seed: int, spread: float = 1.0) -> dict:
    rng = np.random.default_rng(seed)
    feeds = {r: (rng.standard_normal((B, S, H * D)) * spread).astype(np.float32) for r in "qkv"}
    mask = np.zeros((B, 1, 1, S), np.float32)
    mask[1, ..., S - 4 :] = np.finfo(np.float32).min
    return {**feeds, "mask": mask}


def _reference_inputs(feeds: dict, qk_scale: float | None = None) -> list:
    """The op's inputs for the standard graph's feeds: q, k, v quantized as the graph does."""
    q, k, v = (spec.quantize_u8(feeds[r], *SCALES[r]) for r in "qkv")
    u8 = {r: np.array(SCALES[r][1], np.uint8) for r in SCALES}
    qk = SCALES["q"][0] * SCALES["k"][0] if qk_scale is None else qk_scale
    f32 = lambda x: np.array(x, np.float32)  # noqa: E731
    return [q, u8["q"], k, u8["k"], v, u8["v"], feeds["mask"], f32(qk), f32(1 / np.sqrt(D)),
            f32(SCALES["p"][0]), u8["p"], f32(SCALES["p"][0] * SCALES["v"][0])]  # fmt: skip


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_reference_is_the_standard_graph_bit_for_bit(seed):
    """Under ONNX's reference evaluator both compute the same float32 steps: equal bits."""
    feeds = _feeds(seed, spread=3.0)
    (want,) = ReferenceGraph(_standard_graph())(feeds).values()
    got = spec.attention_reference(*_reference_inputs(feeds), D)
    assert got.shape == (B, S, H * D)
    np.testing.assert_array_equal(got, want)


def test_reference_matches_onnx_runtimes_standard_graph_exactly_when_softmax_is_exact():
    """With scores 1000 apart the softmax is one-hot (1/n on ties) in any float arithmetic,
    so ONNX Runtime's own kernels must give the reference's bits: the integer parts agree."""
    feeds = _feeds(4, spread=3.0)
    session = ort.InferenceSession(_standard_graph(qk_scale=1000.0).SerializeToString(),
                                   providers=["CPUExecutionProvider"])  # fmt: skip
    (want,) = session.run(None, feeds)
    np.testing.assert_array_equal(
        spec.attention_reference(*_reference_inputs(feeds, 1000.0), D), want
    )


def test_rewrite_fuses_the_chain_with_the_same_numbers():
    model = _standard_graph()
    fused = onnx.ModelProto()
    fused.CopyFrom(model)
    report = sparsify(fused)
    ops = [n.op_type for n in fused.graph.node]
    assert report["fusions"]["attention"] == 1
    assert ops.count(spec.ATTENTION_OP) == 1 and "MatMulInteger" not in ops
    assert ops.count("QuantizeLinear") == 3 and "Softmax" not in ops and "Transpose" not in ops
    onnx.checker.check_model(fused, full_check=True)
    node = next(n for n in fused.graph.node if n.op_type == spec.ATTENTION_OP)
    assert next(a.i for a in node.attribute if a.name == "head_dim") == D
    feeds = _feeds(5, spread=2.0)
    (want,) = ReferenceGraph(model)(feeds).values()
    (got,) = ReferenceGraph(fused)(feeds).values()
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("change", ["div_scaling", "mask_read_twice", "no_fusion_asked"])
def test_rewrite_leaves_anything_else_standard(change):
    model = _standard_graph(score_op="Div" if change == "div_scaling" else "Mul")
    if change == "mask_read_twice":  # an intermediate read elsewhere cannot vanish
        model.graph.output.append(helper.make_tensor_value_info("probs", TensorProto.FLOAT, None))
    report = sparsify(model, fuse_attention=change != "no_fusion_asked")
    ops = [n.op_type for n in model.graph.node]
    assert report["fusions"]["attention"] == 0
    assert ops.count("MatMulInteger") == 2 and spec.ATTENTION_OP not in ops


@pytest.mark.parametrize(
    ("change", "message"),
    [("k_zp", "k and v zero points must be 128"), ("mask", "mask shape"),
     ("head_dim", "not a multiple of head_dim")],
)  # fmt: skip
def test_reference_refuses_bad_inputs(change, message):
    inputs = _reference_inputs(_feeds(6))
    head_dim = D
    if change == "k_zp":
        inputs[3] = np.array(0, np.uint8)
    elif change == "mask":
        inputs[6] = np.zeros((B, 1, S, S), np.float32)
    else:
        head_dim = 5
    with pytest.raises(ValueError, match=message):
        spec.attention_reference(*inputs, head_dim)


def _op_session(head_dim: int = D):
    if build.find_built() is None and build.find_compiler() is None:
        pytest.skip("no C++ compiler here: the native kernels cannot be built")
    names = ["q", "q_zero_point", "k", "k_zero_point", "v", "v_zero_point", "mask", "qk_scale",
             "score_mul", "p_scale", "p_zero_point", "pv_scale"]  # fmt: skip
    node = helper.make_node(spec.ATTENTION_OP, names, ["y"], domain=spec.DOMAIN, head_dim=head_dim)
    types = (
        [TensorProto.UINT8] * 6 + [TensorProto.FLOAT] * 4 + [TensorProto.UINT8, TensorProto.FLOAT]
    )
    inputs = [helper.make_tensor_value_info(n, t, None) for n, t in zip(names, types, strict=True)]
    graph = helper.make_graph(
        [node], "op", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)]
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid(spec.DOMAIN, 1)])  # fmt: skip
    model.ir_version = 8
    options = ort.SessionOptions()
    options.register_custom_ops_library(str(build.build()))
    session = ort.InferenceSession(model.SerializeToString(), options, ["CPUExecutionProvider"])
    return session, names


@pytest.mark.parametrize(
    ("change", "message"),
    [("k_zp", "k_zero_point and v_zero_point must be 128"), ("mask", "mask must have shape"),
     ("head_dim", "not a multiple of head_dim"), ("p_scale", "p_scale must be finite")],
)  # fmt: skip
def test_library_op_refuses_bad_inputs_in_one_line(change, message):
    session, names = _op_session(5 if change == "head_dim" else D)
    inputs = _reference_inputs(_feeds(7))
    if change == "k_zp":
        inputs[3] = np.array(3, np.uint8)
    elif change == "mask":
        inputs[6] = np.zeros((B, 1, S, S), np.float32)
    elif change == "p_scale":
        inputs[9] = np.array(np.nan, np.float32)
    with pytest.raises(Exception, match=message) as info:
        session.run(None, dict(zip(names, inputs, strict=True)))
    assert "\n" not in str(info.value).strip()
    assert library.kernel_status().available
