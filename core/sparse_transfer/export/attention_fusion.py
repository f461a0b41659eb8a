"""The int8 attention of the standard graph -> one ``Int8Attention`` op (issue 22's profile).

`export.int8_attention` writes each attention module as (q, k, v are the float outputs of
the query/key/value Linears)::

    Reshape -> Transpose -> QuantizeLinear (q, and k with perm 0,2,3,1, v)
    scores:  MatMulInteger -> Cast -> Mul(qk_scale) -> Mul(score_mul) -> Add(mask) -> Softmax
    context: QuantizeLinear(probs) -> MatMulInteger(., v) -> Cast -> Mul(pv_scale)
             -> Transpose -> Reshape

ONNX Runtime spends about a third of the sparse graph's time in these glue ops. This pass
replaces the chain with per-tensor ``QuantizeLinear`` nodes on q, k and v (per-tensor
quantization commutes with Reshape and Transpose, so the integers are the same) and one
``Int8Attention`` (`kernels.spec`), whose steps are the chain's in its order. The Linears'
own pass then folds those QuantizeLinears into the projections (``*ToU8``), so q, k and v
never exist in float. Anything that differs from the pattern (another scaling, a Div, a
mask of another shape, a tensor read twice) is left as it is.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sparse_transfer.export.graph_index import is_u8_scalar_quant, replace_nodes
from sparse_transfer.kernels import spec

HEAD_PERM = (0, 2, 1, 3)
KEY_PERM = (0, 2, 3, 1)


@dataclass
class Operand:
    """One of q, k, v: the float tensor, its quantizer and the nodes the fusion removes."""

    tensor: str
    quant: object
    nodes: list
    head_dim: int


def _perm(node) -> tuple:
    return tuple(next((list(a.ints) for a in node.attribute if a.name == "perm"), []))


def _last_dim(shape_name: str, idx) -> int | None:
    """The constant last entry of a Reshape's target shape (a constant or a Concat of pieces)."""
    shape = idx.const(shape_name)
    if shape is not None:
        return int(shape.reshape(-1)[-1]) if shape.size == 4 else None
    concat = idx.producer.get(shape_name)
    if concat is None or concat.op_type != "Concat" or len(concat.input) != 4:
        return None
    last = idx.const(concat.input[-1])
    unsqueeze = idx.producer.get(concat.input[-1])
    if last is None and unsqueeze is not None and unsqueeze.op_type == "Unsqueeze":
        last = idx.const(unsqueeze.input[0])
    return int(last.reshape(-1)[-1]) if last is not None and last.size == 1 else None


def _operand(tensor: str, perm: tuple, idx, zero_point: int | None) -> Operand | None:
    """``Reshape -> Transpose(perm) -> QuantizeLinear`` producing `tensor`, single readers."""
    quant = idx.producer.get(tensor)
    if not is_u8_scalar_quant(quant, idx) or idx.only_consumer(tensor) is None:
        return None
    if zero_point is not None and int(idx.const(quant.input[2])) != zero_point:
        return None
    transpose = idx.producer.get(quant.input[0])
    if transpose is None or transpose.op_type != "Transpose" or _perm(transpose) != perm:
        return None
    reshape = idx.producer.get(transpose.input[0])
    if reshape is None or reshape.op_type != "Reshape":
        return None
    if (
        idx.only_consumer(transpose.output[0]) is None
        or idx.only_consumer(reshape.output[0]) is None
    ):
        return None
    head_dim = _last_dim(reshape.input[1], idx)
    if head_dim is None or head_dim <= 0 or idx.only_consumer(reshape.input[0]) is None:
        return None
    return Operand(reshape.input[0], quant, [reshape, transpose, quant], head_dim)


def _next(node, op_type: str, idx):
    """The single reader of `node`'s output when it is an `op_type` node, else None."""
    user = idx.only_consumer(node.output[0]) if node is not None else None
    return user if user is not None and user.op_type == op_type else None


def _scalar_operand(node, other_than: str, idx) -> str | None:
    name = next((i for i in node.input if i != other_than), None)
    value = idx.const(name) if name else None
    ok = value is not None and value.size == 1 and value.dtype == np.float32
    return name if ok else None


def _scaled_int(mmi, idx) -> tuple[list, str] | None:
    """``MatMulInteger -> Cast(float) -> Mul(scalar)``: the nodes and the scale's name."""
    cast = _next(mmi, "Cast", idx)
    mul = _next(cast, "Mul", idx) if cast is not None and cast.attribute[0].i == 1 else None
    scale = _scalar_operand(mul, cast.output[0], idx) if mul is not None else None
    return ([cast, mul], scale) if scale else None


def _mask_ok(name: str, shapes: dict) -> bool:
    """The additive mask is [batch, 1, 1, seq] by shape inference (what the op takes)."""
    dims = shapes.get(name)
    return dims is not None and len(dims) == 4 and dims[1] == 1 and dims[2] == 1


def _softmax_chain(scores, idx, shapes) -> dict | None:
    """``Cast -> Mul(qk) -> Mul(score_mul) -> Add(mask) -> Softmax(last axis) -> QuantizeLinear``."""
    scaled = _scaled_int(scores, idx)
    if scaled is None:
        return None
    (cast, mul), qk = scaled
    mul2 = _next(mul, "Mul", idx)
    score_mul = _scalar_operand(mul2, mul.output[0], idx) if mul2 is not None else None
    add = _next(mul2, "Add", idx) if score_mul else None
    mask = next((i for i in add.input if i != mul2.output[0]), None) if add is not None else None
    if mask is None or idx.const(mask) is not None or not _mask_ok(mask, shapes):
        return None
    softmax = _next(add, "Softmax", idx)
    axis = next((a.i for a in softmax.attribute if a.name == "axis"), -1) if softmax else None
    pquant = _next(softmax, "QuantizeLinear", idx) if axis in (-1, 3) else None
    if not is_u8_scalar_quant(pquant, idx):
        return None
    return {"nodes": [cast, mul, mul2, add, softmax, pquant], "qk": qk, "score_mul": score_mul,
            "mask": mask, "pquant": pquant}  # fmt: skip


def _context_chain(pquant, idx) -> dict | None:
    """``MatMulInteger(probs, v) -> Cast -> Mul(pv) -> Transpose -> Reshape`` after the probs."""
    mmi = _next(pquant, "MatMulInteger", idx)
    if mmi is None or mmi.input[0] != pquant.output[0] or mmi.input[2] != pquant.input[2]:
        return None
    value = _operand(mmi.input[1], HEAD_PERM, idx, 128)
    scaled = _scaled_int(mmi, idx)
    if value is None or scaled is None or mmi.input[3] != value.quant.input[2]:
        return None
    (cast, mul), pv = scaled
    transpose = _next(mul, "Transpose", idx)
    reshape = _next(transpose, "Reshape", idx) if transpose is not None else None
    if reshape is None or _perm(transpose) != HEAD_PERM:
        return None
    return {"nodes": [mmi, cast, mul, transpose, reshape], "value": value, "pv": pv,
            "output": reshape.output[0]}  # fmt: skip


def _match(scores, idx, shapes) -> dict | None:
    if len(scores.input) != 4 or idx.const(scores.input[1]) is not None:
        return None  # a Linear (its weight is an initializer)
    query = _operand(scores.input[0], HEAD_PERM, idx, None)
    key = _operand(scores.input[1], KEY_PERM, idx, 128)
    if query is None or key is None or scores.input[2] != query.quant.input[2]:
        return None
    if scores.input[3] != key.quant.input[2]:
        return None
    soft = _softmax_chain(scores, idx, shapes)
    ctx = _context_chain(soft["pquant"], idx) if soft else None
    if ctx is None or len({query.head_dim, key.head_dim, ctx["value"].head_dim}) != 1:
        return None
    return {"query": query, "key": key, "scores": scores, **soft, **ctx}


def _emit(m: dict, b) -> tuple[list, list]:
    """Three QuantizeLinears (at the operands' Reshapes) and the op (at the last Reshape)."""
    from onnx import helper

    name = m["scores"].name.rsplit("/", 2)[0]
    quantized = {}
    for role in ("query", "key", "value"):
        op = m[role]
        out = b.unique(f"{name}/{role}_u8")
        quantized[role] = (op.nodes[0], helper.make_node(
            "QuantizeLinear", [op.tensor, op.quant.input[1], op.quant.input[2]], [out],
            name=f"{name}/{role}/QuantizeLinear"))  # fmt: skip
    pq = m["pquant"]
    inputs = [quantized["query"][1].output[0], m["query"].quant.input[2],
              quantized["key"][1].output[0], m["key"].quant.input[2],
              quantized["value"][1].output[0], m["value"].quant.input[2], m["mask"],
              m["qk"], m["score_mul"], pq.input[1], pq.input[2], m["pv"]]  # fmt: skip
    attention = helper.make_node(
        spec.ATTENTION_OP,
        inputs,
        [m["output"]],
        name=f"{name}/{spec.ATTENTION_OP}",
        domain=spec.DOMAIN,
        head_dim=int(m["query"].head_dim),
    )
    placed = [(anchor, [node]) for anchor, node in quantized.values()]
    placed.append((m["nodes"][-1], [attention]))
    removed = [*m["query"].nodes, *m["key"].nodes, *m["value"].nodes, m["scores"],
               *m["nodes"]]  # fmt: skip
    return placed, removed


def fuse_attention(graph, idx, shapes: dict, builder) -> int:
    """Rewrites every matching attention module in place; returns how many."""
    found = [_match(n, idx, shapes) for n in graph.node if n.op_type == "MatMulInteger"]
    found = [m for m in found if m is not None]
    at, gone = {}, set()
    for m in found:
        placed, removed = _emit(m, builder)
        for anchor, nodes in placed:
            at[id(anchor)] = nodes
        gone |= {id(n) for n in removed}
    replace_nodes(graph, at, gone)
    return len(found)


def inferred_shapes(model_proto) -> dict[str, list]:
    """Tensor name -> dims (int, or the symbolic name) from ONNX shape inference."""
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(model_proto)
    except Exception:  # noqa: BLE001 (no shapes: nothing is fused)
        return {}
    shapes = {}
    for v in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]:
        if v.type.HasField("tensor_type") and v.type.tensor_type.HasField("shape"):
            dims = v.type.tensor_type.shape.dim
            shapes[v.name] = [d.dim_value if d.HasField("dim_value") else d.dim_param for d in dims]
    return shapes
