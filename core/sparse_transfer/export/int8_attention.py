"""Int8 attention matmuls in the exported graph, from the QAT attention quantizers.

The float graph (traced with eager attention) has, per attention module, two
``MatMul`` nodes whose operands are both activations: ``Q @ K^T`` then
``softmax @ V``. Each becomes, in the ``integer`` form::

    QuantizeLinear(a, s_a, zp_a:uint8), QuantizeLinear(b, s_b, 128:uint8)
      -> MatMulInteger(a_q, b_q, zp_a, 128) -> Cast -> Mul(s_a * s_b)

and in the ``qdq`` form ``MatMul(DQ(Q(a)), DQ(Q(b)))``: the arithmetic of
`sparse_transfer.quantization.attention.qat_attention_forward` (per-tensor
quantization commutes with the transpose of K). DeepSparse runs the integer
form fast; it is the bulk of its gain over float attention.

The second operand is symmetric int8 in QAT (zero point 0, [-128, 127]); the
graph stores the same integers shifted into uint8 (zero point 128, [0, 255]),
which round and clamp identically. ONNX Runtime converts int8 activations to
uint8 on x86 and, for int8, wrapped the key/value transposes in extra
DequantizeLinear/QuantizeLinear pairs: uint8 was 7% faster there (measured),
and DeepSparse runs both alike.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sparse_transfer.errors import ExportError
from sparse_transfer.export.int8 import FORMATS, _Builder, _qdq

QParams = tuple[float, int]


@dataclass
class AttentionQuant:
    """The four operand quantizers of one attention module's matmuls."""

    module: str
    query: QParams
    key: QParams
    probs: QParams
    value: QParams


def collect_attention(model) -> list[AttentionQuant]:
    """Frozen qparams of every quantized attention module, in model order."""
    from sparse_transfer.quantization.attention import attention_quants

    out = []
    for name, holder in attention_quants(model).items():
        qp = {}
        for attr, aq in holder.quants():
            scale, zp = aq.qparams()
            shift = -aq.qmin if aq.qmin < 0 else 0  # signed range -> the same integers in uint8
            qp[attr] = (float(scale), int(zp) + shift)
        out.append(AttentionQuant(module=name, **qp))
    return out


def _activation_matmuls(graph) -> list:
    """``MatMul`` nodes with no initializer operand, in graph order."""
    weights = {i.name for i in graph.initializer}
    constants = {o for n in graph.node if n.op_type == "Constant" for o in n.output}
    return [
        n
        for n in graph.node
        if n.op_type == "MatMul" and not any(i in weights or i in constants for i in n.input)
    ]


def _match(graph, attention: list[AttentionQuant]) -> dict[str, tuple[AttentionQuant, str]]:
    """MatMul node name -> (module, "scores" | "context"), by the module's scope in node names."""
    matmuls = _activation_matmuls(graph)
    found: dict[str, tuple[AttentionQuant, str]] = {}
    for aq in attention:
        # TorchScript scopes read "/model/bert/encoder/layer.0/attention/self/MatMul"
        scope = f".{aq.module}."
        mine = [n for n in matmuls if scope in n.name.replace("/", ".")]
        if len(mine) != 2:
            raise ExportError(
                f"int8 export: expected the 2 attention matmuls of {aq.module} in the traced "
                f"graph (nodes in scope {aq.module}), found {len(mine)}"
            )
        found[mine[0].name] = (aq, "scores")
        found[mine[1].name] = (aq, "context")
    return found


def quantize_attention(model_proto, attention: list[AttentionQuant], fmt: str = "integer") -> int:
    """Rewrites the attention matmuls in place; returns how many became int8."""
    from onnx import TensorProto

    if fmt not in FORMATS:
        raise ExportError(f"--format {fmt!r}: choose one of {', '.join(FORMATS)}")
    if not attention:
        return 0
    graph = model_proto.graph
    targets = _match(graph, attention)
    b = _Builder(graph)
    new_nodes = []
    for node in graph.node:
        if node.name not in targets:
            new_nodes.append(node)
            continue
        aq, which = targets[node.name]
        a_qp, b_qp = (aq.query, aq.key) if which == "scores" else (aq.probs, aq.value)
        base = f"{aq.module}/{which}"
        a, bb = node.input
        out = node.output[0]
        if fmt == "integer":
            sa = b.scalar(f"{base}.a_scale", a_qp[0], np.float32)
            za = b.scalar(f"{base}.a_zero_point", a_qp[1], np.uint8)
            sb = b.scalar(f"{base}.b_scale", b_qp[0], np.float32)
            zb = b.scalar(f"{base}.b_zero_point", b_qp[1], np.uint8)
            qa, a_q = b.node("QuantizeLinear", [a, sa, za], f"{base}/a")
            qb, b_q = b.node("QuantizeLinear", [bb, sb, zb], f"{base}/b")
            mm, acc = b.node("MatMulInteger", [a_q, b_q, za, zb], base)
            cast, acc_f = b.node("Cast", [acc], base, to=TensorProto.FLOAT)
            # one rescale of the int32 sums: (a_q - zp_a)(b_q - zp_b) * s_a * s_b, as in torch
            sab = b.scalar(
                f"{base}.ab_scale", np.float32(a_qp[0]) * np.float32(b_qp[0]), np.float32
            )
            mul, _ = b.node("Mul", [acc_f, sab], base, [out])
            new_nodes += [qa, qb, mm, cast, mul]
        else:
            more_a, a_dq = _qdq(b, a, a_qp, f"{base}/a")
            more_b, b_dq = _qdq(b, bb, b_qp, f"{base}/b")
            mm, _ = b.node("MatMul", [a_dq, b_dq], base, [out])
            new_nodes += [*more_a, *more_b, mm]
    del graph.node[:]
    graph.node.extend(new_nodes)
    return len(targets)
