"""Step: data files, a snapshot prefix or a hub dataset name -> Dataset artifact."""

from kfp import dsl
from kfp.dsl import Dataset, Output

from components._image import COMPONENT_OPTIONS


@dsl.component(**COMPONENT_OPTIONS)
def fetch_data(
    dataset: Output[Dataset],
    task_name: str = "",
    dataset_name: str = "",
    dataset_config_name: str = "",
    train_file: str = "",
    validation_file: str = "",
    dataset_snapshot_prefix: str = "",
    input_column_names: str = "",
    label_column_name: str = "",
    validation_ratio: float = 0.0,
    trainer_flags: dict = {},  # noqa: B006 (KFP reads the literal default; never mutated)
):
    """Copies the data files into the artifact and records the data flags next to them.

    With `dataset_snapshot_prefix` set, the newest snapshot folder under it
    (names sort in time) provides ``train.*``/``validation.*`` (scheduled retraining).
    The data keys of `trainer_flags` (the run form's JSON object) win over the flat ones.
    """
    flags = dict(locals())  # exactly the parameters: taken before any other name exists
    from sparse_transfer.pipeline.options import with_trainer_flags
    from sparse_transfer.pipeline.steps import fetch_data_step

    flags.pop("dataset")
    extra = flags.pop("trainer_flags")
    spec = fetch_data_step(dataset.path, **with_trainer_flags(flags, extra, "data"))
    dataset.metadata.update(spec)
