"""Text classification: single sentences and pairs; binary, multi-class,
regression (STS-B) and multi-label (GoEmotions-style label lists).

Labels. GLUE tasks use GLUE's own label names (also for local files given
with ``--task_name``: integer labels index those names, string labels must be
one of them). A custom dataset's labels are the sorted set of the training
labels, so train and validation map identically; a validation label never
seen in training is an error naming the file and column. A checkpoint whose
head already carries the same label names keeps its order. Label names go to
``config.json`` (``id2label``/``label2id``).

Multi-label metrics. A label is predicted when ``sigmoid(logit) >
--multi_label_threshold`` (0.5). We report ``micro_f1`` (F1 over all
label decisions pooled), ``macro_f1`` (the unweighted mean of the per-label
F1 scores, labels without support or predictions scoring 0) and ``avgF1``.
SparseML's multi-label evaluation (``multi_label_precision_recall_f1``) reports
per-label precision/recall/F1 and their macro average ``f1_macro_average``;
its GoEmotions "avgF1" is that macro average, so ``avgF1 == macro_f1`` here.
Per-label scores are reported as ``f1_<label>``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sparse_transfer.errors import DataError
from sparse_transfer.tasks.base import (
    PreparedTask,
    check_labels_subset,
    check_teacher_labels,
    is_generic_labels,
)
from sparse_transfer.tasks.class_metrics import single_label_metrics
from sparse_transfer.tasks.data import require_columns, require_values
from sparse_transfer.tasks.names import TEXT_CLASSIFICATION
from sparse_transfer.tasks.spec import TaskSpec

logger = logging.getLogger(__name__)

# GLUE: task -> (first input column, second input column or None), like run_glue.
TASK_TO_KEYS: dict[str, tuple[str, str | None]] = {
    "cola": ("sentence", None),
    "mnli": ("premise", "hypothesis"),
    "mrpc": ("sentence1", "sentence2"),
    "qnli": ("question", "sentence"),
    "qqp": ("question1", "question2"),
    "rte": ("sentence1", "sentence2"),
    "sst2": ("sentence", None),
    "stsb": ("sentence1", "sentence2"),
    "wnli": ("sentence1", "sentence2"),
}
# GLUE label names in GLUE's id order (None: regression).
GLUE_LABELS: dict[str, list[str] | None] = {
    "cola": ["unacceptable", "acceptable"],
    "mnli": ["entailment", "neutral", "contradiction"],
    "mrpc": ["not_equivalent", "equivalent"],
    "qnli": ["entailment", "not_entailment"],
    "qqp": ["not_duplicate", "duplicate"],
    "rte": ["entailment", "not_entailment"],
    "sst2": ["negative", "positive"],
    "stsb": None,
    "wnli": ["not_entailment", "entailment"],
}
# GLUE metrics per task (the official GLUE metric's keys).
GLUE_METRICS: dict[str, tuple[str, ...]] = {
    "cola": ("matthews_correlation",),
    "mrpc": ("accuracy", "f1"),
    "qqp": ("accuracy", "f1"),
    "stsb": ("pearson", "spearmanr"),
}

SINGLE, MULTI_LABEL, REGRESSION = (
    "single_label_classification",
    "multi_label_classification",
    "regression",
)


@dataclass
class TextClassificationArguments:
    """Flags only text classification has."""

    multi_label_threshold: float = field(
        default=0.5,
        metadata={"help": "Multi-label: predict a label when sigmoid(logit) exceeds this."},
    )
    allow_single_class: bool = field(
        default=False,
        metadata={
            "help": "Accept training data whose label column holds one class only (the model "
            "then learns nothing but that class); without it such data is an error."
        },
    )
    class_weights: str = field(
        default="none",
        metadata={
            "help": "Single-label classification: 'balanced' weighs each class's cross-entropy "
            "by n_rows / (n_classes * rows_of_class) over the training labels (scikit-learn's "
            "compute_class_weight), distillation included; 'none' (default) weighs all alike.",
            "choices": ["none", "balanced"],
        },
    )


# -- metrics (pure functions on numpy arrays; tested against hand-computed values) --


def accuracy(preds: np.ndarray, labels: np.ndarray) -> float:
    return float((preds == labels).mean())


def classification_metrics(
    logits: np.ndarray,
    labels: np.ndarray,
    glue_task: str | None = None,
    label_names: list[str] | None = None,
) -> dict[str, float]:
    """GLUE's metrics for the task (accuracy; F1 / Matthews correlation where GLUE reports
    them, and their ``combined_score``) plus the per-class scores of `class_metrics`."""
    from sklearn.metrics import f1_score, matthews_corrcoef

    preds = np.argmax(logits, axis=-1)
    labels = labels.astype(int)
    names = GLUE_METRICS.get(glue_task, ("accuracy",)) if glue_task else ("accuracy",)
    out: dict[str, float] = {}
    for name in names:
        if name == "accuracy":
            out[name] = accuracy(preds, labels)
        elif name == "f1":
            out[name] = float(f1_score(labels, preds))
        elif name == "matthews_correlation":
            out[name] = float(matthews_corrcoef(labels, preds))
    if len(out) > 1:
        out["combined_score"] = float(np.mean(list(out.values())))
    return {**single_label_metrics(preds, labels, label_names), **out}


def regression_metrics(predictions: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Pearson and Spearman correlation (GLUE STS-B) plus mean squared error."""
    from scipy.stats import pearsonr, spearmanr

    preds = np.squeeze(predictions).astype(float).reshape(-1)
    labels = labels.astype(float).reshape(-1)
    pearson = float(pearsonr(preds, labels)[0])
    spearman = float(spearmanr(preds, labels)[0])
    return {
        "pearson": pearson,
        "spearmanr": spearman,
        "combined_score": (pearson + spearman) / 2,
        "mse": float(np.mean((preds - labels) ** 2)),
    }


def multi_label_metrics(
    logits: np.ndarray,
    labels: np.ndarray,
    label_names: list[str] | None = None,
    threshold: float = 0.5,
) -> dict[str, float]:
    """Micro/macro F1 over thresholded sigmoid outputs; ``avgF1`` = macro F1 (see module doc)."""
    from sklearn.metrics import f1_score

    probs = 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))
    preds = (probs > threshold).astype(int)
    targets = (labels > 0.5).astype(int)
    micro = float(f1_score(targets, preds, average="micro", zero_division=0))
    per_label = f1_score(targets, preds, average=None, zero_division=0)
    macro = float(np.mean(per_label))
    out = {"micro_f1": micro, "macro_f1": macro, "avgF1": macro}
    names = label_names or [str(i) for i in range(len(per_label))]
    for name, score in zip(names, per_label, strict=True):
        out[f"f1_{name}"] = float(score)
    return out


# -- the prepared task --------------------------------------------------------


class TextClassificationTask(PreparedTask):
    def __init__(self, spec, raw, sources, data_args, task_args, *, sample=False) -> None:
        super().__init__(spec, raw, sources, data_args, task_args, sample=sample)
        self.glue_task = data_args.task_name
        if self.glue_task is not None and self.glue_task not in TASK_TO_KEYS:
            raise DataError(
                f"--task_name {self.glue_task!r} is not a GLUE task; known: "
                f"{', '.join(sorted(TASK_TO_KEYS))}. For other data use --train_file or --dataset_name."
            )
        self.label_column = data_args.label_column_name or "label"
        self.input_columns = self._input_columns()
        label_splits = [s for s in raw if s != "test" or self.label_column in raw[s].column_names]
        require_columns(raw, sources, self.input_columns)
        require_columns(raw, sources, [self.label_column], splits=label_splits)
        require_values(raw, sources, self.input_columns)
        labelled = [s for s in label_splits if s != "test" or not self._all_missing(s)]
        require_values(raw, sources, [self.label_column], splits=labelled)
        self._analyse_labels()

    def _input_columns(self) -> list[str]:
        fixed = fixed_input_columns(self.data_args)
        if fixed is not None:
            return fixed
        # run_glue's guess: sentence1/sentence2, else the first one or two non-label columns.
        first_split = next(iter(self.raw.values()))
        names = [c for c in first_split.column_names if c not in (self.label_column, "idx", "id")]
        if "sentence1" in names and "sentence2" in names:
            return ["sentence1", "sentence2"]
        for single in ("sentence", "text"):
            if single in names:
                return [single]
        if not names:
            first = next(iter(self.raw))
            raise DataError(
                f"{self.sources.get(first, first)}: no input column besides the label column "
                f"{self.label_column!r}; pass --input_column_names"
            )
        return names[:2] if len(names) >= 2 else names[:1]

    # -- labels --
    def _train_split(self) -> str:
        for split in ("train", "validation"):
            if split in self.raw and self.label_column in self.raw[split].column_names:
                return split
        raise DataError(f"no split has the label column {self.label_column!r}")

    def _analyse_labels(self) -> None:
        import datasets

        split = self._train_split()
        dataset = self.raw[split]
        feature = dataset.features[self.label_column]
        glue_names = GLUE_LABELS.get(self.glue_task) if self.glue_task else None
        self.value_names: list[str] | None = None  # names of integer label values (ClassLabel)
        if isinstance(feature, datasets.ClassLabel):
            self.problem_type = SINGLE
            self.value_names = list(feature.names)
        elif is_list_feature(feature):
            self.problem_type = MULTI_LABEL
            inner = getattr(feature, "feature", None)
            if isinstance(inner, datasets.ClassLabel):
                self.value_names = list(inner.names)
        elif self.glue_task == "stsb" or (
            isinstance(feature, datasets.Value)
            and feature.dtype.startswith("float")
            and not self.glue_task
        ):
            self.problem_type = REGRESSION
        else:
            self.problem_type = SINGLE
        if glue_names is not None and self.value_names is None:
            self.value_names = glue_names

        if self.problem_type == REGRESSION:
            self.label_list: list[str] = []
            self._check_scores()
            return
        values = self._label_values(split)
        others = [s for s in self._labelled_splits() if s != split]
        if self.value_names is not None:
            names = list(self.value_names)
        else:  # a sample's train head need not hold every label: pool the heads
            pooled = [*values, *(v for o in others for v in self._label_values(o))]
            pooled = pooled if self.sample else values
            names = sorted({str(v) for v in pooled}, key=_natural_key)
        self.label_list = names
        self._check_train_names(split, values)
        for other in others:
            check_labels_subset(
                [self._name_of(v, other) for v in self._label_values(other)],
                self.label_list,
                self.sources.get(other, other),
                self.label_column,
            )
        if split == "train" and self.problem_type == SINGLE and not self.sample:
            self._check_classes(split, values)
        self.label2id = {name: i for i, name in enumerate(self.label_list)}

    def _labelled_splits(self) -> list[str]:
        """The splits whose label column holds labels (a test split may leave it empty)."""
        return [
            s
            for s in self.raw
            if self.label_column in self.raw[s].column_names
            and not (s == "test" and self._all_missing(s))
        ]

    def _check_scores(self) -> None:
        """Regression labels are numbers: a class name or NaN would fail or poison training."""
        for split in self._labelled_splits():
            for row, value in enumerate(self.raw[split][self.label_column], start=1):
                try:
                    finite = value is None or math.isfinite(float(value))
                except (TypeError, ValueError):
                    finite = False
                if not finite:
                    raise DataError(
                        f"{self.sources.get(split, split)}: row {row} of column "
                        f"{self.label_column!r} holds {value!r}, but a regression label is a "
                        "finite number"
                    )

    def _label_values(self, split: str) -> list:
        column = self.raw[split][self.label_column]
        if self.problem_type == MULTI_LABEL:
            flat = []
            for row in column:
                if row is None:
                    continue
                if not isinstance(row, (list, tuple)):
                    raise DataError(
                        f"{self.sources.get(split, split)}: column {self.label_column!r} mixes "
                        f"label lists and single labels (found {row!r})"
                    )
                flat.extend(row)
            return flat
        return [v for v in column if v is not None]

    def _check_classes(self, split: str, values: list) -> None:
        """One class in the training labels trains a head that cannot be wrong: refuse it."""
        classes = sorted({str(v) for v in values})
        if len(classes) >= 2 or getattr(self.task_args, "allow_single_class", False):
            return
        raise DataError(
            f"{self.sources.get(split, split)}: column {self.label_column!r} holds one class only "
            f"({classes[0] if classes else 'none'!r}); a classifier needs at least two. Pass "
            "--allow_single_class to train on it anyway"
        )

    def _all_missing(self, split: str) -> bool:
        values = self.raw[split][self.label_column]
        return all(v is None or v == -1 for v in values)

    def _name_of(self, value, split: str) -> str:
        """A raw label value -> its label name."""
        if self.value_names is not None and isinstance(value, (int, np.integer)):
            if not 0 <= int(value) < len(self.value_names):
                raise DataError(
                    f"{self.sources.get(split, split)}: column {self.label_column!r} has label id "
                    f"{value}, outside 0..{len(self.value_names) - 1} ({self.value_names})"
                )
            return self.value_names[int(value)]
        return str(value)

    def _check_train_names(self, split: str, values) -> None:
        if self.value_names is None:
            return
        check_labels_subset(
            [self._name_of(v, split) for v in values],
            self.label_list,
            self.sources.get(split, split),
            self.label_column,
        )

    def adopt_model_config(self, config, source: str = "model") -> None:
        """Keeps a checkpoint's own label order when its names match the data's;
        a classification head of a different size is an error."""
        if self.problem_type == REGRESSION:
            return
        archs = getattr(config, "architectures", None) or []
        has_head = any(a.endswith("ForSequenceClassification") for a in archs)
        model_map = {int(k): str(v) for k, v in (config.id2label or {}).items()}
        if has_head and config.num_labels != len(self.label_list):
            raise DataError(
                f"model {source} has a classification head for {config.num_labels} labels but "
                f"{self.sources.get(self._train_split())} column {self.label_column!r} has "
                f"{len(self.label_list)} labels ({self.label_list[:10]}); start from an upstream "
                "checkpoint without a head, or use data with the model's labels"
            )
        if has_head and not is_generic_labels(model_map):
            by_lower = {v.lower(): k for k, v in model_map.items()}
            if sorted(by_lower) == sorted(n.lower() for n in self.label_list):
                ordered = [None] * len(self.label_list)
                for name in self.label_list:
                    ordered[by_lower[name.lower()]] = name
                if ordered != self.label_list:
                    logger.info("using the label order of %s: %s", source, ordered)
                self.label_list = ordered
                self.label2id = {n: i for i, n in enumerate(ordered)}
            else:
                logger.warning(
                    "model %s was trained with labels %s, which do not match the data's %s; "
                    "ignoring the model's label names",
                    source,
                    sorted(model_map.values()),
                    self.label_list,
                )

    def class_weights(self) -> list[float] | None:
        """``--class_weights balanced``: n_rows / (n_classes * rows_of_class) per class id over
        the training labels (scikit-learn's ``compute_class_weight("balanced")``); a class
        without training rows gets 0 (it is never a target). None when not asked for."""
        choice = getattr(self.task_args, "class_weights", "none") or "none"
        if choice == "none":
            return None
        if choice != "balanced":
            raise DataError(f"--class_weights must be 'none' or 'balanced', got {choice!r}")
        if self.problem_type != SINGLE:
            raise DataError(
                f"--class_weights balanced needs single-label classification; this data is "
                f"{self.problem_type} (column {self.label_column!r})"
            )
        split = self._train_split()
        names = [self._name_of(v, split) for v in self._label_values(split)]
        counts = np.array([names.count(n) for n in self.label_list], dtype=float)
        present = counts > 0
        weights = np.zeros(len(counts))
        weights[present] = counts.sum() / (present.sum() * counts[present])
        logger.info(
            "class weights (balanced): %s",
            dict(zip(self.label_list, weights.round(4), strict=True)),
        )
        return [float(w) for w in weights]

    def config_overrides(self) -> dict[str, Any]:
        if self.problem_type == REGRESSION:
            return {"num_labels": 1, "problem_type": REGRESSION}
        return {
            "num_labels": len(self.label_list),
            "id2label": dict(enumerate(self.label_list)),
            "label2id": dict(self.label2id),
            "problem_type": self.problem_type,
        }

    def check_model(self, model, source: str, role: str = "model") -> None:
        expected = 1 if self.problem_type == REGRESSION else len(self.label_list)
        if model.config.num_labels != expected:
            raise DataError(
                f"{role} {source} outputs {model.config.num_labels} labels but the data "
                f"({self.sources.get(self._train_split())}, column {self.label_column!r}) "
                f"has {expected}"
            )
        if role == "teacher" and self.problem_type != REGRESSION:
            expected_cfg = type(model.config)(**self.config_overrides())
            check_teacher_labels(expected_cfg, model.config, source)

    # -- features --
    def _encode_label(self, value, split: str):
        if self.problem_type == REGRESSION:
            return float(value)
        if self.problem_type == MULTI_LABEL:
            vec = [0.0] * len(self.label_list)
            for v in value or []:
                vec[self.label2id[self._name_of(v, split)]] = 1.0
            return vec
        return self.label2id[self._name_of(value, split)]

    def preprocess(self, split: str, tokenizer, train: bool):
        dataset = self.raw[split]
        with_labels = self.label_column in dataset.column_names and not (
            split == "test" and self._all_missing(split)
        )
        padding = "max_length" if self.data_args.pad_to_max_length else False
        cols = self.input_columns

        def tokenize(batch: dict[str, list]) -> dict[str, list]:
            texts = [[("" if t is None else str(t)) for t in batch[c]] for c in cols]
            enc = tokenizer(
                *texts, padding=padding, max_length=self.max_seq_length, truncation=True
            )
            out = dict(enc)
            out["_truncated"] = [bool(e.overflowing) for e in enc.encodings]
            if with_labels:
                out["labels"] = [self._encode_label(v, split) for v in batch[self.label_column]]
            return out

        features = self.map_with_progress(
            dataset,
            tokenize,
            desc=f"Tokenizing {split}",
            remove_columns=dataset.column_names,
        )
        features = self.count_truncated(split, features)
        self.features[split] = features
        return features

    # -- metrics --
    def compute_metrics(self, outputs: dict[str, np.ndarray], label_ids: Any, split: str) -> dict:
        logits = outputs["logits"]
        labels = np.asarray(label_ids)
        if self.problem_type == REGRESSION:
            return regression_metrics(logits, labels)
        if self.problem_type == MULTI_LABEL:
            return multi_label_metrics(
                logits, labels, self.label_list, self.task_args.multi_label_threshold
            )
        return classification_metrics(logits, labels, self.glue_task, self.label_list)

    def primary_metric(self) -> str:
        if self.problem_type == REGRESSION:
            return "pearson"
        if self.problem_type == MULTI_LABEL:
            return "avgF1"
        if self.glue_task == "cola":
            return "matthews_correlation"
        return "accuracy"

    def predictions_to_rows(self, outputs: dict[str, np.ndarray]) -> list[dict]:
        """Human-readable predictions for --do_predict."""
        logits = outputs["logits"]
        if self.problem_type == REGRESSION:
            return [{"prediction": float(v)} for v in np.squeeze(logits, -1)]
        if self.problem_type == MULTI_LABEL:
            probs = 1.0 / (1.0 + np.exp(-logits))
            thr = self.task_args.multi_label_threshold
            return [
                {"prediction": [self.label_list[i] for i in np.flatnonzero(p > thr)]} for p in probs
            ]
        return [{"prediction": self.label_list[int(i)]} for i in np.argmax(logits, -1)]


def fixed_input_columns(data_args) -> list[str] | None:
    """The input columns the flags name (``--input_column_names``, else ``--task_name``'s GLUE
    columns); None: guessed from the data, as run_glue does."""
    if data_args.input_column_names:
        cols = [c.strip() for c in data_args.input_column_names.split(",") if c.strip()]
        if not 1 <= len(cols) <= 2:
            raise DataError(
                f"--input_column_names takes one column or a pair, got {len(cols)}: {cols}"
            )
        return cols
    if data_args.task_name in TASK_TO_KEYS:
        first, second = TASK_TO_KEYS[data_args.task_name]
        return [first] + ([second] if second else [])
    return None


def describe_data(data_args) -> tuple[str, str]:
    """What ``--task_name`` fixes of a data file, in words, and how to choose freely: for a
    one-line configure error ("task_name 'sst2' expects column 'sentence' with labels
    negative/positive"). ``("", "")`` when no GLUE task is named: the data decides."""
    name = data_args.task_name
    if name not in TASK_TO_KEYS:
        return "", ""
    columns = fixed_input_columns(data_args) or []
    labels = GLUE_LABELS[name]
    what = "a numeric score" if labels is None else f"labels {'/'.join(labels)}"
    if data_args.label_column_name:
        what += f" in column {data_args.label_column_name!r}"
    noun = "column" if len(columns) == 1 else "columns"
    expects = f"task_name {name!r} expects {noun} {', '.join(map(repr, columns))} with {what}"
    return expects, "set task_name '' for your own labels"


def is_list_feature(feature) -> bool:
    """A `datasets` list feature (Sequence, List or LargeList, across versions) or a raw list."""
    return isinstance(feature, list) or type(feature).__name__ in {"Sequence", "List", "LargeList"}


def _natural_key(value: str):
    """Sorts '2' before '10' when all labels are integers, else alphabetically."""
    try:
        return (0, float(value), "")
    except ValueError:
        return (1, 0.0, value)


def _prepare(raw, sources, data_args, task_args, *, sample=False) -> TextClassificationTask:
    return TextClassificationTask(SPEC, raw, sources, data_args, task_args, sample=sample)


SPEC = TaskSpec(
    name=TEXT_CLASSIFICATION,
    auto_class="AutoModelForSequenceClassification",
    args_class=TextClassificationArguments,
    distill_output_keys=("logits",),
    default_max_seq_length=128,
    prepare=_prepare,
    output_names=("logits",),
    primary_metrics=("accuracy", "avgF1", "pearson"),
    metric_names=(
        "accuracy", "macro_f1", "balanced_accuracy", "majority_class_share", "positive_f1",
        "minority_f1", "f1", "matthews_correlation", "combined_score", "micro_f1", "avgF1",
        "pearson", "spearmanr", "mse",
    ),
    metric_prefixes=("precision_", "recall_", "f1_", "support_"),
    row_label=True,
    glue_task_names=True,
    describe_data=describe_data,
    architecture_suffix="ForSequenceClassification",
    served_as="sequence",
    served_outputs=(("label", "BYTES"), ("score", "FP32"), ("labels", "BYTES"), ("value", "FP32")),
)  # fmt: skip
