"""Extractive question answering, SQuAD v1 and v2 (unanswerable questions).

Contexts longer than ``--max_seq_length`` are cut into overlapping windows
(``--doc_stride`` tokens of overlap); each window keeps its token -> character
offsets so a predicted span maps back to the context. Post-processing follows
Hugging Face's ``utils_qa.postprocess_qa_predictions``: the ``--n_best_size``
best start and end logits of every window form candidate spans (inside the
context, end >= start, at most ``--max_answer_length`` tokens), the best score
``start_logit + end_logit`` wins; with ``--version_2_with_negative`` the
null answer (the [CLS] score, minimum over windows) wins when it beats the
best span by more than ``--null_score_diff_threshold``.

Scores are those of the official SQuAD evaluation scripts: answers are
normalised (lower case, punctuation removed, articles a/an/the removed,
whitespace collapsed); exact match and token-overlap F1 are maximised over the
gold answers and averaged (as percentages). v2 also reports HasAns_/NoAns_
scores; a question without answers has the empty string as its gold answer.
"""

from __future__ import annotations

import collections
import json
import logging
import re
import string
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sparse_transfer.errors import DataError
from sparse_transfer.tasks.base import PreparedTask
from sparse_transfer.tasks.data import require_columns, require_values
from sparse_transfer.tasks.names import QUESTION_ANSWERING
from sparse_transfer.tasks.spec import TaskSpec

logger = logging.getLogger(__name__)


@dataclass
class QuestionAnsweringArguments:
    """Flags only question answering has."""

    doc_stride: int | None = field(
        default=None,
        metadata={
            "help": "Overlap in tokens between windows of a long context (default: 128, or "
            "half of --max_seq_length when that is shorter)."
        },
    )
    n_best_size: int = field(
        default=20, metadata={"help": "Start/end candidates per window in post-processing."}
    )
    max_answer_length: int = field(default=30, metadata={"help": "Longest answer span, in tokens."})
    version_2_with_negative: bool = field(
        default=False, metadata={"help": "SQuAD v2: some questions have no answer."}
    )
    null_score_diff_threshold: float = field(
        default=0.0,
        metadata={"help": "v2: answer null when null score - best span score exceeds this."},
    )
    question_column_name: str = field(default="question", metadata={"help": "Question column."})
    context_column_name: str = field(default="context", metadata={"help": "Context column."})
    answer_column_name: str = field(
        default="answers", metadata={"help": "Answers column: {text: [...], answer_start: [...]}."}
    )


# -- official SQuAD scoring -------------------------------------------------------

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCT = set(string.punctuation)


def normalize_answer(text: str) -> str:
    """Lower text and remove punctuation, articles and extra whitespace (SQuAD script)."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCT)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match_score(prediction: str, ground_truth: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(ground_truth))


def f1_score(prediction: str, ground_truth: str) -> float:
    """Token-overlap F1 (SQuAD v2 script: two empty answers score 1, one empty 0)."""
    pred_tokens = normalize_answer(prediction).split()
    gold_tokens = normalize_answer(ground_truth).split()
    if not pred_tokens or not gold_tokens:
        return float(pred_tokens == gold_tokens)
    common = collections.Counter(pred_tokens) & collections.Counter(gold_tokens)
    num_same = sum(common.values())
    if num_same == 0:
        return 0.0
    precision = num_same / len(pred_tokens)
    recall = num_same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def squad_scores(
    predictions: dict[str, str], references: dict[str, list[str]], version_2: bool = False
) -> dict[str, float]:
    """Exact match and F1 (percent), each the max over the gold answers of a question."""
    exact, f1, has_ans = {}, {}, {}
    for qid, golds in references.items():
        golds = [g for g in golds if normalize_answer(g)] if version_2 else list(golds)
        has_ans[qid] = bool(golds)
        if not golds:
            if not version_2:
                raise DataError(f"question {qid!r} has no answer; pass --version_2_with_negative")
            golds = [""]
        pred = predictions.get(qid, "")
        exact[qid] = max(exact_match_score(pred, g) for g in golds)
        f1[qid] = max(f1_score(pred, g) for g in golds)
    total = len(references)
    if not version_2:
        return {
            "exact_match": 100.0 * sum(exact.values()) / total,
            "f1": 100.0 * sum(f1.values()) / total,
        }
    out = {
        "exact": 100.0 * sum(exact.values()) / total,
        "f1": 100.0 * sum(f1.values()) / total,
        "total": float(total),
    }
    for prefix, want in (("HasAns", True), ("NoAns", False)):
        ids = [q for q in references if has_ans[q] == want]
        if ids:
            out[f"{prefix}_exact"] = 100.0 * sum(exact[q] for q in ids) / len(ids)
            out[f"{prefix}_f1"] = 100.0 * sum(f1[q] for q in ids) / len(ids)
            out[f"{prefix}_total"] = float(len(ids))
    return out


# -- post-processing -------------------------------------------------------------


def context_windows(
    tokenizer, questions: list[str], contexts: list[str], max_length: int, stride: int,
    padding: bool | str = False,
):  # fmt: skip
    """Question + context -> overlapping windows of the context (HF ``run_qa``'s recipe).

    Shared by training/evaluation and the server, so both cut the same windows.

    Returns:
        ``(encoding, sample_map, context_offsets)``: the tokenizer's encoding (without
        ``overflow_to_sample_mapping``), the example index of every window, and every
        window's offset mapping with None outside the context.

    Raises:
        Whatever the tokenizer raises when the question leaves no room for the context.
    """
    pad_on_right = tokenizer.padding_side == "right"
    questions = [q.lstrip() for q in questions]
    enc = tokenizer(
        questions if pad_on_right else contexts,
        contexts if pad_on_right else questions,
        truncation="only_second" if pad_on_right else "only_first",
        max_length=max_length,
        stride=stride,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
        padding=padding,
    )
    sample_map = enc.pop("overflow_to_sample_mapping")
    context_index = 1 if pad_on_right else 0
    context_offsets = []
    for i, offsets in enumerate(enc["offset_mapping"]):
        seq_ids = enc.sequence_ids(i)
        context_offsets.append(
            [o if seq_ids[k] == context_index else None for k, o in enumerate(offsets)]
        )
    return enc, sample_map, context_offsets


def postprocess_predictions(*args, **kwargs) -> dict[str, str]:
    """Window logits -> one answer text per example id: `best_spans`' texts (same arguments)."""
    return {qid: span["text"] for qid, span in best_spans(*args, **kwargs).items()}


def best_spans(
    examples: list[dict],
    features: list[dict],
    start_logits: np.ndarray,
    end_logits: np.ndarray,
    n_best_size: int = 20,
    max_answer_length: int = 30,
    version_2: bool = False,
    null_score_diff_threshold: float = 0.0,
    context_column: str = "context",
) -> dict[str, dict]:
    """Window logits -> the best answer span per example id (see the module doc).

    `features` are dicts with ``example_id`` and ``offset_mapping`` (None for
    tokens outside the context); logits rows align with `features`. Each span is
    ``{"text", "start", "end", "score"}``: character offsets into the context and the
    start+end logit score; no answer is ``text ""`` with ``start``/``end`` None.
    """
    by_example: dict[str, list[int]] = collections.defaultdict(list)
    for i, feature in enumerate(features):
        by_example[feature["example_id"]].append(i)
    answers: dict[str, dict] = {}
    for example in examples:
        qid = example["id"]
        context = example[context_column]
        candidates: list[tuple[float, int, int, float, float]] = []
        null_score = None
        for fi in by_example.get(qid, []):
            starts, ends = start_logits[fi], end_logits[fi]
            offsets = features[fi]["offset_mapping"]
            feature_null = float(starts[0] + ends[0])
            if null_score is None or feature_null < null_score:
                null_score = feature_null
            top_starts = np.argsort(starts)[-1 : -n_best_size - 1 : -1]
            top_ends = np.argsort(ends)[-1 : -n_best_size - 1 : -1]
            for s in top_starts:
                for e in top_ends:
                    if s >= len(offsets) or e >= len(offsets):
                        continue
                    if offsets[s] is None or offsets[e] is None:
                        continue
                    if len(offsets[s]) < 2 or len(offsets[e]) < 2:
                        continue
                    if e < s or e - s + 1 > max_answer_length:
                        continue
                    candidates.append(
                        (
                            float(starts[s] + ends[e]),
                            int(offsets[s][0]),
                            int(offsets[e][1]),
                            float(starts[s]),
                            float(ends[e]),
                        )
                    )
        candidates.sort(key=lambda c: c[0], reverse=True)
        non_null = [c for c in candidates[:n_best_size] if context[c[1] : c[2]] != ""]
        none = {"text": "", "start": None, "end": None, "score": null_score}
        if not non_null or (
            version_2
            and (null_score is None or null_score - non_null[0][0] > null_score_diff_threshold)
        ):
            answers[qid] = none
            continue
        score, start, end = non_null[0][:3]
        answers[qid] = {"text": context[start:end], "start": start, "end": end, "score": score}
    return answers


# -- the prepared task ------------------------------------------------------------


class QuestionAnsweringTask(PreparedTask):
    non_model_columns = ("example_id", "offset_mapping")

    def __init__(self, spec, raw, sources, data_args, task_args, *, sample=False) -> None:
        super().__init__(spec, raw, sources, data_args, task_args, sample=sample)
        a = task_args
        self.q_col, self.c_col, self.a_col = (
            a.question_column_name,
            a.context_column_name,
            a.answer_column_name,
        )
        require_columns(raw, sources, [self.q_col, self.c_col])
        label_splits = [s for s in raw if s != "test"]
        require_columns(raw, sources, [self.a_col], splits=label_splits)
        require_values(raw, sources, [self.q_col, self.c_col])
        require_values(raw, sources, [self.a_col], splits=label_splits)
        for split in list(raw):
            if "id" not in raw[split].column_names:
                raw[split] = raw[split].add_column("id", [str(i) for i in range(len(raw[split]))])
            if self.a_col in raw[split].column_names:
                raw[split] = raw[split].map(self._parse_answers, desc=f"Checking answers ({split})")
                self._check_answers(split)

    def _parse_answers(self, row: dict) -> dict:
        answers = row[self.a_col]
        if isinstance(answers, str):  # CSV: answers stored as a JSON string
            answers = json.loads(answers)
        return {
            self.a_col: {
                "text": list(answers["text"]),
                "answer_start": [int(x) for x in answers["answer_start"]],
            }
        }

    def _check_answers(self, split: str) -> None:
        source = self.sources.get(split, split)
        for row in self.raw[split]:
            answers = row[self.a_col]
            if not answers["text"] and not self.task_args.version_2_with_negative:
                raise DataError(
                    f"{source}: question {row['id']!r} has no answer in column {self.a_col!r}; "
                    "pass --version_2_with_negative for SQuAD v2 style data"
                )
            for text, start in zip(answers["text"], answers["answer_start"], strict=True):
                if row[self.c_col][start : start + len(text)] != text:
                    raise DataError(
                        f"{source}: question {row['id']!r}: answer {text!r} is not at character "
                        f"{start} of column {self.c_col!r}"
                    )

    def preprocess(self, split: str, tokenizer, train: bool):
        dataset = self.raw[split]
        pad_on_right = tokenizer.padding_side == "right"
        padding = "max_length" if self.data_args.pad_to_max_length else False
        with_answers = self.a_col in dataset.column_names
        stride = self.doc_stride  # checked against max_seq_length by `tasks.lengths`

        def tokenize(batch: dict[str, list]) -> dict[str, list]:
            try:
                enc, sample_map, offsets_out = context_windows(
                    tokenizer, batch[self.q_col], batch[self.c_col], self.max_seq_length,
                    stride, padding,
                )  # fmt: skip
            except Exception as exc:  # e.g. a question longer than max_seq_length
                raise DataError(
                    f"{self.sources.get(split, split)}: cannot fit column {self.q_col!r} and "
                    f"windows of {self.c_col!r} into --max_seq_length {self.max_seq_length}: {exc}"
                ) from exc
            context_index = 1 if pad_on_right else 0
            example_ids = [batch["id"][sample] for sample in sample_map]
            out = dict(enc)
            if with_answers:
                spans = [
                    answer_token_span(
                        offsets,
                        enc.sequence_ids(i),
                        batch[self.a_col][sample_map[i]],
                        context_index,
                    )  # fmt: skip
                    for i, offsets in enumerate(enc["offset_mapping"])
                ]
                out["start_positions"] = [s for s, _ in spans]
                out["end_positions"] = [e for _, e in spans]
            if train:
                out.pop("offset_mapping")
            else:
                out["offset_mapping"] = offsets_out
                out["example_id"] = example_ids
            return out

        features = self.map_with_progress(
            dataset, tokenize, desc=f"Tokenizing {split}", remove_columns=dataset.column_names
        )
        extra = len(features) - len(dataset)
        if extra:
            logger.info(
                "%s: %d contexts longer than --max_seq_length %d became %d extra windows "
                "(doc_stride %d)",
                self.sources.get(split, split),
                len({*features["example_id"]}) if "example_id" in features.column_names else extra,
                self.max_seq_length,
                extra,
                stride,
            )
        self.truncated[split] = 0
        self.features[split] = features
        return features

    def compute_metrics(self, outputs: dict[str, np.ndarray], label_ids: Any, split: str) -> dict:
        predictions = self.predict_answers(outputs, split)
        references = {row["id"]: list(row[self.a_col]["text"]) for row in self.raw[split]}
        return squad_scores(predictions, references, self.task_args.version_2_with_negative)

    def predict_answers(self, outputs: dict[str, np.ndarray], split: str) -> dict[str, str]:
        features = self.features[split]
        feature_rows = [
            {"example_id": eid, "offset_mapping": off}
            for eid, off in zip(features["example_id"], features["offset_mapping"], strict=True)
        ]
        return postprocess_predictions(
            list(self.raw[split]),
            feature_rows,
            outputs["start_logits"],
            outputs["end_logits"],
            n_best_size=self.task_args.n_best_size,
            max_answer_length=self.task_args.max_answer_length,
            version_2=self.task_args.version_2_with_negative,
            null_score_diff_threshold=self.task_args.null_score_diff_threshold,
            context_column=self.c_col,
        )

    def primary_metric(self) -> str:
        return "f1"


def answer_token_span(offsets, sequence_ids, answers: dict, context_index: int) -> tuple[int, int]:
    """Token start/end of the first answer inside this window; (0, 0) ([CLS]) if absent."""
    if not answers["answer_start"]:
        return 0, 0
    start_char = answers["answer_start"][0]
    end_char = start_char + len(answers["text"][0])
    token_start = 0
    while sequence_ids[token_start] != context_index:
        token_start += 1
    token_end = len(sequence_ids) - 1
    while sequence_ids[token_end] != context_index:
        token_end -= 1
    if not (offsets[token_start][0] <= start_char and offsets[token_end][1] >= end_char):
        return 0, 0
    while token_start < len(offsets) and offsets[token_start][0] <= start_char:
        token_start += 1
    while offsets[token_end][1] >= end_char:
        token_end -= 1
    return token_start - 1, token_end + 1


def _prepare(raw, sources, data_args, task_args, *, sample=False) -> QuestionAnsweringTask:
    return QuestionAnsweringTask(SPEC, raw, sources, data_args, task_args, sample=sample)


SPEC = TaskSpec(
    name=QUESTION_ANSWERING,
    auto_class="AutoModelForQuestionAnswering",
    args_class=QuestionAnsweringArguments,
    distill_output_keys=("start_logits", "end_logits"),
    default_max_seq_length=384,
    prepare=_prepare,
    output_names=("start_logits", "end_logits"),
    primary_metrics=("f1", "exact_match"),
    metric_names=("exact_match", "exact", "f1", "HasAns_exact", "HasAns_f1", "NoAns_exact",
                  "NoAns_f1"),
    default_doc_stride=128,
    export_inputs="pair",
    architecture_suffix="ForQuestionAnswering",
    served_as="span",
    served_outputs=(("answer", "BYTES"),),
)  # fmt: skip
