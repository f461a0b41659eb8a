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
from sparse_transfer.tasks.flags import DATA_FLAGS
from sparse_transfer.tasks.flags import TRAINING_FLAGS as SCHEMA_TRAINING_FLAGS

# Names from the one flag schema (sparse_transfer.tasks.flags); tests/unit/test_flag_schema.py
# checks that both pipelines' signatures and the components spell them as the schema does.
DATA_PARAMETERS = tuple(f.name for f in DATA_FLAGS)
TRAINING_FLAGS = tuple(f.name for f in SCHEMA_TRAINING_FLAGS)
# Pipeline parameters the configure step also checks up front (gate metric, recipe windows).
RUN_CHECKS = ("gate_metric", "recipe", "recipe_args", "zoo_root", "allow_inert_modifiers")


def data_and_training_flags(
    parameters: Mapping[str, Any], pipeline: str
) -> tuple[PipelineTask, PipelineTask]:
    """Creates the fetch-data and check-flags steps from the pipeline's own parameters.

    A flag the pipeline keeps top-level is passed by name; the rest travel in its
    ``trainer_flags`` JSON object, which both steps lay over the schema's defaults. The
    check step also checks the ``advanced`` settings object against `pipeline`'s keys
    (its name in run configs), so a typo there fails the run first.
    """
    own = {name: parameters[name] for name in DATA_PARAMETERS if name in parameters}
    extra = parameters["trainer_flags"]
    data = io_step(fetch_data(**own, trainer_flags=extra))
    flags = resources(
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
    return data.set_display_name("fetch data"), flags.set_display_name("check training flags")
