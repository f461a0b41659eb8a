"""Step: dense fine-tune of the teacher (the reference's "dense teacher creation")."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output

from components._image import COMPONENT_OPTIONS


@dsl.component(**COMPONENT_OPTIONS)
def train_teacher(
    task: str,
    base_model: Input[Model],
    dataset: Input[Dataset],
    recipe: str,
    training_args: dict,
    teacher: Output[Model],
    metrics: Output[Metrics],
    recipe_args: str = "",
    seed: int = -1,
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
    """Fine-tunes `base_model` densely with `recipe` (no teacher of its own).

    Args:
        seed: overrides the run's seed when >= 0 (the reference's teacher used 20811).
    """
    from sparse_transfer.pipeline.settings import step_scale_out
    from sparse_transfer.pipeline.steps import train_step, training_metrics

    scale = step_scale_out(
        advanced, num_nodes=num_nodes, nproc_per_node=nproc_per_node,
        accelerator_type=accelerator_type, accelerator_limit=accelerator_limit,
        node_accelerator_limit=node_accelerator_limit, work_uri=f"{teacher.uri}-trainjob",
        image=trainjob_image, s3_secret=s3_secret, settings_config_map=settings_config_map,
    )  # fmt: skip

    args = dict(training_args, **({"seed": seed} if seed >= 0 else {}))
    summary = train_step(
        task, base_model.path, teacher.path, dataset.path,
        recipe=recipe, recipe_args=recipe_args, training_args=args, zoo=zoo_root, scale=scale,
    )  # fmt: skip
    for name, value in training_metrics(summary).items():
        metrics.log_metric(name, value)
    teacher.metadata.update({"task": task, "recipe": recipe})
