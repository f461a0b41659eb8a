"""`export.sparse_graph` on hand-built int8 Linears: what fuses, what is left alone, exactly.

The integration tests (tests/integration/test_sparse_graph.py) run the rewrite on
exported models; these pin its pattern rules on graphs small enough to read, with K
not a multiple of 4 (the last 1x4 block is padded) and the exact reference evaluator.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from sparse_transfer.errors import ExportError
from sparse_transfer.export.parity import ReferenceGraph
from sparse_transfer.export.sparse_graph import sparsify
from sparse_transfer.export.sparse_parity import write_sparse_graph
from sparse_transfer.kernels import spec

K, N = 10, 6


def _linear_graph(gelu: bool, requantize: bool, scale_from_other: bool = False):
    """x -> QuantizeLinear -> MatMulInteger -> Cast -> Mul(s_x * s_w) -> Add(b) [-> GELU]
    [-> QuantizeLinear], as `int8.quantize_graph` writes it."""
    rng = np.random.default_rng(0)
    w = rng.integers(-63, 64, (K, N)).astype(np.int8)
    w[rng.random((K, N)) < 0.6] = 0
    inits = [
        numpy_helper.from_array(w, "W"),
        numpy_helper.from_array(np.array(0.05, np.float32), "xs"),
        numpy_helper.from_array(np.array(0.07, np.float32), "other_scale"),
        numpy_helper.from_array(np.array(120, np.uint8), "xz"),
        numpy_helper.from_array(np.array(0, np.int8), "wz"),
        numpy_helper.from_array(rng.random(N).astype(np.float32) / 50, "ws"),
        numpy_helper.from_array(rng.standard_normal(N).astype(np.float32), "b"),
        numpy_helper.from_array(np.array(np.sqrt(2.0), np.float32), "sqrt2"),
        numpy_helper.from_array(np.array(1.0, np.float32), "one"),
        numpy_helper.from_array(np.array(0.5, np.float32), "half"),
        numpy_helper.from_array(np.array(0.03, np.float32), "ys"),
        numpy_helper.from_array(np.array(100, np.uint8), "yz"),
    ]
    s_x = "other_scale" if scale_from_other else "xs"
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"], name="lin/q"),
        helper.make_node("MatMulInteger", ["xq", "W", "xz", "wz"], ["acc"], name="lin/MatMulInteger"),
        helper.make_node("Cast", ["acc"], ["accf"], name="lin/Cast", to=TensorProto.FLOAT),
        helper.make_node("Mul", [s_x, "ws"], ["rescale"], name="lin/scale"),
        helper.make_node("Mul", ["accf", "rescale"], ["mm"], name="lin/Mul"),
        helper.make_node("Add", ["b", "mm"], ["y"], name="lin/Add"),
    ]  # fmt: skip
    out, dtype = "y", TensorProto.FLOAT
    if gelu:
        nodes += [
            helper.make_node("Div", ["y", "sqrt2"], ["d"], name="g/Div"),
            helper.make_node("Erf", ["d"], ["e"], name="g/Erf"),
            helper.make_node("Add", ["e", "one"], ["a"], name="g/Add"),
            helper.make_node("Mul", ["y", "a"], ["m"], name="g/Mul"),
            helper.make_node("Mul", ["m", "half"], ["g"], name="g/Mul_1"),
        ]
        out = "g"
    if requantize:
        nodes.append(helper.make_node("QuantizeLinear", [out, "ys", "yz"], ["yq"], name="next/q"))
        out, dtype = "yq", TensorProto.UINT8
    graph = helper.make_graph(
        nodes, "linear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3, K])],
        [helper.make_tensor_value_info(out, dtype, [None, 3, N])], inits,
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model, w


@pytest.mark.parametrize(
    ("gelu", "requantize", "op"),
    [(False, False, "SparseQLinear"), (True, False, "SparseQLinear"),
     (True, True, "SparseQLinearToU8"), (False, True, "SparseQLinearToU8")],
)  # fmt: skip
def test_one_linear_becomes_one_op_with_the_same_numbers(gelu, requantize, op):
    model, w = _linear_graph(gelu, requantize)
    sparse = onnx.ModelProto()
    sparse.CopyFrom(model)
    report = sparsify(sparse, fuse_gelu=True)
    onnx.checker.check_model(sparse, full_check=True)
    assert [n.op_type for n in sparse.graph.node] == [op]  # Q, chain, GELU, next Q: all in
    node = sparse.graph.node[0]
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    assert attrs == {"K": K, "activation": b"gelu" if gelu else b"none"}
    inits = {i.name: numpy_helper.to_array(i) for i in sparse.graph.initializer}
    row_ptr, block_col, values = (inits[i] for i in node.input[3:6])
    assert np.array_equal(spec.unpack_block4(row_ptr, block_col, values, K), w.T)
    assert report["fusions"] == {
        "bias_scale_epilogue": 1, "gelu": int(gelu), "output_quant": int(requantize),
        "float_input": 1, "shared_input_concat": 0, "attention": 0, "attention_output_quant": 0,
        "layernorm": 0, "linear_layernorm": 0, "shared_input_parts": 0, "embeddings": 0,
    }  # fmt: skip
    x = np.random.default_rng(1).standard_normal((2, 3, K)).astype(np.float32) * 3
    want = ReferenceGraph(model)({"x": x})
    got = ReferenceGraph(sparse)({"x": x})
    for name in want:
        assert got[name].dtype == want[name].dtype
        assert np.array_equal(got[name], want[name]), name


def test_a_chain_with_another_scale_is_left_standard_and_the_export_refuses(tmp_path):
    model, _ = _linear_graph(gelu=False, requantize=False, scale_from_other=True)
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    report = sparsify(copy)
    assert report["linears"] == 0 and "MatMulInteger" in {n.op_type for n in copy.graph.node}
    # a MatMulInteger with an int8 weight the rewrite does not recognise is no silent pass
    report = sparsify(model)
    assert report["linears_left_standard"] == ["lin/MatMulInteger"]
    model2, _ = _linear_graph(gelu=False, requantize=False, scale_from_other=True)
    with pytest.raises(ExportError, match=r"1 int8 Linears did not match the rewrite"):
        write_sparse_graph(model2, tmp_path)
    assert not (tmp_path / "model.sparse.onnx").exists()


def test_gelu_can_stay_in_the_graph():
    """``fuse_gelu=False`` leaves GELU to ONNX Runtime; then the next QuantizeLinear, read
    by no Linear here, stays in the graph too."""
    model, _ = _linear_graph(gelu=True, requantize=True)
    report = sparsify(model, fuse_gelu=False)
    ops = [n.op_type for n in model.graph.node]
    assert ops == ["SparseQLinear", "Div", "Erf", "Add", "Mul", "Mul", "QuantizeLinear"]
    assert report["fusions"]["gelu"] == 0 and report["fusions"]["output_quant"] == 0


def _shared_input_graph(n: int):
    """One QuantizeLinear read by three int8 Linears (a layer's query, key and value), each
    quantized on its own for the next op: three ``SparseQLinearU8`` after the rewrite."""
    rng = np.random.default_rng(4)
    inits = [numpy_helper.from_array(np.array(0.05, np.float32), "xs"),
             numpy_helper.from_array(np.array(120, np.uint8), "xz"),
             numpy_helper.from_array(np.array(0, np.int8), "wz")]  # fmt: skip
    nodes = [helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"], name="shared/q")]
    for i, name in enumerate(("query", "key", "value")):
        w = rng.integers(-63, 64, (K, n)).astype(np.int8)
        w[rng.random((K, n)) < 0.6] = 0
        inits += [numpy_helper.from_array(w, f"W{i}"),
                  numpy_helper.from_array(rng.random(n).astype(np.float32) / 50, f"ws{i}"),
                  numpy_helper.from_array(rng.standard_normal(n).astype(np.float32), f"b{i}"),
                  numpy_helper.from_array(np.array(0.02 + 0.01 * i, np.float32), f"ys{i}"),
                  numpy_helper.from_array(np.array(100 + 14 * i, np.uint8), f"yz{i}")]  # fmt: skip
        nodes += [
            helper.make_node("MatMulInteger", ["xq", f"W{i}", "xz", "wz"], [f"acc{i}"],
                             name=f"{name}/MatMulInteger"),
            helper.make_node("Cast", [f"acc{i}"], [f"f{i}"], name=f"{name}/Cast",
                             to=TensorProto.FLOAT),
            helper.make_node("Mul", ["xs", f"ws{i}"], [f"r{i}"], name=f"{name}/scale"),
            helper.make_node("Mul", [f"f{i}", f"r{i}"], [f"m{i}"], name=f"{name}/Mul"),
            helper.make_node("Add", [f"b{i}", f"m{i}"], [f"y{i}"], name=f"{name}/Add"),
            helper.make_node("QuantizeLinear", [f"y{i}", f"ys{i}", f"yz{i}"], [f"q{i}"],
                             name=f"{name}/out_q"),
        ]  # fmt: skip
    outputs = [helper.make_tensor_value_info(f"q{i}", TensorProto.UINT8, [None, 3, n])
               for i in range(3)]  # fmt: skip
    graph = helper.make_graph(nodes, "qkv", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, [None, 3, K])], outputs, inits)  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


@pytest.mark.parametrize(("n", "fused"), [(32, True), (24, False)])
def test_query_key_value_become_one_op_with_three_outputs(n, fused):
    """Three uint8 Linears reading one tensor become one ``SparseQLinearU8x3`` when each has
    a multiple of 16 rows (else they stay three ops); the same bits either way, and the
    report says which op each Linear went into."""
    model = _shared_input_graph(n)
    sparse = onnx.ModelProto()
    sparse.CopyFrom(model)
    report = sparsify(sparse)
    onnx.checker.check_model(sparse, full_check=True)
    ops = [node.op_type for node in sparse.graph.node]
    want_op = "SparseQLinearU8x3" if fused else "SparseQLinearU8"
    assert ops == ["QuantizeLinear", *([want_op] * (1 if fused else 3))]
    assert report["fusions"]["shared_input_parts"] == int(fused)
    assert {layer["op"] for layer in report["layers"].values()} == {want_op}
    assert len(report["layers"]) == report["linears"] == 3
    x = np.random.default_rng(5).standard_normal((2, 3, K)).astype(np.float32) * 3
    want, got = ReferenceGraph(model)({"x": x}), ReferenceGraph(sparse)({"x": x})
    for i in range(3):
        np.testing.assert_array_equal(got[f"q{i}"], want[f"q{i}"])


def test_query_key_value_stay_apart_when_their_stacked_blocks_overflow_int32():
    """The stacked weight's row_ptr is int32: three weights whose kept blocks add up past
    2**31 - 1 stay three ops rather than wrap (checked on the pass's rule, not on 8 GB)."""
    from sparse_transfer.export import shared_input_fusion

    nodes = [helper.make_node("SparseQLinearU8", ["x", "xs", "xz", f"rp{i}", f"bc{i}", f"v{i}",
                              f"ws{i}", f"b{i}", f"ys{i}", f"yz{i}"], [f"q{i}"],
                              domain=spec.DOMAIN, K=8) for i in range(3)]  # fmt: skip

    class Consts:  # row_ptr arrays of 16 rows whose last entry is what the rule reads
        def __init__(self, last):
            self.last = last

        def has_const(self, name):
            return True

        def const(self, name):
            if name.startswith("rp"):
                return np.array([0] * 16 + [self.last], np.int64)
            return np.zeros(1, np.float32)

    assert shared_input_fusion._fusable(nodes, Consts(2**31 // 3 - 1))
    assert not shared_input_fusion._fusable(nodes, Consts(2**31 // 3 + 1))
