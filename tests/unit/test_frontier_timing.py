"""Reading a finished local frontier run: kfp's per-task ``executor_output.json`` files.

The layout is kfp 2.17.3's local runner's (kfp/local/executor_input_utils.py writes
``executor_output.json`` into each task's folder; parameters under ``parameterValues``,
artifacts with their ``uri`` and ``metadata``).
"""

import json

import pytest

from pipelines.results.frontier_timing import run_points, runs_points, teacher_metrics


def _task(folder, payload):
    folder.mkdir(parents=True)
    (folder / "executor_output.json").write_text(json.dumps(payload))


def _run(run_dir, grid):
    for i, (structure, sparsity) in enumerate(grid):
        loop = run_dir / f"for-loop-1-iteration-{i}"
        label = f"{structure}-{round(100 * sparsity)}"
        measured = {"label": label, "sparsity": sparsity, "structure": structure,
                    "metric_name": "accuracy", "metric": 0.7 + i / 10, "latency_ms": 3.0}  # fmt: skip
        _task(loop / "benchmark-point", {"parameterValues": {"Output": measured}})
        uri = str(loop / "export-onnx" / "deployment")
        _task(loop / "export-onnx", {"artifacts": {"deployment": {"artifacts": [{"uri": uri}]}}})
    _task(run_dir / "evaluate",
          {"artifacts": {"metrics": {"artifacts": [{"metadata": {"accuracy": 0.81}}]}}})  # fmt: skip


def test_points_pair_each_iterations_figures_with_its_deployment(tmp_path):
    _run(tmp_path, [("unstructured", 0.8), ("block4", 0.9)])
    points = run_points(tmp_path)
    assert [p["label"] for p in points] == ["unstructured-80", "block4-90"]
    assert points[1]["deployment"].endswith("for-loop-1-iteration-1/export-onnx/deployment")
    assert points[1]["metric"] == pytest.approx(0.8)
    assert teacher_metrics(tmp_path) == {"accuracy": 0.81}


def test_a_run_without_finished_points_is_refused(tmp_path):
    with pytest.raises(ValueError, match="no finished frontier points"):
        run_points(tmp_path)


def test_a_grid_grown_over_two_runs_is_read_together_and_a_repeated_point_refused(tmp_path):
    _run(tmp_path / "a", [("unstructured", 0.8), ("block4", 0.9)])
    _run(tmp_path / "b", [("unstructured", 0.7)])
    points = runs_points([tmp_path / "a", tmp_path / "b"])
    assert [p["label"] for p in points] == ["unstructured-80", "block4-90", "unstructured-70"]
    assert "/b/for-loop-1-iteration-0/" in points[2]["deployment"]
    _run(tmp_path / "c", [("block4", 0.9)])
    with pytest.raises(ValueError, match="'block4-90' is in an earlier run"):
        runs_points([tmp_path / "a", tmp_path / "c"])
