"""Training flags of a pipeline run: checked once, up front, then handed to every training step.

The pipeline exposes the reference command lines' flags as parameters with
the reference's defaults; `training_options` validates them (before any model
is fetched), drops the ones that mean "unset", drops task-only flags for other
tasks and renames to the flag names the installed transformers reads.
"""

from __future__ import annotations

from typing import Any

from sparse_transfer.errors import PipelineError
from sparse_transfer.tasks.flags import TRAINING_FLAGS, check_value, is_unset

# name -> type; the pipeline parameters that become train/evaluate flags (from the one schema).
TRAINING_OPTIONS: dict[str, type] = {f.name: f.type for f in TRAINING_FLAGS}
_SCHEMA = {f.name: f for f in TRAINING_FLAGS}
# What an evaluation needs of the training flags.
EVAL_KEYS = ("max_seq_length", "doc_stride", "per_device_eval_batch_size", "max_eval_samples")


def training_options(task: str, **values: Any) -> dict[str, Any]:
    """Validates and normalises training flags.

    Args:
        task: the task (decides which task-only flags apply).
        **values: flag -> value; names must be in `TRAINING_OPTIONS`.

    Returns:
        flag -> value for `sparse_transfer.pipeline.steps.train_step`.

    Raises:
        PipelineError: listing every unknown, mistyped or out-of-range flag.
    """
    errors: list[str] = []
    out: dict[str, Any] = {}
    for name, value in values.items():
        spec = _SCHEMA.get(name)
        if spec is None:
            errors.append(f"unknown training option '{name}'; known: {', '.join(TRAINING_OPTIONS)}")
            continue
        if spec.type is int and isinstance(value, float) and value.is_integer():
            value = int(value)  # KFP hands integers over as floats in some places
        problem = check_value(spec, value)
        if problem:
            errors.append(f"training option '{name}' {problem}")
            continue
        if spec.tasks is not None and task not in spec.tasks:
            continue
        if is_unset(spec, value):
            continue
        out[spec.hf_name or name] = value
    if out.get("eval_strategy") == "steps" and "eval_steps" not in out:
        errors.append("evaluation_strategy 'steps' needs eval_steps > 0")
    if errors:
        raise PipelineError("bad training options:\n" + "\n".join(errors))
    return out


def eval_options(training_args: dict[str, Any]) -> dict[str, Any]:
    """The subset of validated training flags an evaluation uses."""
    return {k: v for k, v in training_args.items() if k in EVAL_KEYS}
