"""Three uint8 sparse Linears reading one tensor -> one op with three outputs.

After the attention and LayerNorm fusions, each BERT layer's query, key and value are
``SparseQLinearU8`` ops that read the same uint8 tensor, each with its own output
quantization. Each op repacked that input and split its work over ONNX Runtime's pool on its
own; at 768 x 768 a third of the op's time went to that. ``SparseQLinearU8x3``
(`kernels.spec`) runs the three weights, stacked along N, over one repack and one parallel
loop, and writes each output with its own ``y_scale``/``y_zero_point``: the same bits as the
three ops, no Split (see docs/kernels.md for what it measured).
"""

from __future__ import annotations

import numpy as np

from sparse_transfer.export.graph_index import node_activation, node_k, replace_nodes
from sparse_transfer.kernels import spec

OP_TYPE = "SparseQLinearU8x3"
_READS = "SparseQLinearU8"
_WEIGHTS = (3, 4, 5, 6, 7)  # row_ptr, block_col, values, w_scale, bias


def _shared_readers(graph) -> list[list]:
    """``SparseQLinearU8`` nodes grouped by their (x, x_scale, x_zero_point), in graph order."""
    groups: dict[tuple, list] = {}
    for node in graph.node:
        if node.op_type == _READS and node.domain == spec.DOMAIN:
            groups.setdefault(tuple(node.input[:3]), []).append(node)
    return list(groups.values())


def _fusable(group: list, idx) -> bool:
    """Three ops with constant weights of one K, N and activation; N a multiple of 16; their
    kept blocks together within the stacked row_ptr's int32."""
    parts = spec.PARTS_OPS[OP_TYPE]
    if len(group) != parts:
        return False
    if not all(idx.has_const(n.input[i]) for n in group for i in _WEIGHTS):
        return False
    row_ptrs = [idx.const(n.input[3]) for n in group]
    if any(r.size == 0 for r in row_ptrs):
        return False
    rows = {r.size - 1 for r in row_ptrs}
    same = {(node_k(n), node_activation(n)) for n in group}
    fits = sum(int(r[-1]) for r in row_ptrs) <= np.iinfo(np.int32).max  # the stacked last
    return fits and len(rows) == 1 == len(same) and rows.pop() % spec.PART_ROWS == 0


def _stacked(group: list, idx, consts) -> list[str]:
    """The five weight initializers of the group's weights stacked along N (repacked by the
    spec's own `pack_block4`: the blocks each weight kept, in the stacked row order)."""
    k = node_k(group[0])
    dense = [spec.unpack_block4(*(idx.const(n.input[i]) for i in _WEIGHTS[:3]), k) for n in group]
    block = spec.pack_block4(np.concatenate(dense))
    arrays = [block.row_ptr, block.block_col, block.values]
    arrays += [np.concatenate([idx.const(n.input[i]) for n in group]) for i in _WEIGHTS[3:]]
    return [
        consts.init(f"{group[0].input[i]}.x3", a) for i, a in zip(_WEIGHTS, arrays, strict=True)
    ]


def _fused(group: list, idx, consts):
    from onnx import helper

    inputs = [*group[0].input[:3], *_stacked(group, idx, consts)]
    inputs += [name for node in group for name in node.input[8:10]]
    prefix = "+".join(n.name.rsplit("/", 1)[0] for n in group)
    return helper.make_node(
        OP_TYPE, inputs, [n.output[0] for n in group], name=f"{prefix}/{OP_TYPE}",
        domain=spec.DOMAIN, K=node_k(group[0]), activation=node_activation(group[0]),
    )  # fmt: skip


def fuse_shared_inputs(graph, idx, consts) -> list[list[str]]:
    """Rewrites every three ``SparseQLinearU8`` sharing an input; returns each fused group's
    layer names. The op takes the first one's place: its input exists there, and every
    reader of the three outputs comes after the op that made it."""
    at, gone, fused = {}, set(), []
    for group in _shared_readers(graph):
        if _fusable(group, idx):
            at[id(group[0])] = [_fused(group, idx, consts)]
            gone.update(id(n) for n in group)
            fused.append([n.name.rsplit("/", 1)[0] for n in group])
    replace_nodes(graph, at, gone)
    return fused
