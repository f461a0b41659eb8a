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
):
    """Fine-tunes the pre-sparsified `model` with `recipe`, distilling from `teacher`.

    A placeholder teacher (``distill_teacher: disable``) turns distillation off.
    """
    from sparse_transfer.pipeline.steps import train_step, training_metrics

    summary = train_step(
        task, model.path, sparse_model.path, dataset.path, recipe=recipe,
        recipe_args=recipe_args, teacher_dir=teacher.path, training_args=training_args, zoo=zoo_root,
    )  # fmt: skip
    for name, value in training_metrics(summary).items():
        metrics.log_metric(name, value)
    sparse_model.metadata.update({"task": task, "recipe": recipe})
