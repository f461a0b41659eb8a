"""The dense teacher pipeline: the reference's "dense teacher creation" alone.

    check flags (+ the data's first rows) ─ fetch data ─ fetch dense base ─ train (dense recipe)
      ─ evaluate ─ publish if the gate passes

Defaults are the reference's teacher command (``--model_name_or_path ...base-none
--recipe ...sst2/base-none --task_name sst2 --seed 20811 ...``); publish the
result and pass its stub as `distill_teacher` to the sparse transfer pipeline.
"""

from kfp import dsl

from components import evaluate, fetch_model, publish, train_teacher
from pipelines._docs import described
from pipelines._opening import data_and_training_flags
from pipelines._settings import io_step, resources, scale_out, training_step
from pipelines.sparse_transfer_pipeline import OBERT_DENSE, SST2_TEACHER, PipelineOutputs


@dsl.pipeline(
    name="dense-teacher",
    description="Fine-tune a dense teacher for distillation and publish it to the zoo.",
)
@described
def dense_teacher_pipeline(
    task: str = "text-classification",
    model_name_or_path: str = OBERT_DENSE,
    recipe: str = SST2_TEACHER,
    recipe_args: str = "",
    task_name: str = "sst2",
    dataset_name: str = "",
    dataset_config_name: str = "",
    train_file: str = "",
    validation_file: str = "",
    dataset_snapshot_prefix: str = "",
    input_column_names: str = "",
    label_column_name: str = "",
    validation_ratio: float = 0.0,
    max_seq_length: int = 0,
    doc_stride: int = 0,
    preprocessing_num_workers: int = 6,
    per_device_train_batch_size: int = 32,
    per_device_eval_batch_size: int = 32,
    gradient_accumulation_steps: int = 1,
    fp16: bool = True,
    seed: int = 20811,
    evaluation_strategy: str = "epoch",
    eval_steps: int = 0,
    logging_steps: int = 500,
    logging_first_step: bool = False,
    save_strategy: str = "epoch",
    save_steps: int = 500,
    save_total_limit: int = 1,
    max_steps: int = -1,
    max_train_samples: int = 0,
    max_eval_samples: int = 0,
    zoo_root: str = "",
    publish_stub: str = "",
    publish_force: bool = False,
    gate_metric: str = "",
    min_metric: float = 0.0,
    accelerator_type: str = "",
    accelerator_limit: str = "0",
    node_accelerator_limit: str = "",
    num_nodes: int = 1,
    nproc_per_node: int = 1,
) -> PipelineOutputs:
    """Dense teacher end to end; parameters mean what they mean in `sparse_transfer_pipeline`.

    Args:
        model_name_or_path: The dense base model to fine-tune as the teacher.
        recipe: The dense teacher recipe (no pruning): zoo stub, s3:// URI, path or name.
    """
    data, config = data_and_training_flags(locals())
    # nothing is fetched before the checks (flags, recipe, the data's first rows) pass
    base = (
        io_step(fetch_model(ref=model_name_or_path, kind="model", task=task, zoo_root=zoo_root))
        .after(config)
        .set_display_name("fetch dense base")
    )
    trained = training_step(
        train_teacher(
            task=task,
            base_model=base.outputs["model"],
            dataset=data.outputs["dataset"],
            recipe=recipe,
            recipe_args=recipe_args,
            training_args=config.output,
            zoo_root=zoo_root,
            **scale_out(
                num_nodes,
                nproc_per_node,
                accelerator_type,
                accelerator_limit,
                node_accelerator_limit,
            ),
        ),
        accelerator_type,
        accelerator_limit,
    ).set_display_name("train dense teacher")
    scored = resources(
        evaluate(
            task=task,
            model=trained.outputs["teacher"],
            dataset=data.outputs["dataset"],
            training_args=config.output,
        ),
        "eval",
    ).set_display_name("evaluate teacher")
    gate = io_step(
        publish(
            task=task,
            model=trained.outputs["teacher"],
            torch_metrics=scored.outputs["metrics"],
            publish_stub=publish_stub,
            zoo_root=zoo_root,
            gate_metric=gate_metric,
            min_metric=min_metric,
            max_drop_vs_teacher=-1.0,
            force=publish_force,
        )
    ).set_display_name("gate and publish")
    return PipelineOutputs(
        report=gate.outputs["report"],
        passed=gate.outputs["passed"],
        published=gate.outputs["published"],
    )
