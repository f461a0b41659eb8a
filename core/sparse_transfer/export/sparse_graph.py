"""The standard int8 graph -> ``model.sparse.onnx``: every int8 Linear as one sparse custom op.

`int8.quantize_graph` writes each quantized Linear as
``QuantizeLinear -> MatMulInteger(W int8) -> Cast -> Mul(s_x * s_w) [-> Add(b)]``.
`sparsify` matches that chain and replaces it with one op of
`sparse_transfer.kernels.spec` (``SparseQLinear*``, domain ``com.sparse_transfer``)
whose weight is three 1x4 block-sparse initializers. It runs as named passes over the
matched Linears, each absorbing what ONNX Runtime's profile of our int8 deployments
says costs time around the matmul (issue 22):

1. `match_linears`: the chain above; scale and bias go into the op's epilogue;
2. `absorb_gelu`: the exported erf GELU (``Div(sqrt 2) -> Erf -> Add(1) -> Mul(x) ->
   Mul(0.5)``, or an ONNX ``Gelu``) when it is the Linear's only consumer (measured, see
   `FUSE_GELU`);
3. `absorb_output_quant`: a per-tensor uint8 ``QuantizeLinear`` that is the only consumer
   of the (GELU'd) output -> ``*ToU8`` (the next Linear reads uint8); likewise the one
   after an ``Int8Attention`` goes into it (``Int8AttentionToU8``, `absorb_attention_quant`);
4. `choose_inputs`: a ``QuantizeLinear`` read by this Linear alone is dropped (the op
   quantizes its float input); one shared (query/key/value) or made by a ``*ToU8`` stays,
   and the op reads uint8 (``*FromU8`` / ``SparseQLinearU8``);
5. `group_shared_inputs` (off by default, measured, see `CONCAT_SHARED_INPUTS`): Linears
   reading one uint8 tensor with nothing fused after them (query, key, value) become one
   op over their stacked weights, then a ``Split``;
6. `emit` and `prune`: the ops replace the chains in place; dead nodes and initializers go.

Before them, `attention_fusion` turns each int8 attention (two ``MatMulInteger`` of
activations and the ops around them) into one ``Int8Attention`` fed by per-tensor
QuantizeLinears, which pass 3 then folds into the query/key/value Linears. After them,
`layernorm_fusion` and `linear_norm_fusion` take the residual LayerNorms, and
`shared_input_fusion` makes each layer's query/key/value ``SparseQLinearU8`` ops one
``SparseQLinearU8x3`` (one repack of their shared input, no Split).

The arithmetic is the standard graph's, step for step (spec.py's step 3 is ``Cast ->
Mul -> Add``; GELU's ``0.5 *`` is exact in either order), so the exact reference gives
the same numbers for both graphs (the attention op's softmax exp aside: see its spec).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from sparse_transfer.export import (
    attention_fusion,
    embedding_fusion,
    layernorm_fusion,
    linear_norm_fusion,
    shared_input_fusion,
)
from sparse_transfer.export.graph_index import GraphIndex, is_u8_scalar_quant, replace_nodes
from sparse_transfer.kernels import spec

SPARSE_MODEL_FILE = "model.sparse.onnx"
# GELU in the op's epilogue, measured on a BERT-base FFN block (128 tokens, 768 -> 3072 ->
# 768, 2 threads, interleaved, best round, AVX-512 VNNI): with the kernel library's
# vectorised erf 3.0 ms fused vs 4.6 ms with GELU left to ONNX Runtime's own Gelu at 90%
# unstructured, 2.2 vs 2.5 ms at 90% block4 (its first build, per-element erf, lost:
# 19.3 vs 9.5 ms). `sparsify(fuse_gelu=False)` leaves GELU to ONNX Runtime.
FUSE_GELU = True
# query/key/value as one op over stacked weights + Split: 15% faster than three ops with the
# library's first build (128x768x768, 90% unstructured), slower with its tiled build (4.9 vs
# 5.6 ms unstructured, 2.4 vs 2.7 ms block4: the Split's copy costs more than one shared
# activation repack saves). Off by default; `sparsify(concat_shared_inputs=True)` keeps it.
CONCAT_SHARED_INPUTS = False
# Each int8 attention as one op (`attention_fusion`, `kernels.spec.Int8Attention`).
FUSE_ATTENTION = True
# ... that also quantizes its context for attention.output.dense (`absorb_attention_quant`):
# measured in docs/kernels.md.
FUSE_ATTENTION_OUTPUT_QUANT = True
# Each residual Add + LayerNorm (+ the next Linear's quantization) as one op
# (`layernorm_fusion`, `kernels.spec.ResidualLayerNorm*`).
FUSE_LAYERNORM = True
# Each Linear whose float output only such a LayerNorm reads, with it, as one op
# (`linear_norm_fusion`): measured in docs/kernels.md.
FUSE_LINEAR_LAYERNORM = True
# Each layer's query, key and value (three uint8 Linears reading one tensor) as one op with
# three outputs (`shared_input_fusion`): measured in docs/kernels.md.
FUSE_SHARED_INPUTS = True
# BERT's embeddings, their LayerNorm and the first Linear's quantization as one op
# (`embedding_fusion`, `kernels.spec.EmbeddingsLayerNormToU8`): measured in docs/kernels.md.
FUSE_EMBEDDINGS = True
FUSIONS = ("float_input", "bias_scale_epilogue", "gelu", "output_quant", "attention",
           "attention_output_quant", "layernorm", "linear_layernorm",
           "shared_input_parts", "embeddings")  # fmt: skip
_SQRT2 = np.float32(np.sqrt(2.0))


@dataclass
class Linear:
    """One matched int8 Linear and what the passes decided for it."""

    mmi: object  # the MatMulInteger NodeProto
    quant: object  # the QuantizeLinear feeding it
    weight: str
    w_scale: np.ndarray  # float32 [N]
    bias: np.ndarray  # float32 [N] (zeros without an Add)
    output: str  # the float tensor the chain ends in (moves on with each fusion)
    removed: list = field(default_factory=list)
    activation: str = "none"
    out_quant: object = None
    float_input: bool = False
    quant_absorbed: bool = False  # its QuantizeLinear went into the op making its input

    @property
    def name(self) -> str:
        return self.mmi.name.rsplit("/", 1)[0]


def _weight_scale(mul, cast, quant, idx: GraphIndex, n: int) -> np.ndarray | None:
    """s_w [N] of ``Mul(Cast(acc), Mul(s_x [* 1], s_w))`` when s_x is `quant`'s scale."""
    rescale = idx.producer.get(next((i for i in mul.input if i != cast.output[0]), ""))
    if rescale is None or rescale.op_type != "Mul":
        return None

    def is_input_scale(name: str) -> bool:  # s_x, or int8.py's s_x * runtime_one (exact)
        made = idx.producer.get(name)
        return name == quant.input[1] or (
            made is not None and made.op_type == "Mul" and quant.input[1] in made.input
        )

    a, b = rescale.input
    w_name = b if is_input_scale(a) else a if is_input_scale(b) else None
    w_scale = idx.const(w_name) if w_name else None
    if w_scale is None or w_scale.size not in (1, n) or w_scale.dtype != np.float32:
        return None
    return np.broadcast_to(w_scale.reshape(-1), (n,)).copy()


def _match_one(node, idx: GraphIndex) -> Linear | None:
    """The Linear chain starting at MatMulInteger `node`, or None when it is not one."""
    w = idx.const(node.input[1]) if len(node.input) >= 3 else None
    if w is None or w.dtype != np.int8 or w.ndim != 2:
        return None  # attention products read two activations
    quant = idx.producer.get(node.input[0])
    if not is_u8_scalar_quant(quant, idx) or node.input[2] != quant.input[2]:
        return None
    if len(node.input) > 3 and node.input[3] and np.any(idx.const(node.input[3]) != 0):
        return None
    cast = idx.only_consumer(node.output[0])
    to_float = cast is not None and cast.op_type == "Cast" and cast.attribute[0].i == 1
    mul = to_float and idx.only_consumer(cast.output[0])
    if not mul or mul.op_type != "Mul":
        return None
    n = w.shape[1]
    w_scale = _weight_scale(mul, cast, quant, idx, n)
    if w_scale is None:
        return None
    linear = Linear(
        mmi=node, quant=quant, weight=node.input[1], w_scale=w_scale,
        bias=np.zeros(n, np.float32), output=mul.output[0], removed=[node, cast, mul],
    )  # fmt: skip
    add = idx.only_consumer(mul.output[0])
    if add is not None and add.op_type == "Add":
        other = next(i for i in add.input if i != mul.output[0])
        bias = idx.const(other)
        if bias is not None and bias.dtype == np.float32 and bias.shape == (n,):
            linear.bias, linear.output = bias.copy(), add.output[0]
            linear.removed.append(add)
    return linear


def match_linears(graph, idx: GraphIndex) -> list[Linear]:
    """Pass 1: every ``QuantizeLinear -> MatMulInteger(int8 W) -> Cast -> Mul [-> Add]``."""
    found = [_match_one(n, idx) for n in graph.node if n.op_type == "MatMulInteger"]
    return [m for m in found if m is not None]


def _scalar(idx: GraphIndex, name: str, value: float) -> bool:
    v = idx.const(name)
    return v is not None and v.size == 1 and np.float32(v.reshape(())) == np.float32(value)


def _erf_gelu(x: str, idx: GraphIndex) -> tuple[list, str] | None:
    """The nodes and output of ``0.5 * x * (1 + erf(x / sqrt 2))`` as torch exports it."""
    users = idx.consumers.get(x, [])
    div = next((u for u in users if u.op_type == "Div" and u.input[0] == x), None)
    mul = next((u for u in users if u.op_type == "Mul" and x in u.input), None)
    if len(users) != 2 or x in idx.graph_outputs or not (div and mul):
        return None
    if not _scalar(idx, div.input[1], _SQRT2):
        return None
    erf = idx.only_consumer(div.output[0])
    add = erf and erf.op_type == "Erf" and idx.only_consumer(erf.output[0])
    if not add or add.op_type != "Add" or not any(_scalar(idx, i, 1.0) for i in add.input):
        return None
    if add.output[0] not in mul.input:
        return None
    half = idx.only_consumer(mul.output[0])
    if not half or half.op_type != "Mul" or not any(_scalar(idx, i, 0.5) for i in half.input):
        return None
    return [div, erf, add, mul, half], half.output[0]


def absorb_gelu(linears: list[Linear], idx: GraphIndex) -> int:
    """Pass 2: GELU into the epilogue when it is all that reads the Linear's output."""
    count = 0
    for lin in linears:
        only = idx.only_consumer(lin.output)
        attrs = {a.name: a for a in only.attribute} if only is not None else {}
        if (
            only is not None
            and only.op_type == "Gelu"
            and ("approximate" not in attrs or attrs["approximate"].s in (b"none", "none"))
        ):
            found = [only], only.output[0]
        else:
            found = _erf_gelu(lin.output, idx)
        if found:
            lin.removed += found[0]
            lin.output, lin.activation = found[1], "gelu"
            count += 1
    return count


def absorb_output_quant(linears: list[Linear], idx: GraphIndex) -> int:
    """Pass 3: the next QuantizeLinear into the op (``*ToU8``) when it is the only reader."""
    count = 0
    for lin in linears:
        q = idx.only_consumer(lin.output)
        if q is not None and q.input[0] == lin.output and is_u8_scalar_quant(q, idx):
            lin.out_quant = q
            lin.removed.append(q)
            count += 1
    return count


def absorb_attention_quant(linears: list[Linear], idx: GraphIndex) -> int:
    """Pass 3b: a Linear's QuantizeLinear that alone reads an ``Int8Attention``'s float
    context goes into that op (``Int8AttentionToU8``); the Linear reads its uint8 output."""
    count = 0
    for lin in linears:
        q = lin.quant
        attention = idx.producer.get(q.input[0])
        if (
            attention is None
            or attention.op_type != spec.ATTENTION_OP
            or attention.domain != spec.DOMAIN
            or idx.only_consumer(attention.output[0]) is not q
        ):
            continue
        attention.op_type = "Int8AttentionToU8"
        attention.name = f"{attention.name.rsplit('/', 1)[0]}/{attention.op_type}"
        attention.input.extend([q.input[1], q.input[2]])
        attention.output[0] = q.output[0]
        lin.removed.append(q)
        lin.quant_absorbed = True
        count += 1
    return count


def choose_inputs(linears: list[Linear], idx: GraphIndex) -> int:
    """Pass 4: float input (QuantizeLinear dropped) where this Linear is its only reader."""
    absorbed = {id(lin.out_quant) for lin in linears if lin.out_quant is not None}
    count = 0
    for lin in linears:
        q = lin.quant
        if lin.quant_absorbed:
            continue
        if id(q) not in absorbed and idx.only_consumer(q.output[0]) is lin.mmi:
            lin.float_input = True
            lin.removed.append(q)
            count += 1
    return count


def _op_type(lin: Linear) -> str:
    wanted = (not lin.float_input, lin.out_quant is not None)
    return next(op for op, io in spec.QLINEAR_OPS.items() if io == wanted)


def _pack(group: list[Linear], b, packed: dict):
    """Block initializers of the group's weights stacked along N (cached per weight set)."""
    key = tuple(lin.weight for lin in group)
    if key not in packed:
        w = np.concatenate([b.const(lin.weight).T for lin in group])  # [K, N] -> [N, K]
        block = spec.pack_block4(np.ascontiguousarray(w))
        names = [b.init(f"{group[0].weight}.{part}", getattr(block, part))
                 for part in ("row_ptr", "block_col", "values")]  # fmt: skip
        packed[key] = (names, block)
    return packed[key]


def _emit(group: list[Linear], b, packed: dict) -> tuple[list, str, dict]:
    """The custom-op node for a Linear (or Linears sharing one input: one op, then Split)."""
    from onnx import helper

    lin = group[0]
    names, block = _pack(group, b, packed)
    name = "+".join(g.name for g in group) if len(group) > 1 else lin.name
    x = lin.quant.input[0] if lin.float_input else lin.quant.output[0]
    inputs = [x, lin.quant.input[1], lin.quant.input[2], *names,
              b.init(f"{lin.name}.weight_scale", np.concatenate([g.w_scale for g in group])),
              b.init(f"{lin.name}.bias", np.concatenate([g.bias for g in group]))]  # fmt: skip
    out = lin.output if len(group) == 1 else b.unique(f"{name}/concat_out")
    if lin.out_quant is not None:
        inputs += [lin.out_quant.input[1], lin.out_quant.input[2]]
        out = lin.out_quant.output[0]
    nodes = [helper.make_node(
        _op_type(lin), inputs, [out], name=f"{name}/{_op_type(lin)}",
        domain=spec.DOMAIN, K=int(block.k), activation=lin.activation,
    )]  # fmt: skip
    if len(group) > 1:
        sizes = b.init(f"{name}.split", np.array([g.bias.size for g in group], np.int64))
        outputs = [g.output for g in group]
        nodes.append(
            helper.make_node("Split", [out, sizes], outputs, name=f"{name}/Split", axis=-1)
        )
    layer = {
        "op": nodes[0].op_type,
        "weights": [g.weight for g in group],
        "shape": [block.n, block.k],
        "blocks_kept": int(block.block_col.size),
        "blocks": int(block.n * -(-block.k // spec.BLOCK)),
        "block_density": round(block.block_density, 6),
        "activation": lin.activation,
        "float_input": lin.float_input,
        "output_quant": lin.out_quant is not None,
    }
    return nodes, name, layer


def group_shared_inputs(linears: list[Linear]) -> list[list[Linear]]:
    """Pass 5: Linears reading one uint8 tensor with nothing fused after them (query/key/
    value) become one op over their stacked weights and a Split: the input is read and
    repacked once (see `CONCAT_SHARED_INPUTS` for when that paid)."""
    groups: dict[tuple, list[Linear]] = {}
    out = []
    for lin in linears:
        plain = not lin.float_input and lin.activation == "none" and lin.out_quant is None
        key = (lin.quant.output[0],) if plain else (id(lin),)
        if key not in groups:
            groups[key] = []
            out.append(groups[key])
        groups[key].append(lin)
    return out


class _Consts:
    """`int8._Builder` plus reading back the graph's initializers."""

    def unique(self, base: str) -> str:
        return self._b.unique(base)

    def __init__(self, graph, idx: GraphIndex):
        from sparse_transfer.export.int8 import _Builder

        self._b, self._idx = _Builder(graph), idx

    def const(self, name: str) -> np.ndarray:
        return self._idx.const(name)

    def init(self, base: str, array: np.ndarray) -> str:
        return self._b.init(base, np.ascontiguousarray(array))


def emit(graph, groups: list[list[Linear]], idx: GraphIndex) -> dict[str, dict]:
    """Pass 6: each chain's nodes out, its op in; per-layer facts.

    One Linear's op takes its chain's last node's place; a group's ops take its first
    MatMulInteger's (its input exists there, and every reader of its outputs comes later).
    """
    b, packed, layers = _Consts(graph, idx), {}, {}
    gone = {id(n) for group in groups for lin in group for n in lin.removed}
    at: dict[int, list] = {}
    order = {id(n): i for i, n in enumerate(graph.node)}
    for group in groups:
        nodes, name, layers[name] = _emit(group, b, packed)
        lin = group[0]
        last = lin.out_quant if lin.out_quant is not None else idx.producer[lin.output]
        anchor = (
            last if len(group) == 1 else min((g.mmi for g in group), key=lambda n: order[id(n)])
        )
        at[id(anchor)] = nodes
    replace_nodes(graph, at, gone)
    return layers


def prune(graph) -> None:
    """Drops nodes whose outputs nothing reads (the shared scale Muls), then initializers."""
    from sparse_transfer.export.int8 import _drop_unused_initializers

    outputs = {o.name for o in graph.output}
    while True:
        used = {i for n in graph.node for i in n.input} | outputs
        kept = [n for n in graph.node if any(o in used for o in n.output)]
        if len(kept) == len(graph.node):
            break
        del graph.node[:]
        graph.node.extend(kept)
    _drop_unused_initializers(graph)


def _int8_weight_matmuls(graph) -> list[str]:
    """MatMulIntegers that read an int8 initializer: int8 Linears (matched or not)."""
    idx = GraphIndex(graph)
    return [
        n.name
        for n in graph.node
        if n.op_type == "MatMulInteger"
        and (w := idx.const(n.input[1])) is not None
        and w.dtype == np.int8
    ]


def _refresh_inputs(graph, layers: dict) -> int:
    """Per-layer op and input kind after later passes switched readers to uint8."""
    for node in graph.node:
        layer = layers.get(node.name.rsplit("/", 1)[0])
        io = spec.QLINEAR_OPS.get(node.op_type) or spec.LINEAR_NORM_OPS.get(node.op_type)
        if io is not None and layer is not None:
            layer["op"] = node.op_type
            layer["float_input"] = not io[0]
    return sum(bool(v["float_input"]) for v in layers.values())


def _fuse_shared_inputs(graph, layers: dict) -> int:
    """The last pass (the ops it merges are final by now); the layers say their new op."""
    idx = GraphIndex(graph)
    fused = shared_input_fusion.fuse_shared_inputs(graph, idx, _Consts(graph, idx))
    for name in (name for names in fused for name in names if name in layers):
        layers[name]["op"] = shared_input_fusion.OP_TYPE
    prune(graph)
    return len(fused)


def sparsify(
    model_proto,
    fuse_gelu: bool = FUSE_GELU,
    concat_shared_inputs: bool = CONCAT_SHARED_INPUTS,
    fuse_attention: bool = FUSE_ATTENTION,
    fuse_attention_output_quant: bool = FUSE_ATTENTION_OUTPUT_QUANT,
    fuse_layernorm: bool = FUSE_LAYERNORM,
    fuse_linear_layernorm: bool = FUSE_LINEAR_LAYERNORM,
    fuse_shared_inputs: bool = FUSE_SHARED_INPUTS,
    fuse_embeddings: bool = FUSE_EMBEDDINGS,
) -> dict:
    """Rewrites a standard ``integer`` int8 graph in place; returns the report entry.

    `fuse_gelu` moves GELU into the op's epilogue (see `FUSE_GELU` for what it buys);
    `fuse_attention` makes each int8 attention one op (`attention_fusion`; with
    `fuse_attention_output_quant` it writes the next Linear's uint8 input), `fuse_layernorm`
    each residual Add + LayerNorm (`layernorm_fusion`), and `fuse_linear_layernorm` (with
    it) the Linear before such a LayerNorm into it (`linear_norm_fusion`), and
    `fuse_shared_inputs` each query/key/value trio into one op (`shared_input_fusion`);
    `fuse_embeddings` the embeddings with their LayerNorm (`embedding_fusion`)."""
    from onnx import helper

    graph = model_proto.graph
    attention = 0
    if fuse_attention:
        shapes = attention_fusion.inferred_shapes(model_proto)
        idx = GraphIndex(graph)
        attention = attention_fusion.fuse_attention(graph, idx, shapes, _Consts(graph, idx))
    idx = GraphIndex(graph)
    linears = match_linears(graph, idx)
    fusions = {
        "attention": attention,
        "bias_scale_epilogue": len(linears),
        "gelu": absorb_gelu(linears, idx) if fuse_gelu else 0,
        "output_quant": absorb_output_quant(linears, idx),
        "attention_output_quant": (
            absorb_attention_quant(linears, idx) if fuse_attention_output_quant else 0
        ),
        "float_input": choose_inputs(linears, idx),
    }
    groups = group_shared_inputs(linears) if concat_shared_inputs else [[x] for x in linears]
    fusions["shared_input_concat"] = sum(len(g) > 1 for g in groups)
    layers = emit(graph, groups, idx)
    prune(graph)
    fusions["layernorm"] = fusions["linear_layernorm"] = 0
    if fuse_layernorm:
        idx = GraphIndex(graph)
        fusions["layernorm"] = layernorm_fusion.fuse_layernorms(graph, idx, _Consts(graph, idx))
        if fuse_linear_layernorm:
            fusions["linear_layernorm"] = linear_norm_fusion.fuse_linear_norms(
                graph, GraphIndex(graph)
            )
        fusions["float_input"] = _refresh_inputs(graph, layers)
        prune(graph)
    fusions["embeddings"] = 0
    if fuse_embeddings:
        idx = GraphIndex(graph)
        fusions["embeddings"] = embedding_fusion.fuse_embeddings(graph, idx, _Consts(graph, idx))
        prune(graph)
    fusions["shared_input_parts"] = _fuse_shared_inputs(graph, layers) if fuse_shared_inputs else 0
    if not any(o.domain == spec.DOMAIN for o in model_proto.opset_import):
        model_proto.opset_import.append(helper.make_opsetid(spec.DOMAIN, spec.OPSET_VERSION))
    left = _int8_weight_matmuls(graph)
    kept = sum(v["blocks_kept"] for v in layers.values())
    total = sum(v["blocks"] for v in layers.values())
    return {
        "file": SPARSE_MODEL_FILE,
        "domain": spec.DOMAIN,
        "linears": len(linears),
        "ops": len(layers),
        "linears_left_standard": left,
        "fusions": fusions,
        "block_density": round(kept / total, 6) if total else 0.0,
        "layers": layers,
    }
