"""BERT's embeddings, their LayerNorm and the first Linear's quantization -> one op.

The int8 export writes each embedding as ``Gather(int8 table) -> Cast -> Mul(w_scale) ->
QuantizeLinear -> DequantizeLinear``; with the two Adds, the LayerNorm and the first Linear's
``QuantizeLinear`` that is about 25 small ONNX Runtime ops, about 4% of the sparse BERT-base
graph at batch 1 (docs/kernels.md, "A real VNNI CPU without AMX"). The fake quantization is
elementwise on a constant table, so it is done here once, by ONNX Runtime itself (its own
QuantizeLinear bits), and the uint8 codes replace the int8 table as the op's input
(``kernels.spec`` ``EmbeddingsLayerNormToU8``).
"""

from __future__ import annotations

import numpy as np

from sparse_transfer.export.graph_index import is_u8_scalar_quant, replace_matches
from sparse_transfer.export.layernorm_fusion import match_chain, quantized_reader
from sparse_transfer.kernels import spec


def _made_by(idx, tensor: str, op_type: str, reader):
    """The `op_type` node making `tensor` when `reader` is its only reader, else None."""
    node = idx.producer.get(tensor)
    if node is None or node.op_type != op_type or idx.only_consumer(tensor) is not reader:
        return None
    return node


def _fake_quant(dq_out: str, idx):
    """(QuantizeLinear, DequantizeLinear) of one uint8 scale and zero point making `dq_out`."""
    dq = idx.producer.get(dq_out)
    if dq is None or dq.op_type != "DequantizeLinear" or len(dq.input) < 3:
        return None
    q = _made_by(idx, dq.input[0], "QuantizeLinear", dq)
    if q is None or idx.only_consumer(dq_out) is None or not is_u8_scalar_quant(q, idx):
        return None
    pairs = zip(q.input[1:3], dq.input[1:3], strict=True)
    return (q, dq) if all(np.array_equal(idx.const(a), idx.const(b)) for a, b in pairs) else None


def _scaled_lookup(mul, idx, width: int):
    """(Gather, Cast, w_scale, table) of ``Cast(Gather(int8 table [V, width], ids)) * w_scale``."""
    a, b = mul.input
    first = idx.producer.get(a)
    cast_out, scale_name = (a, b) if first is not None and first.op_type == "Cast" else (b, a)
    cast = _made_by(idx, cast_out, "Cast", mul)
    scale = idx.const(scale_name)
    if cast is None or next((x.i for x in cast.attribute if x.name == "to"), None) != 1:
        return None
    if scale is None or scale.dtype != np.float32 or scale.size not in (1, width):
        return None
    gather = _made_by(idx, cast.input[0], "Gather", cast)
    table = idx.const(gather.input[0]) if gather is not None else None
    if table is None or table.dtype != np.int8 or table.ndim != 2 or table.shape[1] != width:
        return None
    axis = next((x.i for x in gather.attribute if x.name == "axis"), 0)
    return (gather, cast, scale, table) if axis == 0 else None


def _chain(dq_out: str, idx, width: int) -> dict | None:
    """The embedding chain ``Gather -> Cast -> Mul -> QuantizeLinear -> DequantizeLinear``
    making `dq_out`, or None."""
    fake = _fake_quant(dq_out, idx)
    mul = _made_by(idx, fake[0].input[0], "Mul", fake[0]) if fake else None
    lookup = _scaled_lookup(mul, idx, width) if mul is not None else None
    if lookup is None:
        return None
    gather, cast, scale, table = lookup
    return {"ids": gather.input[1], "table": table, "w_scale": scale, "q": fake[0],
            "nodes": [gather, cast, mul, *fake], "name": gather.name.rsplit("/", 1)[0]}  # fmt: skip


def _int64_ids(name: str, idx, graph_inputs: dict) -> bool:
    """Ids the op can take: an int64 graph input, or a Slice of an int64 constant."""
    from onnx import TensorProto

    if name in graph_inputs:
        return graph_inputs[name].type.tensor_type.elem_type == TensorProto.INT64
    node = idx.producer.get(name)
    source = idx.const(node.input[0]) if node is not None and node.op_type == "Slice" else None
    return source is not None and source.dtype == np.int64


def _match(add, idx, graph_inputs: dict) -> dict | None:
    """(word + type) + position -> LayerNorm -> QuantizeLinear, as the int8 export writes it."""
    m = match_chain(add, idx)
    reader = quantized_reader(m, idx) if m is not None else None
    if reader is None or reader[3] != "quantize":
        return None
    for inner_out, outer_out in (add.input, add.input[::-1]):
        inner = idx.producer.get(inner_out)
        if inner is None or inner.op_type != "Add" or idx.only_consumer(inner_out) is not add:
            continue
        chains = [_chain(t, idx, m["width"]) for t in (*inner.input, outer_out)]
        if any(c is None for c in chains):
            return None
        word, kind, position = chains
        # word and type ids must share one shape (both graph inputs), as the op requires
        pair = [graph_inputs.get(c["ids"]) for c in (word, kind)]
        if None in pair or pair[0].type != pair[1].type:
            return None
        if not all(_int64_ids(c["ids"], idx, graph_inputs) for c in chains):
            return None
        return {**m, "chains": chains, "inner": inner, "reader": reader}
    return None


def _codes(table: np.ndarray, w_scale: np.ndarray, scale: np.ndarray, zp: np.ndarray):
    """QuantizeLinear(Cast(table) * w_scale, scale, zp) over the whole table, computed by ONNX
    Runtime itself: the graph's own bits."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    nodes = [helper.make_node("Cast", ["t"], ["f"], to=TensorProto.FLOAT),
             helper.make_node("Mul", ["f", "w_scale"], ["x"]),
             helper.make_node("QuantizeLinear", ["x", "scale", "zp"], ["codes"])]  # fmt: skip
    inits = [numpy_helper.from_array(w_scale, "w_scale"), numpy_helper.from_array(scale, "scale"),
             numpy_helper.from_array(zp, "zp")]  # fmt: skip
    graph = helper.make_graph(
        nodes, "codes", [helper.make_tensor_value_info("t", TensorProto.INT8, None)],
        [helper.make_tensor_value_info("codes", TensorProto.UINT8, None)], inits)  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"t": table})[0]


def _emit(m: dict, idx, builder):
    from onnx import helper

    inputs = [c["ids"] for c in m["chains"]]
    for c in m["chains"]:
        scale, zp = (idx.const(t) for t in c["q"].input[1:3])
        codes = _codes(c["table"], c["w_scale"], scale, zp)
        inputs += [builder.init(f"{c['name']}.codes", codes), *c["q"].input[1:3]]
    scale, zero_point, quant, _ = m["reader"]
    inputs += [m["gamma"], m["beta"], scale, zero_point]
    name = m["nodes"][-1].name.rsplit("/", 2)[0] or m["output"]
    op = helper.make_node(spec.EMBEDDINGS_OP, inputs, [m["output"], quant.output[0]],
                          name=builder.unique(f"{name}/{spec.EMBEDDINGS_OP}"),
                          domain=spec.DOMAIN, epsilon=m["epsilon"])  # fmt: skip
    removed = [*m["nodes"], m["inner"], quant, *(n for c in m["chains"] for n in c["nodes"])]
    return op, removed


def fuse_embeddings(graph, idx, builder) -> int:
    """Rewrites the embeddings in place when they match; returns how many (0 or 1)."""
    graph_inputs = {i.name: i for i in graph.input}
    found = [_match(n, idx, graph_inputs) for n in graph.node if n.op_type == "Add"]
    return replace_matches(graph, [m for m in found if m is not None],
                           lambda m: _emit(m, idx, builder))  # fmt: skip
