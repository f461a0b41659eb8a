"""frontier_pipeline on kfp's local runner: dsl.ParallelFor over two points (80% unstructured,
80% block4) of a tiny dense BERT, each trained, exported to int8 ONNX, evaluated and
benchmarked; dsl.Collected hands both to the pick step, which publishes the fastest passing
one to a local zoo and draws the frontier."""

import json
import re
from pathlib import Path

import pytest

from sparse_transfer import zoo as zoo_api
from sparse_transfer.embedded.fixtures import make_tiny_bert, sentiment_rows, write_jsonl

pytestmark = pytest.mark.integration

STUB = "zoo:nlp/sentiment_analysis/tiny-bert/pytorch/huggingface/sst2/frontier-itest"


def test_frontier_trains_points_in_parallel_and_publishes_the_fastest(tmp_path):
    from pipelines.client import run_local

    dense = make_tiny_bert(tmp_path / "dense", hidden_size=32)
    write_jsonl(sentiment_rows(32), tmp_path / "data" / "train.jsonl")
    write_jsonl(sentiment_rows(16, seed=1), tmp_path / "data" / "validation.jsonl")
    parameters = {
        "model_name_or_path": str(dense), "distill_teacher": "disable",
        "train_file": str(tmp_path / "data" / "train.jsonl"),
        "validation_file": str(tmp_path / "data" / "validation.jsonl"),
        "max_seq_length": 16, "per_device_train_batch_size": 16, "per_device_eval_batch_size": 16,
        "points": ["unstructured:0.8", "block4:0.8"],
        "recipe_args": json.dumps({"num_epochs": 2, "pruning_end_epoch": 1.0, "update_frequency": 0.5,
                                   "qat_start_epoch": 1.0, "observer_epoch": 1.5, "init_lr": 0.005}),
        "benchmark_iterations": 5, "min_metric": 0.0, "max_drop_vs_teacher": -1.0,
        "zoo_root": str(tmp_path / "zoo"), "publish_stub": STUB,
    }  # fmt: skip
    config = tmp_path / "frontier.yaml"
    config.write_text(f"pipeline: frontier\nrun_name: f\nparameters: {json.dumps(parameters)}\n")
    result = run_local(config, pipeline_root=tmp_path / "root")
    assert result.passed is True and result.published == STUB
    report = result.report.read_text()
    rows = re.findall(
        r"^\| (\S+)( \*\*published\*\*)? \| 80% \| (\w+) \| ([\d.]+) \| ([\d.]+) \| passed \|",
        report,
        re.M,
    )
    assert sorted(r[0] for r in rows) == ["block4-80", "unstructured-80"]
    fastest = min(rows, key=lambda r: float(r[4]))
    assert [r[0] for r in rows if r[1]] == [fastest[0]]  # the published one is the fastest
    card = zoo_api.card(STUB, root=str(tmp_path / "zoo"))
    assert card["structure"] == fastest[2] and card["sparsity"] == 0.8
    assert (
        Path(zoo_api.resolve(STUB, "deployment", root=str(tmp_path / "zoo")))
        .joinpath("model.onnx")
        .is_file()
    )
    (run_dir,) = [
        p for p in result.pipeline_root.iterdir() if p.name.startswith("sparse-frontier-")
    ]
    (png,) = list(run_dir.glob("pick-deployment/plot"))
    assert png.read_bytes()[:4] == b"\x89PNG"
