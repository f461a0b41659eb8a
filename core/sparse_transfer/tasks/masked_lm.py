"""Masked language modelling: make (or continue) an upstream model, e.g. with a
gradual pruning recipe, before sparse transfer.

Training masks tokens dynamically (`DataCollatorForLanguageModeling`, BERT's
80/10/10 scheme). Validation is masked once, with a fixed seed, while
preprocessing, so every evaluation (torch or ONNX, before or after training)
scores the same positions. Metrics: ``accuracy`` of the predicted token at
masked positions and ``perplexity`` = exp(mean cross-entropy there).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from itertools import chain
from typing import Any

import numpy as np

from sparse_transfer.errors import DataError
from sparse_transfer.tasks.base import PreparedTask
from sparse_transfer.tasks.data import require_columns
from sparse_transfer.tasks.names import MASKED_LANGUAGE_MODELING
from sparse_transfer.tasks.spec import TaskSpec

logger = logging.getLogger(__name__)
IGNORE = -100


@dataclass
class MaskedLMArguments:
    """Flags only masked language modelling has."""

    mlm_probability: float = field(
        default=0.15, metadata={"help": "Fraction of tokens masked for the MLM loss."}
    )
    line_by_line: bool = field(
        default=False,
        metadata={"help": "One example per line instead of concatenating into full blocks."},
    )
    eval_mask_seed: int = field(
        default=1234, metadata={"help": "Seed of the fixed masking of the validation set."}
    )


def mask_tokens(
    input_ids: list[int],
    special_mask: list[int],
    rng: np.random.RandomState,
    mask_id: int,
    vocab_size: int,
    probability: float,
) -> tuple[list[int], list[int]]:
    """BERT masking of one sequence: returns (masked input ids, labels with -100)."""
    ids = np.array(input_ids)
    chosen = (rng.random_sample(len(ids)) < probability) & (np.array(special_mask) == 0)
    labels = np.where(chosen, ids, IGNORE)
    roll = rng.random_sample(len(ids))
    ids = np.where(chosen & (roll < 0.8), mask_id, ids)
    random_ids = rng.randint(0, vocab_size, len(ids))
    ids = np.where(chosen & (roll >= 0.8) & (roll < 0.9), random_ids, ids)
    return ids.tolist(), labels.tolist()


def mlm_metrics(reduced: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """`reduced[..., 0]` = argmax token, `reduced[..., 1]` = NLL of the true token."""
    keep = labels != IGNORE
    if not keep.any():
        return {"accuracy": 0.0, "perplexity": float("nan")}
    accuracy = float((reduced[..., 0][keep] == labels[keep]).mean())
    return {"accuracy": accuracy, "perplexity": float(np.exp(reduced[..., 1][keep].mean()))}


class MaskedLMCollator:
    """Dynamic masking for rows without labels; label-preserving padding for pre-masked rows."""

    def __init__(self, tokenizer, probability: float, pad_to_multiple_of=None, return_tensors="pt"):
        from transformers import DataCollatorForLanguageModeling, DataCollatorForTokenClassification

        self.masking = DataCollatorForLanguageModeling(
            tokenizer,
            mlm_probability=probability,
            pad_to_multiple_of=pad_to_multiple_of,
            return_tensors=return_tensors,
        )
        self.padding = DataCollatorForTokenClassification(
            tokenizer, pad_to_multiple_of=pad_to_multiple_of, return_tensors=return_tensors
        )

    def __call__(self, features: list[dict]) -> dict:
        if features and "labels" in features[0]:
            return self.padding(features)
        return self.masking(features)


class MaskedLMTask(PreparedTask):
    def __init__(self, spec, raw, sources, data_args, task_args, *, sample=False) -> None:
        super().__init__(spec, raw, sources, data_args, task_args, sample=sample)
        first = next(iter(raw.values()))
        if data_args.input_column_names:
            self.text_column = data_args.input_column_names.split(",")[0].strip()
        elif "text" in first.column_names:
            self.text_column = "text"
        else:
            self.text_column = first.column_names[0]
        require_columns(raw, sources, [self.text_column])
        if not 0.0 < task_args.mlm_probability < 1.0:
            raise DataError(f"--mlm_probability must be in (0, 1), got {task_args.mlm_probability}")

    def check_model(self, model, source: str, role: str = "model") -> None:
        if role == "teacher" and hasattr(self, "vocab_size"):
            if model.config.vocab_size != self.vocab_size:
                raise DataError(
                    f"teacher {source} has a vocabulary of {model.config.vocab_size} tokens but the "
                    f"student's tokenizer has {self.vocab_size}; distillation needs the same vocabulary"
                )

    def collator(self, tokenizer, pad_to_multiple_of: int | None = None, return_tensors="pt"):
        return MaskedLMCollator(
            tokenizer, self.task_args.mlm_probability, pad_to_multiple_of, return_tensors
        )

    def preprocess(self, split: str, tokenizer, train: bool):
        dataset = self.raw[split]
        self.vocab_size = len(tokenizer)
        block = self.max_seq_length
        line_by_line = self.task_args.line_by_line

        def tokenize(batch: dict[str, list]) -> dict[str, list]:
            texts = [t for t in batch[self.text_column] if t and str(t).strip()]
            if line_by_line:
                enc = tokenizer(
                    texts, truncation=True, max_length=block, return_special_tokens_mask=True
                )
                out = dict(enc)
                out["_truncated"] = [bool(e.overflowing) for e in enc.encodings]
                return out
            enc = tokenizer(texts, return_special_tokens_mask=True)
            joined = {k: list(chain.from_iterable(v)) for k, v in enc.items()}
            total = (len(joined["input_ids"]) // block) * block
            return {
                k: [v[i : i + block] for i in range(0, total, block)] for k, v in joined.items()
            }

        features = self.map_with_progress(
            dataset, tokenize, desc=f"Tokenizing {split}", remove_columns=dataset.column_names
        )
        features = self.count_truncated(split, features)
        if len(features) == 0:
            raise DataError(
                f"{self.sources.get(split, split)}: column {self.text_column!r} holds fewer than "
                f"--max_seq_length {block} tokens in total; pass --line_by_line or a shorter length"
            )
        if not train:
            rng = np.random.RandomState(self.task_args.eval_mask_seed)
            masked_ids, labels = [], []
            for ids, special in zip(
                features["input_ids"], features["special_tokens_mask"], strict=True
            ):
                m, lab = mask_tokens(
                    ids,
                    special,
                    rng,
                    tokenizer.mask_token_id,
                    len(tokenizer),
                    self.task_args.mlm_probability,
                )
                masked_ids.append(m)
                labels.append(lab)
            features = features.remove_columns("input_ids").add_column("input_ids", masked_ids)
            features = features.add_column("labels", labels)
        features = features.remove_columns("special_tokens_mask")
        self.features[split] = features
        return features

    def reduce_batch(self, outputs: dict[str, np.ndarray], labels: Any) -> dict[str, np.ndarray]:
        logits = outputs["logits"].astype(np.float64)
        labels = np.asarray(labels)
        top = logits.max(-1, keepdims=True)
        logsumexp = (np.log(np.exp(logits - top).sum(-1, keepdims=True)) + top)[..., 0]
        safe = np.where(labels == IGNORE, 0, labels)
        true_logit = np.take_along_axis(logits, safe[..., None], -1)[..., 0]
        reduced = np.stack([logits.argmax(-1), logsumexp - true_logit], -1)
        return {"logits": reduced.astype(np.float32)}

    def compute_metrics(self, outputs: dict[str, np.ndarray], label_ids: Any, split: str) -> dict:
        return mlm_metrics(outputs["logits"], np.asarray(label_ids))

    def primary_metric(self) -> str:
        return "perplexity"


def _prepare(raw, sources, data_args, task_args, *, sample=False) -> MaskedLMTask:
    return MaskedLMTask(SPEC, raw, sources, data_args, task_args, sample=sample)


SPEC = TaskSpec(
    name=MASKED_LANGUAGE_MODELING,
    auto_class="AutoModelForMaskedLM",
    args_class=MaskedLMArguments,
    distill_output_keys=("logits",),
    default_max_seq_length=128,
    prepare=_prepare,
    output_names=("logits",),
    primary_metrics=("accuracy", "perplexity"),
    metric_names=("accuracy", "perplexity"),
    architecture_suffix="ForMaskedLM",
)
