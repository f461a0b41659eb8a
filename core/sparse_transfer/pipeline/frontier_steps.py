"""The frontier pipeline's own steps (components/frontier_*.py call one each)."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sparse_transfer.errors import PipelineError
from sparse_transfer.pipeline import frontier


def parse_point(point: str) -> tuple[str, float]:
    """``"block4:0.9"`` -> ("block4", 0.9); no sparsity gives NaN, which the grid refuses."""
    structure, sep, sparsity = point.partition(":")
    try:
        return structure.strip(), float(sparsity) if sep else float("nan")
    except ValueError:
        raise PipelineError(
            f"frontier point {point!r}: expected STRUCTURE:SPARSITY, e.g. block4:0.9"
        ) from None


def point_recipe_step(point: str, recipe_args: str = "") -> tuple[str, str, str]:
    """(recipe file, recipe args JSON, label) of one grid point, resolved inside the image.

    Args:
        point: ``"STRUCTURE:SPARSITY"``, e.g. ``"block4:0.9"``.
        recipe_args: variables every point shares (JSON object).
    """
    from sparse_transfer.recipe import parse_recipe_args

    structure, sparsity = parse_point(point)
    (spec,) = frontier.grid([sparsity], [structure], parse_recipe_args(recipe_args))
    return frontier.recipe_path(spec["recipe"]), spec["recipe_args"], spec["label"]


def point_training_args(task: str, **flags: Any) -> dict[str, Any]:
    """The validated training flags of a point, built inside the loop.

    kfp 2.17.3's local runner hands a loop task the loop item in place of any parameter that
    comes from another task's output (kfp/local/orchestrator/task_spec_utils.py,
    create_parameter_loop_iteration_task_spec: every ``task_output_parameter`` input), so
    the loop's steps take the flags as pipeline parameters, not the check step's output.
    """
    from sparse_transfer.pipeline.options import training_options

    return training_options(task, evaluation_strategy="no", save_strategy="no", **flags)


def transfer_point_step(
    task: str,
    point: str,
    model_dir: str | Path,
    output_dir: str | Path,
    data_dir: str | Path,
    *,
    recipe_args: str = "",
    flags: Mapping[str, Any],
    **train_kwargs: Any,
) -> dict[str, Any]:
    """`steps.train_step` with the point's recipe; returns the summary and its metrics."""
    from sparse_transfer.pipeline.steps import train_step, training_metrics

    recipe, point_args, label = point_recipe_step(point, recipe_args)
    summary = train_step(
        task, model_dir, output_dir, data_dir, recipe=recipe, recipe_args=point_args,
        training_args=point_training_args(task, **flags), **train_kwargs,
    )  # fmt: skip
    return {"label": label, "summary": summary, "metrics": training_metrics(summary)}


def benchmark_point_step(
    deployment_dir: str | Path,
    data_dir: str | Path,
    point: str,
    *,
    task: str,
    flags: Mapping[str, Any],
    engine: str = "onnxruntime",
    sequence_length: int = 128,
    gate_metric: str = "",
    iterations: int = 20,
) -> dict[str, Any]:
    """The deployment's gate metric (evaluated here, ONNX) and batch-1 p50 latency on `engine`."""
    from sparse_transfer.export import benchmark
    from sparse_transfer.pipeline.metrics import primary_metric
    from sparse_transfer.pipeline.options import eval_options
    from sparse_transfer.pipeline.steps import evaluate_step
    from sparse_transfer.runtime.engines import ENGINES as ORT_ENGINES
    from sparse_transfer.tasks.registry import get_task

    args = eval_options(point_training_args(task, **flags))
    onnx_metrics = evaluate_step(task, deployment_dir, data_dir, eval_args=args)["metrics"]
    name, value = primary_metric(get_task(task), onnx_metrics, gate_metric)
    structure, sparsity = parse_point(point)
    label = f"{structure}-{round(100 * sparsity)}"
    result = benchmark(
        deployment_dir, batch_sizes=(1,), sequence_length=sequence_length,
        iterations=iterations,
        # ONNX Runtime's graphs (standard, sparse, auto) are one engine of the benchmark
        engines=("onnxruntime",) if engine in ORT_ENGINES else (engine,),
        ort_engine=engine if engine in ORT_ENGINES else "onnxruntime",
    )  # fmt: skip
    runs = result.get("onnxruntime" if engine in ORT_ENGINES else engine) or {}
    if "batch_1" not in runs:
        reason = runs.get("reason", "the benchmark returned no figures for it")
        raise PipelineError(f"engine {engine!r} did not run {deployment_dir}: {reason}")
    return {
        "label": label, "sparsity": sparsity, "structure": structure,
        "metric_name": name, "metric": float(value), "latency_ms": float(runs["batch_1"]["p50_ms"]),
    }  # fmt: skip


def pick_step(
    measured: list[Mapping[str, Any]],
    deployments: Mapping[str, str],
    plot_path: str | Path,
    *,
    teacher_metrics: Mapping[str, Any] | None = None,
    min_metric: float = -1.0,
    max_drop_vs_teacher: float = 2.0,
    publish_stub: str = "",
    zoo: str = "",
    force: bool = False,
    engine: str = "onnxruntime",
) -> dict[str, Any]:
    """Gates every point, publishes the fastest that passes, draws the frontier.

    Args:
        measured: `benchmark_point_step` results, one per point.
        deployments: point label -> its deployment folder.
    """
    from sparse_transfer.pipeline.gate import evaluate_gate

    if not measured:
        raise PipelineError("the frontier has no points")
    metric = measured[0]["metric_name"]
    points = []
    for m in measured:
        gate = evaluate_gate(
            m["metric"], metric=metric, min_metric=min_metric,
            max_drop_vs_teacher=max_drop_vs_teacher, teacher_metrics=teacher_metrics,
        )  # fmt: skip
        points.append(frontier.Point(
            m["label"], m["sparsity"], m["structure"], m["metric"], m["latency_ms"], gate.passed,
            deployments.get(m["label"], ""),
        ))  # fmt: skip
    result = frontier.frontier_report(points, Path(plot_path), metric=metric, engine=engine)
    chosen = result["chosen"]
    published = ""
    if chosen and publish_stub:
        _publish(chosen, publish_stub, metric, engine, zoo=zoo, force=force)
        published = publish_stub
    return {
        "report": result["report"],
        "passed": chosen is not None,
        "published": published,
        "points": result["points"],
    }


def _publish(chosen: dict, stub: str, metric: str, engine: str, *, zoo: str, force: bool) -> None:
    from sparse_transfer.zoo import ModelCard, push

    if not chosen["deployment"] or not Path(chosen["deployment"]).is_dir():
        raise PipelineError(f"frontier point {chosen['label']}: no deployment folder to publish")
    card = {
        "sparsity": chosen["sparsity"], "structure": chosen["structure"], "quantized": True,
        "metrics": {metric: chosen["metric"], f"latency_ms_{engine}_b1": chosen["latency_ms"]},
        "description": f"The fastest deployment on {engine} that passed the gate, out of the "
        f"frontier pipeline's grid ({chosen['label']}).",
    }  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        entry = Path(tmp) / "entry"
        shutil.copytree(chosen["deployment"], entry / "deployment")
        body = f"# {stub}\n\n{card['description']}\n"
        (entry / "model.md").write_text(ModelCard(card, body).render())  # makes it an entry
        push(entry, stub, force=force, card=card, root=zoo or None)


def trial_step(
    point: str,
    work_dir: str | Path,
    *,
    task: str,
    model: str,
    train_file: str,
    validation_file: str,
    teacher: str = "disable",
    task_name: str = "",
    recipe_args: str = "",
    flags: Mapping[str, Any],
    engine: str = "onnxruntime",
    zoo: str = "",
) -> dict[str, Any]:
    """One frontier point end to end in one process: a Katib trial (pipelines/katib/).

    Fetches the model, teacher and data, trains the point, exports int8 ONNX, evaluates and
    benchmarks it; returns the measured point (metric and latency) for the trial's stdout.
    """
    from sparse_transfer.pipeline import steps

    work = Path(work_dir)
    steps.fetch_model_step(model, work / "model", task=task, zoo=zoo)
    steps.fetch_model_step(teacher, work / "teacher", kind="teacher", task=task, zoo=zoo)
    data = {"task_name": task_name} if task_name else {}
    steps.fetch_data_step(
        work / "data", train_file=train_file, validation_file=validation_file, **data
    )
    transfer_point_step(
        task, point, work / "model", work / "sparse", work / "data", recipe_args=recipe_args,
        flags=flags, teacher_dir=work / "teacher", zoo=zoo,
    )  # fmt: skip
    length = int(flags.get("max_seq_length", 128))
    steps.export_step(work / "sparse", task, work / "deployment", sequence_length=length)
    return benchmark_point_step(
        work / "deployment", work / "data", point, task=task, flags=flags, engine=engine,
        sequence_length=length,
    )  # fmt: skip
