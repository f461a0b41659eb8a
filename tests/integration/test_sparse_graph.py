"""``model.sparse.onnx`` (issue 22): the int8 Linears as sparse custom ops, checked exactly.

The rewrite (`export.sparse_graph`) must replace every int8 Linear, keep its weights
bit for bit (the 1x4 blocks unpack to the standard graph's int8 weights), compute the
standard graph's numbers under the exact reference (ONNX's numpy evaluator with
`kernels.spec`'s ops: no library needed) with equal predictions, and fuse GELU and
the next Linear's input quantization. The engines (`runtime.engines`) must refuse or
fall back with a reason when the kernel library is not there, and agree with the
standard engine when it is.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import numpy_helper

from sparse_transfer.cli import main
from sparse_transfer.embedded.fixtures import make_tiny_bert, sentiment_rows, write_jsonl
from sparse_transfer.errors import ExportError
from sparse_transfer.export import export_onnx
from sparse_transfer.export.onnx_export import input_names_for, load_for_export, sample_inputs
from sparse_transfer.export.parity import ReferenceGraph, predictions
from sparse_transfer.export.sparse_graph import sparsify
from sparse_transfer.kernels import spec
from sparse_transfer.quantization import calibrate, prepare_qat, save_qat_config
from sparse_transfer.runtime import OnnxModel, engines
from sparse_transfer.runtime.onnx_model import session_options

pytestmark = pytest.mark.integration

TASKS = [
    "text-classification",
    "token-classification",
    "question-answering",
    "masked-language-modeling",
]
LAYERS = 2


def _qat_export(root: Path, task: str, linear_outputs: bool = False) -> Path:
    """A tiny 90%-sparse QAT model of `task`, calibrated and exported (integer int8)."""
    src = make_tiny_bert(root / "float", task=task, sparsity=0.9, num_layers=LAYERS)
    model, tokenizer, _ = load_for_export(src, task)
    prepare_qat(
        model,
        exclude_module_types=["LayerNorm", "Tanh"],
        quantize_embedding_activations=True,
        quantize_linear_activations=linear_outputs,
    )
    names = input_names_for(model, tokenizer)
    pair = task == "question-answering"
    calibrate(
        model,
        [
            {k: torch.from_numpy(v) for k, v in sample_inputs(tokenizer, names, 8, 24, seed=s, pair=pair).items()}
            for s in range(3)
        ],
    )  # fmt: skip
    qat = root / "qat"
    model.save_pretrained(str(qat))
    tokenizer.save_pretrained(str(qat))
    shutil.copyfile(src / "vocab.txt", qat / "vocab.txt")
    save_qat_config(model, qat)
    return export_onnx(qat, task, output=root / "deployment")


@pytest.fixture(scope="module")
def deployments(tmp_path_factory):
    root = tmp_path_factory.mktemp("sparse-graph")
    return {t: _qat_export(root / t, t) for t in TASKS}


def _report(dest: Path) -> dict:
    return json.loads((dest / "export_report.json").read_text())


def _graphs(dest: Path):
    return onnx.load(str(dest / "model.onnx")), onnx.load(str(dest / "model.sparse.onnx"))


def _int8_linears(model) -> list:
    inits = {i.name for i in model.graph.initializer if i.data_type == onnx.TensorProto.INT8}
    return [n for n in model.graph.node if n.op_type == "MatMulInteger" and n.input[1] in inits]


def _features(dest: Path, task: str, batch: int, length: int, seed: int) -> dict:
    model = OnnxModel(dest, engine="onnxruntime")
    names = [n for n in model.input_names]
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(dest))
    pair = task == "question-answering"
    return model.feeds(sample_inputs(tokenizer, names, batch, length, seed=seed, pair=pair))


@pytest.mark.parametrize("task", TASKS)
def test_every_int8_linear_becomes_a_sparse_op_with_its_exact_weights(deployments, task):
    dest = deployments[task]
    report = _report(dest)
    standard, sparse = _graphs(dest)
    onnx.checker.check_model(sparse, full_check=True)
    linears = _int8_linears(standard)
    linear_ops = (spec.MATMUL_OP, *spec.QLINEAR_OPS, *spec.PARTS_OPS, *spec.LINEAR_NORM_OPS)
    custom = [n for n in sparse.graph.node if n.op_type in linear_ops]
    # every int8 Linear replaced by one op, each layer's query, key and value by one for three
    heads = 1 if task in ("question-answering", "token-classification") else 2
    assert len(linears) == report["sparse_graph"]["linears"] == 6 * LAYERS + heads
    assert report["sparse_graph"]["ops"] == len(linears)
    assert report["sparse_graph"]["fusions"]["shared_input_parts"] == LAYERS
    assert len(custom) == len(linears) - 2 * LAYERS
    assert _int8_linears(sparse) == []
    # each attention module's two integer matmuls and the ops between them: one op
    # ... writing the uint8 context attention.output.dense reads (its QuantizeLinear absorbed)
    attention = [n for n in sparse.graph.node if n.op_type == "Int8AttentionToU8"]
    assert len(attention) == report["sparse_graph"]["fusions"]["attention"] == LAYERS
    assert report["sparse_graph"]["fusions"]["attention_output_quant"] == LAYERS
    assert report["int8"]["attention_matmuls"] == 2 * LAYERS
    assert not [n for n in sparse.graph.node if n.op_type in ("MatMulInteger", "Softmax")]
    assert {o.domain: o.version for o in sparse.opset_import}[spec.DOMAIN] == spec.OPSET_VERSION
    # weights round-trip exactly, block density counted independently
    std_init = {i.name: numpy_helper.to_array(i) for i in standard.graph.initializer}
    sp_init = {i.name: numpy_helper.to_array(i) for i in sparse.graph.initializer}
    layers = report["sparse_graph"]["layers"]
    kept_all = total_all = 0
    for node in custom:
        prefix = node.name.rsplit("/", 1)[0]
        parts = [layers[name] for name in prefix.split("+")] if node.op_type in spec.PARTS_OPS \
            else [layers[prefix]]  # fmt: skip
        assert {part["op"] for part in parts} == {node.op_type}
        weights = [name for part in parts for name in part["weights"]]
        w = np.concatenate([std_init[name].T for name in weights])  # [N, K] stacked
        k = next(a.i for a in node.attribute if a.name == "K")
        row_ptr, block_col, values = (sp_init[i] for i in node.input[3:6])
        assert k == w.shape[1]
        assert np.array_equal(spec.unpack_block4(row_ptr, block_col, values, k), w), node.name
        padded = np.zeros((w.shape[0], -(-k // 4) * 4), np.int8)
        padded[:, :k] = w
        kept = int(padded.reshape(w.shape[0], -1, 4).any(axis=2).sum())
        assert sum(part["blocks_kept"] for part in parts) == kept == block_col.size, node.name
        blocks = sum(part["blocks"] for part in parts)
        assert blocks == w.shape[0] * (-(-k // 4))
        kept_all, total_all = kept_all + kept, total_all + blocks
    assert report["sparse_graph"]["block_density"] == round(kept_all / total_all, 6)
    assert 0.2 < kept_all / total_all < 0.5  # 90% unstructured: about a third of blocks kept
    assert "model.sparse.onnx" in report["files"]
    assert report["sparse_graph"]["representation"]["name"] == "7bit-weights"


@pytest.mark.parametrize("task", TASKS)
def test_sparse_graph_computes_the_standard_graphs_numbers(deployments, task):
    dest = deployments[task]
    report = _report(dest)
    parity = report["sparse_graph"]["parity"]
    assert parity["passed"] and parity["graph_vs_standard"]["agreement_min"] == 1.0
    tolerance = report["parity"]["tolerance"]
    standard, sparse = (ReferenceGraph(g) for g in _graphs(dest))
    for batch, length, seed in [(1, 9, 5), (3, 37, 6)]:  # rows the export never saw
        feeds = _features(dest, task, batch, length, seed)
        want, got = standard(feeds), sparse(feeds)
        for name in want:
            assert got[name].shape == want[name].shape
            assert np.abs(got[name] - want[name]).max() <= tolerance[name], (name, batch)
            mask = feeds["attention_mask"]
            assert np.array_equal(
                predictions(name, got[name], mask), predictions(name, want[name], mask)
            )


def _with_outputs(model, names: list[str]):
    """A copy of `model` that also returns the uint8 tensors `names`."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    for name in names:
        copy.graph.output.append(
            onnx.helper.make_tensor_value_info(name, onnx.TensorProto.UINT8, None)
        )
    return copy


def test_default_sparse_graph_fuses_gelu_and_the_next_quantization(deployments):
    """`sparse_graph.FUSE_GELU` (measured faster): intermediate.dense ends in GELU and makes
    output.dense's uint8 input; ``fuse_gelu=False`` is checked below."""
    report = _report(deployments["text-classification"])["sparse_graph"]
    _, sparse = _graphs(deployments["text-classification"])
    ops = [n.op_type for n in sparse.graph.node]
    gelu_u8 = [n for n in sparse.graph.node if n.op_type in ("SparseQLinearToU8", "SparseQLinearU8")
               and next(a.s for a in n.attribute if a.name == "activation") == b"gelu"]  # fmt: skip
    assert report["fusions"]["gelu"] == len(gelu_u8) == LAYERS
    assert all(".intermediate." in n.name for n in gelu_u8)
    assert "Erf" not in ops


def test_attention_fusion_is_exact_and_can_be_left_to_onnx_runtime(deployments):
    """The fused graph gives the standard graph's bits under the exact reference; with
    ``fuse_attention=False`` the integer matmuls stay and q/k/v stay float outputs."""
    dest = deployments["text-classification"]
    standard, fused = _graphs(dest)
    kept = onnx.ModelProto()
    kept.CopyFrom(standard)
    report = sparsify(kept, fuse_attention=False)
    ops = [n.op_type for n in kept.graph.node]
    assert report["fusions"]["attention"] == 0 and ops.count("MatMulInteger") == 2 * LAYERS
    qkv = [n for n in fused.graph.node if ".attention.self." in n.name and n.domain]
    assert [n.op_type for n in qkv].count("SparseQLinearU8x3") == LAYERS
    kept_qkv = [n.op_type for n in kept.graph.node if ".attention.self." in n.name and n.domain]
    assert kept_qkv == ["SparseQLinearFromU8"] * (3 * LAYERS)  # float q, k, v out
    feeds = _features(dest, "text-classification", 2, 30, 13)
    want = ReferenceGraph(standard)(feeds)["logits"]
    for graph in (fused, kept):
        assert np.array_equal(ReferenceGraph(graph)(feeds)["logits"], want)


def test_residual_layernorms_fuse_with_the_next_quantization(deployments):
    """Each layer's two residual Add + LayerNorm chains become one op that also quantizes for
    the next Linear (the FFN's intermediate.dense and the next layer's query/key/value read
    its uint8 output); the embeddings' sum broadcasts [1, seq, hidden] position embeddings and
    is not one of them (`test_embeddings_fuse_into_one_op`). Under the exact reference the
    logits keep their bits."""
    dest = deployments["text-classification"]
    standard, fused = _graphs(dest)
    report = _report(dest)["sparse_graph"]
    norms = [n for n in fused.graph.node
             if n.op_type in (*spec.LAYERNORM_OPS, *spec.LINEAR_NORM_OPS)]  # fmt: skip
    assert len(norms) == report["fusions"]["layernorm"] == 2 * LAYERS
    assert sum(n.op_type.endswith("LayerNormToU8") for n in norms) == 2 * LAYERS - 1
    readers = {i: n for n in fused.graph.node for i in n.input}
    first = norms[0]
    assert readers[first.output[1]].op_type == "SparseQLinearU8"  # intermediate.dense
    assert ".intermediate." in readers[first.output[1]].name
    kept = onnx.ModelProto()
    kept.CopyFrom(standard)
    fusions = sparsify(kept, fuse_layernorm=False, fuse_embeddings=False)["fusions"]
    assert fusions["layernorm"] == fusions["embeddings"] == 0
    assert [n.op_type for n in kept.graph.node].count("ReduceMean") == 2 * (2 * LAYERS + 1)
    feeds = _features(dest, "text-classification", 2, 30, 14)
    want = ReferenceGraph(standard)(feeds)["logits"]
    assert np.array_equal(ReferenceGraph(fused)(feeds)["logits"], want)


@pytest.mark.parametrize("task", ["text-classification", "question-answering"])
def test_embeddings_fuse_into_one_op(deployments, task):
    """The three int8 embedding lookups with their fake quantization, the two Adds, the
    LayerNorm and layer 0's input QuantizeLinear become one ``EmbeddingsLayerNormToU8``: its
    uint8 output feeds layer 0's query/key/value, its float output the first residual
    LayerNorm; the tables travel as ONNX Runtime's own uint8 codes. Under the exact reference
    the logits keep their bits; ``fuse_embeddings=False`` keeps the standard chain."""
    dest = deployments[task]
    standard, fused = _graphs(dest)
    assert _report(dest)["sparse_graph"]["fusions"]["embeddings"] == 1
    (op,) = [n for n in fused.graph.node if n.op_type == spec.EMBEDDINGS_OP]
    ops = [n.op_type for n in fused.graph.node]
    assert ops.count("ReduceMean") == ops.count("DequantizeLinear") == 0
    assert op.input[0] == "input_ids" and op.input[1] == "token_type_ids"
    readers = {}
    for n in fused.graph.node:
        for i in n.input:
            readers.setdefault(i, []).append(n.op_type)
    assert readers[op.output[1]] == ["SparseQLinearU8x3"]
    assert "SparseQLinearFromU8LayerNormToU8" in readers[op.output[0]]
    feeds = _features(dest, task, 2, 30, 15)
    want = ReferenceGraph(standard)(feeds)
    got = ReferenceGraph(fused)(feeds)
    for name in want:
        assert np.array_equal(got[name], want[name]), name
    kept = onnx.ModelProto()
    kept.CopyFrom(standard)
    assert sparsify(kept, fuse_embeddings=False)["fusions"]["embeddings"] == 0
    assert [n.op_type for n in kept.graph.node].count("ReduceMean") == 2


def test_embeddings_op_rejects_ids_outside_its_tables(deployments):
    """An input id past the vocabulary is an error naming the table, as ORT's Gather's is; a
    negative one counts from the end, as Gather's does (same logits as the standard graph's
    on the same ids)."""
    status = engines.kernel_status()
    if not status.available:
        pytest.skip(f"kernel library not available: {status.reason}")
    dest = deployments["text-classification"]
    sparse = ort.InferenceSession(
        str(dest / "model.sparse.onnx"), session_options(1, "onnxruntime-sparse"),
        providers=["CPUExecutionProvider"])  # fmt: skip
    standard = ort.InferenceSession(str(dest / "model.onnx"), session_options(1),
                                    providers=["CPUExecutionProvider"])  # fmt: skip
    feeds = _features(dest, "text-classification", 2, 12, 16)
    (op,) = [n for n in _graphs(dest)[1].graph.node if n.op_type == spec.EMBEDDINGS_OP]
    codes = {i.name: i for i in _graphs(dest)[1].graph.initializer}[op.input[3]]
    vocab = codes.dims[0]
    feeds["input_ids"][0, 3] = -5
    (want,) = standard.run(["logits"], feeds)
    (got,) = sparse.run(["logits"], feeds)
    np.testing.assert_allclose(got, want, atol=0.05)
    feeds["input_ids"][1, 2] = vocab
    with pytest.raises(Exception, match=f"word id {vocab} is outside the table's {vocab} rows"):
        sparse.run(["logits"], feeds)


def test_linears_fuse_with_the_layernorm_reading_them(deployments):
    """attention.output.dense (uint8 from the attention op) and output.dense (uint8 from the GELU'd
    intermediate) each become one op with the residual LayerNorm after them; the logits keep
    their bits under the exact reference, and ``fuse_linear_layernorm=False`` keeps two ops."""
    dest = deployments["text-classification"]
    standard, fused = _graphs(dest)
    report = _report(dest)["sparse_graph"]
    ops = {n.name: n.op_type for n in fused.graph.node if n.op_type in spec.LINEAR_NORM_OPS}
    assert len(ops) == report["fusions"]["linear_layernorm"] == 2 * LAYERS
    attn = [t for name, t in ops.items() if ".attention.output.dense" in name]
    ffn = [t for name, t in ops.items() if ".output.dense" in name and ".attention." not in name]
    assert attn == ["SparseQLinearFromU8LayerNormToU8"] * LAYERS  # from Int8AttentionToU8
    assert ffn == ["SparseQLinearFromU8LayerNormToU8"] * (LAYERS - 1) + [
        "SparseQLinearFromU8LayerNorm"
    ]
    for name, op in ops.items():
        assert report["layers"][name.rsplit("/", 1)[0]]["op"] == op
    kept = onnx.ModelProto()
    kept.CopyFrom(standard)
    report_kept = sparsify(kept, fuse_linear_layernorm=False)
    assert report_kept["fusions"]["linear_layernorm"] == 0
    assert not [n for n in kept.graph.node if n.op_type in spec.LINEAR_NORM_OPS]
    assert report_kept["fusions"]["layernorm"] == 2 * LAYERS
    feeds = _features(dest, "text-classification", 2, 30, 15)
    want = ReferenceGraph(standard)(feeds)["logits"]
    for graph in (fused, kept):
        assert np.array_equal(ReferenceGraph(graph)(feeds)["logits"], want)


def test_gelu_left_to_onnx_runtime_on_request(deployments):
    dest = deployments["text-classification"]
    standard, _ = _graphs(dest)
    sparse = onnx.ModelProto()
    sparse.CopyFrom(standard)
    report = sparsify(sparse, fuse_gelu=False, fuse_layernorm=False)
    ops = [n.op_type for n in sparse.graph.node]
    assert report["fusions"]["gelu"] == 0 and ops.count("Erf") == LAYERS
    assert "SparseQLinearToU8" not in ops
    # float in: intermediate.dense, output.dense and the two heads (attention.output.dense
    # reads the attention op's uint8 context)
    assert report["fusions"]["float_input"] == ops.count("SparseQLinear") == 2 * LAYERS + 2
    feeds = _features(dest, "text-classification", 2, 30, 12)
    want, got = ReferenceGraph(standard)(feeds), ReferenceGraph(sparse)(feeds)
    assert np.array_equal(got["logits"], want["logits"])


def test_gelu_and_next_input_quantization_fuse_exactly(deployments):
    dest = deployments["text-classification"]
    standard, _ = _graphs(dest)
    sparse = onnx.ModelProto()
    sparse.CopyFrom(standard)
    report = sparsify(sparse, fuse_gelu=True, concat_shared_inputs=True, fuse_attention=False,
                      fuse_layernorm=False, fuse_embeddings=False)  # fmt: skip
    onnx.checker.check_model(sparse, full_check=True)
    by_op: dict[str, list] = {}
    for n in sparse.graph.node:
        by_op.setdefault(n.op_type, []).append(n)
    # intermediate.dense: GELU in the epilogue and output.dense's uint8 input made by it
    to_u8 = by_op["SparseQLinearToU8"]
    assert len(to_u8) == report["fusions"]["gelu"] == report["fusions"]["output_quant"] == LAYERS
    assert all(next(a.s for a in n.attribute if a.name == "activation") == b"gelu" for n in to_u8)
    assert "Erf" not in by_op and "Erf" in {n.op_type for n in standard.graph.node}
    readers = {i: n for n in sparse.graph.node for i in n.input}
    assert all(readers[n.output[0]].op_type == "SparseQLinearFromU8" for n in to_u8)
    # query/key/value share one QuantizeLinear: kept, one op over the stacked weights reads
    # its uint8 output, a Split hands the three Linears' outputs on under their names
    qkv = [n for n in by_op["SparseQLinearFromU8"] if ".attention.self." in n.name]
    assert len(qkv) == LAYERS == report["fusions"]["shared_input_concat"]
    producers = {o: n for n in sparse.graph.node for o in n.output}
    assert all(producers[n.input[0]].op_type == "QuantizeLinear" for n in qkv)
    for n in qkv:
        split = readers[n.output[0]]
        assert split.op_type == "Split" and [o.rsplit("/", 2)[-2] for o in split.output] == [
            "query",
            "key",
            "value",
        ], split.output
    # a QuantizeLinear read by one Linear alone is dropped: the op quantizes its float input
    float_in = len(by_op["SparseQLinear"]) + len(to_u8)  # all intermediate.dense quantize inside
    assert report["fusions"]["float_input"] == float_in == 2 * LAYERS + 2
    std_q = sum(n.op_type == "QuantizeLinear" for n in standard.graph.node)
    sp_q = len(by_op["QuantizeLinear"])
    assert std_q - sp_q == report["fusions"]["output_quant"] + report["fusions"]["float_input"]
    # the fused uint8 tensors equal the standard graph's QuantizeLinear outputs, bit for bit
    names = [n.output[0] for n in to_u8]
    feeds = _features(dest, "text-classification", 2, 30, 11)
    want = ReferenceGraph(_with_outputs(standard, names))(feeds)
    got = ReferenceGraph(_with_outputs(sparse, names))(feeds)
    for name in names:
        assert got[name].dtype == np.uint8 and np.array_equal(got[name], want[name]), name


def test_quantized_linear_outputs_fuse_into_to_u8(tmp_path):
    """With Linear outputs quantized (QuantizeLinear -> DequantizeLinear after the bias),
    the QuantizeLinear moves into the op and the DequantizeLinear reads its uint8."""
    dest = _qat_export(tmp_path, "text-classification", linear_outputs=True)
    report = _report(dest)["sparse_graph"]
    assert (
        report["parity"]["passed"]
        and report["parity"]["graph_vs_standard"]["max_abs_diff_all"] == 0.0
    )
    assert report["fusions"]["output_quant"] >= 4 * LAYERS  # Linear outputs, GELU or not
    _, sparse = _graphs(dest)
    readers = {i: n.op_type for n in sparse.graph.node for i in n.input}
    to_u8 = [n for n in sparse.graph.node if n.op_type in ("SparseQLinearToU8", "SparseQLinearU8")]
    assert "DequantizeLinear" in {readers.get(n.output[0]) for n in to_u8}


@pytest.fixture
def no_library(monkeypatch):
    gone = engines.Unavailable(False, None, None, "test", "library not built (test)")
    monkeypatch.setattr(engines, "kernel_status", lambda: gone)
    monkeypatch.setattr(engines, "register_library", lambda options: gone)


def test_sparse_engine_without_library_is_a_one_line_error(
    deployments, no_library, tmp_path, capsys
):
    dest = deployments["text-classification"]
    with pytest.raises(
        ExportError, match=r"--engine onnxruntime-sparse: .*library not built \(test\)"
    ):
        OnnxModel(dest, engine="onnxruntime-sparse")
    val = write_jsonl(sentiment_rows(6, seed=1), tmp_path / "val.jsonl")
    argv = ["evaluate", "--model_path", str(dest), "--task", "text-classification",
            "--validation_file", str(val), "--engine", "onnxruntime-sparse"]  # fmt: skip
    assert main(argv) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if "error" in line]  # no bars
    assert len(err) == 1 and "library not built (test)" in err[0]
    assert main(["serve", str(dest), "--engine", "onnxruntime-sparse", "--http_port", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "onnxruntime-sparse" in err[0] and "library not built" in err[0]
    argv = ["benchmark", "--model_path", str(dest), "--engine", "onnxruntime,onnxruntime-sparse",
            "--batch_size", "1", "--sequence_length", "8", "--rounds", "1", "--iterations", "1"]  # fmt: skip
    assert main(argv) == 2
    assert "library not built" in capsys.readouterr().err


def test_sparse_engine_needs_the_sparse_graph(deployments, tmp_path):
    old = shutil.copytree(deployments["text-classification"], tmp_path / "old")
    (old / "model.sparse.onnx").unlink()
    with pytest.raises(ExportError, match=r"has no model\.sparse\.onnx"):
        OnnxModel(old, engine="onnxruntime-sparse")
    with pytest.raises(ExportError, match=r"--engine 'fast': choose one of auto, onnxruntime"):
        OnnxModel(old, engine="fast")


def test_auto_falls_back_with_a_warning(deployments, no_library, caplog):
    dest = deployments["text-classification"]
    with caplog.at_level(logging.WARNING, logger="sparse_transfer.runtime.engines"):
        model = OnnxModel(dest, engine="auto")
    assert model.engine == "onnxruntime" and model.path.name == "model.onnx"
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "\n" not in lines[0]
    assert "--engine auto" in lines[0] and "library not built (test)" in lines[0]


def _library_or_skip():
    status = engines.kernel_status()
    if not status.available:
        pytest.skip(f"sparse kernel library not available here: {status.reason}")
    return status


@pytest.mark.parametrize("task", TASKS)
def test_library_engine_predicts_as_the_standard_engine(deployments, task):
    _library_or_skip()
    dest = deployments[task]
    sparse = OnnxModel(dest, engine="onnxruntime-sparse", threads=2)
    standard = OnnxModel(dest, engine="onnxruntime", threads=2)
    assert (
        sparse.engine == "onnxruntime-sparse"
        and OnnxModel(dest, engine="auto").engine == sparse.engine
    )
    tolerance = _report(dest)["parity"]["tolerance"]
    reference = ReferenceGraph(onnx.load(str(dest / "model.sparse.onnx")))
    for batch, length, seed in [(1, 7, 1), (4, 33, 2)]:
        feeds = _features(dest, task, batch, length, seed)
        got, want, exact = (
            sparse.session.run(None, feeds),
            standard.session.run(None, feeds),
            reference(feeds),
        )
        for name, g, w in zip(sparse.output_names, got, want, strict=True):
            assert np.abs(g - exact[name]).max() <= tolerance[name]
            mask = feeds["attention_mask"]
            assert np.array_equal(predictions(name, g, mask), predictions(name, w, mask)), name
    assert _report(dest)["sparse_graph"]["parity"]["runtime_vs_graph"]["within_tolerance"]


def test_library_engine_evaluates_as_the_standard_engine(deployments, tmp_path):
    _library_or_skip()
    dest = deployments["text-classification"]
    val = write_jsonl(sentiment_rows(24, seed=2), tmp_path / "val.jsonl")
    results = {}
    for engine in ("onnxruntime", "onnxruntime-sparse"):
        out = tmp_path / engine
        argv = ["evaluate", "--model_path", str(dest), "--task", "text-classification",
                "--validation_file", str(val), "--engine", engine, "--output_dir", str(out)]  # fmt: skip
        assert main(argv) == 0
        results[engine] = json.loads((out / "eval_results.json").read_text())
    assert results["onnxruntime"]["eval_accuracy"] == results["onnxruntime-sparse"]["eval_accuracy"]


def test_library_engine_serves_as_the_standard_engine(deployments):
    """`serve`'s load path (codec + engine, no HTTP) under each engine: same predictions."""
    _library_or_skip()
    from sparse_transfer.serving import ServeOptions, resolve_deployment
    from sparse_transfer.serving.load import load_deployment

    folder, report = resolve_deployment(
        str(deployments["text-classification"]), "onnxruntime-sparse"
    )
    rows = [{"text": r["sentence"]} for r in sentiment_rows(24, seed=5)]
    got = {}
    for engine in ("onnxruntime", "onnxruntime-sparse", "auto"):
        loaded = load_deployment(folder, report, ServeOptions(engine=engine, threads=1))
        got[engine] = (loaded.engine_name, loaded.run_batch(rows))
    assert [got[e][0] for e in got] == ["onnxruntime", "onnxruntime-sparse", "onnxruntime-sparse"]
    want = got["onnxruntime"][1]
    for engine in ("onnxruntime-sparse", "auto"):
        assert [p["label"] for p in got[engine][1]] == [p["label"] for p in want], engine


def test_library_engine_serves_batches_at_once_with_the_same_answers(deployments):
    """``--engine_workers 2``: two batches at once through the sparse graph (one session, our
    ops called from two threads), each on its own codec: the answers of one batch at a time."""
    import asyncio

    _library_or_skip()
    from sparse_transfer.serving import ServeOptions, resolve_deployment
    from sparse_transfer.serving.batching import AdaptiveBatcher
    from sparse_transfer.serving.load import load_deployment

    folder, report = resolve_deployment(
        str(deployments["text-classification"]), "onnxruntime-sparse"
    )
    options = ServeOptions(engine="onnxruntime-sparse", engine_workers=2, threads=1)
    loaded = load_deployment(folder, report, options)
    rows = [{"text": r["sentence"]} for r in sentiment_rows(32, seed=7)]
    want = [loaded.run_batch([row])[0] for row in rows]

    async def scenario():
        batcher = AdaptiveBatcher(
            loaded.runners(2), max_batch_size=1, max_latency_s=0.0, max_queue=64
        )
        return await asyncio.gather(*(batcher.submit([row]) for row in rows))

    assert [r[0] for r in asyncio.run(scenario())] == want


def test_library_linear_layernorm_ops_give_the_two_ops_bits(deployments):
    """Under ONNX Runtime with the library, the fused graph's logits equal the unfused one's
    bit for bit: at batch 1 (fewer token tiles than cores: the op's two-pass path) and at
    batch 8 x 100 tokens (a tile per task, normalised in cache), on this CPU's best path."""
    _library_or_skip()
    dest = deployments["text-classification"]
    standard, fused = _graphs(dest)
    kept = onnx.ModelProto()
    kept.CopyFrom(standard)
    sparsify(kept, fuse_linear_layernorm=False)
    options = session_options(2, "onnxruntime-sparse")
    sessions = [ort.InferenceSession(g.SerializeToString(), options, ["CPUExecutionProvider"])
                for g in (fused, kept)]  # fmt: skip
    for batch, length, seed in [(1, 9, 3), (8, 100, 4)]:
        feeds = _features(dest, "text-classification", batch, length, seed)
        got, want = (s.run(["logits"], feeds)[0] for s in sessions)
        assert np.array_equal(got, want), batch
