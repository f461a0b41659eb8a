"""Step: the distillation teacher, fetched when a stub is given, else trained dense.

Parameter-driven instead of ``dsl.If``/``dsl.OneOf``: kfp 2.17.3's local runner
cannot pick an artifact out of conditional branches, and the pipeline must run
locally too (see `sparse_transfer.pipeline.steps.teacher_step`).
"""

from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output

from components._image import COMPONENT_OPTIONS


@dsl.component(**COMPONENT_OPTIONS)
def teacher(
    task: str,
    dataset: Input[Dataset],
    training_args: dict,
    teacher: Output[Model],
    metrics: Output[Metrics],
    distill_teacher: str = "",
    base_model: str = "",
    recipe: str = "",
    recipe_args: str = "",
    seed: int = -1,
    zoo_root: str = "",
    advanced: dict = {},  # noqa: B006 (KFP reads the literal default; never mutated)
):
    """Fetches `distill_teacher` (``disable``: no teacher), or trains `base_model` with `recipe`.

    Args:
        seed: overrides the run's seed for teacher training when >= 0 (the reference used 20811).
        advanced: the run form's settings object; its ``teacher_seed`` and
            ``teacher_recipe_args`` win over `seed` and `recipe_args`.
    """
    from sparse_transfer.pipeline.settings import run_settings
    from sparse_transfer.pipeline.steps import teacher_step

    own = run_settings(advanced, teacher_seed=seed, teacher_recipe_args=recipe_args)
    args = dict(training_args, **({"seed": own.teacher_seed} if own.teacher_seed >= 0 else {}))
    result = teacher_step(
        task, teacher.path, dataset.path, distill_teacher=distill_teacher, base_model=base_model,
        recipe=recipe, recipe_args=own.teacher_recipe_args, training_args=args, zoo=zoo_root,
    )  # fmt: skip
    for name, value in result.pop("metrics", {}).items():
        metrics.log_metric(name, value)
    teacher.metadata.update(result)
