"""The run form's ``advanced`` object: the rarely changed step settings, typed.

A KFP run form shows one field per pipeline parameter, and a pipeline cannot pick a value
out of a dict parameter while it builds its graph. So the rarely changed step settings (gate
switches, teacher seed, scale-out, serving size) travel as one JSON object, ``advanced``,
handed whole to the steps that need one of them; each step reads its typed field from
`RunSettings` (`run_settings`). The configure step checks the object first (`check_settings`),
so a typo fails the run in its first step with one line naming the key and the value.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from sparse_transfer.errors import PipelineError
from sparse_transfer.tasks.data import FILE_BUILDERS
from sparse_transfer.tasks.flags import Flag, as_int, check_value


def _setting(default: Any, help: str, minimum: float | None = None) -> Any:
    return field(default=default, metadata={"help": help, "minimum": minimum})


@dataclass(frozen=True)
class RunSettings:
    """The ``advanced`` keys, their types and defaults (the run form's documented defaults)."""

    teacher_recipe_args: str = _setting(
        "", 'JSON overrides of the teacher recipe\'s variables, e.g. {"num_epochs": 1}.'
    )
    teacher_seed: int = _setting(
        20811, "Seed of the teacher trained in the run (the reference used 20811; -1: the "
        "run's seed).", minimum=-1,
    )  # fmt: skip
    allow_inert_modifiers: bool = _setting(
        False, "Run although a recipe modifier starts after training ends."
    )
    must_beat_published: bool = _setting(
        False, "Publish only when better than the model now at publish_stub (scheduled "
        "retraining forces it on).",
    )  # fmt: skip
    gate_require_int8: bool = _setting(False, "Publish only an int8 deployment.")
    publish_force: bool = _setting(False, "Replace an existing zoo entry at publish_stub.")
    num_nodes: int = _setting(
        1, "Training pods; above 1 the step runs a Kubeflow Trainer TrainJob "
        "(docs/distributed.md).", minimum=1,
    )  # fmt: skip
    nproc_per_node: int = _setting(
        1, "Training processes per pod (torchrun; one per GPU).", minimum=1
    )
    node_accelerator_limit: str = _setting(
        "", "GPUs per TrainJob node when num_nodes > 1, a digit string (empty: "
        'accelerator_limit); set accelerator_limit "0" then, so the waiting step holds no GPU.',
    )  # fmt: skip
    serving_max_replicas: int = _setting(
        1, "Most predictor replicas of the InferenceService deploy_serving makes.", minimum=1
    )
    unlabeled_file: str = _setting(
        "", "In-domain unlabelled text (a data file as train_file, local or s3://) with the "
        "training file's input columns (text-classification): the run's teacher labels its "
        "rows that are not training or validation texts, and the sparse transfer trains on "
        "the training rows plus those (more of the teacher to distil; docs/upstreams.md).",
    )  # fmt: skip


SETTINGS: dict[str, Flag] = {
    f.name: Flag(f.name, type(f.default), f.default, f.metadata["help"], f.metadata["minimum"])
    for f in fields(RunSettings)
}
# The keys each pipeline's steps read; another key there would be silently ignored, so it is refused.
PIPELINE_SETTINGS: dict[str, tuple[str, ...]] = {
    "sparse_transfer": tuple(SETTINGS),
    "dense_teacher": (
        "allow_inert_modifiers",
        "must_beat_published",
        "publish_force",
        "num_nodes",
        "nproc_per_node",
        "node_accelerator_limit",
    ),  # fmt: skip
}


def _problem(name: str, value: Any) -> str | None:
    problem = check_value(SETTINGS[name], value)
    if problem or not isinstance(value, str) or not value:
        return problem
    if name == "unlabeled_file" and not value.lower().endswith(tuple(FILE_BUILDERS)):
        return f"must name a {'/'.join(sorted(FILE_BUILDERS))} file, got {value!r}"
    if name == "node_accelerator_limit" and not value.isdigit():
        return f'must be a count of GPUs like "1" (or empty), got {value!r}'
    if name == "teacher_recipe_args":
        from sparse_transfer.errors import RecipeError
        from sparse_transfer.recipe import parse_recipe_args

        try:
            parse_recipe_args(value)
        except RecipeError as exc:
            return f"is not a recipe-args JSON object ({exc})"
    return None


def check_settings(
    raw: Any, keys: Collection[str] | None = None, *, name: str = "advanced"
) -> dict[str, Any]:
    """The ``advanced`` object checked: every key a setting of this pipeline, every value valid.

    Args:
        raw: the JSON object the run was given.
        keys: the settings this pipeline reads (None: every setting).
        name: the parameter's name, for messages.

    Returns:
        key -> value, integral floats made ints (KFP hands integers over as JSON numbers).

    Raises:
        PipelineError: one line naming the first unknown key or bad value.
    """
    if not isinstance(raw, Mapping):
        raise PipelineError(f"parameter {name} must be a JSON object, got {type(raw).__name__}")
    known = tuple(SETTINGS) if keys is None else tuple(keys)
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in known:
            raise PipelineError(f"{name}: unknown key {key!r}; known: {', '.join(known)}")
        problem = _problem(key, value)
        if problem:
            raise PipelineError(f"{name}.{key} {problem}")
        out[key] = as_int(value) if SETTINGS[key].type is int else value
    return out


def settings_keys(pipeline: str) -> tuple[str, ...] | None:
    """The settings `pipeline` reads (None for a pipeline without an ``advanced`` object)."""
    return PIPELINE_SETTINGS.get(pipeline)


def run_settings(raw: Mapping[str, Any] | None, **own: Any) -> RunSettings:
    """A step's settings: its own typed parameters (`own`, by setting name), then the keys the
    run's ``advanced`` object gives, which win; the rest keep `RunSettings`' defaults."""
    return RunSettings(**{**own, **check_settings(raw or {})})


def settings_help(pipeline: str) -> str:
    """One line per setting of `pipeline`, for the run form's description of ``advanced``."""
    keys = PIPELINE_SETTINGS[pipeline]
    each = " ".join(f"{k} (default {json.dumps(SETTINGS[k].default)}): {SETTINGS[k].help}"
                    for k in keys)  # fmt: skip
    return (
        'JSON object of the rarely changed step settings, e.g. {"publish_force": true}; '
        f"checked at the first step (an unknown key or a bad value fails the run with one "
        f"line); empty: the defaults. Keys: {each}"
    )


def step_scale_out(
    advanced: Mapping[str, Any] | None,
    *,
    num_nodes: int,
    nproc_per_node: int,
    accelerator_type: str,
    accelerator_limit: str,
    node_accelerator_limit: str,
    work_uri: str,
    image: str = "",
    s3_secret: str = "",
    settings_config_map: str = "",
):
    """A training step's `ScaleOut` from its flat parameters and the run form's `advanced`
    object (whose scale-out keys win): nproc_per_node > 1 runs torchrun in the pod,
    num_nodes > 1 a Kubeflow Trainer TrainJob whose nodes get node_accelerator_limit GPUs
    each (empty: accelerator_limit). One place for every training component."""
    from sparse_transfer.scaleout.plan import ScaleOut

    own = run_settings(advanced, num_nodes=num_nodes, nproc_per_node=nproc_per_node,
                       node_accelerator_limit=node_accelerator_limit)  # fmt: skip
    node_gpus = int(own.node_accelerator_limit or accelerator_limit or 0)
    return ScaleOut(
        own.num_nodes, own.nproc_per_node, accelerator_type, node_gpus, work_uri=work_uri,
        image=image, s3_secret=s3_secret, settings_config_map=settings_config_map,
    )  # fmt: skip
