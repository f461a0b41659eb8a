"""A sparse Linear + the residual LayerNorm reading its output -> one op.

After `layernorm_fusion`, BERT's attention-output and FFN-output Linears write a float
tensor that only their ``ResidualLayerNorm*`` reads. At batch 32 (4,096 tokens of 768
floats, 12.6 MB) that tensor goes to memory and back, and the LayerNorm, a streaming op, ran
at memory speed: 14% of the sparse graph's time against 9% at batch 1 (issue 22's profile).
``SparseQLinear[FromU8]LayerNorm[ToU8]`` (`kernels.spec`) computes each tile's rows through
the Linear and normalises them while they are still in cache; the steps are the two ops'.
"""

from __future__ import annotations

from sparse_transfer.export.graph_index import node_activation, node_k
from sparse_transfer.kernels import spec

# The Linears whose float output a LayerNorm may absorb (no GELU, no output quantization).
_LINEARS = {"SparseQLinear": "SparseQLinear", "SparseQLinearFromU8": "SparseQLinearFromU8"}


def _linear_input(norm, idx) -> tuple[object, str] | None:
    """(the Linear making one of `norm`'s two addends, the other addend), or None."""
    for pos in (0, 1):
        made = idx.producer.get(norm.input[pos])
        if (
            made is not None
            and made.op_type in _LINEARS
            and made.domain == spec.DOMAIN
            and node_activation(made) == "none"
            and idx.only_consumer(made.output[0]) is norm
        ):
            return made, norm.input[1 - pos]
    return None


def _fused(linear, residual: str, norm):
    from onnx import helper

    op_type = f"{linear.op_type}LayerNorm" + ("ToU8" if spec.LAYERNORM_OPS[norm.op_type] else "")
    epsilon = next(a.f for a in norm.attribute if a.name == "epsilon")
    inputs = [*linear.input[:8], residual, *norm.input[2:]]
    return helper.make_node(
        op_type, inputs, list(norm.output), name=f"{linear.name.rsplit('/', 1)[0]}/{op_type}",
        domain=spec.DOMAIN, K=node_k(linear), epsilon=float(epsilon),
    )  # fmt: skip


def fuse_linear_norms(graph, idx) -> int:
    """Rewrites every Linear whose float output only a ``ResidualLayerNorm*`` reads."""
    from sparse_transfer.export.graph_index import replace_nodes

    at, gone = {}, set()
    for norm in graph.node:
        if norm.op_type not in spec.LAYERNORM_OPS or norm.domain != spec.DOMAIN:
            continue
        found = _linear_input(norm, idx)
        if found is not None:
            at[id(norm)] = [_fused(*found, norm)]
            gone.add(id(found[0]))
    replace_nodes(graph, at, gone)
    return len(at)
