"""Step: sparse transfer for one frontier point (its sparsity and structure), in the loop."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output

from components._image import COMPONENT_OPTIONS


@dsl.component(**COMPONENT_OPTIONS)
def frontier_transfer(
    task: str,
    point: str,
    model: Input[Model],
    teacher: Input[Model],
    dataset: Input[Dataset],
    sparse_model: Output[Model],
    metrics: Output[Metrics],
    recipe_args: str = "",
    max_seq_length: int = 128,
    per_device_train_batch_size: int = 32,
    per_device_eval_batch_size: int = 32,
    fp16: bool = False,
    seed: int = 42,
    zoo_root: str = "",
    num_nodes: int = 1,
    nproc_per_node: int = 1,
    accelerator_type: str = "",
    accelerator_limit: str = "0",
    trainjob_image: str = "",
    s3_secret: str = "",
    settings_config_map: str = "",
    node_accelerator_limit: str = "",
):
    """The point's built-in recipe (GMP to its sparsity + QAT + distillation) on `model`.

    One step with flat flags, not a recipe step and the check step's output feeding
    `sparse_transfer`: kfp 2.17.3's local runner replaces every parameter a loop task takes
    from another task's output with the loop item (kfp/local/orchestrator/task_spec_utils.py,
    create_parameter_loop_iteration_task_spec); pipeline parameters and artifacts pass.
    """
    from sparse_transfer.pipeline.frontier_steps import transfer_point_step
    from sparse_transfer.pipeline.settings import step_scale_out

    scale = step_scale_out(
        None, num_nodes=num_nodes, nproc_per_node=nproc_per_node,
        accelerator_type=accelerator_type, accelerator_limit=accelerator_limit,
        node_accelerator_limit=node_accelerator_limit, work_uri=f"{sparse_model.uri}-trainjob",
        image=trainjob_image, s3_secret=s3_secret, settings_config_map=settings_config_map,
    )  # fmt: skip
    summary = transfer_point_step(
        task, point, model.path, sparse_model.path, dataset.path, recipe_args=recipe_args,
        teacher_dir=teacher.path, zoo=zoo_root, scale=scale,
        flags={"max_seq_length": max_seq_length, "per_device_train_batch_size": per_device_train_batch_size,
               "per_device_eval_batch_size": per_device_eval_batch_size, "fp16": fp16, "seed": seed},
    )  # fmt: skip
    for name, value in summary["metrics"].items():
        metrics.log_metric(name, value)
    sparse_model.metadata.update({"task": task, "point": point})
