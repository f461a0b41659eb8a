"""Residual Add + the exported LayerNorm (+ the next Linear's quantization) -> one op.

The exporter writes every BERT LayerNorm as ``ReduceMean -> Sub -> Pow(2) -> ReduceMean ->
Add(eps) -> Sqrt -> Div -> Mul(gamma) -> Add(beta)`` after the residual ``Add``; ONNX Runtime
fuses that into its LayerNormalization but keeps the Add, and the next Linear quantizes the
result again (issue 22's profile: Add, LayerNorm and QuantizeLinear about a sixth of the
sparse graph's time). This pass runs on the finished sparse graph and makes each such chain
one ``ResidualLayerNorm`` (`kernels.spec`); when the result is also quantized for a Linear
(a shared ``QuantizeLinear``, or a sparse op that quantizes its float input) it becomes
``ResidualLayerNormToU8``, and that reader takes the uint8 output instead.
"""

from __future__ import annotations

import numpy as np

from sparse_transfer.export.graph_index import is_u8_scalar_quant, replace_matches
from sparse_transfer.kernels import spec

# A sparse op reading float -> the same op reading uint8 (see spec.QLINEAR_OPS).
TO_U8_INPUT = {"SparseQLinear": "SparseQLinearFromU8", "SparseQLinearToU8": "SparseQLinearU8"}


def _last_axis(node, idx) -> bool:
    axes = next((list(a.ints) for a in node.attribute if a.name == "axes"), None)
    if axes is None and len(node.input) > 1:
        const = idx.const(node.input[1])
        axes = None if const is None else [int(v) for v in const.reshape(-1)]
    keep = next((a.i for a in node.attribute if a.name == "keepdims"), 1)
    return axes == [-1] and keep == 1


def _users(idx, tensor: str, op_type: str) -> list:
    return [u for u in idx.consumers.get(tensor, []) if u.op_type == op_type]


def _const_operand(node, other: str, idx, size: int | None = None):
    name = next((i for i in node.input if i != other), None)
    value = idx.const(name) if name else None
    if value is None or value.dtype != np.float32 or (size is not None and value.size != size):
        return None
    return name, value


# Ops whose output keeps their (first) input's leading dims; the width is K -> N.
_ROW_PRESERVING = {*spec.QLINEAR_OPS, *spec.ATTENTION_OPS, "QuantizeLinear"}


def _width(node) -> int | None:
    return next((a.i for a in node.attribute if a.name == "K"), None)


def _derived_from(x: str, residual: str, idx, depth: int = 8) -> int | None:
    """The width at which `residual` feeds the row-preserving chain that makes `x` (so both
    have the same leading dims), or None when `x` is not made from it that way."""
    frontier = [(x, None)]
    for _ in range(depth):
        step = []
        for tensor, width in frontier:
            if tensor == residual:
                return width
            node = idx.producer.get(tensor)
            if node is None or node.op_type not in _ROW_PRESERVING:
                continue
            inputs = (0, 2, 4) if node.op_type in spec.ATTENTION_OPS else (0,)
            for i in inputs:
                step.append((node.input[i], _width(node) or width))
        frontier = step
    return None


def _same_shape(add, idx, hidden: int) -> bool:
    """One addend (the residual) feeds the row-preserving chain that makes the other, at the
    LayerNorm's width: equal shapes, no broadcasting (the op does not broadcast; the
    embeddings' sum with [1, seq, hidden] position embeddings stays an Add)."""
    a, b = add.input
    return hidden in (_derived_from(a, b, idx), _derived_from(b, a, idx))


def _match(add, idx) -> dict | None:
    """The LayerNorm chain after the residual `add`, whose addends share one shape, or None."""
    m = match_chain(add, idx)
    if m is None or not _same_shape(add, idx, m["width"]):
        return None
    return m


def match_chain(add, idx) -> dict | None:
    """The exported LayerNorm chain after `add` (its nodes, gamma, beta, epsilon), or None."""
    s = add.output[0]
    means, subs = _users(idx, s, "ReduceMean"), _users(idx, s, "Sub")
    if (
        len(idx.consumers.get(s, [])) != 2
        or len(means) != 1
        or len(subs) != 1
        or s in idx.graph_outputs
    ):
        return None
    mean, sub = means[0], subs[0]
    if not _last_axis(mean, idx) or list(sub.input) != [s, mean.output[0]]:
        return None
    d = sub.output[0]
    pows, divs = _users(idx, d, "Pow"), _users(idx, d, "Div")
    if len(idx.consumers.get(d, [])) != 2 or len(pows) != 1 or len(divs) != 1:
        return None
    two = _const_operand(pows[0], d, idx, 1)
    var = idx.only_consumer(pows[0].output[0]) if two and float(two[1].reshape(())) == 2.0 else None
    if var is None or var.op_type != "ReduceMean" or not _last_axis(var, idx):
        return None
    eps_add = idx.only_consumer(var.output[0])
    eps = _const_operand(eps_add, var.output[0], idx, 1) if eps_add is not None else None
    sqrt = idx.only_consumer(eps_add.output[0]) if eps and eps_add.op_type == "Add" else None
    if sqrt is None or sqrt.op_type != "Sqrt" or list(divs[0].input) != [d, sqrt.output[0]]:
        return None
    mul = idx.only_consumer(divs[0].output[0])
    gamma = (
        _const_operand(mul, divs[0].output[0], idx)
        if mul is not None and mul.op_type == "Mul"
        else None
    )
    last = idx.only_consumer(mul.output[0]) if gamma else None
    beta = (
        _const_operand(last, mul.output[0], idx)
        if last is not None and last.op_type == "Add"
        else None
    )
    if beta is None or gamma[1].ndim != 1 or beta[1].shape != gamma[1].shape:
        return None
    return {"add": add, "nodes": [add, mean, sub, pows[0], var, eps_add, sqrt, divs[0], mul, last],
            "gamma": gamma[0], "beta": beta[0], "epsilon": float(eps[1].reshape(())),
            "output": last.output[0], "width": int(gamma[1].size)}  # fmt: skip


def quantized_reader(m: dict, idx):
    """(scale, zero point, reader node, kind) of the one reader that quantizes the result."""
    readers = idx.consumers.get(m["output"], [])
    quants = [r for r in readers if r.op_type == "QuantizeLinear" and is_u8_scalar_quant(r, idx)]
    sparse = [r for r in readers if r.op_type in TO_U8_INPUT and r.input[0] == m["output"]]
    if len(quants) == 1:
        return quants[0].input[1], quants[0].input[2], quants[0], "quantize"
    if not quants and len(sparse) == 1:
        return sparse[0].input[1], sparse[0].input[2], sparse[0], "sparse_op"
    return None


def _emit(m: dict, idx, builder) -> tuple[object, list]:
    """The op replacing the chain, and the nodes it removes (a QuantizeLinear it absorbs)."""
    from onnx import helper

    name = m["nodes"][-1].name.rsplit("/", 1)[0] or m["output"]  # the LayerNorm module
    inputs = [*m["add"].input, m["gamma"], m["beta"]]
    outputs, removed = [m["output"]], list(m["nodes"])
    reader = quantized_reader(m, idx)
    op_type = "ResidualLayerNorm"
    if reader is not None:
        scale, zero_point, node, kind = reader
        op_type = "ResidualLayerNormToU8"
        inputs += [scale, zero_point]
        if kind == "quantize":
            outputs.append(node.output[0])
            removed.append(node)
        else:  # the sparse op reads the uint8 result instead of quantizing it again
            u8 = builder.unique(f"{name}/u8")
            outputs.append(u8)
            node.op_type = TO_U8_INPUT[node.op_type]
            node.name = node.name.rsplit("/", 1)[0] + "/" + node.op_type
            node.input[0] = u8
    op = helper.make_node(op_type, inputs, outputs, name=builder.unique(f"{name}/{op_type}"),
                          domain=spec.DOMAIN, epsilon=m["epsilon"])  # fmt: skip
    return op, removed


def fuse_layernorms(graph, idx, builder) -> int:
    """Rewrites every matching residual LayerNorm in place; returns how many."""
    found = [_match(n, idx) for n in graph.node if n.op_type == "Add"]
    return replace_matches(graph, [m for m in found if m is not None],
                           lambda m: _emit(m, idx, builder))  # fmt: skip
