"""Training flags of a pipeline run: checked once, up front, then handed to every training step.

The pipeline exposes the reference command lines' flags as parameters with
the reference's defaults; `training_options` validates them (before any model
is fetched), drops the ones that mean "unset", drops task-only flags for other
tasks and renames to the flag names the installed transformers reads.
"""

from __future__ import annotations

from typing import Any

from sparse_transfer.errors import PipelineError

# name -> type; the pipeline parameters that become train/evaluate flags.
TRAINING_OPTIONS: dict[str, type] = {
    "max_seq_length": int,
    "doc_stride": int,
    "preprocessing_num_workers": int,
    "per_device_train_batch_size": int,
    "per_device_eval_batch_size": int,
    "gradient_accumulation_steps": int,
    "fp16": bool,
    "seed": int,
    "evaluation_strategy": str,
    "eval_steps": int,
    "logging_steps": int,
    "logging_first_step": bool,
    "save_strategy": str,
    "save_steps": int,
    "save_total_limit": int,
    "max_steps": int,
    "max_train_samples": int,
    "max_eval_samples": int,
}
# Flags only some tasks' argument parsers know.
TASK_ONLY: dict[str, tuple[str, ...]] = {"doc_stride": ("question-answering",)}
# Zero (or -1 for max_steps) means "not set": the library default applies.
UNSET_WHEN_ZERO = (
    "eval_steps",
    "max_train_samples",
    "max_eval_samples",
    "preprocessing_num_workers",
)
# transformers renamed evaluation_strategy (the reference's spelling) to eval_strategy.
RENAMES = {"evaluation_strategy": "eval_strategy"}
STRATEGIES = ("no", "steps", "epoch")
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
        kind = TRAINING_OPTIONS.get(name)
        if kind is None:
            errors.append(f"unknown training option '{name}'; known: {', '.join(TRAINING_OPTIONS)}")
            continue
        if kind is int and isinstance(value, float) and value.is_integer():
            value = int(value)  # KFP hands integers over as floats in some places
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            errors.append(f"training option '{name}' must be {kind.__name__}, got {value!r}")
            continue
        if name in TASK_ONLY and task not in TASK_ONLY[name]:
            continue
        if name in UNSET_WHEN_ZERO and value == 0 or name == "max_steps" and value < 0:
            continue
        if value == "":
            continue
        if name.endswith("_strategy") and value not in STRATEGIES:
            errors.append(f"{name} must be one of {STRATEGIES}, got {value!r}")
        if (
            name
            in (
                "max_seq_length",
                "per_device_train_batch_size",
                "per_device_eval_batch_size",
                "gradient_accumulation_steps",
            )
            and value < 1
        ):
            errors.append(f"{name} must be at least 1, got {value}")
        out[RENAMES.get(name, name)] = value
    if out.get("eval_strategy") == "steps" and "eval_steps" not in out:
        errors.append("evaluation_strategy 'steps' needs eval_steps > 0")
    if errors:
        raise PipelineError("bad training options:\n" + "\n".join(errors))
    return out


def eval_options(training_args: dict[str, Any]) -> dict[str, Any]:
    """The subset of validated training flags an evaluation uses."""
    return {k: v for k, v in training_args.items() if k in EVAL_KEYS}
