"""Step: the Dataset the sparse transfer trains on, teacher-labelled unlabelled text added."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Model, Output

from components._image import COMPONENT_OPTIONS


@dsl.component(**COMPONENT_OPTIONS)
def teacher_label(
    dataset: Input[Dataset],
    teacher: Input[Model],
    training_args: dict,
    labelled: Output[Dataset],
    advanced: dict = {},  # noqa: B006 (KFP reads the literal default; never mutated)
):
    """Passes `dataset` through, or with ``advanced.unlabeled_file`` labelled by `teacher`
    added to its training rows (`sparse_transfer.pipeline.label_step`)."""
    from sparse_transfer.pipeline.label_step import teacher_label_step
    from sparse_transfer.pipeline.settings import run_settings

    spec = teacher_label_step(
        dataset.path, teacher.path, labelled.path,
        unlabeled_file=run_settings(advanced).unlabeled_file,
        max_seq_length=int(training_args.get("max_seq_length") or 0),
    )  # fmt: skip
    labelled.metadata.update(spec)
