"""`sparse-transfer evaluate`: torch model dirs and ONNX deployment dirs share one
metric path, so the same model scores the same either way."""

from __future__ import annotations

import json

import pytest

from sparse_transfer.cli import main
from sparse_transfer.embedded import fixtures

pytestmark = pytest.mark.integration

CASES = {
    "text-classification": (
        {"num_labels": 2, "id2label": {0: "negative", 1: "positive"}},
        lambda: fixtures.sentiment_rows(12, seed=3),
        ["--task_name", "sst2"],
        ("eval_accuracy",),
    ),
    "token-classification": (
        {"num_labels": 7, "id2label": dict(enumerate(sorted({t for r in fixtures.ner_rows(64) for t in r["ner_tags"]})))},
        lambda: fixtures.ner_rows(8, seed=3),
        [],
        ("eval_f1", "eval_accuracy"),
    ),
    "question-answering": (
        {},
        lambda: fixtures.squad_rows(6, seed=3, facts=4),
        ["--max_seq_length", "32", "--doc_stride", "8"],
        ("eval_exact_match", "eval_f1"),
    ),
}  # fmt: skip


@pytest.mark.parametrize("task", sorted(CASES))
def test_torch_and_onnx_evaluation_agree(task, tmp_path):
    from sparse_transfer.export import export_onnx

    model_kwargs, rows, flags, keys = CASES[task]
    model = fixtures.make_tiny_bert(tmp_path / "model", task=task, hidden_size=32, **model_kwargs)
    val = fixtures.write_jsonl(rows(), tmp_path / "val.jsonl")
    data = ["--task", task, "--validation_file", str(val), *flags]
    assert (
        main(["evaluate", "--model_path", str(model), "--output_dir", str(tmp_path / "t"), *data])
        == 0
    )
    torch_results = json.loads((tmp_path / "t" / "eval_results.json").read_text())
    assert torch_results["sparsity"]["prunable_params"] > 0

    deployment = export_onnx(model, task, output=tmp_path / "deployment")
    assert (
        main(
            [
                "evaluate",
                "--model_path",
                str(deployment),
                "--output_dir",
                str(tmp_path / "o"),
                *data,
            ]
        )
        == 0
    )
    onnx_results = json.loads((tmp_path / "o" / "eval_results.json").read_text())
    for key in keys:
        assert onnx_results[key] == pytest.approx(torch_results[key], abs=1e-6), key
    assert onnx_results["eval_samples"] == torch_results["eval_samples"] == len(rows())
