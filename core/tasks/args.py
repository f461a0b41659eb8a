"""Argument dataclasses shared by every task, run_glue style.

One dataclass per concern; each field's ``metadata["help"]`` is the CLI help.
Task-only flags (``--doc_stride``, ``--label_all_tokens``, ...) live in the
task modules; `HfArgumentParser` parses these together with
`transformers.TrainingArguments`, so every Trainer flag works unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field


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
    """Where the data comes from and how it is cut into model inputs."""

    task_name: str | None = field(
        default=None,
        metadata={
            "help": "A GLUE task (cola, sst2, mrpc, qqp, stsb, mnli, qnli, rte, wnli). Alone it "
            "loads GLUE from the hub; with --train_file/--validation_file it selects that task's "
            "column names and label names for the local files."
        },
    )
    dataset_name: str | None = field(
        default=None, metadata={"help": "Hugging Face hub dataset name (e.g. squad, conll2003)."}
    )
    dataset_config_name: str | None = field(
        default=None, metadata={"help": "Hub dataset configuration name."}
    )
    train_file: str | None = field(
        default=None,
        metadata={"help": "Training data: .csv, .json/.jsonl or .parquet; local or s3://."},
    )
    validation_file: str | None = field(
        default=None,
        metadata={"help": "Validation data (same formats). For MNLI: the matched set."},
    )
    validation_mismatched_file: str | None = field(
        default=None,
        metadata={
            "help": "MNLI only: the mismatched validation set (reported with an _mm suffix)."
        },
    )
    test_file: str | None = field(
        default=None, metadata={"help": "Test data for --do_predict (same formats)."}
    )
    validation_ratio: float | None = field(
        default=None,
        metadata={
            "help": "Split this fraction off the training data as validation (seeded by --seed) "
            "when the dataset has no validation split."
        },
    )
    input_column_names: str | None = field(
        default=None,
        metadata={"help": "Comma-separated input column(s): one sentence or a pair."},
    )
    label_column_name: str | None = field(
        default=None, metadata={"help": "The label column (default: the task's usual name)."}
    )
    max_seq_length: int | None = field(
        default=None,
        metadata={
            "help": "Maximum tokens per input after tokenisation; longer texts are truncated "
            "(counted and reported). Default: 128, or 384 for question answering."
        },
    )
    pad_to_max_length: bool = field(
        default=False,
        metadata={"help": "Pad every input to max_seq_length instead of per batch."},
    )
    preprocessing_num_workers: int | None = field(
        default=None, metadata={"help": "Processes for tokenisation (datasets.map num_proc)."}
    )
    overwrite_cache: bool = field(
        default=False, metadata={"help": "Re-tokenise instead of using the datasets cache."}
    )
    max_train_samples: int | None = field(
        default=None, metadata={"help": "Keep only this many training rows (debugging)."}
    )
    max_eval_samples: int | None = field(
        default=None, metadata={"help": "Keep only this many validation rows (debugging)."}
    )
    max_predict_samples: int | None = field(
        default=None, metadata={"help": "Keep only this many test rows (debugging)."}
    )

    def __post_init__(self) -> None:
        from sparse_transfer.errors import DataError

        if self.validation_ratio is not None and not 0.0 < self.validation_ratio < 1.0:
            raise DataError(
                f"--validation_ratio must be between 0 and 1 (exclusive), got {self.validation_ratio}"
            )
        if self.max_seq_length is not None and self.max_seq_length < 8:
            raise DataError(f"--max_seq_length must be at least 8, got {self.max_seq_length}")
        if self.task_name is not None:
            self.task_name = self.task_name.lower()
