"""Reading a finished local frontier run: kfp's per-task ``executor_output.json`` files.

The layout is kfp 2.17.3's local runner's (kfp/local/executor_input_utils.py writes
``executor_output.json`` into each task's folder; parameters under ``parameterValues``,
artifacts with their ``uri`` and ``metadata``).
"""

import json

import pytest

from pipelines.results.frontier_timing import run_points, teacher_metrics


def _task(folder, payload):
    folder.mkdir(parents=True)
    (folder / "executor_output.json").write_text(json.dumps(payload))


def test_points_pair_each_iterations_figures_with_its_deployment(tmp_path):
    for i, (structure, sparsity) in enumerate([("unstructured", 0.8), ("block4", 0.9)]):
        loop = tmp_path / f"for-loop-1-iteration-{i}"
        label = f"{structure}-{round(100 * sparsity)}"
        measured = {"label": label, "sparsity": sparsity, "structure": structure,
                    "metric_name": "accuracy", "metric": 0.7 + i / 10, "latency_ms": 3.0}  # fmt: skip
        _task(loop / "benchmark-point", {"parameterValues": {"Output": measured}})
        uri = str(loop / "export-onnx" / "deployment")
        _task(loop / "export-onnx", {"artifacts": {"deployment": {"artifacts": [{"uri": uri}]}}})
    _task(tmp_path / "evaluate",
          {"artifacts": {"metrics": {"artifacts": [{"metadata": {"accuracy": 0.81}}]}}})  # fmt: skip
    points = run_points(tmp_path)
    assert [p["label"] for p in points] == ["unstructured-80", "block4-90"]
    assert points[1]["deployment"].endswith("for-loop-1-iteration-1/export-onnx/deployment")
    assert points[1]["metric"] == pytest.approx(0.8)
    assert teacher_metrics(tmp_path) == {"accuracy": 0.81}


def test_a_run_without_finished_points_is_refused(tmp_path):
    with pytest.raises(ValueError, match="no finished frontier points"):
        run_points(tmp_path)
