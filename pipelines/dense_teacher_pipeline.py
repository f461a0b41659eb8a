"""The dense teacher pipeline: the reference's "dense teacher creation" alone.

    check flags (+ the data's first rows) ─ fetch data ─ fetch dense base ─ train (dense recipe)
      ─ evaluate ─ publish if the gate passes

Defaults are the reference's teacher command (``--model_name_or_path ...base-none
--recipe ...sst2/base-none --task_name sst2 --seed 20811 ...``); publish the
result and pass its stub as `distill_teacher` to the sparse transfer pipeline.
"""

from kfp import dsl
from kfp.dsl import PipelineTask

from components import evaluate, fetch_model, publish, train_teacher
from pipelines._docs import described
from pipelines._opening import data_and_training_flags
from pipelines._settings import io_step, resources, scale_out, training_step
from pipelines.sparse_transfer_pipeline import OBERT_DENSE, SST2_TEACHER, PipelineOutputs
from sparse_transfer.pipeline.settings import settings_help


def _train(p: dict, base: PipelineTask, data: PipelineTask, config: PipelineTask) -> PipelineTask:
    """The dense training step (scale-out settings from the run's ``advanced`` object)."""
    return training_step(
        train_teacher(
            task=p["task"],
            base_model=base.outputs["model"],
            dataset=data.outputs["dataset"],
            recipe=p["recipe"],
            recipe_args=p["recipe_args"],
            training_args=config.output,
            zoo_root=p["zoo_root"],
            **scale_out(p["accelerator_type"], p["accelerator_limit"], advanced=p["advanced"]),
        ),
        p["accelerator_type"],
        p["accelerator_limit"],
    ).set_display_name("train dense teacher")


def _gate(p: dict, trained: PipelineTask, scored: PipelineTask) -> PipelineTask:
    """Gates the teacher on its own metric (no teacher to compare with) and publishes it."""
    return io_step(
        publish(
            task=p["task"],
            model=trained.outputs["teacher"],
            torch_metrics=scored.outputs["metrics"],
            publish_stub=p["publish_stub"],
            zoo_root=p["zoo_root"],
            gate_metric=p["gate_metric"],
            min_metric=p["min_metric"],
            max_drop_vs_teacher=-1.0,
            advanced=p["advanced"],
        )
    ).set_display_name("gate and publish")


@dsl.pipeline(
    name="dense-teacher",
    description="Fine-tune a dense teacher for distillation and publish it to the zoo.",
)
@described(advanced=settings_help("dense_teacher"))
def dense_teacher_pipeline(
    task: str = "text-classification",
    model_name_or_path: str = OBERT_DENSE,
    recipe: str = SST2_TEACHER,
    recipe_args: str = "",
    task_name: str = "sst2",
    dataset_name: str = "",
    train_file: str = "",
    validation_file: str = "",
    max_seq_length: int = 0,
    per_device_train_batch_size: int = 32,
    seed: int = 20811,
    gate_metric: str = "",
    min_metric: float = 0.0,
    publish_stub: str = "",
    zoo_root: str = "",
    accelerator_type: str = "",
    accelerator_limit: str = "0",
    trainer_flags: dict = {},  # noqa: B006 (KFP reads the literal default; never mutated)
    advanced: dict = {},  # noqa: B006 (KFP reads the literal default; never mutated)
) -> PipelineOutputs:
    """Dense teacher end to end; parameters mean what they mean in `sparse_transfer_pipeline`.

    Args:
        model_name_or_path: The dense base model to fine-tune as the teacher.
        recipe: The dense teacher recipe (no pruning): zoo stub, s3:// URI, path or name.
    """
    p = dict(locals())  # the run's parameters, for the graph-building helpers above
    data, config = data_and_training_flags(p, "dense_teacher")
    base = (
        io_step(fetch_model(ref=model_name_or_path, kind="model", task=task, zoo_root=zoo_root))
        .after(config)
        .set_display_name("fetch dense base")
    )  # nothing is fetched before the checks pass
    trained = _train(p, base, data, config)
    scored = resources(
        evaluate(
            task=task,
            model=trained.outputs["teacher"],
            dataset=data.outputs["dataset"],
            training_args=config.output,
        ),
        "eval",
    ).set_display_name("evaluate teacher")
    gate = _gate(p, trained, scored)
    return PipelineOutputs(
        report=gate.outputs["report"],
        passed=gate.outputs["passed"],
        published=gate.outputs["published"],
    )
