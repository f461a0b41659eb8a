"""The configure step's look at the data: the task's own checks on the first rows of each file.

A run whose data does not fit its task (multi-label files with the default
``task_name`` sst2, a misspelled label column) used to fail in the teacher
step, after the data was copied and models fetched. Here the first rows of
`train_file` and `validation_file` (local or s3://, read as the data step
reads them) go through the very checks the task applies when it loads the
data (`TaskSpec.prepare`, in sample mode), so the run fails in its first step
with one line naming the flag. Hub datasets, GLUE without files and dataset
snapshots are not looked at here (no network at configure time; a snapshot is
chosen when the data step runs); they are checked when loaded.
"""

from __future__ import annotations

import re

from sparse_transfer.errors import DataError, PipelineError, SparseTransferError
from sparse_transfer.tasks.base import UnknownLabelsError
from sparse_transfer.tasks.data import (
    HEAD_ROWS,
    MissingColumnsError,
    data_files,
    load_head,
    split_limits,
)
from sparse_transfer.tasks.flags import FLAGS

# The data flags the check reads (the configure step's parameters of that name).
DATA_CHECK_FLAGS = (
    "task_name", "dataset_name", "train_file", "validation_file", "input_column_names",
    "label_column_name", "dataset_snapshot_prefix",
)  # fmt: skip
# file flag -> the split it fills (as `tasks.data.load_raw_datasets` names them)
FILE_SPLITS = {"train_file": "train", "validation_file": "validation"}


def check_data_head(
    task: str,
    *,
    task_name: str = "",
    dataset_name: str = "",
    train_file: str = "",
    validation_file: str = "",
    input_column_names: str = "",
    label_column_name: str = "",
    dataset_snapshot_prefix: str = "",
    max_train_samples: int = 0,
    max_eval_samples: int = 0,
    rows: int = HEAD_ROWS,
) -> bool:
    """Runs the task's data checks on the first `rows` rows of each data file.

    Args:
        task: the task.
        task_name ... label_column_name: the data flags, as the pipeline has them ("" = unset).
        dataset_snapshot_prefix: set: the files are chosen at run time, nothing is checked.
        max_train_samples / max_eval_samples: the rows training keeps (0 = all): a head
            never holds more, so a row the run never reads is never refused.
        rows: rows read from the start of each file.

    Returns:
        True when files were checked; False when there were none to check here.

    Raises:
        PipelineError: one line naming the flag, its value and the fix.
    """
    values = {
        "task_name": task_name, "dataset_name": dataset_name, "train_file": train_file,
        "validation_file": validation_file, "input_column_names": input_column_names,
        "label_column_name": label_column_name, "max_train_samples": max_train_samples or None,
        "max_eval_samples": max_eval_samples or None,
    }  # fmt: skip
    spec, data_args, task_args = _arguments(task, values)
    files = data_files(data_args)
    if dataset_snapshot_prefix or not files:
        return False
    flags = {split: flag for flag, split in FILE_SPLITS.items()}
    raw = _heads(files, flags, split_limits(data_args), rows)
    sources = {split: f"{flags[split]} {uri}" for split, uri in files.items()}
    try:
        spec.prepare(raw, sources, data_args, task_args, sample=True)
    except DataError as exc:
        raise PipelineError(_one_line(spec, data_args, exc)) from None
    return True


def _arguments(task: str, values: dict):
    """The spec and the argument objects a run builds from these flags (`steps.task_arguments`)."""
    from sparse_transfer.pipeline.steps import task_arguments
    from sparse_transfer.tasks.args import DataArguments
    from sparse_transfer.tasks.registry import get_task

    spec = get_task(task)
    try:
        args = task_arguments(task, values)
    except DataError as exc:
        raise PipelineError(_pipeline_spelling(str(exc))) from None
    return spec, args[DataArguments], args.get(spec.args_class)


def _heads(files: dict[str, str], flags: dict[str, str], limits: dict, rows: int):
    """split -> the first rows of its file; an unreadable file is one line naming its flag."""
    import datasets

    heads = {}
    for split, uri in files.items():
        flag = flags[split]
        try:
            heads[split] = load_head(uri, min(rows, limits[split] or rows))
        except DataError as exc:
            raise PipelineError(str(exc).replace(f"data file {uri}", f"{flag} {uri}")) from None
        except SparseTransferError as exc:  # storage: missing object, bucket, credentials
            raise PipelineError(f"{flag} {uri} cannot be read: {exc}") from None
    return datasets.DatasetDict(heads)


def _one_line(spec, data_args, exc: DataError) -> str:
    """The task's complaint, led by what the flags asked for when they fixed columns or labels."""
    expects, fix = spec.describe_data(data_args) if spec.describe_data else ("", "")
    if expects and isinstance(exc, MissingColumnsError):
        return f"{expects}; {exc.source} has columns {', '.join(exc.available)} ({fix})"
    if expects and isinstance(exc, UnknownLabelsError):
        return (
            f"{expects}; {exc.source} has label(s) {exc.shown()} in column {exc.column!r} ({fix})"
        )
    return _pipeline_spelling(str(exc))


def _pipeline_spelling(message: str) -> str:
    """``--flag`` becomes ``flag`` for the flags that are pipeline parameters too (one name)."""
    return re.sub(r"--(\w+)", lambda m: m[1] if m[1] in FLAGS else m[0], message)
