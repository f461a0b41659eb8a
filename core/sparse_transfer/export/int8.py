"""QAT model -> int8 ONNX, by rewriting the float graph with the QAT scales.

Every quantized Linear becomes, in the default ``integer`` form (what
SparseML exports and DeepSparse runs fast; ONNX Runtime fuses it into
``MatMulIntegerToFloat``)::

    QuantizeLinear(x, s_x, zp_x) -> MatMulInteger(x_q, W_q[int8], zp_x, 0) -> Cast -> Mul(s_x*s_w) [-> Add(b)]

and in the ``qdq`` form ``Q -> DQ -> MatMul(., DQ(W_q, s_w, axis))``. Quantized
embeddings become ``Gather(W_q[int8]) -> Cast -> Mul(s_w)`` (``Gather ->
DequantizeLinear(axis=-1)`` in qdq). Weights are stored as int8 initializers
computed with `sparse_transfer.quantization.quantize_weight`, the very function
the fake-quant forward uses, so zero positions equal the sparse FP32 weights'.
No ``ai.onnx.ml`` import is added (DeepSparse's runtime rejects it), every
optional zero point is spelled out and no DequantizeLinear reads a non-weight
constant: DeepSparse 1.8 aborts on either (measured; see tests/integration/
test_deepsparse.py).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from sparse_transfer.errors import ExportError
from sparse_transfer.export.onnx_export import MIN_OPSET_INT8, TRANSPOSED_SUFFIX

FORMATS = ("integer", "qdq")
INT8_SUFFIX = ".int8"


@dataclass
class QuantizedWeight:
    """One fake-quantized module, in numbers the graph needs."""

    module: str
    kind: str  # "linear" | "embedding"
    params: list[str]  # every name the weight Parameter has (tied weights have several)
    q: np.ndarray  # int8, torch layout: Linear [out, in], Embedding [vocab, hidden]
    scale: np.ndarray  # float32 per channel: [out] or [hidden]
    input_qparams: tuple[float, int] | None
    output_qparams: tuple[float, int] | None
    bias: str | None
    float_zeros: int  # zeros of the FP32 weight, for the zero-pattern check
    zero_mask: np.ndarray  # FP32 weight == 0, torch layout


def collect(model) -> list[QuantizedWeight]:
    """Reads int8 weights and scales from a QAT model (observers must have run)."""
    import torch

    from sparse_transfer.quantization import QATEmbedding, qat_modules, quantize_weight

    names_of: dict[int, list[str]] = defaultdict(list)
    for name, param in model.named_parameters(remove_duplicate=False):
        names_of[id(param)].append(name)
    out = []
    with torch.no_grad():
        for name, m in qat_modules(model).items():
            w = m.weight.detach().float()
            scale = m.current_weight_scale().detach().float()
            q = quantize_weight(w, scale, m.qat_weight_axis, m.qat_weight_bits).to(torch.int8)

            def qp(aq):
                if aq is None:
                    return None
                s, zp = aq.qparams()
                return float(s), int(zp)

            bias = getattr(m, "bias", None)
            out.append(
                QuantizedWeight(
                    module=name,
                    kind="embedding" if isinstance(m, QATEmbedding) else "linear",
                    params=names_of[id(m.weight)],
                    q=q.numpy(),
                    scale=scale.numpy().astype(np.float32),
                    input_qparams=qp(getattr(m, "input_quant", None)),
                    output_qparams=qp(getattr(m, "output_quant", None)),
                    bias=names_of[id(bias)][0] if bias is not None else None,
                    float_zeros=int((w == 0).sum()),
                    zero_mask=(w == 0).numpy(),
                )
            )
    return out


class _Builder:
    """Adds uniquely named nodes and initializers to a graph."""

    def __init__(self, graph):
        from onnx import helper, numpy_helper

        self.graph, self.helper, self.numpy_helper = graph, helper, numpy_helper
        self.names = {i.name for i in graph.initializer} | {n.name for n in graph.node}
        self.names |= {o for n in graph.node for o in n.output}
        self.const_cache: dict[tuple, str] = {}

    def unique(self, base: str) -> str:
        name, i = base, 1
        while name in self.names:
            name, i = f"{base}_{i}", i + 1
        self.names.add(name)
        return name

    def init(self, base: str, array: np.ndarray, exact_name: bool = False) -> str:
        name = base if exact_name and base not in self.names else self.unique(base)
        self.names.add(name)
        self.graph.initializer.append(self.numpy_helper.from_array(array, name))
        return name

    def scalar(self, base: str, value, dtype) -> str:
        key = (np.dtype(dtype).str, float(value))
        if key not in self.const_cache:
            self.const_cache[key] = self.init(base, np.array(value, dtype=dtype))
        return self.const_cache[key]

    def node(
        self, op: str, inputs: list[str], base: str, outputs: list[str] | None = None, **attrs
    ):
        outputs = outputs or [self.unique(f"{base}/{op}_out")]
        node = self.helper.make_node(op, inputs, outputs, name=self.unique(f"{base}/{op}"), **attrs)
        return node, outputs[0]


def _qdq(b: _Builder, x: str, qparams: tuple[float, int], base: str, out: str | None = None):
    scale, zp = qparams
    s = b.scalar(f"{base}.scale", scale, np.float32)
    z = b.scalar(f"{base}.zero_point", zp, np.uint8)
    n1, xq = b.node("QuantizeLinear", [x, s, z], base)
    n2, y = b.node("DequantizeLinear", [xq, s, z], base, [out] if out else None)
    return [n1, n2], y


def quantize_graph(model_proto, weights: list[QuantizedWeight], fmt: str = "integer") -> dict:
    """Rewrites the float graph in place; returns per-initializer int8 facts for the report.

    Passes: check format and opset, rewrite each embedding Gather and Linear MatMul/Gemm
    (`_GraphRewrite`), insert the output Q/DQ pairs, check every quantized module was
    found, then swap the node list and drop unused initializers.
    """
    if fmt not in FORMATS:
        raise ExportError(f"--format {fmt!r}: choose one of {', '.join(FORMATS)}")
    opset = next((o.version for o in model_proto.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < MIN_OPSET_INT8:
        raise ExportError(
            f"--opset {opset} is too old for int8 export (per-channel QuantizeLinear/"
            f"DequantizeLinear need opset >= {MIN_OPSET_INT8}); use --opset {MIN_OPSET_INT8} or newer"
        )
    graph = model_proto.graph
    rewrite = _GraphRewrite(graph, weights, fmt)
    for node in graph.node:
        rewrite.visit(node)
    new_nodes = rewrite.with_output_qdq()
    missing = [qw.module for qw in weights if qw.module not in rewrite.done]
    if missing:
        raise ExportError(
            f"int8 export could not find these quantized modules in the traced graph: {missing[:5]}"
        )
    del graph.node[:]
    graph.node.extend(rewrite.one_nodes + new_nodes)
    _drop_unused_initializers(graph)
    return rewrite.report


class _GraphRewrite:
    """The state of one int8 rewrite: new nodes, int8 initializers and what was done."""

    def __init__(self, graph, weights: list[QuantizedWeight], fmt: str) -> None:
        self.graph, self.fmt = graph, fmt
        self.b = _Builder(graph)
        # initializer name -> kind -> (module, transposed); tied weights (MLM decoder =
        # word embeddings) appear under both kinds with their own scales.
        self.by_init: dict[str, dict[str, tuple[QuantizedWeight, bool]]] = defaultdict(dict)
        for qw in weights:
            for p in qw.params:
                self.by_init[p][qw.kind] = (qw, False)
                self.by_init[p + TRANSPOSED_SUFFIX][qw.kind] = (qw, True)
        self.consumers: dict[str, list] = defaultdict(list)
        for node in graph.node:
            for name in node.input:
                self.consumers[name].append(node)
        self.new_nodes: list = []
        self.report: dict[str, dict] = {}
        self.done: set[str] = set()
        self.int8_cache: dict[tuple[str, bool], str] = {}
        # tensor -> (module, base) to Q/DQ
        self.output_qdq: dict[str, tuple[QuantizedWeight, str]] = {}
        self.a_scales: dict[str, str] = {}  # input scale initializer -> its non-foldable copy
        self.quantized_inputs: dict[tuple[str, str, str], str] = {}  # (x, scale, zp) -> x_q
        self.one_nodes: list = []

    def runtime_one(self) -> str:
        """1.0 computed from the first input's batch size, which ORT cannot fold."""
        from onnx import TensorProto

        b = self.b
        if not self.one_nodes:
            weights = {i.name for i in self.graph.initializer}
            source = next(v.name for v in self.graph.input if v.name not in weights)
            shape, dims = b.node("Shape", [source], "int8_export/one")
            index = b.scalar("int8_export.batch_axis", 0, np.int64)
            gather, batch = b.node("Gather", [dims, index], "int8_export/one", axis=0)
            cast, batch_f = b.node("Cast", [batch], "int8_export/one", to=TensorProto.FLOAT)
            div, _ = b.node("Div", [batch_f, batch_f], "int8_export/one")
            self.one_nodes.extend([shape, gather, cast, div])
        return self.one_nodes[-1].output[0]

    def int8_init(self, qw: QuantizedWeight, transposed: bool) -> str:
        key = (qw.module, transposed)
        if key not in self.int8_cache:
            base = qw.params[0] + (TRANSPOSED_SUFFIX if transposed else "") + INT8_SUFFIX
            q = np.ascontiguousarray(qw.q.T if transposed else qw.q)
            name = self.b.init(base, q, exact_name=True)
            self.int8_cache[key] = name
            mask = qw.zero_mask.T if transposed else qw.zero_mask
            self.report[name] = {
                "module": qw.module,
                "float_zeros": qw.float_zeros,
                "int8_zeros": int((q == 0).sum()),
                "zero_pattern_identical": bool(np.array_equal(q == 0, mask)),
                "per_channel_scales": int(qw.scale.size),
            }
        return self.int8_cache[key]

    def visit(self, node) -> None:
        """One node of the float graph: rewritten when it reads a quantized weight, else kept."""
        if node.op_type == "Gather" and "embedding" in self.by_init.get(node.input[0], {}):
            self.embedding(node)
            return
        w_name = (
            node.input[1] if node.op_type in ("MatMul", "Gemm") and len(node.input) > 1 else None
        )
        if w_name is None or "linear" not in self.by_init.get(w_name, {}):
            self.new_nodes.append(node)
            return
        qw, transposed = self.by_init[w_name]["linear"]
        attrs = {a.name: a for a in node.attribute}
        trans_b = bool(attrs["transB"].i) if "transB" in attrs else False
        if node.op_type == "Gemm":
            plain = not (attrs.get("transA") and attrs["transA"].i) and all(
                k not in attrs or attrs[k].f == 1.0 for k in ("alpha", "beta")
            )
            if not plain:
                self.new_nodes.append(node)
                return
            transposed = transposed != trans_b  # Gemm(transB=1) on [out,in] reads W^T
        if not transposed:
            # MatMul(x, W[out,in]) would not be a Linear; leave anything unexpected alone
            self.new_nodes.append(node)
            return
        if qw.input_qparams is None:
            raise ExportError(
                f"{qw.module}: a quantized Linear without an input observer cannot export"
            )
        self.linear(node, qw)

    def embedding(self, node) -> None:
        """Gather from the int8 table, then dequantize (Cast*scale or DequantizeLinear)."""
        from onnx import TensorProto

        b = self.b
        qw, _ = self.by_init[node.input[0]]["embedding"]
        base = qw.module
        wq = self.int8_init(qw, False)
        g, gathered = b.node("Gather", [wq, node.input[1]], base, axis=0)
        nodes = [g]
        final = node.output[0]
        target = b.unique(f"{base}/dequantized") if qw.output_qparams else final
        if self.fmt == "integer":
            c, cast = b.node("Cast", [gathered], base, to=TensorProto.FLOAT)
            s = b.init(f"{base}.weight_scale", qw.scale)
            m, _ = b.node("Mul", [cast, s], base, [target])
            nodes += [c, m]
        else:
            s = b.init(f"{base}.weight_scale", qw.scale)
            z = b.init(f"{base}.weight_zero_point", np.zeros(qw.scale.shape, np.int8))
            dq, _ = b.node("DequantizeLinear", [gathered, s, z], base, [target], axis=-1)
            nodes.append(dq)
        if qw.output_qparams:
            more, _ = _qdq(b, target, qw.output_qparams, f"{base}/output", final)
            nodes += more
        self.new_nodes += nodes
        self.done.add(qw.module)

    def linear(self, node, qw: QuantizedWeight) -> None:
        """A Linear's MatMul/Gemm as integer MatMul (or Q/DQ + MatMul), bias Add after it."""
        b = self.b
        base = qw.module
        has_bias = node.op_type == "Gemm" and len(node.input) > 2 and node.input[2]
        out = node.output[0]
        mm_out = b.unique(f"{base}/matmul_out") if has_bias else out
        if self.fmt == "integer":
            nodes = self.integer_matmul(node.input[0], qw, mm_out)
        else:
            more, xdq = _qdq(b, node.input[0], qw.input_qparams, f"{base}/input")
            wq = self.int8_init(qw, True)
            s = b.init(f"{base}.weight_scale", qw.scale)
            z = b.init(f"{base}.weight_zero_point", np.zeros(qw.scale.shape, np.int8))
            dq, wdq = b.node("DequantizeLinear", [wq, s, z], f"{base}/weight", axis=1)
            mm, _ = b.node("MatMul", [xdq, wdq], base, [mm_out])
            nodes = [*more, dq, mm]
        if has_bias:
            add, _ = b.node("Add", [mm_out, node.input[2]], base, [out])
            nodes.append(add)
        self.new_nodes += nodes
        self.done.add(qw.module)
        if qw.output_qparams:
            # SparseML quantizes the Linear's output, i.e. after its bias Add.
            target = out
            if not has_bias and qw.bias is not None:
                for c in self.consumers.get(out, []):
                    if c.op_type == "Add" and qw.bias in c.input:
                        target = c.output[0]
            self.output_qdq[target] = (qw, f"{base}/output")

    def integer_matmul(self, x: str, qw: QuantizedWeight, mm_out: str) -> list:
        """QuantizeLinear(x) -> MatMulInteger -> Cast -> Mul(rescale), in ORT's fusable shape."""
        from onnx import TensorProto

        b = self.b
        base = qw.module
        nodes = []
        s_x, zp_x = qw.input_qparams
        xs = b.scalar(f"{base}.input_scale", s_x, np.float32)
        xz = b.scalar(f"{base}.input_zero_point", zp_x, np.uint8)
        # query/key/value read one tensor and their observers saw the same data,
        # so their scales are equal: quantize it once (ORT does not merge these)
        key = (x, xs, xz)
        ql = None
        if key in self.quantized_inputs:
            xq = self.quantized_inputs[key]
        else:
            ql, xq = b.node("QuantizeLinear", [x, xs, xz], f"{base}/input")
            self.quantized_inputs[key] = xq
        wq = self.int8_init(qw, True)
        # DeepSparse aborts on a MatMulInteger whose optional b_zero_point is left out.
        wz = b.scalar("int8_export.weight_zero_point", 0, np.int8)
        mmi, acc = b.node("MatMulInteger", [xq, wq, xz, wz], base)
        c, cast = b.node("Cast", [acc], base, to=TensorProto.FLOAT)
        # ONNX Runtime fuses MatMulInteger -> Cast -> Mul(., Mul(a_scale, b_scale))
        # [-> Add(bias)] into one MatMulIntegerToFloat kernel (scale and bias applied
        # inside the GEMM), but only if that inner Mul survives its constant folding,
        # i.e. a_scale must not be a constant: it is s_x * runtime_one, exactly s_x.
        # (DeepSparse, which sees fixed shapes, folds it back to a constant.)
        a_scale = self.a_scales.get(xs)
        if a_scale is None:
            am, a_scale = b.node("Mul", [xs, self.runtime_one()], f"{base}/input_scale")
            self.a_scales[xs] = a_scale
            nodes.append(am)
        ws = b.init(f"{base}.weight_scale", qw.scale)
        sm, rescale = b.node("Mul", [a_scale, ws], f"{base}/scale")
        m, _ = b.node("Mul", [cast, rescale], base, [mm_out])
        return nodes + [n for n in (ql, mmi, c, sm, m) if n is not None]

    def with_output_qdq(self) -> list:
        """The new node list with a Q/DQ pair after each quantized module's output."""
        if not self.output_qdq:
            return self.new_nodes
        rewired = []
        for node in self.new_nodes:
            rewired.append(node)
            for i, o in enumerate(node.output):
                if o in self.output_qdq:
                    qw, base = self.output_qdq.pop(o)
                    raw = self.b.unique(f"{base}/float")
                    node.output[i] = raw
                    more, _ = _qdq(self.b, raw, qw.output_qparams, base, o)
                    rewired += more
        return rewired


def _drop_unused_initializers(graph) -> None:
    used = {i for node in graph.node for i in node.input} | {o.name for o in graph.output}
    kept = [i for i in graph.initializer if i.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)


def u8s8_weight_max_abs(model_proto) -> int | None:
    """Largest |value| of the int8 weights any ``MatMulInteger`` reads (None: there are none).

    These are the u8 x s8 products whose exactness depends on the CPU (see
    `sparse_transfer.runtime.cpu_features`); the attention matmuls read two
    uint8 operands and are exact everywhere.
    """
    from onnx import TensorProto, numpy_helper

    int8_inits = {
        i.name: i for i in model_proto.graph.initializer if i.data_type == TensorProto.INT8
    }
    found = None
    for node in model_proto.graph.node:
        if node.op_type == "MatMulInteger" and node.input[1] in int8_inits:
            q = numpy_helper.to_array(int8_inits[node.input[1]]).astype(np.int16)
            m = int(np.abs(q).max()) if q.size else 0
            found = m if found is None else max(found, m)
    return found
