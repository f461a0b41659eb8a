"""Token classification (NER, CoNLL-2003 style: a ``tokens`` word list and a
``ner_tags`` label list per row).

Words are split into subwords by the tokenizer. Only the first subword of a
word carries its label (the rest get -100, ignored by the loss and metrics),
unless ``--label_all_tokens``: then every subword carries it, with a ``B-X``
label turned into ``I-X`` after the first subword, as Hugging Face's run_ner.

Metrics are seqeval's (default, conlleval-compatible mode): entity-level
``precision``/``recall``/``f1`` (an entity counts only when its type and both
boundaries match exactly) and token ``accuracy`` over labelled positions.
"""

from __future__ import annotations

import logging
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
from sparse_transfer.tasks.data import require_columns, require_values
from sparse_transfer.tasks.names import TOKEN_CLASSIFICATION
from sparse_transfer.tasks.spec import TaskSpec

logger = logging.getLogger(__name__)

IGNORE = -100


@dataclass
class TokenClassificationArguments:
    """Flags only token classification has."""

    label_all_tokens: bool = field(
        default=False,
        metadata={
            "help": "Label every subword of a word (B-X becomes I-X after the first) instead of "
            "only the first subword."
        },
    )
    return_entity_level_metrics: bool = field(
        default=True,
        metadata={
            "help": "Also report precision/recall/F1 per entity type (<TYPE>_f1, ...); on by "
            "default, --no_return_entity_level_metrics turns it off."
        },
    )


def align_labels(
    word_ids: list[int | None],
    word_labels: list[int],
    label_all_tokens: bool,
    b_to_i: list[int] | None = None,
) -> list[int]:
    """Word labels -> subword labels (see the module doc for the two modes)."""
    out: list[int] = []
    previous: int | None = None
    for word_id in word_ids:
        if word_id is None:
            out.append(IGNORE)
        elif word_id != previous:
            out.append(word_labels[word_id])
        elif label_all_tokens:
            label = word_labels[word_id]
            out.append(b_to_i[label] if b_to_i is not None else label)
        else:
            out.append(IGNORE)
        previous = word_id
    return out


def b_to_i_map(label_list: list[str]) -> list[int]:
    """For each label id, the id to use on continuation subwords (B-X -> I-X)."""
    out = []
    for i, label in enumerate(label_list):
        if label.startswith("B-") and "I-" + label[2:] in label_list:
            out.append(label_list.index("I-" + label[2:]))
        else:
            out.append(i)
    return out


def seqeval_metrics(
    true_tags: list[list[str]], pred_tags: list[list[str]], entity_level: bool = False
) -> dict[str, float]:
    """seqeval's entity-level P/R/F1 and token accuracy on tag sequences."""
    from seqeval.metrics import (
        accuracy_score,
        classification_report,
        f1_score,
        precision_score,
        recall_score,
    )

    out = {
        "precision": float(precision_score(true_tags, pred_tags, zero_division=0)),
        "recall": float(recall_score(true_tags, pred_tags, zero_division=0)),
        "f1": float(f1_score(true_tags, pred_tags, zero_division=0)),
        "accuracy": float(accuracy_score(true_tags, pred_tags)),
    }
    if entity_level:
        report = classification_report(true_tags, pred_tags, output_dict=True, zero_division=0)
        for entity, scores in report.items():
            if entity.endswith("avg"):
                continue
            for key in ("precision", "recall", "f1-score"):
                out[f"{entity}_{key.replace('-score', '')}"] = float(scores[key])
    return out


def logits_to_tags(
    logits: np.ndarray, labels: np.ndarray, label_list: list[str]
) -> tuple[list[list[str]], list[list[str]]]:
    """Argmax predictions and gold ids -> tag strings, skipping ignored positions."""
    preds = np.argmax(logits, axis=-1)
    true_tags, pred_tags = [], []
    for pred_row, label_row in zip(preds, labels, strict=True):
        keep = label_row != IGNORE
        true_tags.append([label_list[int(i)] for i in label_row[keep]])
        pred_tags.append([label_list[int(i)] for i in pred_row[keep]])
    return true_tags, pred_tags


class TokenClassificationTask(PreparedTask):
    def __init__(self, spec, raw, sources, data_args, task_args, *, sample=False) -> None:
        super().__init__(spec, raw, sources, data_args, task_args, sample=sample)
        first = next(iter(raw.values()))
        if data_args.input_column_names:
            self.text_column = data_args.input_column_names.split(",")[0].strip()
        else:
            self.text_column = "tokens" if "tokens" in first.column_names else first.column_names[0]
        # run_ner's --task_name (ner, pos, chunk) picks CoNLL's `<task>_tags` column.
        by_task = f"{data_args.task_name}_tags" if data_args.task_name else None
        if data_args.label_column_name:
            self.label_column = data_args.label_column_name
        elif by_task and by_task in first.column_names:
            self.label_column = by_task
        else:
            self.label_column = "ner_tags" if "ner_tags" in first.column_names else "labels"
        require_columns(raw, sources, [self.text_column])
        label_splits = [s for s in raw if s != "test" or self.label_column in raw[s].column_names]
        require_columns(raw, sources, [self.label_column], splits=label_splits)
        require_values(raw, sources, [self.text_column])
        require_values(
            raw, sources, [self.label_column], splits=[s for s in label_splits if s != "test"]
        )
        self._analyse_labels()

    def _analyse_labels(self) -> None:
        split = "train" if "train" in self.raw else next(iter(self.raw))
        feature = self.raw[split].features[self.label_column]
        inner = getattr(feature, "feature", None)
        self.value_names = (
            list(inner.names) if inner is not None and hasattr(inner, "names") else None
        )
        if self.value_names is not None:
            self.label_list = list(self.value_names)
        else:  # a sample's train head need not hold every tag: pool the heads
            pooled = [split, *(s for s in self.raw if s != split)] if self.sample else [split]
            values = {
                v
                for s in pooled
                if self.label_column in self.raw[s].column_names
                for row in self.raw[s][self.label_column]
                for v in row or ()
            }
            self.label_list = sorted(map(str, values))
        for other in self.raw:
            if other == split or self.label_column not in self.raw[other].column_names:
                continue
            check_labels_subset(
                [self._name(v) for row in self.raw[other][self.label_column] for v in row],
                self.label_list,
                self.sources.get(other, other),
                self.label_column,
            )
        self.label2id = {n: i for i, n in enumerate(self.label_list)}

    def _name(self, value) -> str:
        if self.value_names is not None and isinstance(value, (int, np.integer)):
            return self.value_names[int(value)]
        return str(value)

    def adopt_model_config(self, config, source: str = "model") -> None:
        archs = getattr(config, "architectures", None) or []
        has_head = any(a.endswith("ForTokenClassification") for a in archs)
        if not has_head:
            return
        if config.num_labels != len(self.label_list):
            raise DataError(
                f"model {source} has a token classification head for {config.num_labels} labels "
                f"but column {self.label_column!r} of {self.sources.get('train', 'the data')} has "
                f"{len(self.label_list)} ({self.label_list})"
            )
        model_map = {int(k): str(v) for k, v in (config.id2label or {}).items()}
        if not is_generic_labels(model_map) and sorted(model_map.values()) == sorted(
            self.label_list
        ):
            self.label_list = [model_map[i] for i in range(len(model_map))]
            self.label2id = {n: i for i, n in enumerate(self.label_list)}

    def config_overrides(self) -> dict[str, Any]:
        return {
            "num_labels": len(self.label_list),
            "id2label": dict(enumerate(self.label_list)),
            "label2id": dict(self.label2id),
        }

    def check_model(self, model, source: str, role: str = "model") -> None:
        if model.config.num_labels != len(self.label_list):
            raise DataError(
                f"{role} {source} outputs {model.config.num_labels} labels but column "
                f"{self.label_column!r} has {len(self.label_list)}"
            )
        if role == "teacher":
            check_teacher_labels(
                type(model.config)(**self.config_overrides()), model.config, source
            )

    def collator(self, tokenizer, pad_to_multiple_of: int | None = None, return_tensors="pt"):
        from transformers import DataCollatorForTokenClassification

        return DataCollatorForTokenClassification(
            tokenizer, pad_to_multiple_of=pad_to_multiple_of, return_tensors=return_tensors
        )

    def preprocess(self, split: str, tokenizer, train: bool):
        dataset = self.raw[split]
        with_labels = self.label_column in dataset.column_names
        padding = "max_length" if self.data_args.pad_to_max_length else False
        b_to_i = b_to_i_map(self.label_list)

        def tokenize(batch: dict[str, list]) -> dict[str, list]:
            words = [[str(w) for w in row] for row in batch[self.text_column]]
            enc = tokenizer(
                words,
                is_split_into_words=True,
                padding=padding,
                truncation=True,
                max_length=self.max_seq_length,
            )
            out = dict(enc)
            out["_truncated"] = [bool(e.overflowing) for e in enc.encodings]
            if with_labels:
                labels = []
                for i, row in enumerate(batch[self.label_column]):
                    if len(row) != len(words[i]):
                        raise DataError(
                            f"{self.sources.get(split, split)}: a row has {len(words[i])} words in "
                            f"{self.text_column!r} but {len(row)} labels in {self.label_column!r}"
                        )
                    ids = [self.label2id[self._name(v)] for v in row]
                    labels.append(
                        align_labels(enc.word_ids(i), ids, self.task_args.label_all_tokens, b_to_i)
                    )
                out["labels"] = labels
            return out

        features = self.map_with_progress(
            dataset, tokenize, desc=f"Tokenizing {split}", remove_columns=dataset.column_names
        )
        features = self.count_truncated(split, features)
        self.features[split] = features
        return features

    def compute_metrics(self, outputs: dict[str, np.ndarray], label_ids: Any, split: str) -> dict:
        true_tags, pred_tags = logits_to_tags(
            outputs["logits"], np.asarray(label_ids), self.label_list
        )
        return seqeval_metrics(true_tags, pred_tags, self.task_args.return_entity_level_metrics)

    def primary_metric(self) -> str:
        return "f1"


def _prepare(raw, sources, data_args, task_args, *, sample=False) -> TokenClassificationTask:
    return TokenClassificationTask(SPEC, raw, sources, data_args, task_args, sample=sample)


SPEC = TaskSpec(
    name=TOKEN_CLASSIFICATION,
    auto_class="AutoModelForTokenClassification",
    args_class=TokenClassificationArguments,
    distill_output_keys=("logits",),
    default_max_seq_length=128,
    prepare=_prepare,
    output_names=("logits",),
    primary_metrics=("f1", "overall_f1", "accuracy", "overall_accuracy"),
    metric_names=("precision", "recall", "f1", "accuracy"),
    metric_suffixes=("_precision", "_recall", "_f1"),
    export_inputs="words",
    architecture_suffix="ForTokenClassification",
    served_as="tokens",
    served_outputs=(("tags", "BYTES"), ("entities", "BYTES")),
)
