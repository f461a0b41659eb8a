"""The sparse op contract: 1x4 block packing is exact and the numpy ops match ONNX's own."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from sparse_transfer.export.parity import ReferenceGraph
from sparse_transfer.kernels import spec


def _sparse_int8(rng, n, k, density):
    w = rng.integers(-63, 64, size=(n, k)).astype(np.int8)
    w[rng.random((n, k)) >= density] = 0
    return w


@pytest.mark.parametrize("n,k,density", [(5, 7, 0.3), (16, 32, 0.0), (3, 9, 1.0), (1, 1, 1.0)])
def test_pack_block4_round_trips_exactly(n, k, density):
    w = _sparse_int8(np.random.default_rng(0), n, k, density)
    packed = spec.pack_block4(w)
    back = spec.unpack_block4(packed.row_ptr, packed.block_col, packed.values, packed.k)
    assert back.dtype == np.int8 and np.array_equal(back, w)
    blocks = np.zeros((n, -(-k // 4) * 4), np.int8)
    blocks[:, :k] = w
    kept = blocks.reshape(n, -1, 4).any(axis=2)
    assert packed.block_col.size == int(kept.sum())
    assert packed.block_density == pytest.approx(kept.mean())


def test_pack_refuses_a_float_weight():
    with pytest.raises(ValueError, match="int8"):
        spec.pack_block4(np.zeros((2, 4), np.float32))


def _graph(node, inputs, output, initializers):
    return helper.make_model(
        helper.make_graph([node], "g", inputs, [output], initializers),
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(spec.DOMAIN, 1)],
    )


def test_sparse_matmul_integer_equals_matmul_integer():
    rng = np.random.default_rng(1)
    w = _sparse_int8(rng, 6, 11, 0.2)
    a = rng.integers(0, 256, size=(2, 3, 11)).astype(np.uint8)
    p = spec.pack_block4(w)
    inits = [
        numpy_helper.from_array(np.array(7, np.uint8), "zp"),
        numpy_helper.from_array(p.row_ptr, "row_ptr"),
        numpy_helper.from_array(p.block_col, "block_col"),
        numpy_helper.from_array(p.values, "values"),
    ]
    node = helper.make_node(
        spec.MATMUL_OP, ["a", "zp", "row_ptr", "block_col", "values"], ["y"],
        domain=spec.DOMAIN, K=11,
    )  # fmt: skip
    model = _graph(
        node,
        [helper.make_tensor_value_info("a", TensorProto.UINT8, None)],
        helper.make_tensor_value_info("y", TensorProto.INT32, None),
        inits,
    )
    (got,) = ReferenceEvaluator(model, new_ops=spec.reference_ops()).run(None, {"a": a})
    dense = helper.make_model(
        helper.make_graph(
            [helper.make_node("MatMulInteger", ["a", "wt", "zp", "wzp"], ["y"])],
            "d",
            [helper.make_tensor_value_info("a", TensorProto.UINT8, None)],
            [helper.make_tensor_value_info("y", TensorProto.INT32, None)],
            [
                numpy_helper.from_array(np.ascontiguousarray(w.T), "wt"),
                numpy_helper.from_array(np.array(7, np.uint8), "zp"),
                numpy_helper.from_array(np.array(0, np.int8), "wzp"),
            ],
        ),
        opset_imports=[helper.make_opsetid("", 17)],
    )
    import onnxruntime as ort

    (want,) = ort.InferenceSession(dense.SerializeToString()).run(None, {"a": a})
    assert got.dtype == np.int32 and np.array_equal(got, want)


def test_qlinear_reference_is_quantize_matmulinteger_scale_bias_gelu():
    rng = np.random.default_rng(2)
    w = _sparse_int8(rng, 8, 12, 0.3)
    x = rng.normal(size=(4, 12)).astype(np.float32)
    x_scale, x_zp = np.float32(0.02), np.uint8(128)
    w_scale = rng.uniform(0.001, 0.01, 8).astype(np.float32)
    bias = rng.normal(size=8).astype(np.float32)
    p = spec.pack_block4(w)
    y = spec.qlinear_reference(
        x, x_scale, x_zp, p.row_ptr, p.block_col, p.values, w_scale, bias, 12, "gelu"
    )
    xq = np.clip(np.rint(x / x_scale) + 128, 0, 255)
    acc = (xq - 128) @ w.T.astype(np.float64)
    pre = acc.astype(np.float32) * (x_scale * w_scale) + bias
    from scipy.special import erf

    assert np.allclose(y, 0.5 * pre * (1 + erf(pre / np.sqrt(2))), atol=1e-6)
    yq = spec.qlinear_reference(
        x, x_scale, x_zp, p.row_ptr, p.block_col, p.values, w_scale, bias, 12, "none",
        np.float32(0.05), np.uint8(3),
    )  # fmt: skip
    assert yq.dtype == np.uint8 and np.array_equal(yq, spec.quantize_u8(pre, 0.05, 3))


def test_parity_reference_graph_evaluates_the_sparse_ops():
    rng = np.random.default_rng(3)
    w = _sparse_int8(rng, 4, 8, 0.5)
    p = spec.pack_block4(w)
    arrays = {
        "x_scale": np.array(0.1, np.float32), "x_zp": np.array(100, np.uint8),
        "row_ptr": p.row_ptr, "block_col": p.block_col, "values": p.values,
        "w_scale": np.full(4, 0.01, np.float32), "bias": np.zeros(4, np.float32),
    }  # fmt: skip
    node = helper.make_node(
        "SparseQLinear", ["x", *arrays], ["y"], domain=spec.DOMAIN, K=8, activation="none"
    )
    model = _graph(
        node,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["m", 8])],
        helper.make_tensor_value_info("y", TensorProto.FLOAT, ["m", 4]),
        [numpy_helper.from_array(v, k) for k, v in arrays.items()],
    )
    onnx.checker.check_model(model)
    x = rng.normal(size=(3, 8)).astype(np.float32)
    got = ReferenceGraph(model)({"x": x})["y"]
    want = spec.qlinear_reference(x, *arrays.values(), 8)
    assert np.array_equal(got, want)
