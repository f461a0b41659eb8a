"""The two steps every pipeline opens with: fetch the data, check the training flags.

Both pipelines take the same data and training parameters; passing them here by
name keeps the two DAGs from drifting apart.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kfp.dsl import PipelineTask

from components import configure_training, fetch_data
from pipelines._settings import io_step, resources

DATA_PARAMETERS = (
    "task_name",
    "dataset_name",
    "dataset_config_name",
    "train_file",
    "validation_file",
    "dataset_snapshot_prefix",
    "input_column_names",
    "label_column_name",
    "validation_ratio",
)
TRAINING_FLAGS = (
    "max_seq_length",
    "doc_stride",
    "preprocessing_num_workers",
    "per_device_train_batch_size",
    "per_device_eval_batch_size",
    "gradient_accumulation_steps",
    "fp16",
    "seed",
    "evaluation_strategy",
    "eval_steps",
    "logging_steps",
    "logging_first_step",
    "save_strategy",
    "save_steps",
    "save_total_limit",
    "max_steps",
    "max_train_samples",
    "max_eval_samples",
)


def data_and_training_flags(parameters: Mapping[str, Any]) -> tuple[PipelineTask, PipelineTask]:
    """Creates the fetch-data and check-flags steps from the pipeline's own parameters."""
    data = io_step(fetch_data(**{name: parameters[name] for name in DATA_PARAMETERS}))
    flags = resources(
        configure_training(
            task=parameters["task"], **{name: parameters[name] for name in TRAINING_FLAGS}
        ),
        "light",
    )
    return data.set_display_name("fetch data"), flags.set_display_name("check training flags")
