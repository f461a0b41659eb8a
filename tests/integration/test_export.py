"""ONNX export end to end on tiny models: parity, int8 zero pattern, dynamic axes, bad input."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from sparse_transfer.embedded.fixtures import (
    make_tiny_bert,
    sentiment_rows,
    write_jsonl,
    write_tokenizer,
)
from sparse_transfer.errors import ExportError, StorageError
from sparse_transfer.export import benchmark, export_onnx
from sparse_transfer.export.onnx_export import (
    input_names_for,
    load_for_export,
    sample_inputs,
    torch_outputs,
)
from sparse_transfer.quantization import calibrate, prepare_qat, save_qat_config
from sparse_transfer.runtime import OnnxModel

pytestmark = pytest.mark.integration

TASKS = [
    "text-classification",
    "token-classification",
    "question-answering",
    "masked-language-modeling",
]
QAT = dict(exclude_module_types=["LayerNorm", "Tanh"], quantize_embedding_activations=True)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """One tiny 90%-sparse model per task, saved once for the module."""
    root = tmp_path_factory.mktemp("export-models")
    return {t: make_tiny_bert(root / t, task=t, sparsity=0.9) for t in TASKS}


def _qat_copy(src: Path, task: str, dest: Path, calibrated: bool = True) -> Path:
    """QAT-prepares the model at `src`, calibrates it on sample text, saves it to `dest`."""
    model, tokenizer, _ = load_for_export(src, task)
    prepare_qat(model, **QAT)
    if calibrated:
        names = input_names_for(model, tokenizer)
        pair = task == "question-answering"
        batches = [
            {
                k: torch.from_numpy(v)
                for k, v in sample_inputs(tokenizer, names, 8, 24, seed=s, pair=pair).items()
            }
            for s in range(3)
        ]
        calibrate(model, batches)
    model.save_pretrained(str(dest))
    tokenizer.save_pretrained(str(dest))
    for name in ("vocab.txt",):
        if (src / name).exists():
            (dest / name).write_bytes((src / name).read_bytes())
    save_qat_config(model, dest)
    return dest


def _report(dest: Path) -> dict:
    return json.loads((dest / "export_report.json").read_text())


def _check_dynamic_axes(src: Path, task: str, dest: Path, tolerance: float | None) -> None:
    """Batch 1 and 3 at two sequence lengths; FP32 within `tolerance`, int8 same decisions."""
    model, tokenizer, spec = load_for_export(src, task)
    names = input_names_for(model, tokenizer)
    onnx_model = OnnxModel(dest, threads=1)
    for batch, length in [(1, 9), (3, 9), (1, 40), (3, 40)]:
        features = sample_inputs(
            tokenizer, names, batch, length, seed=batch * length, pair=task == "question-answering"
        )
        got = onnx_model(features)
        want = torch_outputs(model, features, spec.output_names)
        for name in spec.output_names:
            assert got[name].shape == want[name].shape, (name, batch, length)
            if tolerance is not None:
                assert np.abs(got[name] - want[name]).max() <= tolerance, (name, batch, length)


@pytest.mark.parametrize("task", TASKS)
def test_fp32_export_every_task(models, task, tmp_path):
    dest = export_onnx(models[task], task, output=tmp_path / "deployment")
    report = _report(dest)
    assert report["format"] == "fp32" and not report["quantized"]
    assert report["parity"]["passed"] and report["parity"]["max_abs_diff_all"] <= 1e-4
    assert {"batch", "sequence"} <= set(report["inputs"][0]["shape"])
    assert report["sequence_length"]["dynamic"] is True
    graph = onnx.load(str(dest / "model.onnx"))
    onnx.checker.check_model(graph, full_check=True)
    assert graph.opset_import[0].version == 13
    # the pruned encoder weights are exported with their zeros
    query = report["sparsity"]["initializers"]["bert.encoder.layer.0.attention.self.query.weight.T"]
    assert query["sparsity"] == pytest.approx(0.9, abs=1e-3)
    for f in ("model.onnx", "config.json", "tokenizer.json", "tokenizer_config.json",
              "special_tokens_map.json", "vocab.txt", "export_report.json"):  # fmt: skip
        assert (dest / f).is_file(), f
    _check_dynamic_axes(models[task], task, dest, tolerance=1e-4)


@pytest.mark.parametrize("task", TASKS)
def test_int8_export_keeps_zero_pattern_and_parity(models, task, tmp_path):
    qat_dir = _qat_copy(models[task], task, tmp_path / "qat")
    dest = export_onnx(qat_dir, task, compress=True)
    assert dest == qat_dir / "deployment"
    report = _report(dest)
    assert report["format"] == "integer" and report["quantized"]
    assert report["parity"]["agreement_min"] >= 0.99
    assert report["int8"]["zero_pattern_identical"]
    # default representation: 7-bit Linear weights, exact on every CPU (see test_cross_cpu)
    rep = report["int8"]["representation"]
    assert rep["name"] == "7bit-weights" and rep["exact_on_every_cpu"]
    assert rep["linear_weight_max_abs"] <= 63 and rep["max_int16_pair_sum"] <= 32767
    # CPU-independent parity: the graph's exact integer reference is the QAT model's
    # integers (below one head-input step) and ONNX Runtime here computes the same
    parity = report["parity"]
    for key in ("graph_vs_torch", "runtime_vs_graph"):
        assert parity[key]["within_tolerance"] and parity[key]["below_one_step"], (key, parity[key])
        for name, diff in parity[key]["max_abs_diff"].items():
            assert diff < parity["one_step"][name] <= parity["tolerance"][name], (key, name)
    assert parity["runtime_expected_exact"] and parity["cpu"]
    graph = onnx.load(str(dest / "model.onnx"))
    onnx.checker.check_model(graph, full_check=True)
    ops = {n.op_type for n in graph.graph.node}
    assert {"MatMulInteger", "QuantizeLinear"} <= ops
    assert all(o.domain in ("", "ai.onnx") for o in graph.opset_import)  # no ai.onnx.ml
    # independent check: every int8 initializer against the FP32 weight it came from
    float_model, _, _ = load_for_export(models[task], task)
    params = dict(float_model.named_parameters(remove_duplicate=False))
    checked = 0
    for init in graph.graph.initializer:
        if init.data_type != onnx.TensorProto.INT8 or not init.name.endswith(".int8"):
            continue
        q = numpy_helper.to_array(init)
        stem = init.name.removesuffix(".int8")
        w = params[stem.removesuffix(".T")].detach().numpy()
        w = w.T if stem.endswith(".T") else w
        assert np.array_equal(q == 0, w == 0), init.name
        checked += 1
    assert checked == len(report["int8"]["initializers"]) >= 2 * 6 + 3
    sizes = report["sizes"]
    assert sizes["model_onnx_bytes"] < sizes["fp32_onnx_bytes"] / 2
    assert sizes["compressed"]["bytes"] < sizes["model_onnx_bytes"]
    _check_dynamic_axes(qat_dir, task, dest, tolerance=None)


def test_qdq_format_and_fp32_of_a_qat_model(models, tmp_path):
    task = "text-classification"
    qat_dir = _qat_copy(models[task], task, tmp_path / "qat")
    qdq = export_onnx(qat_dir, task, output=tmp_path / "qdq", format="qdq", sequence_length=32)
    report = _report(qdq)
    assert report["format"] == "qdq" and report["parity"]["agreement_min"] >= 0.99
    assert report["sequence_length"]["requested"] == 32
    ops = {n.op_type for n in onnx.load(str(qdq / "model.onnx")).graph.node}
    assert "DequantizeLinear" in ops and "MatMulInteger" not in ops
    fp32 = export_onnx(qat_dir, task, output=tmp_path / "fp32", format="fp32")
    assert _report(fp32)["parity"]["max_abs_diff_all"] <= 1e-4


def test_int8_graph_fuses_into_ort_integer_kernels(models, tmp_path):
    """The speed of the default form rests on ORT's MatMulIntegerToFloat fusion: guard it."""
    import collections

    import onnxruntime as ort

    task = "text-classification"
    dest = export_onnx(_qat_copy(models[task], task, tmp_path / "qat"), task)
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(dest / "model.onnx"), options, providers=["CPUExecutionProvider"])
    ops = collections.Counter(
        n.op_type for n in onnx.load(options.optimized_model_filepath).graph.node
    )
    linears = sum(
        1 for r in _report(dest)["int8"]["initializers"].values() if "embeddings" not in r["module"]
    )
    assert ops["MatMulIntegerToFloat"] == linears == 2 * 6 + 2
    quantize = [
        n for n in onnx.load(str(dest / "model.onnx")).graph.node if n.op_type == "QuantizeLinear"
    ]
    assert len({tuple(n.input) for n in quantize}) == len(quantize)  # each input quantized once
    # the attention products (two per layer) have no constant operand to fuse with
    assert ops["MatMulInteger"] == _report(dest)["int8"]["attention_matmuls"] == 2 * 2


def test_attention_matmuls_export_as_int8_in_both_forms(models, tmp_path):
    """SparseML's QATMatMul: Q@K^T and softmax@V run on int8 operands, parity kept."""
    task = "text-classification"
    qat_dir = _qat_copy(models[task], task, tmp_path / "qat")
    for fmt in ("integer", "qdq"):
        dest = export_onnx(qat_dir, task, output=tmp_path / fmt, format=fmt)
        report = _report(dest)
        assert report["int8"]["attention_matmuls"] == 2 * 2  # two per layer
        assert report["parity"]["agreement_min"] >= 0.99
        graph = onnx.load(str(dest / "model.onnx")).graph
        weights = {i.name for i in graph.initializer}
        producer = {o: n.op_type for n in graph.node for o in n.output}
        float_products = [
            n
            for n in graph.node
            if n.op_type == "MatMul"
            and not any(i in weights or producer.get(i) == "DequantizeLinear" for i in n.input)
        ]
        assert float_products == []  # no attention product left in float
        if fmt == "integer":
            products = [
                n for n in graph.node if n.op_type == "MatMulInteger" and n.input[1] not in weights
            ]
            assert len(products) == 4
            assert all(producer[i] == "QuantizeLinear" for n in products for i in n.input[:2])
            # symmetric int8 key/value stored as the same integers in uint8: zero point 128
            zero_points = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
            for n in products:
                b_zero = zero_points[n.input[3]]
                assert b_zero.dtype == np.uint8 and int(b_zero) == 128


def test_qatmatmul_excluded_keeps_attention_float(models, tmp_path):
    task = "text-classification"
    model, tokenizer, _ = load_for_export(models[task], task)
    prepare_qat(
        model, **{**QAT, "exclude_module_types": [*QAT["exclude_module_types"], "QATMatMul"]}
    )
    names = input_names_for(model, tokenizer)
    calibrate(
        model, [{k: torch.from_numpy(v) for k, v in sample_inputs(tokenizer, names, 4, 16).items()}]
    )
    dest = tmp_path / "qat"
    model.save_pretrained(str(dest))
    tokenizer.save_pretrained(str(dest))
    save_qat_config(model, dest)
    report = _report(export_onnx(dest, task, output=tmp_path / "out"))
    assert report["int8"]["attention_matmuls"] == 0


def test_deployment_tokenizer_and_archive(models, tmp_path):
    from transformers import AutoTokenizer

    task = "text-classification"
    (models[task] / "recipe.yaml").write_text("version: 1.1.0\nmodifiers: []\n")
    try:
        dest = export_onnx(models[task], task, output=tmp_path / "dep", compress=True)
    finally:
        (models[task] / "recipe.yaml").unlink()
    assert (dest / "recipe.yaml").read_text().startswith("version")
    original = AutoTokenizer.from_pretrained(str(models[task]))
    deployed = AutoTokenizer.from_pretrained(str(dest))
    text = "the film was wonderful but boring ."
    assert deployed(text)["input_ids"] == original(text)["input_ids"]
    assert json.loads((dest / "special_tokens_map.json").read_text())["cls_token"] == "[CLS]"
    with tarfile.open(dest / "deployment.tar.gz") as tar:
        names = set(tar.getnames())
    assert {"model.onnx", "config.json", "tokenizer.json", "export_report.json"} <= names
    assert all("/" not in n and not n.startswith("..") for n in names)


def test_verify_dataset_compares_accuracy(models, tmp_path):
    task = "text-classification"
    data = write_jsonl(sentiment_rows(40), tmp_path / "val.jsonl")
    qat_dir = _qat_copy(models[task], task, tmp_path / "qat")
    report = _report(export_onnx(qat_dir, task, verify_dataset=data, sequence_length=24))
    metric = report["parity"]["metric"]
    assert metric["examples"] == 40
    assert abs(metric["torch"] - metric["onnx"]) <= 0.5
    # the graph's exact reference and ONNX Runtime here make the same decisions
    assert metric["onnx_runtime_here"] == metric["onnx"]
    assert report["parity"]["examples"] == 8 + 3 + 40


def _assert_nothing_left(parent: Path, name: str = "deployment") -> None:
    assert not (parent / name).exists()
    assert not [p for p in parent.iterdir() if p.name.startswith(f".{name}.")]


def test_bad_inputs_leave_no_deployment(models, tmp_path):
    task = "text-classification"
    src = models[task]
    no_config = tmp_path / "no_config"
    no_config.mkdir()
    (no_config / "vocab.txt").write_text((src / "vocab.txt").read_text())
    with pytest.raises(ExportError, match="no config.json"):
        export_onnx(no_config, task)
    _assert_nothing_left(no_config)

    no_tok = tmp_path / "no_tok"
    no_tok.mkdir()
    (no_tok / "config.json").write_text((src / "config.json").read_text())
    with pytest.raises(ExportError, match="no tokenizer files"):
        export_onnx(no_tok, task)
    _assert_nothing_left(no_tok)

    with pytest.raises(
        ExportError, match="unknown task 'sentiment-regression'.*text-classification"
    ):
        export_onnx(src, "sentiment-regression", output=tmp_path / "d1")
    _assert_nothing_left(tmp_path, "d1")

    with pytest.raises(ExportError, match="--opset 12 is too old for int8"):
        export_onnx(src, task, output=tmp_path / "d2", format="integer", opset=12)
    _assert_nothing_left(tmp_path, "d2")

    with pytest.raises(ExportError, match="has no quantization state"):
        export_onnx(src, task, output=tmp_path / "d3", format="integer")
    _assert_nothing_left(tmp_path, "d3")

    raw = _qat_copy(src, task, tmp_path / "raw_qat", calibrated=False)
    with pytest.raises(ExportError, match="observers never ran.*uninitialised"):
        export_onnx(raw, task)
    _assert_nothing_left(raw)

    with pytest.raises(ExportError, match="--sequence_length 4096"):
        export_onnx(src, task, output=tmp_path / "d4", sequence_length=4096)
    _assert_nothing_left(tmp_path, "d4")

    # a failure after the temp folder exists (bad verification data) cleans it up too
    bad = write_jsonl([{"words": "no text column"}], tmp_path / "bad.jsonl")
    with pytest.raises(ExportError, match="rows need one of"):
        export_onnx(src, task, output=tmp_path / "d5", verify_dataset=bad)
    _assert_nothing_left(tmp_path, "d5")


def test_re_export_replaces_an_earlier_deployment_only(models, tmp_path):
    task = "token-classification"
    dest = tmp_path / "dep"
    dest.mkdir()
    (dest / "stale.txt").write_text("old")
    with pytest.raises(StorageError, match="not a sparse-transfer deployment"):
        export_onnx(models[task], task, output=dest, overwrite=True)
    assert [p.name for p in dest.iterdir()] == ["stale.txt"]
    (dest / "stale.txt").unlink()
    export_onnx(models[task], task, output=dest)
    (dest / "stale.txt").write_text("old")
    export_onnx(models[task], task, output=dest, overwrite=True)
    assert not (dest / "stale.txt").exists() and (dest / "model.onnx").is_file()
    _assert_nothing_left(tmp_path, "dep.old")


def test_cli_export_and_benchmark(models, tmp_path, capsys):
    from sparse_transfer.cli import main

    task = "question-answering"
    out = tmp_path / "qa-deployment"
    assert (
        main(
            ["export-onnx", "--model_path", str(models[task]), "--task", task, "--output", str(out)]
        )
        == 0
    )
    assert "parity" in capsys.readouterr().out
    argv = ["benchmark", "--model_path", str(out), "--batch_size", "1,2", "--sequence_length", "16",
            "--threads", "1", "--iterations", "3", "--json"]  # fmt: skip
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    for b in ("batch_1", "batch_2"):
        s = result["onnxruntime"][b]
        assert 0 < s["p50_ms"] <= s["p90_ms"] <= s["p99_ms"] and s["iterations"] >= 3
    assert main(["export-onnx", "--model_path", str(tmp_path / "missing"), "--task", task]) == 2
    assert "not a directory" in capsys.readouterr().err


def test_cli_benchmark_compare_interleaves(models, tmp_path, capsys, monkeypatch):
    from sparse_transfer.cli import main

    monkeypatch.delenv("SPARSE_TRANSFER_DEEPSPARSE_PYTHON", raising=False)
    task = "text-classification"
    fp32 = export_onnx(models[task], task, output=tmp_path / "fp32")
    int8 = export_onnx(_qat_copy(models[task], task, tmp_path / "qat"), task)
    argv = ["benchmark", "--model_path", str(fp32), "--compare", str(int8), "--batch_size", "1",
            "--sequence_length", "16", "--threads", "1", "--rounds", "4", "--iterations", "8"]  # fmt: skip
    assert main([*argv, "--json"]) == 0
    runs = json.loads(capsys.readouterr().out)["batch_1"]["onnxruntime"]
    for path in (fp32, int8):
        assert runs[str(path)]["rounds"] == 4 and runs[str(path)]["iterations"] == 8
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "4 interleaved rounds of 2" in text and "1.00x" in text and str(int8) in text
    # the yardstick: ORT's quantize_dynamic of the dense deployment, a checked deployment too
    assert main([*argv, "--dynamic_int8_of", str(fp32), "--json"]) == 0
    runs = json.loads(capsys.readouterr().out)["batch_1"]["onnxruntime"]
    assert runs[f"quantize_dynamic({fp32})"]["rounds"] == 4


def test_benchmark_function_reports_deepsparse_absence(models, tmp_path):
    dest = export_onnx(models["text-classification"], "text-classification", output=tmp_path / "d")
    result = benchmark(dest, batch_sizes=[1], sequence_length=8, threads=1, iterations=2)
    assert result["onnxruntime"]["batch_1"]["throughput_items_per_s"] > 0
    assert "deepsparse" in result


def test_compare_interleaves_rounds_over_deployments(models, tmp_path, monkeypatch):
    from sparse_transfer.export import compare

    monkeypatch.delenv("SPARSE_TRANSFER_DEEPSPARSE_PYTHON", raising=False)
    task = "text-classification"
    fp32 = export_onnx(models[task], task, output=tmp_path / "fp32")
    int8 = export_onnx(_qat_copy(models[task], task, tmp_path / "qat"), task)
    result = compare({"fp32": fp32, "int8": int8}, 1, 8, threads=1, rounds=3, iterations=2)
    for name in ("fp32", "int8"):
        stats = result["onnxruntime"][name]
        assert stats["rounds"] == 3 and len(stats["round_p50_ms"]) == 3
        assert stats["iterations"] == 6
        assert stats["best_round_p50_ms"] == min(stats["round_p50_ms"])
        assert min(stats["round_p50_ms"]) <= stats["p50_ms"] <= max(stats["round_p50_ms"])
    assert result["deepsparse"]["available"] is False
    assert "SPARSE_TRANSFER_DEEPSPARSE_PYTHON" in result["deepsparse"]["reason"]


def test_distilbert_attention_matmuls_export_as_int8(tmp_path):
    """Another encoder family: its attention module has a different name and layout."""
    from transformers import AutoTokenizer, DistilBertConfig, DistilBertForSequenceClassification

    write_tokenizer(tmp_path)
    tokenizer = AutoTokenizer.from_pretrained(str(tmp_path))
    config = DistilBertConfig(
        vocab_size=len(tokenizer), dim=32, n_layers=2, n_heads=2, hidden_dim=64
    )
    torch.manual_seed(0)
    model = DistilBertForSequenceClassification(config).eval()
    prepare_qat(model, exclude_module_types=["LayerNorm"])
    names = input_names_for(model, tokenizer)
    calibrate(
        model,
        [{k: torch.from_numpy(v) for k, v in sample_inputs(tokenizer, names, 4, 16).items()}],
    )
    model.save_pretrained(str(tmp_path))
    save_qat_config(model, tmp_path)
    report = _report(export_onnx(tmp_path, "text-classification", output=tmp_path / "out"))
    assert report["int8"]["attention_matmuls"] == 2 * 2
    assert report["parity"]["agreement_min"] >= 0.99


def test_obs_block4_pattern_survives_qat_and_int8_export(tmp_path):
    """An oBS block4 model (trained with SparseTrainer) exports with every 4-block along
    the input axis all zero or all non-zero, and exactly round(0.75 * blocks) zero blocks."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from sparse_transfer.modifiers import modifier_class
    from tests.unit._train_utils import make_trainer, tiny_dataset

    src = make_tiny_bert(tmp_path / "dense", hidden_size=32)
    model = AutoModelForSequenceClassification.from_pretrained(str(src))
    tokenizer = AutoTokenizer.from_pretrained(str(src))
    obs = modifier_class("OBSPruningModifier").from_fields(
        dict(
            init_sparsity=0.75,
            final_sparsity=0.75,
            start_epoch=0.0,
            end_epoch=0.0,
            update_frequency=1.0,
            params=["re:bert\\.encoder\\..*(query|key|value|dense)\\.weight$"],
            mask_type="block4",
            fisher_block_size=8,
            num_grads=4,
            damp=1e-6,
            global_sparsity=False,
        )  # fmt: skip
    )
    trainer = make_trainer(tmp_path, model, tiny_dataset(tokenizer, 8), recipe=[obs])
    trainer.train()
    trained = tmp_path / "trained"
    model.save_pretrained(str(trained))
    tokenizer.save_pretrained(str(trained))
    dest = export_onnx(_qat_copy(trained, "text-classification", tmp_path / "qat"),
                       "text-classification", compress=True)  # fmt: skip
    assert _report(dest)["int8"]["zero_pattern_identical"]
    graph = onnx.load(str(dest / "model.onnx"))
    checked = 0
    for init in graph.graph.initializer:
        name = init.name
        if not (name.startswith("bert.encoder.") and name.endswith(".weight.T.int8")):
            continue
        q = numpy_helper.to_array(init)  # (in, out): blocks run along axis 0
        blocks = (q == 0).reshape(q.shape[0] // 4, 4, q.shape[1])
        whole = blocks.all(axis=1)
        assert np.array_equal(whole, blocks.any(axis=1)), f"{name}: partially zero block"
        assert int(whole.sum()) == round(0.75 * whole.size), name
        checked += 1
    assert checked == 2 * 6  # query, key, value, attention/intermediate/output dense x 2 layers


def test_benchmark_times_real_texts_with_their_masks(models, tmp_path, capsys, monkeypatch):
    """``--texts``: real sentences (cycled to the batch) padded to the length with their
    masks, not random ids with a full mask, timed batch after batch; DeepSparse, which makes
    its own inputs, not run."""
    from sparse_transfer.cli import main
    from sparse_transfer.export.benchmark import _cycled_runs, _inputs, load_texts
    from sparse_transfer.runtime import OnnxModel
    from sparse_transfer.tasks.models import load_tokenizer

    monkeypatch.delenv("SPARSE_TRANSFER_DEEPSPARSE_PYTHON", raising=False)
    task = "text-classification"
    dest = export_onnx(models[task], task, output=tmp_path / "d")
    texts = ["a fine film", "dull", "an utterly moving and gently funny story of two friends"]
    path = tmp_path / "texts.jsonl"
    path.write_text("".join(json.dumps({"sentence": t, "label": 1}) + "\n" for t in texts))
    assert load_texts(path) == texts
    feeds = _inputs(OnnxModel(dest, threads=1), 4, 16, 100, load_texts(path))
    want = load_tokenizer(dest)([*texts, texts[0]], padding="max_length", max_length=16)
    assert feeds["input_ids"].tolist() == want["input_ids"]
    assert feeds["attention_mask"].tolist() == want["attention_mask"]
    assert 0 < feeds["attention_mask"][1].sum() < 16  # "dull" is padded, its mask says so
    # timed runs go through the sentences batch after batch, not the first batch again
    model, seen = OnnxModel(dest, threads=1), []
    model.session = SimpleNamespace(run=lambda _, f: seen.append(f["input_ids"].tolist()))
    run = _cycled_runs(model, 2, 16, 100, texts)
    for _ in range(3):
        run()
    tokenize = load_tokenizer(dest)
    batches = [texts[:2], [texts[2], texts[0]], texts[:2]]
    assert seen == [tokenize(b, padding="max_length", max_length=16)["input_ids"] for b in batches]
    argv = ["benchmark", "--model_path", str(dest), "--batch_size", "2", "--sequence_length",
            "16", "--threads", "1", "--iterations", "2", "--texts", str(path), "--json"]  # fmt: skip
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["inputs"] == "3 real texts" and result["onnxruntime"]["batch_2"]["p50_ms"] > 0
    assert "not run with --texts" in result["deepsparse"]["reason"]
    assert main([*argv[:-1], "--compare", str(dest), "--rounds", "2", "--json"]) == 0
    runs = json.loads(capsys.readouterr().out)["batch_2"]
    assert "not run with --texts" in runs["deepsparse"]["reason"]


@pytest.mark.parametrize(
    "content,words",
    [
        (None, "cannot read it (FileNotFoundError)"),
        ('{"sentence": "ok"}\nnot json\n', ":2: not a JSON object"),
        ('{"label": 1}\n', ":1: needs a non-empty string field text or sentence"),
        ('{"text": ""}\n', ":1: needs a non-empty string field"),
        ("\n\n", ": no rows"),
    ],
)
def test_benchmark_refuses_a_bad_texts_file(models, tmp_path, capsys, content, words):
    from sparse_transfer.cli import main

    path = tmp_path / "texts.jsonl"
    if content is not None:
        path.write_text(content)
    argv = ["benchmark", "--model_path", str(models["text-classification"]), "--texts",
            str(path), "--iterations", "1"]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"sparse-transfer: error: --texts {path}"), err
    assert words in err[0]
