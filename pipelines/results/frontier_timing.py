"""Re-times a finished local frontier run in interleaved rounds and draws its frontier again.

kfp's local runner runs two loop iterations at a time
(kfp/local/orchestrator/enhanced_dag_orchestrator.py: ``conservative_max = 2``), so a point's
benchmark can share the 2 cores with another point's training. This reads what each point
measured (its ONNX metric) and its deployment from the run folder, times every deployment in
`compare`'s interleaved rounds with the dense teacher's FP32 ONNX and ORT's dynamic int8 of it
beside them, and gates and plots with the pipeline's own `pick_step` (nothing is published)::

    python -m pipelines.results.frontier_timing RUN_FOLDER [RUN_FOLDER ...] --engine onnxruntime-sparse \\
        --teacher-onnx real-results-output/onnx-dense-fp32 --json docs/results/frontier.json \\
        --plot docs/results/frontier.png

The run folder is kfp's: one ``for-loop-*-iteration-*`` folder per point, each task's outputs
in ``TASK/executor_output.json`` (kfp/local/executor_input_utils.py, ``_EXECUTOR_OUTPUT_FILE``):
``parameterValues.Output`` of ``benchmark-point``, the ``deployment`` artifact of
``export-onnx``, and the teacher's metrics as the metadata of ``evaluate``'s ``metrics``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

TEACHER_FP32 = "dense FP32 teacher"
TEACHER_DYNAMIC = "ORT dynamic int8 of the teacher"


def _outputs(task_dir: Path) -> dict[str, Any]:
    return json.loads((task_dir / "executor_output.json").read_text())


def run_points(run_dir: Path) -> list[dict[str, Any]]:
    """Each point's measured figures (label, sparsity, structure, metric) and deployment."""
    points = []
    for iteration in sorted(run_dir.glob("for-loop-*-iteration-*")):
        measured = _outputs(iteration / "benchmark-point")["parameterValues"]["Output"]
        deployment = _outputs(iteration / "export-onnx")["artifacts"]["deployment"]["artifacts"]
        points.append({**measured, "deployment": deployment[0]["uri"]})
    if not points:
        raise ValueError(f"{run_dir}: no finished frontier points (for-loop-*-iteration-*)")
    return points


def runs_points(run_dirs: list[Path]) -> list[dict[str, Any]]:
    """The points of several runs of one frontier (a grid grown over runs: the same task, data
    and teacher), refusing a label two runs share."""
    points: list[dict[str, Any]] = []
    for run_dir in run_dirs:
        for point in run_points(run_dir):
            if any(p["label"] == point["label"] for p in points):
                raise ValueError(f"{run_dir}: point {point['label']!r} is in an earlier run too")
            points.append(point)
    return points


def teacher_metrics(run_dir: Path) -> dict[str, Any]:
    metrics = _outputs(run_dir / "evaluate")["artifacts"]["metrics"]["artifacts"]
    return dict(metrics[0]["metadata"])


def retime(
    points: list[dict[str, Any]], teacher_onnx: Path | None, engine: str, length: int, rounds: int
) -> dict[str, dict[str, Any]]:
    """`compare`'s ONNX Runtime stats per point label (and the teacher's, when given)."""
    from sparse_transfer.export import compare
    from sparse_transfer.export.benchmark import dynamic_int8_copy

    with tempfile.TemporaryDirectory(prefix="frontier-timing-") as tmp:
        variants: dict[str, Any] = {p["label"]: (p["deployment"], engine) for p in points}
        if teacher_onnx is not None:
            variants[TEACHER_FP32] = (teacher_onnx, "onnxruntime")
            dynamic = dynamic_int8_copy(teacher_onnx, Path(tmp) / "dynamic")
            variants[TEACHER_DYNAMIC] = (dynamic, "onnxruntime")
        return compare(variants, 1, length, rounds=rounds, engines=("onnxruntime",))["onnxruntime"]


def main(argv: list[str] | None = None) -> int:
    from sparse_transfer.pipeline.frontier_steps import pick_step

    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("run_dirs", type=Path, nargs="+",
                        help="the run's folder under the pipeline root; several runs of one "
                        "frontier (same task, data and teacher) are timed together")  # fmt: skip
    parser.add_argument("--engine", default="onnxruntime-sparse")
    parser.add_argument("--sequence_length", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--max_drop_vs_teacher", type=float, default=2.0)
    parser.add_argument("--teacher-onnx", type=Path, default=None)
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument("--plot", type=Path, required=True)
    args = parser.parse_args(argv)
    points = runs_points(args.run_dirs)
    timed = retime(points, args.teacher_onnx, args.engine, args.sequence_length, args.rounds)
    measured = [{**p, "latency_ms": timed[p["label"]]["p50_ms"]} for p in points]
    result = pick_step(
        measured, {p["label"]: p["deployment"] for p in points}, args.plot,
        teacher_metrics=teacher_metrics(args.run_dirs[0]),
        max_drop_vs_teacher=args.max_drop_vs_teacher, engine=args.engine,
    )  # fmt: skip
    result["pipeline_latency_ms"] = {p["label"]: p["latency_ms"] for p in points}
    result["timed"] = timed
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1, default=float) + "\n")
    print(result["report"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
