"""The frontier pipeline: sparse transfer at several sparsities and structures, in parallel.

    check flags (+ the data's first rows), then fetch data, fetch dense upstream, teacher
    (+ its evaluation)
      └─ grid (sparsity x structure) ─ ParallelFor point:
             sparse transfer (the point's built-in recipe: GMP to the point's sparsity + QAT + distillation)
               └─ export int8 ONNX ─ evaluate (ONNX) + benchmark on the target engine
      └─ Collected(points) ─ pick the fastest that passes the gate ─ publish; report + plot

Runs on kfp's local runner too (kfp 2.17.3 runs dsl.ParallelFor and dsl.Collected of
parameters and artifacts: kfp/local/orchestrator/enhanced_dag_orchestrator.py), so the tests
run the whole DAG on tiny models. Two limits of that runner shape the loop: it iterates over
a pipeline parameter only (the grid, `points`), and it replaces any parameter a loop task
takes from another task's output with the loop item, so the loop's steps take pipeline
parameters and artifacts only (the flags are checked again inside the point's steps). For clusters with Katib, `pipelines/katib/` holds an
Experiment that searches the same space with the same training step.
"""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Artifact, Markdown, PipelineTask

from components import (
    benchmark_point,
    configure_training,
    evaluate,
    export_onnx,
    fetch_data,
    fetch_model,
    frontier_transfer,
    pick_deployment,
    teacher,
)
from pipelines._docs import described
from pipelines._settings import io_step, resources, scale_out, training_step, with_s3
from pipelines.sparse_upstream_pipeline import MINILM_DENSE

MINILM_TEACHER = "zoo:nlp/sentiment_analysis/minilm-l6/pytorch/huggingface/movie_reviews/base-none"
TEACHER_RECIPE = "zoo:nlp/sentiment_analysis/minilm-l6/pytorch/huggingface/sst2/base-none"
#: The grid: 70/80/90/95% x unstructured/block4. A pipeline parameter, not a step's output:
#: kfp 2.17.3's local runner cannot iterate over a task's output list (kfp/local/io.py raises
#: "Parent pipeline input argument ... not found" for a named output, and resolved another
#: step's "Output" to the loop item for an unnamed one), while a parameter list runs the same
#: locally and on a cluster.
#: Points are "STRUCTURE:SPARSITY" strings: a list of dicts compiles to a protobuf Struct whose
#: key order follows the process's hash seed, so the compiled spec would not be reproducible.
DEFAULT_POINTS = [f"{st}:{s}" for st in ("unstructured", "block4") for s in (0.7, 0.8, 0.9, 0.95)]
#: Points trained at once on a cluster (a compile-time constant in KFP).
PARALLELISM = 4


# The run form's descriptions of the frontier's own parameters (the rest: pipelines/_docs.py).
FRONTIER_HELP = {
    "model_name_or_path": "The dense upstream every point prunes from.",
    "points": 'The grid, ["block4:0.9", "unstructured:0.8", ...] (structures: unstructured, '
    "block4).",
    "recipe_args": "Variables shared by every point's recipe (JSON), e.g. num_epochs.",
    "engine": "The benchmark engine, onnxruntime (or onnxruntime-sparse where the sparse "
    "kernels are installed).",
    "benchmark_iterations": "Timed batches per point's benchmark.",
    "min_metric": "Gate each point must pass: lowest acceptable metric (negative: off).",
    "max_drop_vs_teacher": "Gate each point must pass: allowed drop below the teacher, in "
    "points (negative: off).",
}


class FrontierOutputs(NamedTuple):
    report: Markdown
    plot: Artifact
    passed: bool
    published: str


def _opening(p: dict) -> tuple[PipelineTask, PipelineTask, PipelineTask, PipelineTask]:
    """Data, checked flags, the dense upstream and the teacher: what every point shares.

    Nothing is fetched before the checks (flags, the data's first rows) pass.
    """
    files = {k: p[k] for k in ("task_name", "train_file", "validation_file")}
    config = with_s3(resources(
        configure_training(
            task=p["task"], max_seq_length=p["max_seq_length"],
            per_device_train_batch_size=p["per_device_train_batch_size"],
            per_device_eval_batch_size=p["per_device_eval_batch_size"], fp16=p["fp16"],
            seed=p["seed"], evaluation_strategy="no", save_strategy="no", **files,
        ),
        "light",
    )).set_display_name("check training flags")  # fmt: skip
    data = io_step(fetch_data(**files)).after(config).set_display_name("fetch data")
    student = io_step(
        fetch_model(ref=p["model_name_or_path"], kind="model", task=p["task"],
                    zoo_root=p["zoo_root"])
    ).after(config).set_display_name("fetch dense upstream")  # fmt: skip
    teacher_task = training_step(
        teacher(
            task=p["task"], dataset=data.outputs["dataset"], training_args=config.output,
            distill_teacher=p["distill_teacher"], base_model=p["teacher_model_name_or_path"],
            recipe=p["teacher_recipe"], recipe_args=p["teacher_recipe_args"], seed=p["seed"],
            zoo_root=p["zoo_root"],
        ),
        p["accelerator_type"],
        p["accelerator_limit"],
    ).set_display_name("teacher: fetch or train dense")  # fmt: skip
    return data, config, student, teacher_task


def _point(
    p: dict, point, data: PipelineTask, student: PipelineTask, teacher_task: PipelineTask
) -> tuple[PipelineTask, PipelineTask]:
    """One grid point inside the loop: sparse transfer, int8 export, evaluate and benchmark.

    Takes pipeline parameters and artifacts only (the local runner's loop limit, above).
    """
    scale = {k: p[k] for k in ("num_nodes", "nproc_per_node", "node_accelerator_limit")}
    sparse = training_step(
        frontier_transfer(
            task=p["task"], point=point, model=student.outputs["model"],
            teacher=teacher_task.outputs["teacher"], dataset=data.outputs["dataset"],
            recipe_args=p["recipe_args"], max_seq_length=p["max_seq_length"],
            per_device_train_batch_size=p["per_device_train_batch_size"],
            per_device_eval_batch_size=p["per_device_eval_batch_size"], fp16=p["fp16"],
            seed=p["seed"], zoo_root=p["zoo_root"],
            **scale_out(p["accelerator_type"], p["accelerator_limit"], **scale),
        ),
        p["accelerator_type"],
        p["accelerator_limit"],
    ).set_display_name("sparse transfer (point)")  # fmt: skip
    exported = resources(
        export_onnx(
            task=p["task"], model=sparse.outputs["sparse_model"],
            sequence_length=p["max_seq_length"],
        ),
        "eval",
    ).set_display_name("export ONNX")  # fmt: skip
    timed = resources(
        benchmark_point(
            task=p["task"], point=point, deployment=exported.outputs["deployment"],
            dataset=data.outputs["dataset"], engine=p["engine"],
            max_seq_length=p["max_seq_length"],
            per_device_eval_batch_size=p["per_device_eval_batch_size"],
            gate_metric=p["gate_metric"], iterations=p["benchmark_iterations"],
        ),
        "eval",
    ).set_display_name("evaluate (ONNX) and benchmark")  # fmt: skip
    return exported, timed


@dsl.pipeline(
    name="sparse-frontier",
    description="Sparse transfer at several sparsities and structures in parallel; each "
    "exported to int8 ONNX and benchmarked; the fastest deployment that passes the gate is "
    "published and the accuracy-latency frontier drawn.",
)
@described(**FRONTIER_HELP)
def frontier_pipeline(
    task: str = "text-classification",
    model_name_or_path: str = MINILM_DENSE,
    distill_teacher: str = MINILM_TEACHER,
    teacher_model_name_or_path: str = MINILM_DENSE,
    teacher_recipe: str = TEACHER_RECIPE,
    teacher_recipe_args: str = "",
    task_name: str = "sst2",
    train_file: str = "",
    validation_file: str = "",
    max_seq_length: int = 64,
    per_device_train_batch_size: int = 32,
    per_device_eval_batch_size: int = 32,
    fp16: bool = False,
    seed: int = 42,
    points: list = DEFAULT_POINTS,
    recipe_args: str = "",
    engine: str = "onnxruntime",
    benchmark_iterations: int = 50,
    gate_metric: str = "",
    min_metric: float = -1.0,
    max_drop_vs_teacher: float = 2.0,
    zoo_root: str = "",
    publish_stub: str = "",
    publish_force: bool = False,
    accelerator_type: str = "",
    accelerator_limit: str = "0",
    node_accelerator_limit: str = "",
    num_nodes: int = 1,
    nproc_per_node: int = 1,
) -> FrontierOutputs:
    """The accuracy-latency frontier of one task and dataset (parameters: FRONTIER_HELP)."""
    p = dict(locals())  # the run's parameters, for the graph-building helpers above
    data, config, student, teacher_task = _opening(p)
    teacher_eval = resources(
        evaluate(task=task, model=teacher_task.outputs["teacher"], dataset=data.outputs["dataset"],
                 training_args=config.output),
        "eval",
    ).set_display_name("evaluate teacher")  # fmt: skip
    with dsl.ParallelFor(points, parallelism=PARALLELISM) as point:
        exported, timed = _point(p, point, data, student, teacher_task)
    pick = io_step(
        pick_deployment(
            measured=dsl.Collected(timed.output),
            deployments=dsl.Collected(exported.outputs["deployment"]),
            teacher_metrics=teacher_eval.outputs["metrics"], min_metric=min_metric,
            max_drop_vs_teacher=max_drop_vs_teacher, publish_stub=publish_stub,
            zoo_root=zoo_root, force=publish_force, engine=engine,
        )
    ).set_display_name("pick the fastest passing deployment; frontier")  # fmt: skip
    return FrontierOutputs(
        report=pick.outputs["report"],
        plot=pick.outputs["plot"],
        passed=pick.outputs["passed"],
        published=pick.outputs["published"],
    )
