"""The teacher-labels step: the Dataset the sparse transfer trains on.

With ``advanced.unlabeled_file`` the run's own teacher (trained or fetched in the run) labels
that file's rows that are not training or validation texts, and the training file becomes
the training rows plus those (`sparse_transfer.tasks.teacher_labels`, the CLI's
``data teacher-label``). Without it the Dataset passes through unchanged. One
parameter-driven step rather than ``dsl.If``: kfp's local runner cannot pick an artifact out
of conditional branches (as the teacher step).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from sparse_transfer.errors import PipelineError
from sparse_transfer.pipeline.steps import DATA_SPEC, data_values, has_model
from sparse_transfer.tasks.args import DataArguments
from sparse_transfer.tasks.text_classification import GLUE_LABELS, fixed_input_columns

LABELLED_TRAIN = "train.teacher_labelled.jsonl"


def teacher_label_step(
    dataset_dir: str | Path,
    teacher_dir: str | Path,
    dest: str | Path,
    *,
    unlabeled_file: str = "",
    max_seq_length: int = 0,
) -> dict[str, Any]:
    """Fills the `dest` Dataset: `dataset_dir`'s files, the training file teacher-labelled.

    Args:
        dataset_dir: the fetched Dataset artifact (``data.json`` and its files).
        teacher_dir: the teacher Model artifact (a placeholder when distillation is off).
        dest: the new Dataset artifact folder.
        unlabeled_file: local, file:// or s3:// data file ("" = pass the Dataset through).
        max_seq_length: the run's tokenised length for the teacher (0 = 128).

    Returns:
        The data spec written; with labels, its ``teacher_labels`` holds the counts.
    """
    source, dest = Path(dataset_dir), Path(dest)
    spec = json.loads((source / DATA_SPEC).read_text())
    if unlabeled_file:
        _check_inputs(spec, teacher_dir)
    shutil.copytree(source, dest, dirs_exist_ok=True)
    if not unlabeled_file:
        return spec
    from sparse_transfer.tasks.teacher_labels import label_with_teacher

    values = data_values(source)
    columns = DataArguments(task_name=values.get("task_name"),
                            input_column_names=values.get("input_column_names"))  # fmt: skip
    report = label_with_teacher(
        str(teacher_dir), unlabeled_file, dest / LABELLED_TRAIN,
        train_file=values["train_file"],
        validation_files=tuple(v for v in [values.get("validation_file")] if v),
        input_column_names=fixed_input_columns(columns),  # the columns training will read
        label_column_name=values.get("label_column_name") or "label",
        label_names=GLUE_LABELS.get(values.get("task_name") or ""),
        max_seq_length=max_seq_length or 128,
    )  # fmt: skip
    report.pop("output")
    (dest / spec["train_file"]).unlink()
    spec.update(train_file=LABELLED_TRAIN, unlabeled_file_source=unlabeled_file,
                teacher_labels=report)  # fmt: skip
    (dest / DATA_SPEC).write_text(json.dumps(spec, indent=2, sort_keys=True))
    return spec


def _check_inputs(spec: dict[str, Any], teacher_dir: str | Path) -> None:
    """What labelling needs: a teacher in the run and the run's own training file."""
    if not has_model(teacher_dir):
        raise PipelineError(
            "advanced.unlabeled_file needs the run's teacher, but distill_teacher is disable; "
            "set a teacher or remove unlabeled_file"
        )
    if not spec.get("train_file"):
        raise PipelineError(
            "advanced.unlabeled_file needs a train_file (or a dataset snapshot) to add the "
            "teacher-labelled rows to"
        )
