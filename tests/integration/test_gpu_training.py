"""Sparse transfer with QAT and distillation on a CUDA GPU, in fp16 and bf16 mixed precision.

CI has no GPU, so this file skips there (with that reason in the summary); on a GPU
machine ``pytest -q -p no:xdist tests/integration/test_gpu_training.py`` runs it. Without
a GPU, `tasks.device.fit_to_device` turns ``--fp16`` into fp32, so the CPU suite never
exercises what mixed precision does to the masks, the fake quantization and the
distillation loss; here the same recipe runs under autocast on the GPU for real:

- every pruned zero survives (exact count), the run reports no lost zeros;
- the observers' ranges are finite and the loss is finite every logged step;
- the GPU-trained QAT model exports to int8 ONNX on the CPU and passes parity
  (integer graph vs fake-quantized torch model), so a GPU-trained model deploys.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from sparse_transfer.cli import main
from sparse_transfer.embedded import fixtures
from sparse_transfer.recipe import builtin_recipe_path

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (none here)"),
]

RECIPE = str(builtin_recipe_path("sst2_pruned90_quant"))
SHORT = json.dumps({"num_epochs": 3, "qat_start_epoch": 1.0, "observer_epoch": 2.5})


def _zeros(model_dir: Path) -> int:
    from safetensors.numpy import load_file

    tensors = load_file(str(model_dir / "model.safetensors"))
    return sum(
        int((v == 0).sum())
        for k, v in tensors.items()
        if k.startswith("bert.encoder.") and k.endswith("weight") and "LayerNorm" not in k
    )


@pytest.mark.parametrize("precision", ["--fp16", "--bf16"])
def test_qat_distillation_mixed_precision_on_gpu(tmp_path, precision):
    from sparse_transfer.export import export_onnx

    if precision == "--bf16" and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    student = fixtures.make_tiny_bert(
        tmp_path / "student", task="masked-language-modeling", hidden_size=64, sparsity=0.9
    )
    teacher = fixtures.make_tiny_bert(
        tmp_path / "teacher", task="text-classification", hidden_size=64, seed=1
    )
    rows = fixtures.sentiment_rows(160)
    train = fixtures.write_jsonl(rows[:128], tmp_path / "train.jsonl")
    val = fixtures.write_jsonl(rows[128:], tmp_path / "val.jsonl")
    out = tmp_path / "out"
    torch.cuda.reset_peak_memory_stats()
    argv = [
        "train", "text-classification", "--output_dir", str(out),
        "--model_name_or_path", str(student), "--recipe", RECIPE, "--recipe_args", SHORT,
        "--distill_teacher", str(teacher),
        "--train_file", str(train), "--validation_file", str(val),
        "--max_seq_length", "32", "--per_device_train_batch_size", "16",
        "--per_device_eval_batch_size", "32", "--do_train", "--do_eval", precision,
        "--logging_steps", "1", "--save_strategy", "no", "--seed", "7",
    ]  # fmt: skip
    assert main(argv) == 0
    assert torch.cuda.max_memory_allocated() > 0, "training did not run on the GPU"

    results = json.loads((out / "eval_results.json").read_text())
    assert results["sparsity"]["kept"] is True and results["sparsity"]["zeros_lost"] == 0
    assert _zeros(out) == _zeros(student)
    state = json.loads((out / "trainer_state.json").read_text())
    losses = [e["loss"] for e in state["log_history"] if "loss" in e]
    assert losses and all(math.isfinite(v) for v in losses)
    qat = json.loads((out / "quantization.json").read_text())
    ranges = json.dumps(qat)
    assert "NaN" not in ranges and "Infinity" not in ranges

    deployment = export_onnx(out, "text-classification", sequence_length=32)
    parity = json.loads((deployment / "export_report.json").read_text())["parity"]
    assert parity["passed"] is True, parity["summary"]
    assert parity["graph_vs_torch"]["within_tolerance"] is True
