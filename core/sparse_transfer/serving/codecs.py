"""Per-task codecs: request instances -> model features -> predictions.

Tokenisation uses the same tokenizer call as the task's ``preprocess`` (same
truncation and ``max_length``), the forward pass is `sparse_transfer.tasks.predict.predict_numpy`
(the ONNX evaluation loop of ``sparse-transfer evaluate``) and the decoding is the
task's: argmax / sigmoid threshold as ``predictions_to_rows``, the first subword of
each word as the NER metrics read it, `best_spans` (what `postprocess_predictions` reads) for answers. So a
served prediction equals the one ``evaluate`` scores; only padding differs (per batch
here, to ``max_seq_length`` there), which moves scores by float rounding, not labels.

Instances are validated first (`InputError`, a 400), one request at a time, so a
bad request never fails the batch it would have joined.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from sparse_transfer.errors import SparseTransferError


class InputError(SparseTransferError):
    """A request the server refuses with 400: names the instance, field and problem."""


@dataclass
class Prepared:
    """One batch of validated instances turned into model rows."""

    instances: list[dict[str, Any]]
    rows: list[dict[str, list[int]]]
    meta: list[dict[str, Any]]


def _softmax(x: np.ndarray) -> np.ndarray:
    z = x - x.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x.astype(np.float64)))


class Codec:
    """Base: field checks shared by every task."""

    kind: str = ""  # the `TaskSpec.served_as` this codec serves
    task: str = ""  # the task's name, set from its spec when loaded (for messages)
    typed_outputs: tuple[tuple[str, str], ...] = ()  # `TaskSpec.served_outputs`
    fields: tuple[str, ...] = ()
    required: tuple[str, ...] = ()
    output_names: tuple[str, ...] = ("logits",)

    def __init__(self, tokenizer, config, options, max_seq_length: int) -> None:
        self.tokenizer = tokenizer
        self.config = config
        self.options = options
        self.max_seq_length = max_seq_length
        id2label = getattr(config, "id2label", None) or {}
        ordered = sorted(id2label.items(), key=lambda kv: int(kv[0]))
        self.labels = [str(v) for _, v in ordered] or None

    # -- validation --
    def text(self, value: Any, where: str, field: str) -> str:
        if not isinstance(value, str):
            raise InputError(
                f"{where}: field {field!r} must be a string, got {type(value).__name__}"
            )
        if not value.strip():
            raise InputError(f"{where}: field {field!r} is empty")
        if len(value) > self.options.max_text_chars:
            raise InputError(
                f"{where}: field {field!r} has {len(value)} characters; the limit is "
                f"{self.options.max_text_chars} (--max_text_chars)"
            )
        return value

    def check(self, instance: Any, index: int) -> dict[str, Any]:
        """One instance (a dict, or a bare string for the first field) -> a checked dict."""
        where = f"instance {index}"
        if isinstance(instance, str) and len(self.required) == 1:
            instance = {self.required[0]: instance}
        if not isinstance(instance, dict):
            raise InputError(
                f"{where}: expected an object with {', '.join(self.required)} for {self.task}, "
                f"got {type(instance).__name__}"
            )
        unknown = sorted(set(instance) - set(self.fields))
        if unknown:
            raise InputError(
                f"{where}: unknown field(s) {', '.join(map(repr, unknown))} for {self.task}; "
                f"accepted: {', '.join(self.fields)}"
            )
        missing = [f for f in self.required if f not in instance]
        if missing:
            raise InputError(f"{where}: missing field(s) {', '.join(map(repr, missing))}")
        return {k: self.text(v, where, k) for k, v in instance.items()}

    def check_all(self, instances: Any) -> list[dict[str, Any]]:
        if not isinstance(instances, list):
            raise InputError(f"expected a list of instances, got {type(instances).__name__}")
        if not instances:
            raise InputError("no instances: send at least one")
        if len(instances) > self.options.max_instances:
            raise InputError(
                f"{len(instances)} instances in one request; the limit is "
                f"{self.options.max_instances} (--max_instances)"
            )
        return [self.check(inst, i) for i, inst in enumerate(instances)]

    # -- model --
    def collator(self):
        from transformers import DataCollatorWithPadding

        return DataCollatorWithPadding(self.tokenizer, return_tensors="np")

    def encode(self, instances: list[dict[str, Any]]) -> Prepared:
        raise NotImplementedError

    def decode(self, prepared: Prepared, outputs: dict[str, np.ndarray]) -> list[dict[str, Any]]:
        raise NotImplementedError

    def run(self, forward, instances: list[dict[str, Any]], batch_size: int) -> list[dict]:
        """Encodes, runs `forward` over the rows in chunks of `batch_size`, decodes."""
        from sparse_transfer.tasks.predict import predict_numpy

        prepared = self.encode(instances)
        outputs, _ = predict_numpy(
            forward,
            prepared.rows,
            self.collator(),
            batch_size,
            self.output_names,
            desc="serving",
        )
        return self.decode(prepared, outputs)

    @staticmethod
    def model_row(enc, i: int) -> dict[str, list[int]]:
        keys = ("input_ids", "attention_mask", "token_type_ids")
        return {k: enc[k][i] for k in keys if k in enc}


class TextClassificationCodec(Codec):
    """``{"text": ..., "text_pair": ...?}`` -> label and scores (or labels, or a value)."""

    kind = "sequence"
    fields = ("text", "text_pair")
    required = ("text",)

    def __init__(self, tokenizer, config, options, max_seq_length: int) -> None:
        super().__init__(tokenizer, config, options, max_seq_length)
        self.problem_type = getattr(config, "problem_type", None) or (
            "regression" if config.num_labels == 1 else "single_label_classification"
        )

    def encode(self, instances):
        # as TextClassificationTask.preprocess: tokenizer(*texts, max_length, truncation=True).
        # Singles and pairs are tokenised apart: a single must not become a pair with an
        # empty second text because a pair request shares its batch.
        rows: list = [None] * len(instances)
        meta: list = [None] * len(instances)
        for paired in (False, True):
            index = [i for i, inst in enumerate(instances) if ("text_pair" in inst) == paired]
            if not index:
                continue
            texts = [[instances[i]["text"] for i in index]]
            if paired:
                texts.append([instances[i]["text_pair"] for i in index])
            enc = self.tokenizer(*texts, max_length=self.max_seq_length, truncation=True)
            for j, i in enumerate(index):
                rows[i] = self.model_row(enc, j)
                meta[i] = {"truncated": bool(enc.encodings[j].overflowing)}
        return Prepared(instances, rows, meta)

    def decode(self, prepared, outputs):
        logits = np.asarray(outputs["logits"], dtype=np.float64)
        out = []
        if self.problem_type == "regression":
            for value, m in zip(np.squeeze(logits, -1).reshape(-1), prepared.meta, strict=True):
                out.append({"value": float(value), **m})
            return out
        names = self.labels or [str(i) for i in range(logits.shape[-1])]
        if self.problem_type == "multi_label_classification":
            thr = self.options.multi_label_threshold
            for p, m in zip(_sigmoid(logits), prepared.meta, strict=True):
                out.append(
                    {
                        "labels": [names[i] for i in np.flatnonzero(p > thr)],
                        "scores": {n: float(s) for n, s in zip(names, p, strict=True)},
                        **m,
                    }
                )
            return out
        for p, m in zip(_softmax(logits), prepared.meta, strict=True):
            best = int(np.argmax(p))
            out.append(
                {
                    "label": names[best],
                    "score": float(p[best]),
                    "scores": {n: float(s) for n, s in zip(names, p, strict=True)},
                    **m,
                }
            )
        return out


class TokenClassificationCodec(Codec):
    """``{"text": ...}`` (split on whitespace) or ``{"tokens": [...]}`` -> tags and entities."""

    kind = "tokens"
    fields = ("text", "tokens")
    required = ("text",)

    def check(self, instance, index):
        if isinstance(instance, dict) and "tokens" in instance:
            where = f"instance {index}"
            unknown = sorted(set(instance) - {"tokens"})
            if unknown:
                raise InputError(f"{where}: send 'tokens' or 'text', not both ({unknown})")
            words = instance["tokens"]
            if not isinstance(words, list) or not words:
                raise InputError(f"{where}: field 'tokens' must be a non-empty list of words")
            for j, w in enumerate(words):
                self.text(w, where, f"tokens[{j}]")
            if sum(len(w) for w in words) > self.options.max_text_chars:
                raise InputError(
                    f"{where}: field 'tokens' is longer than --max_text_chars "
                    f"{self.options.max_text_chars}"
                )
            return {"tokens": list(words)}
        return super().check(instance, index)

    def encode(self, instances):
        words, spans = [], []
        for inst in instances:
            if "tokens" in inst:
                ws = inst["tokens"]
                starts, pos = [], 0
                for w in ws:
                    starts.append(pos)
                    pos += len(w) + 1
                spans.append([(s, s + len(w)) for s, w in zip(starts, ws, strict=True)])
            else:
                ws, sp, pos = [], [], 0
                text = inst["text"]
                for w in text.split():
                    start = text.index(w, pos)
                    ws.append(w)
                    sp.append((start, start + len(w)))
                    pos = start + len(w)
                spans.append(sp)
            words.append(ws)
        # as TokenClassificationTask.preprocess
        enc = self.tokenizer(
            words, is_split_into_words=True, truncation=True, max_length=self.max_seq_length
        )
        meta = []
        for i, e in enumerate(enc.encodings):
            first: dict[int, int] = {}
            for pos, w in enumerate(enc.word_ids(i)):
                if w is not None and w not in first:
                    first[w] = pos
            meta.append(
                {
                    "words": words[i],
                    "spans": spans[i],
                    "first": first,
                    "truncated": bool(e.overflowing),
                }
            )
        rows = [self.model_row(enc, i) for i in range(len(instances))]
        return Prepared(instances, rows, meta)

    def collator(self):
        from transformers import DataCollatorForTokenClassification

        return DataCollatorForTokenClassification(self.tokenizer, return_tensors="np")

    def decode(self, prepared, outputs):
        logits = np.asarray(outputs["logits"], dtype=np.float64)
        names = self.labels or [str(i) for i in range(logits.shape[-1])]
        out = []
        for row, m in zip(logits, prepared.meta, strict=True):
            tags, scores = [], []
            for w in range(len(m["words"])):
                pos = m["first"].get(w)
                if pos is None:  # truncated away: no prediction, as evaluate scores none
                    break
                p = _softmax(row[pos][: len(names)])
                k = int(np.argmax(p))
                tags.append(names[k])
                scores.append(float(p[k]))
            out.append(
                {
                    "tags": tags,
                    "entities": entities(m["words"], m["spans"], tags, scores),
                    "truncated": m["truncated"],
                }
            )
        return out


def entities(words, spans, tags, scores) -> list[dict[str, Any]]:
    """IOB tags -> entity spans (``B-X`` starts, ``I-X`` continues X, else a new one)."""
    found: list[dict[str, Any]] = []
    current = None
    for w, tag in enumerate(tags):
        prefix, _, kind = tag.partition("-")
        if tag == "O" or not kind:
            current = None
            continue
        if prefix == "I" and current is not None and current["entity"] == kind:
            current["end"] = spans[w][1]
            current["words"].append(words[w])
            current["_scores"].append(scores[w])
            continue
        current = {
            "entity": kind,
            "start": spans[w][0],
            "end": spans[w][1],
            "words": [words[w]],
            "_scores": [scores[w]],
        }
        found.append(current)
    for e in found:
        e["score"] = float(np.mean(e.pop("_scores")))
        e["word"] = " ".join(e.pop("words"))
    return found


class QuestionAnsweringCodec(Codec):
    """``{"question": ..., "context": ...}`` -> the answer span: its text (``""``: no
    answer), character ``start``/``end`` in the context, and its start+end logit score."""

    kind = "span"
    fields = ("question", "context")
    required = ("question", "context")
    output_names = ("start_logits", "end_logits")

    def __init__(self, tokenizer, config, options, max_seq_length: int) -> None:
        super().__init__(tokenizer, config, options, max_seq_length)
        if options.doc_stride >= max_seq_length:
            from sparse_transfer.serving.options import ServingError

            raise ServingError(
                f"--doc_stride {options.doc_stride} must be smaller than max_seq_length "
                f"{max_seq_length} (as evaluate requires)"
            )

    def check(self, instance, index):
        checked = super().check(instance, index)
        # The question plus [CLS] [SEP] ... [SEP] must leave a context window wider than the
        # stride, or the tokenizer cannot cut windows: refuse this request alone, up front.
        question = len(self.tokenizer(checked["question"].lstrip())["input_ids"])
        window = self.max_seq_length - question - 1
        if window <= self.options.doc_stride:
            raise InputError(
                f"instance {index}: field 'question' takes {question} of the {self.max_seq_length} "
                f"tokens, leaving {max(window, 0)} for the context windows (--doc_stride "
                f"{self.options.doc_stride}); shorten the question"
            )
        return checked

    def encode(self, instances):
        from sparse_transfer.tasks.question_answering import context_windows

        questions = [i["question"] for i in instances]
        contexts = [i["context"] for i in instances]
        try:  # the windows evaluate cuts (doc_stride overlap)
            enc, sample_map, offsets = context_windows(
                self.tokenizer, questions, contexts, self.max_seq_length, self.options.doc_stride
            )
        except Exception as exc:  # a question longer than max_seq_length
            raise InputError(
                f"cannot fit the question and windows of the context into {self.max_seq_length} "
                f"tokens: {exc}"
            ) from None
        meta = [
            {"example_id": str(sample), "offset_mapping": window}
            for sample, window in zip(sample_map, offsets, strict=True)
        ]
        rows = [self.model_row(enc, i) for i in range(len(meta))]
        return Prepared(instances, rows, meta)

    def decode(self, prepared, outputs):
        from sparse_transfer.tasks.question_answering import best_spans

        examples = [{"id": str(i), **inst} for i, inst in enumerate(prepared.instances)]
        spans = best_spans(
            examples,
            prepared.meta,
            np.asarray(outputs["start_logits"]),
            np.asarray(outputs["end_logits"]),
            n_best_size=self.options.n_best_size,
            max_answer_length=self.options.max_answer_length,
            version_2=self.options.version_2_with_negative,
            null_score_diff_threshold=self.options.null_score_diff_threshold,
        )
        windows: dict[str, int] = {}
        for m in prepared.meta:
            windows[m["example_id"]] = windows.get(m["example_id"], 0) + 1
        return [
            {
                "answer": spans[e["id"]]["text"],
                "start": spans[e["id"]]["start"],
                "end": spans[e["id"]]["end"],
                "score": spans[e["id"]]["score"],
                "windows": windows.get(e["id"], 0),
            }
            for e in examples
        ]


CODECS = {
    c.kind: c for c in (TextClassificationCodec, TokenClassificationCodec, QuestionAnsweringCodec)
}


def codec_for(spec, tokenizer, config, options, max_seq_length: int) -> Codec:
    """The codec serving `spec`'s task, told the task's name and typed outputs."""
    codec = CODECS[spec.served_as](tokenizer, config, options, max_seq_length)
    codec.task, codec.typed_outputs = spec.name, tuple(spec.served_outputs)
    return codec
