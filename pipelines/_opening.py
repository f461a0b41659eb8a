"""The two steps every pipeline opens with: check the flags (and the data's first rows), fetch the data.

Both pipelines take the same data and training parameters; passing them here by
name keeps the two DAGs from drifting apart.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kfp.dsl import PipelineTask

from components import configure_training, fetch_data
from pipelines._settings import io_step, resources, with_s3
from sparse_transfer.pipeline.data_check import DATA_CHECK_FLAGS
from sparse_transfer.tasks.flags import DATA_FLAGS
from sparse_transfer.tasks.flags import TRAINING_FLAGS as SCHEMA_TRAINING_FLAGS

# Names from the one flag schema (sparse_transfer.tasks.flags); tests/unit/test_flag_schema.py
# checks that both pipelines' signatures and the components spell them as the schema does.
DATA_PARAMETERS = tuple(f.name for f in DATA_FLAGS)
TRAINING_FLAGS = tuple(f.name for f in SCHEMA_TRAINING_FLAGS)
# Pipeline parameters the configure step also checks up front (gate metric, recipe windows,
# the data files' first rows against the task).
RUN_CHECKS = ("gate_metric", "recipe", "recipe_args", "zoo_root", "allow_inert_modifiers",
              *DATA_CHECK_FLAGS)  # fmt: skip


def data_and_training_flags(
    parameters: Mapping[str, Any], pipeline: str
) -> tuple[PipelineTask, PipelineTask]:
    """Creates the check-flags and fetch-data steps from the pipeline's own parameters.

    A flag the pipeline keeps top-level is passed by name; the rest travel in its
    ``trainer_flags`` JSON object, which both steps lay over the schema's defaults. The
    check step also checks the ``advanced`` settings object against `pipeline`'s keys
    (its name in run configs), so a typo there fails the run first. The data is fetched
    after the check (which reads only the files' first rows, with the same S3 access), so
    a run whose data does not fit its task stops before copying it.
    """
    extra = parameters["trainer_flags"]
    flags = with_s3(
        resources(
            configure_training(
                task=parameters["task"],
                **{name: parameters[name] for name in TRAINING_FLAGS if name in parameters},
                **{name: parameters[name] for name in RUN_CHECKS if name in parameters},
                trainer_flags=extra,
                advanced=parameters["advanced"],
                pipeline=pipeline,
            ),
            "light",
        )
    )
    own = {name: parameters[name] for name in DATA_PARAMETERS if name in parameters}
    data = io_step(fetch_data(**own, trainer_flags=extra))
    data.after(flags)
    return data.set_display_name("fetch data"), flags.set_display_name("check training flags")
