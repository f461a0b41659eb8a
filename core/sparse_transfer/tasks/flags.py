"""The one schema of the data and training flags: names, types, defaults, help, limits.

Every place that spells these flags takes them from here:

- the CLI's dataclasses (`sparse_transfer.tasks.args.DataArguments`) take their
  help and limits (``--max_seq_length`` >= 8) from `flag`;
- `sparse_transfer.pipeline.options.training_options` checks pipeline values
  against `TRAINING_FLAGS` (types, limits, choices, "unset" values, task-only
  flags, the names the installed transformers reads);
- the pipelines' opening steps pass `DATA_FLAGS`/`TRAINING_FLAGS` by name.

The KFP SDK needs literal function signatures, so the pipeline functions and
the ``configure_training``/``fetch_data`` components repeat names, types and
defaults; ``tests/unit/test_flag_schema.py`` proves each copy matches this one.

Defaults are the reference command lines' (its SST-2 run). On the command line
a flag left out is None (the task's own default applies); a KFP parameter
cannot be None, so there the flag's `unset` value (0, -1 or "") means the same.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Flag:
    """One data/training flag.

    Attributes:
        name: the flag (``--name`` on the CLI, a parameter name in the pipelines).
        type: int, float, bool or str.
        default: the reference's value (the pipeline parameter's default).
        help: one line for ``--help`` and the pipeline docs.
        minimum: smallest allowed value (None: no limit); `unset` is always allowed.
        choices: the allowed values of a str flag (None: any).
        unset: the pipeline value meaning "not set" (None: every value is a setting).
        task_only: a field of some tasks' own dataclass (`TaskSpec.args_class`); other
            tasks drop it.
        hf_name: the name the installed transformers reads, when it differs.
    """

    name: str
    type: type
    default: Any
    help: str
    minimum: float | None = None
    choices: tuple[str, ...] | None = None
    unset: Any = None
    task_only: bool = False
    hf_name: str | None = None


STRATEGIES = ("no", "steps", "epoch")

DATA_FLAGS: tuple[Flag, ...] = (
    Flag("task_name", str, "sst2", "A GLUE task (cola, sst2, mrpc, qqp, stsb, mnli, qnli, rte, "
         "wnli). Alone it loads GLUE from the hub; with --train_file/--validation_file it selects "
         "that task's column names and label names for the local files.", unset=""),
    Flag("dataset_name", str, "", "Hugging Face hub dataset name (e.g. squad, conll2003).",
         unset=""),
    Flag("dataset_config_name", str, "", "Hub dataset configuration name.", unset=""),
    Flag("train_file", str, "", "Training data: .csv, .json/.jsonl or .parquet; local or s3://.",
         unset=""),
    Flag("validation_file", str, "", "Validation data (same formats). For MNLI: the matched set.",
         unset=""),
    Flag("dataset_snapshot_prefix", str, "", "Read train.*/validation.* from the newest snapshot "
         "folder under this prefix (scheduled retraining).", unset=""),
    Flag("input_column_names", str, "", "Comma-separated input column(s): one sentence or a pair.",
         unset=""),
    Flag("label_column_name", str, "", "The label column (default: the task's usual name).",
         unset=""),
    Flag("validation_ratio", float, 0.0, "Split this fraction off the training data as "
         "validation (seeded) when the dataset has no validation split.", unset=0.0),
)  # fmt: skip

TRAINING_FLAGS: tuple[Flag, ...] = (
    Flag("max_seq_length", int, 0, "Maximum tokens per input after tokenisation; longer texts "
         "are truncated (counted and reported). Unset (0): the task's default, 128 or 384 for "
         "question answering; capped at the model's maximum positions.", minimum=8, unset=0),
    Flag("doc_stride", int, 0, "Question answering: overlap between the windows of a long "
         "context. Unset (0): 128, or half of max_seq_length when that is shorter.", minimum=1,
         unset=0, task_only=True),
    Flag("preprocessing_num_workers", int, 6, "Processes for tokenisation (datasets.map "
         "num_proc).", minimum=0, unset=0),
    Flag("per_device_train_batch_size", int, 32, "Training batch size per device.", minimum=1),
    Flag("per_device_eval_batch_size", int, 32, "Evaluation batch size per device.", minimum=1),
    Flag("gradient_accumulation_steps", int, 1, "Batches per optimizer step.", minimum=1),
    Flag("fp16", bool, True, "Mixed precision on a GPU (ignored without one)."),
    Flag("seed", int, 42, "Random seed (data order, initialisation, validation split).",
         minimum=0),
    Flag("evaluation_strategy", str, "epoch", "When to evaluate during training.",
         choices=STRATEGIES, unset="", hf_name="eval_strategy"),
    Flag("eval_steps", int, 0, "Evaluate every N steps (evaluation_strategy steps).", minimum=1,
         unset=0),
    Flag("logging_steps", int, 500, "Log every N steps.", minimum=1),
    Flag("logging_first_step", bool, False, "Also log the first step."),
    Flag("save_strategy", str, "epoch", "When to save checkpoints.", choices=STRATEGIES,
         unset=""),
    Flag("save_steps", int, 500, "Save every N steps (save_strategy steps).", minimum=1),
    Flag("save_total_limit", int, 1, "Checkpoints kept.", minimum=1),
    Flag("max_steps", int, -1, "Stop after N optimizer steps (the recipe's epochs still shape "
         "the schedules).", minimum=1, unset=-1),
    Flag("max_train_samples", int, 0, "Keep only this many training rows (debugging).",
         minimum=1, unset=0),
    Flag("max_eval_samples", int, 0, "Keep only this many validation rows (debugging).",
         minimum=1, unset=0),
)  # fmt: skip

FLAGS: dict[str, Flag] = {f.name: f for f in DATA_FLAGS + TRAINING_FLAGS}

# The KFP copies whose default deliberately differs from the schema's (and why).
DEFAULT_OVERRIDES: dict[str, dict[str, Any]] = {
    "dense_teacher_pipeline": {"seed": 20811},  # the reference trained its teacher with 20811
    "fetch_data": {"task_name": ""},  # the component on its own assumes no GLUE task
}


def flag(name: str) -> Flag:
    """The schema entry of `name` (KeyError for a name that is not a data/training flag)."""
    return FLAGS[name]


def is_unset(spec: Flag, value: Any) -> bool:
    """True when `value` is the pipeline's spelling of "not set" for `spec` (or None)."""
    return value is None or (spec.unset is not None and value == spec.unset)


def as_int(value: Any) -> Any:
    """An integral float becomes an int (KFP hands integers over as JSON numbers: 32 -> 32.0);
    every other value is returned as is. The one place this coercion is made."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def applies_to(spec: Flag, task_spec) -> bool:
    """True when the task has flag `spec` (task-only flags: its own dataclass has the field)."""
    if not spec.task_only:
        return True
    from dataclasses import fields

    own = task_spec.args_class
    return own is not None and spec.name in {f.name for f in fields(own)}


def check_value(spec: Flag, value: Any) -> str | None:
    """What is wrong with `value` for `spec`, e.g. ``"must be at least 8, got 4"``, or None.

    Callers put the flag's own spelling in front (``--max_seq_length`` / ``training option ...``).
    """
    if spec.type is int:
        value = as_int(value)
    if not isinstance(value, spec.type) or (spec.type is not bool and isinstance(value, bool)):
        if not (spec.type is float and isinstance(value, int) and not isinstance(value, bool)):
            return f"must be {spec.type.__name__}, got {value!r}"
    if isinstance(value, float) and not math.isfinite(value):
        return f"must be a finite number, got {value}"
    if is_unset(spec, value):
        return None
    if spec.choices is not None and value not in spec.choices:
        return f"must be one of {spec.choices}, got {value!r}"
    if spec.minimum is not None and value < spec.minimum:
        return f"must be at least {spec.minimum:g}, got {value}"
    return None
