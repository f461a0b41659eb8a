"""The int8 export in DeepSparse 1.8: compiles with every op supported, agrees with ONNX Runtime.

DeepSparse pins onnx 1.14 / numpy 1.26, so it cannot live in the project's
environment: the DeepSparse test runs `deepsparse_runner.py` in the
interpreter that ``SPARSE_TRANSFER_DEEPSPARSE_PYTHON`` names and skips when
it is unset. The graph checks before it need no DeepSparse: they pin the
constructs DeepSparse 1.8 was measured to abort on or hand back to its bundled
ONNX Runtime (a MatMulInteger without b_zero_point, a DequantizeLinear of a
constant, transformers 5's Range/GreaterOrEqual/And/Where padding mask).
"""

from __future__ import annotations

import json
import os
import subprocess
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from sparse_transfer.embedded.fixtures import make_tiny_bert
from sparse_transfer.export import deepsparse_runner as runner
from sparse_transfer.export import export_onnx
from sparse_transfer.export.onnx_export import input_names_for, load_for_export, sample_inputs
from sparse_transfer.quantization import calibrate, prepare_qat, save_qat_config
from sparse_transfer.runtime import OnnxModel

pytestmark = pytest.mark.integration

TASKS = ["text-classification", "question-answering"]  # a sequence head and a token head
QAT = dict(exclude_module_types=["LayerNorm", "Tanh"], quantize_embedding_activations=True)
MASK_OPS = {"Range", "GreaterOrEqual", "And", "Where", "ConstantOfShape"}


def _qat_model(root: Path, task: str) -> Path:
    src = make_tiny_bert(root / "float", task=task, sparsity=0.9)
    model, tokenizer, _ = load_for_export(src, task)
    prepare_qat(model, **QAT)
    names = input_names_for(model, tokenizer)
    pair = task == "question-answering"
    batches = [
        {k: torch.from_numpy(v) for k, v in sample_inputs(tokenizer, names, 8, 24, s, pair).items()}
        for s in range(3)
    ]
    calibrate(model, batches)
    dest = root / "qat"
    model.save_pretrained(str(dest))
    tokenizer.save_pretrained(str(dest))
    if (src / "vocab.txt").exists():
        (dest / "vocab.txt").write_bytes((src / "vocab.txt").read_bytes())
    save_qat_config(model, dest)
    return dest


@pytest.fixture(scope="module")
def deployments(tmp_path_factory):
    """Task -> (QAT model dir, default int8 deployment)."""
    out = {}
    for task in TASKS:
        root = tmp_path_factory.mktemp(task)
        qat = _qat_model(root, task)
        out[task] = qat, export_onnx(qat, task, output=root / "deployment")
    return out


@pytest.mark.parametrize("task", TASKS)
def test_int8_graph_avoids_what_deepsparse_rejects(deployments, task):
    graph = onnx.load(str(deployments[task][1] / "model.onnx")).graph
    ops = Counter(n.op_type for n in graph.node)
    assert ops["MatMulInteger"] >= 2 * 6 + 1
    constants = {i.name for i in graph.initializer}
    constants |= {o for n in graph.node if n.op_type == "Constant" for o in n.output}
    for node in graph.node:
        if node.op_type == "MatMulInteger":  # optional zero points spelled out
            assert len(node.input) == 4 and all(node.input), node.name
        if node.op_type == "DequantizeLinear":  # only activations (Q/DQ pairs), no constants
            assert node.input[0] not in constants, node.name
    assert not MASK_OPS & set(ops), MASK_OPS & set(ops)  # the classic additive mask


@pytest.mark.parametrize("task", TASKS)
def test_int8_deployment_runs_in_deepsparse(deployments, task, tmp_path):
    python = os.environ.get(runner.ENV_PYTHON)
    if not python:
        pytest.skip(
            f"{runner.ENV_PYTHON} is not set: point it at a Python with deepsparse==1.8.0 "
            "(its own venv) to run the int8 export in DeepSparse"
        )
    qat, dest = deployments[task]
    model, tokenizer, spec = load_for_export(qat, task)
    names = input_names_for(model, tokenizer)
    features = sample_inputs(tokenizer, names, 8, 32, seed=5, pair=task == "question-answering")
    assert (features["attention_mask"] == 0).any()  # padding: the mask path is exercised
    want = OnnxModel(dest, threads=1)(features)
    np.savez(tmp_path / "inputs.npz", **features)
    done = subprocess.run(
        [
            python,
            runner.__file__,
            "run",
            str(dest / "model.onnx"),
            str(tmp_path / "inputs.npz"),
            str(tmp_path / "outputs.npz"),
            "--threads",
            "1",
        ],  # fmt: skip
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    facts = json.loads([line for line in done.stdout.splitlines() if line.startswith("{")][-1])
    assert facts["fraction_of_supported_ops"] == 1.0  # nothing falls back to its bundled ORT
    with np.load(tmp_path / "outputs.npz") as data:
        got = {k: data[k] for k in data.files}
    mask = features["attention_mask"].astype(bool)
    for name in spec.output_names:
        assert got[name].shape == want[name].shape
        g, w = got[name], want[name]
        if g.ndim == 2 and g.shape[1] == mask.shape[1]:  # per-token outputs: real tokens only
            g, w = np.where(mask, g, 0), np.where(mask, w, 0)
        spread = float(np.abs(w).max())
        # both runtimes compute the same int8 graph; they differ by float rounding only
        assert float(np.abs(g - w).max()) <= 0.02 * spread + 1e-4, name
        decisions = g.argmax(-1) == w.argmax(-1)
        agreement = decisions[mask].mean() if decisions.shape == mask.shape else decisions.mean()
        assert agreement >= 0.99, (name, agreement)


def test_compare_runs_both_forms_in_deepsparse(deployments, tmp_path):
    python = os.environ.get(runner.ENV_PYTHON)
    if not python:
        pytest.skip(f"{runner.ENV_PYTHON} is not set")
    from sparse_transfer.export import compare

    task = "text-classification"
    qat, dest = deployments[task]
    qdq = export_onnx(qat, task, output=tmp_path / "qdq", format="qdq")
    both = compare({"integer": dest, "qdq": qdq}, 1, 16, threads=1, rounds=2, iterations=2)
    result = both["deepsparse"]
    assert result["available"] and result["interleaved"], result  # a round after each ORT round
    assert result["integer"]["fraction_of_supported_ops"] == 1.0
    assert result["integer"]["rounds"] == 2 and result["qdq"]["iterations"] == 4
    assert both["onnxruntime"]["qdq"]["rounds"] == 2
    alone = compare({"integer": dest}, 1, 16, threads=1, rounds=3, iterations=1,
                    engines=("deepsparse",))["deepsparse"]  # fmt: skip
    assert alone["integer"]["rounds"] == 3 and alone["integer"]["iterations"] == 3
