"""What every task provides to the shared run loop, and helpers they share.

A `PreparedTask` is built from the raw data and the parsed flags. It knows
the labels (and so the config overrides for the head), tokenises splits into
features, builds the collator, checks that a model or teacher fits, and turns
predicted numpy arrays into metrics. Torch (via the Trainer) and ONNX
evaluation both end in `compute_metrics`, so both report the same numbers.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from sparse_transfer.errors import DataError
from sparse_transfer.runtime.cores import affinity_cores
from sparse_transfer.tasks.lengths import resolve_lengths

logger = logging.getLogger(__name__)


def is_generic_labels(id2label: dict | None) -> bool:
    """True when a config carries HF's placeholder names (LABEL_0, LABEL_1, ...)."""
    if not id2label:
        return True
    return all(str(v) == f"LABEL_{int(k)}" for k, v in id2label.items())


class PreparedTask:
    """Base class; task modules subclass it.

    Attributes:
        spec: the task's `TaskSpec`.
        raw: the raw `DatasetDict`.
        sources: split -> file or hub name (for error messages).
        data_args / task_args: the parsed flags.
        max_seq_length: resolved maximum sequence length.
        non_model_columns: feature columns kept for metrics, dropped before the model.
        truncated: split -> number of examples truncated by max_seq_length.
        sample: `raw` holds only the first rows of each file (a configure-time check):
            checks that need every row (labels seen in training, more than one class)
            are left to the run itself, where a head of sorted data would mislead them.
    """

    non_model_columns: tuple[str, ...] = ()

    def __init__(self, spec, raw, sources, data_args, task_args, *, sample=False) -> None:
        self.spec = spec
        self.sample = sample
        self.raw = raw
        self.sources = sources
        self.data_args = data_args
        self.task_args = task_args
        self.max_seq_length, self.doc_stride = resolve_lengths(
            spec, data_args.max_seq_length, getattr(task_args, "doc_stride", None)
        )
        self.truncated: dict[str, int] = {}
        self.features: dict[str, Any] = {}
        self.active_split = "validation"

    def fit_lengths(self, positions: int | None) -> None:
        """Caps the lengths at the model's positions (warned), before anything is tokenised."""
        self.max_seq_length, self.doc_stride = resolve_lengths(
            self.spec,
            self.data_args.max_seq_length,
            getattr(self.task_args, "doc_stride", None),
            positions,
        )

    # -- labels and models -------------------------------------------------
    def config_overrides(self) -> dict[str, Any]:
        """Keyword overrides for the model config (num_labels, id2label, ...)."""
        return {}

    def adopt_model_config(self, config, source: str = "model") -> None:
        """Reconciles labels with a checkpoint that already has a head (hook)."""

    def class_weights(self) -> list[float] | None:
        """Per-class loss weights (``--class_weights``); None: the model's own loss."""
        return None

    def check_model(self, model, source: str, role: str = "model") -> None:
        """Raises if `model` (a student or teacher) does not fit the data."""

    # -- features ---------------------------------------------------------
    def preprocess(self, split: str, tokenizer, train: bool):
        """Tokenises one raw split into features (and keeps them for metrics)."""
        raise NotImplementedError

    def collator(self, tokenizer, pad_to_multiple_of: int | None = None, return_tensors="pt"):
        from transformers import DataCollatorWithPadding

        return DataCollatorWithPadding(
            tokenizer, pad_to_multiple_of=pad_to_multiple_of, return_tensors=return_tensors
        )

    def model_features(self, features):
        """The features the model sees (metric-only columns removed)."""
        drop = [c for c in self.non_model_columns if c in features.column_names]
        return features.remove_columns(drop) if drop else features

    # -- metrics ---------------------------------------------------------
    def reduce_batch(self, outputs: dict[str, np.ndarray], labels: Any) -> dict[str, np.ndarray]:
        """Per-batch reduction of outputs before they are gathered (default: none)."""
        return outputs

    def compute_metrics(self, outputs: dict[str, np.ndarray], label_ids: Any, split: str) -> dict:
        """Metrics from gathered numpy outputs (padded with -100 across batches)."""
        raise NotImplementedError

    def primary_metric(self) -> str:
        return "accuracy"

    # -- shared helpers ------------------------------------------------
    def map_with_progress(self, dataset, fn, desc: str, remove_columns=None, batched=True):
        return dataset.map(
            fn,
            batched=batched,
            num_proc=worker_count(self.data_args.preprocessing_num_workers, len(dataset)),
            remove_columns=remove_columns,
            load_from_cache_file=not self.data_args.overwrite_cache,
            desc=desc,
        )

    def count_truncated(self, split: str, features, column: str = "_truncated"):
        """Sums a per-row truncation flag, logs it, and drops the column."""
        if column not in features.column_names:
            return features
        count = int(sum(features[column]))
        self.truncated[split] = count
        if count:
            logger.warning(
                "%s: %d of %d texts are longer than --max_seq_length %d tokens and were truncated",
                self.sources.get(split, split),
                count,
                len(features),
                self.max_seq_length,
            )
        return features.remove_columns(column)


ROWS_PER_WORKER = 1000


def worker_count(requested: int | None, rows: int) -> int | None:
    """Caps --preprocessing_num_workers at the CPU count and at one worker per
    ROWS_PER_WORKER rows: extra processes only add start-up time."""
    if not requested or requested <= 1:
        return None
    cpus = affinity_cores()
    workers = max(1, min(requested, cpus, -(-rows // ROWS_PER_WORKER)))
    if workers < requested:
        logger.info(
            "using %d of %d requested preprocessing workers (%d CPUs, %d rows)",
            workers,
            requested,
            cpus,
            rows,
        )
    return workers if workers > 1 else None


class UnknownLabelsError(DataError):
    """Labels outside the known set; the parts are kept for one-line configure errors."""

    def __init__(self, source: str, column: str, unseen: list, known: list) -> None:
        self.source, self.column, self.unseen, self.known = source, column, unseen, known
        super().__init__(
            f"{source}: column {column!r} has label(s) {self.shown()} that do not occur in the "
            f"training data (known labels: {', '.join(map(repr, known[:20]))}"
            f"{' ...' if len(known) > 20 else ''}). Fix the file or add examples to training."
        )

    def shown(self) -> str:
        """The first ten unknown labels, for a message."""
        return ", ".join(map(repr, self.unseen[:10])) + (" ..." if len(self.unseen) > 10 else "")


def check_labels_subset(values, known: list, source: str, column: str) -> None:
    """Raises an `UnknownLabelsError` naming file and column for labels absent from training."""
    unseen = sorted({v for v in values if v not in set(known)}, key=str)
    if unseen:
        raise UnknownLabelsError(source, column, unseen, known)


def check_teacher_labels(student_cfg, teacher_cfg, source: str) -> None:
    """A teacher whose label order differs from the student's would distil garbage."""
    s_n, t_n = student_cfg.num_labels, teacher_cfg.num_labels
    if s_n != t_n:
        raise DataError(
            f"teacher {source} has {t_n} labels but the student has {s_n}; "
            "distillation needs the same label set in the same order"
        )
    s_map = {int(k): str(v) for k, v in student_cfg.id2label.items()}
    t_map = {int(k): str(v) for k, v in teacher_cfg.id2label.items()}
    if is_generic_labels(t_map) or is_generic_labels(s_map):
        logger.warning(
            "teacher %s or student has no label names; cannot verify the label order matches",
            source,
        )
        return
    if s_map != t_map:
        s_list = [s_map[i] for i in sorted(s_map)]
        t_list = [t_map[i] for i in sorted(t_map)]
        raise DataError(
            f"teacher {source} orders its labels {t_list} but the student uses {s_list}; "
            "distilling would match the wrong classes. Train the teacher on the same label "
            "mapping (config.json id2label) as the student."
        )


def pad_concat(arrays: list[np.ndarray], pad_value: float = -100) -> np.ndarray:
    """Concatenates batch arrays along axis 0, padding axis 1 like the Trainer does."""
    if not arrays:
        return np.zeros((0,))
    if arrays[0].ndim < 2 or all(a.shape[1:] == arrays[0].shape[1:] for a in arrays):
        return np.concatenate(arrays, axis=0)
    width = max(a.shape[1] for a in arrays)
    out = []
    for a in arrays:
        pad = [(0, 0)] * a.ndim
        pad[1] = (0, width - a.shape[1])
        out.append(np.pad(a, pad, constant_values=pad_value))
    return np.concatenate(out, axis=0)
