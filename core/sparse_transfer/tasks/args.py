"""Argument dataclasses shared by every task, run_glue style.

One dataclass per concern; each field's ``metadata["help"]`` is the CLI help.
Task-only flags (``--doc_stride``, ``--label_all_tokens``, ...) live in the
task modules; `HfArgumentParser` parses these together with
`transformers.TrainingArguments`, so every Trainer flag works unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from sparse_transfer.tasks.flags import FLAGS, check_value


def _schema_field(name: str):
    """A dataclass field for a schema flag: not given (None) by default, the schema's help."""
    return field(default=None, metadata={"help": FLAGS[name].help})


#: References meaning "no model here" (a teacher or a fetch turned off), case and spaces
#: ignored: the one set the CLI, the training loop and the pipeline steps share.
NO_MODEL = frozenset({"", "disable", "disabled", "none"})


def is_no_model(ref: str | None) -> bool:
    """True for None and every spelling in `NO_MODEL`."""
    return ref is None or ref.strip().lower() in NO_MODEL


@dataclass
class ModelArguments:
    """Which model, teacher and recipe to start from."""

    model_name_or_path: str = field(
        metadata={
            "help": "Starting checkpoint: local dir, zoo stub, s3:// URI or Hugging Face hub id."
        }
    )
    recipe: str | None = field(
        default=None,
        metadata={"help": "Sparsification recipe: YAML/.md path, zoo stub or s3:// URI."},
    )
    recipe_args: str | None = field(
        default=None,
        metadata={"help": "JSON object overriding recipe variables, e.g. '{\"num_epochs\": 2}'."},
    )
    distill_teacher: str | None = field(
        default=None,
        metadata={
            "help": "Teacher for distillation: local dir, zoo stub, s3:// URI, hub id, or 'disable'."
        },
    )
    config_name: str | None = field(
        default=None, metadata={"help": "Config name or path if not the model's own."}
    )
    tokenizer_name: str | None = field(
        default=None, metadata={"help": "Tokenizer name or path if not the model's own."}
    )
    cache_dir: str | None = field(
        default=None, metadata={"help": "Where to cache models downloaded from the hub."}
    )
    model_revision: str = field(
        default="main", metadata={"help": "Hub revision (branch, tag or commit) of the model."}
    )


@dataclass
class DataArguments:
    """Where the data comes from and how it is cut into model inputs.

    Flags shared with the pipelines take their help and limits from the one
    schema, `sparse_transfer.tasks.flags`; None means "not given".
    """

    task_name: str | None = _schema_field("task_name")
    dataset_name: str | None = _schema_field("dataset_name")
    dataset_config_name: str | None = _schema_field("dataset_config_name")
    train_file: str | None = _schema_field("train_file")
    validation_file: str | None = _schema_field("validation_file")
    validation_mismatched_file: str | None = field(
        default=None,
        metadata={
            "help": "MNLI only: the mismatched validation set (reported with an _mm suffix)."
        },
    )
    test_file: str | None = field(
        default=None, metadata={"help": "Test data for --do_predict (same formats)."}
    )
    validation_ratio: float | None = _schema_field("validation_ratio")
    input_column_names: str | None = _schema_field("input_column_names")
    label_column_name: str | None = _schema_field("label_column_name")
    max_seq_length: int | None = _schema_field("max_seq_length")
    pad_to_max_length: bool = field(
        default=False,
        metadata={"help": "Pad every input to max_seq_length instead of per batch."},
    )
    preprocessing_num_workers: int | None = _schema_field("preprocessing_num_workers")
    overwrite_cache: bool = field(
        default=False, metadata={"help": "Re-tokenise instead of using the datasets cache."}
    )
    max_train_samples: int | None = _schema_field("max_train_samples")
    max_eval_samples: int | None = _schema_field("max_eval_samples")
    max_predict_samples: int | None = field(
        default=None, metadata={"help": "Keep only this many test rows (debugging)."}
    )

    def __post_init__(self) -> None:
        from sparse_transfer.errors import DataError

        if self.validation_ratio is not None and not 0.0 < self.validation_ratio < 1.0:
            raise DataError(
                f"--validation_ratio must be between 0 and 1 (exclusive), got {self.validation_ratio}"
            )
        for spec in SCHEMA_FIELDS:
            value = getattr(self, spec.name)
            problem = None if value is None else check_value(spec, value)
            if problem:
                raise DataError(f"--{spec.name} {problem}")
        if self.task_name is not None:
            self.task_name = self.task_name.lower()


# The DataArguments fields the schema defines (their limits are checked in __post_init__).
SCHEMA_FIELDS = tuple(FLAGS[f.name] for f in fields(DataArguments) if f.name in FLAGS)
