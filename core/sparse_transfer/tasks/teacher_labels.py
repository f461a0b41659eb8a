"""Teacher-labelled training rows: unlabelled in-domain text, labelled by the dense teacher.

A 90%-sparse student distilled on a few thousand labelled rows matches the teacher's
outputs on those rows and little else (the real-results transfer ends at a distillation
loss of 0.09 on its 4,000 rows). The teacher can label any in-domain text, so more of it
gives the student more of the teacher to imitate: TinyBERT's task-specific distillation on
augmented data, here without augmentation, just the user's own unlabelled text.

`label_with_teacher` writes one JSON-lines file: the training rows as they are, then every
unlabelled row that is not already a training or validation text, with the teacher's
argmax as its label (in the training file's label form). Under the reference recipes'
``hardness: 1.0`` those labels are never read (the loss is the KL to the teacher's
outputs); with a lower hardness they are pseudo-labels.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sparse_transfer.errors import DataError
from sparse_transfer.tasks.names import TEXT_CLASSIFICATION


def _text_key(row: dict[str, Any], columns: list[str]) -> tuple[str, ...]:
    return tuple(" ".join(str(row.get(c) or "").split()).lower() for c in columns)


def _rows(uri: str, split: str) -> list[dict[str, Any]]:
    from sparse_transfer.tasks.data import load_file

    return list(load_file(uri, split))


def _input_columns(rows: list[dict[str, Any]], given: list[str] | None, source: str) -> list[str]:
    if given:
        columns = given
    else:
        names = list(rows[0]) if rows else []
        columns = next(([c] for c in ("sentence", "text") if c in names), None) or []
        if not columns:
            raise DataError(
                f"{source}: no 'sentence' or 'text' column (columns: {', '.join(names)}); "
                "pass --input_column_names"
            )
    for i, row in enumerate(rows):
        for c in columns:
            if not isinstance(row.get(c), str) or not row[c].strip():
                raise DataError(f"{source}: row {i + 1} has no text in column {c!r}")
    return columns


def _label_form(
    train_rows: list[dict[str, Any]], label_column: str, source: str, names: list[str] | None
):
    """How the training file writes labels: a function from a label name to that form.

    Integer labels are class ids: a teacher's placeholder name (LABEL_i) is its id, and a
    named label is its position in `names` (a GLUE task's labels, which its integers mean)."""
    if not train_rows:
        return lambda name: int(name) if name.lstrip("-").isdigit() else name
    if label_column not in train_rows[0]:
        raise DataError(f"{source}: no label column {label_column!r}; pass --label_column_name")
    if not isinstance(train_rows[0][label_column], bool) and isinstance(
        train_rows[0][label_column], int
    ):
        position = {n.lower(): i for i, n in enumerate(names or [])}

        def as_int(name: str) -> int:
            if name.lower() in position:
                return position[name.lower()]
            if not name.lstrip("-").isdigit():
                raise DataError(
                    f"{source}: labels are integers but the teacher's label {name!r} is not; "
                    "train the teacher on this file's labels"
                )
            return int(name)

        return as_int
    return str


def _teacher(teacher_ref: str, zoo: str | None):
    from sparse_transfer.tasks.models import load_model, load_tokenizer
    from sparse_transfer.tasks.text_classification import MULTI_LABEL, REGRESSION
    from sparse_transfer.zoo import resolve

    path = resolve(teacher_ref, "teacher", root=zoo)
    model = load_model(path, TEXT_CLASSIFICATION).eval()
    problem = getattr(model.config, "problem_type", None)
    if problem in (REGRESSION, MULTI_LABEL) or model.config.num_labels < 2:
        raise DataError(
            f"teacher {teacher_ref} is a {problem or 'one-output'} model; teacher labels need "
            "a single-label classifier"
        )
    return model, load_tokenizer(path)


def _predict(model, tokenizer, rows, columns, max_seq_length: int, batch_size: int) -> list[str]:
    import torch

    from sparse_transfer.tasks.base import is_generic_labels

    id2label = model.config.id2label
    generic = is_generic_labels(id2label)  # LABEL_0, LABEL_1: the class ids are the labels
    names = {int(k): str(k) if generic else str(v) for k, v in id2label.items()}
    labels: list[str] = []
    with torch.inference_mode():
        for start in range(0, len(rows), batch_size):
            chunk = rows[start : start + batch_size]
            texts = [[r[c] for r in chunk] for c in columns]
            enc = tokenizer(*texts, truncation=True, max_length=max_seq_length,
                            padding=True, return_tensors="pt")  # fmt: skip
            ids = model(**enc).logits.float().argmax(-1).tolist()
            labels += [names[i] for i in ids]
    return labels


def label_with_teacher(
    teacher: str,
    unlabeled_file: str,
    output: str | Path,
    *,
    train_file: str | None = None,
    validation_files: tuple[str, ...] = (),
    input_column_names: list[str] | None = None,
    label_column_name: str = "label",
    label_names: list[str] | None = None,
    max_seq_length: int = 128,
    batch_size: int = 64,
    zoo: str | None = None,
) -> dict[str, Any]:
    """Writes `output` (JSON lines): `train_file`'s rows, then the new teacher-labelled rows.

    Unlabelled rows whose text (case and spacing ignored) is a training or validation text,
    or repeats an earlier unlabelled row, are dropped: a validation text among the training
    rows would inflate every later score. `label_names`: what integer labels stand for (a
    GLUE task's names), so a teacher with named labels writes their ids. Returns the counts,
    written nowhere else.
    """
    for name, value in (("max_seq_length", max_seq_length), ("batch_size", batch_size)):
        if value < 1:
            raise DataError(f"--{name} must be >= 1, got {value}")
    output = Path(output)
    if output.suffix != ".jsonl":
        raise DataError(f"--output {output}: write a .jsonl file")
    if output.exists():
        raise DataError(f"--output {output} exists; choose a new file (nothing is replaced)")
    unlabeled = _rows(unlabeled_file, "unlabeled")
    columns = _input_columns(unlabeled, input_column_names, unlabeled_file)
    train_rows = _rows(train_file, "train") if train_file else []
    missing = [c for c in columns if train_rows and c not in train_rows[0]]
    if missing:
        raise DataError(
            f"{train_file}: no input column {missing[0]!r} (columns: {', '.join(train_rows[0])}); "
            f"both files need the same input columns ({', '.join(columns)})"
        )
    form = _label_form(train_rows, label_column_name, train_file or "", label_names)
    seen = {_text_key(r, columns) for r in train_rows}
    in_train = len(seen)
    for uri in validation_files:
        seen |= {_text_key(r, columns) for r in _rows(uri, "validation")}
    fresh, dropped = [], 0
    for row in unlabeled:
        key = _text_key(row, columns)
        if key in seen:
            dropped += 1
            continue
        seen.add(key)
        fresh.append({c: row[c] for c in columns})
    model, tokenizer = _teacher(teacher, zoo)
    names = _predict(model, tokenizer, fresh, columns, max_seq_length, batch_size)
    labelled = [
        {**row, label_column_name: form(name)} for row, name in zip(fresh, names, strict=True)
    ]
    _write_jsonl(output, train_rows + labelled)
    counts: dict[str, int] = {}
    for name in names:
        counts[name] = counts.get(name, 0) + 1
    return {"output": str(output), "train_rows": len(train_rows), "distinct_train_texts": in_train,
            "unlabeled_rows": len(unlabeled), "dropped_known_or_repeated": dropped,
            "teacher_labelled_rows": len(labelled), "teacher_labels": counts}  # fmt: skip


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    from sparse_transfer import storage

    text = "".join(json.dumps(r, ensure_ascii=False, allow_nan=False) + "\n" for r in rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    storage.write_bytes_atomic(path, text.encode())
