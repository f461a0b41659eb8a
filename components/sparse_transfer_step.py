"""Step: the sparse transfer run itself (recipe: keep sparsity, QAT, distillation).

Named ``sparse_transfer_step`` so the module does not shadow the library package.
"""

from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output

from components._image import COMPONENT_OPTIONS


@dsl.component(**COMPONENT_OPTIONS)
def sparse_transfer(
    task: str,
    model: Input[Model],
    teacher: Input[Model],
    dataset: Input[Dataset],
    recipe: str,
    training_args: dict,
    sparse_model: Output[Model],
    metrics: Output[Metrics],
    recipe_args: str = "",
    zoo_root: str = "",
    num_nodes: int = 1,
    nproc_per_node: int = 1,
    accelerator_type: str = "",
    accelerator_limit: str = "0",
    trainjob_image: str = "",
    s3_secret: str = "",
    settings_config_map: str = "",
    node_accelerator_limit: str = "",
    advanced: dict = {},  # noqa: B006 (KFP reads the literal default; never mutated)
):
    """Fine-tunes the pre-sparsified `model` with `recipe`, distilling from `teacher`.

    A placeholder teacher (``distill_teacher: disable``) turns distillation off.
    """
    from sparse_transfer.pipeline.settings import step_scale_out
    from sparse_transfer.pipeline.steps import train_step, training_metrics

    scale = step_scale_out(
        advanced, num_nodes=num_nodes, nproc_per_node=nproc_per_node,
        accelerator_type=accelerator_type, accelerator_limit=accelerator_limit,
        node_accelerator_limit=node_accelerator_limit, work_uri=f"{sparse_model.uri}-trainjob",
        image=trainjob_image, s3_secret=s3_secret, settings_config_map=settings_config_map,
    )  # fmt: skip

    summary = train_step(
        task, model.path, sparse_model.path, dataset.path, recipe=recipe,
        recipe_args=recipe_args, teacher_dir=teacher.path, training_args=training_args, zoo=zoo_root,
        scale=scale,
    )  # fmt: skip
    for name, value in training_metrics(summary).items():
        metrics.log_metric(name, value)
    sparse_model.metadata.update({"task": task, "recipe": recipe})
