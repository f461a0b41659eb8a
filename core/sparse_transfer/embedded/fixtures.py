"""Tiny models and datasets the project makes offline, in seconds.

Used by the README's demo, the test suite and the embedded zoo's smoke
schedule: a BERT with a real WordPiece tokenizer over a small vocabulary, and
small labelled datasets whose labels are learnable from the words, so that a
few training steps move the metrics.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable
from pathlib import Path

from sparse_transfer.tasks.names import TEXT_CLASSIFICATION

POSITIVE = "good great excellent wonderful superb brilliant moving delightful charming fun".split()
NEGATIVE = "bad awful terrible boring dull poor weak tedious clumsy bland".split()
NEUTRAL = (
    "the a an this that movie film story plot cast acting script scene ending music "
    "was is were felt looked very quite rather really and but with of to in on it its "
    "director actor actress performance character characters visuals pacing dialogue"
).split()
ENTITIES = {
    "PER": "alice bob carol dave erin frank".split(),
    "LOC": "paris london berlin tokyo madrid rome".split(),
    "ORG": "acme globex initech umbrella hooli vandelay".split(),
}
QA_FILLER = "who where what lives works visited company city person met in at for".split()

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def vocabulary() -> list[str]:
    """Special tokens, punctuation, every fixture word, and a few subword pieces."""
    words: list[str] = []
    for group in (POSITIVE, NEGATIVE, NEUTRAL, QA_FILLER, *ENTITIES.values()):
        words.extend(group)
    pieces = ["##s", "##ed", "##ing", "##ly", "##er", "##est"]
    punct = list(".,!?;:'\"()-")
    seen: dict[str, None] = dict.fromkeys(SPECIAL_TOKENS + punct + words + pieces)
    return list(seen)


def write_tokenizer(directory: str | Path) -> None:
    """Writes a real BERT WordPiece tokenizer (all files) into `directory`."""
    from transformers import AutoTokenizer

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    vocab_file = directory / "vocab.txt"
    vocab_file.write_text("\n".join(vocabulary()) + "\n")
    # Loading from a folder holding only vocab.txt builds the fast WordPiece
    # tokenizer the same way across transformers 4.x and 5.x.
    (directory / "tokenizer_config.json").write_text(
        json.dumps({"tokenizer_class": "BertTokenizer", "do_lower_case": True})
    )
    tokenizer = AutoTokenizer.from_pretrained(str(directory))
    tokenizer.save_pretrained(str(directory))


def make_tiny_bert(
    directory: str | Path,
    task: str = TEXT_CLASSIFICATION,
    num_labels: int = 2,
    hidden_size: int = 64,
    num_layers: int = 2,
    sparsity: float = 0.0,
    seed: int = 0,
    id2label: dict[int, str] | None = None,
    problem_type: str | None = None,
) -> Path:
    """Creates and saves a tiny random BERT (and tokenizer) for `task`.

    Args:
        directory: where `save_pretrained` writes the model and tokenizer.
        task: a task name (its `TaskSpec.auto_class` builds the head).
        num_labels: head size for the classification tasks.
        hidden_size: 32-128 keeps tests fast.
        num_layers: encoder depth.
        sparsity: fraction of each prunable weight (Linear/Embedding `.weight`
            in the encoder and embeddings) set to exactly zero by magnitude,
            to stand in for a pre-sparsified upstream model.
        seed: torch seed for reproducible weights.
        id2label: optional label names for the head.
        problem_type: e.g. ``multi_label_classification`` or ``regression``.
    """
    import torch
    import transformers
    from transformers import BertConfig

    from sparse_transfer.tasks.registry import get_task

    torch.manual_seed(seed)
    directory = Path(directory)
    write_tokenizer(directory)
    config = BertConfig(
        vocab_size=len(vocabulary()),
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=max(1, hidden_size // 32),
        intermediate_size=hidden_size * 2,
        max_position_embeddings=512,
        num_labels=num_labels,
    )
    if id2label is not None:
        config.id2label = {int(k): v for k, v in id2label.items()}
        config.label2id = {v: int(k) for k, v in id2label.items()}
    if problem_type is not None:
        config.problem_type = problem_type
    model = getattr(transformers, get_task(task).auto_class).from_config(config)
    if sparsity > 0:
        prune_by_magnitude(model, sparsity, prefix="bert.")
    model.save_pretrained(str(directory))
    return directory


def prune_by_magnitude(model, sparsity: float, prefix: str = "") -> None:
    """Zeros the smallest-magnitude `sparsity` fraction of every prunable weight.

    Exactly ``round(sparsity * numel)`` zeros per tensor (ties broken by index),
    so tests can compare zero counts exactly.
    """
    import torch

    with torch.no_grad():
        for name, module in model.named_modules():
            if not name.startswith(prefix.rstrip(".")):
                continue
            if isinstance(module, (torch.nn.Linear, torch.nn.Embedding)):
                weight = module.weight
                k = round(sparsity * weight.numel())
                if k == 0:
                    continue
                order = weight.detach().abs().flatten().argsort(stable=True)
                flat = weight.data.view(-1)
                flat[order[:k]] = 0.0


def sentiment_rows(n: int, seed: int = 0) -> list[dict]:
    """Binary sentiment sentences; the label follows the sentiment words."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = i % 2
        words = rng.sample(NEUTRAL, 5) + rng.sample(POSITIVE if label else NEGATIVE, 2)
        rng.shuffle(words)
        rows.append({"sentence": " ".join(words) + " .", "label": label})
    return rows


def write_jsonl(rows: Iterable[dict], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        for row in rows:
            handle.write(json.dumps(row) + "\n")
    return path


def ner_rows(n: int, seed: int = 0) -> list[dict]:
    """CoNLL-style rows: ``tokens`` and string ``ner_tags`` (B-/I- PER, LOC, ORG, O).

    Entity words come only from `ENTITIES`, so the tags are learnable; some
    entities span two words (B-X I-X) to exercise entity boundaries.
    """
    rng = random.Random(seed)
    filler = NEUTRAL + QA_FILLER
    rows = []
    for _ in range(n):
        tokens: list[str] = []
        tags: list[str] = []
        for _ in range(rng.randint(2, 3)):
            words = rng.sample(filler, rng.randint(1, 3))
            tokens.extend(words)
            tags.extend(["O"] * len(words))
            kind = rng.choice(sorted(ENTITIES))
            span = rng.sample(ENTITIES[kind], 2 if rng.random() < 0.3 else 1)
            tokens.extend(span)
            tags.extend([f"B-{kind}"] + [f"I-{kind}"] * (len(span) - 1))
        tokens.append(".")
        tags.append("O")
        rows.append({"tokens": tokens, "ner_tags": tags})
    return rows


def squad_rows(n: int, seed: int = 0, unanswerable: float = 0.0, facts: int = 3) -> list[dict]:
    """SQuAD-style rows: ``id``, ``context``, ``question``, ``answers`` {text, answer_start}.

    Contexts state `facts` facts "PER works at ORG in LOC ."; questions ask for
    one part of one fact. With `unanswerable` > 0 that fraction asks about a
    person absent from the context (empty answers, SQuAD v2 style).
    """
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        people = rng.sample(ENTITIES["PER"], facts + 1)
        orgs = [rng.choice(ENTITIES["ORG"]) for _ in range(facts)]
        locs = [rng.choice(ENTITIES["LOC"]) for _ in range(facts)]
        sentences = [
            f"{p} works at {o} in {loc} ." for p, o, loc in zip(people, orgs, locs, strict=False)
        ]
        context = " ".join(sentences)
        k = rng.randrange(facts)
        starts = [sum(len(s) + 1 for s in sentences[:j]) for j in range(facts)]
        if rng.random() < unanswerable:
            question = f"where {people[facts]} works ?"
            answers: dict = {"text": [], "answer_start": []}
        else:
            kind = rng.choice(["who", "where", "what"])
            if kind == "who":
                question = f"who works at {orgs[k]} in {locs[k]} ?"
                text, offset = people[k], 0
            elif kind == "where":
                question = f"where {people[k]} works ?"
                text = locs[k]
                offset = len(f"{people[k]} works at {orgs[k]} in ")
            else:
                question = f"what company {people[k]} works at ?"
                text = orgs[k]
                offset = len(f"{people[k]} works at ")
            answers = {"text": [text], "answer_start": [starts[k] + offset]}
        rows.append({"id": f"q{i}", "context": context, "question": question, "answers": answers})
    return rows


MULTI_LABEL_TOPICS = {
    "praise": POSITIVE,
    "complaint": NEGATIVE,
    "person": ENTITIES["PER"],
    "place": ENTITIES["LOC"],
}


def multilabel_rows(n: int, seed: int = 0) -> list[dict]:
    """GoEmotions-style rows: ``text`` and ``labels`` (a list of 1-2 topic names).

    A topic is present exactly when one of its words is in the text.
    """
    rng = random.Random(seed)
    names = sorted(MULTI_LABEL_TOPICS)
    rows = []
    for _ in range(n):
        chosen = sorted(rng.sample(names, rng.randint(1, 2)))
        words = rng.sample(NEUTRAL, 4)
        for topic in chosen:
            words.extend(rng.sample(MULTI_LABEL_TOPICS[topic], 2))
        rng.shuffle(words)
        rows.append({"text": " ".join(words), "labels": chosen})
    return rows


def pair_rows(
    n: int,
    seed: int = 0,
    first: str = "sentence1",
    second: str = "sentence2",
    num_labels: int = 3,
) -> list[dict]:
    """Sentence pairs whose label follows the sentiment of both sentences.

    num_labels=3 (MNLI order entailment/neutral/contradiction): same polarity,
    no sentiment in the second, opposite polarity. num_labels=2 (QQP/MRPC
    order): 1 when both share a polarity, else 0. num_labels=1: a float
    similarity score in [0, 5] (STS-B style regression).
    """
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        polarity = rng.random() < 0.5
        words_a = rng.sample(NEUTRAL, 4) + rng.sample(POSITIVE if polarity else NEGATIVE, 2)
        rng.shuffle(words_a)
        if num_labels == 3:
            label = i % 3
        elif num_labels == 2:
            label = i % 2
        else:
            label = round(rng.uniform(0, 5), 2)
        if num_labels == 3 and label == 1:
            words_b = rng.sample(NEUTRAL, 5)
        else:
            same = (label in (0,) and num_labels == 3) or (num_labels == 2 and label == 1)
            if num_labels == 1:
                same = label >= 2.5
            pool = POSITIVE if polarity == same else NEGATIVE
            words_b = rng.sample(NEUTRAL, 3) + rng.sample(pool, 2)
        rng.shuffle(words_b)
        rows.append(
            {first: " ".join(words_a) + " .", second: " ".join(words_b) + " .", "label": label}
        )
    return rows
