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
):
    """Copies the data files into the artifact and records the data flags next to them.

    With `dataset_snapshot_prefix` set, the newest snapshot folder under it
    (names sort in time) provides ``train.*``/``validation.*`` (scheduled retraining).
    """
    from sparse_transfer.pipeline.steps import fetch_data_step

    spec = fetch_data_step(
        dataset.path,
        train_file=train_file,
        validation_file=validation_file,
        dataset_snapshot_prefix=dataset_snapshot_prefix,
        task_name=task_name,
        dataset_name=dataset_name,
        dataset_config_name=dataset_config_name,
        input_column_names=input_column_names,
        label_column_name=label_column_name,
        validation_ratio=validation_ratio,
    )
    dataset.metadata.update(spec)
