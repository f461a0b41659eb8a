"""How good a sparse upstream is, against the dense model it came from.

Three views, each cheap enough for a pipeline step:

* embeddings: cosine of mean-pooled sentence embeddings to the dense model's (and the same
  for one-shot magnitude pruning to the same sparsity, the no-training baseline);
* masked-LM: accuracy and perplexity on held-out sentences with a fixed 15% masking, where
  the checkpoint has an MLM head (all-MiniLM-L6-v2 has none: then these are absent);
* a transfer probe: logistic regression on frozen mean-pooled embeddings of a small labelled
  set (``sentence``/``text`` + ``label``), accuracy on its held-out part, for sparse and dense.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

from sparse_transfer.errors import DataError
from sparse_transfer.validation import require_finite

log = logging.getLogger(__name__)
NAMED_PROBES = ("fixture_sentiment", "movie_reviews")


def embed(model, tokenizer, sentences: list[str], max_length: int, batch: int = 64):
    """Mean-pooled, L2-normalised sentence embeddings (how all-MiniLM-L6-v2 is used)."""
    import torch

    encoder = getattr(model, "bert", model)
    device = next(encoder.parameters()).device
    out = []
    for i in range(0, len(sentences), batch):
        enc = tokenizer(
            sentences[i : i + batch], truncation=True, max_length=max_length,
            padding=True, return_tensors="pt",
        )  # fmt: skip
        enc = {k: v.to(device) for k, v in enc.items()}
        with torch.no_grad():
            hidden = encoder(**enc).last_hidden_state
        mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
        out.append(torch.nn.functional.normalize(pooled, dim=-1).cpu())
    return torch.cat(out)


def _load(model_dir: Path):
    from transformers import AutoModel, AutoModelForMaskedLM, AutoTokenizer

    from sparse_transfer.embedded.upstream_objective import has_mlm_head, load_quietly

    head = has_mlm_head(model_dir)
    model = load_quietly(AutoModelForMaskedLM if head else AutoModel, model_dir)
    return model, AutoTokenizer.from_pretrained(str(model_dir)), head


def embedding_metrics(
    sparse_dir: Path, dense_dir: Path, sentences: list[str], max_length: int, sparsity: float
) -> dict[str, Any]:
    import copy

    from sparse_transfer.embedded.fixtures import prune_by_magnitude

    sparse, tok, _ = _load(sparse_dir)
    dense, _, _ = _load(dense_dir)
    oneshot = copy.deepcopy(getattr(dense, "bert", dense))
    prune_by_magnitude(oneshot, sparsity, prefix="encoder.")
    ref = embed(dense, tok, sentences, max_length)
    return {
        "eval_cosine_to_dense": round(
            float((embed(sparse, tok, sentences, max_length) * ref).sum(-1).mean()), 4
        ),
        "eval_cosine_to_dense_oneshot_magnitude": round(
            float((embed(oneshot.eval(), tok, sentences, max_length) * ref).sum(-1).mean()), 4
        ),
        "eval_samples": len(sentences),
    }


def mlm_metrics(model, tokenizer, sentences: list[str], max_length: int, seed: int = 0) -> dict:
    """Masked-token accuracy and perplexity with a seeded 15% masking (same masks for all models)."""
    import torch
    from transformers import DataCollatorForLanguageModeling

    collator = DataCollatorForLanguageModeling(tokenizer, mlm=True, mlm_probability=0.15)
    rows = [dict(tokenizer(s, truncation=True, max_length=max_length)) for s in sentences]
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        batch = collator(rows)
    finally:
        torch.random.set_rng_state(state)
    labels = batch.pop("labels")
    if not bool((labels != -100).any()):
        raise DataError(
            f"MLM evaluation: no token of the {len(rows)} held-out sentences was masked; hold out more text"
        )
    with torch.no_grad():
        logits = model(**batch).logits
    picked = labels != -100
    loss = torch.nn.functional.cross_entropy(logits[picked], labels[picked])
    accuracy = (logits[picked].argmax(-1) == labels[picked]).float().mean()
    return {
        "mlm_accuracy": round(float(accuracy), 4),
        "mlm_perplexity": round(float(math.exp(min(float(loss), 50.0))), 4),
        "mlm_masked_tokens": int(picked.sum()),
    }


def probe_rows(source: str) -> tuple[list[dict], list[dict]]:
    """(train, test) rows of the transfer probe.

    ``fixture_sentiment`` (tiny synthetic), ``movie_reviews`` (1,000 pooled training rows and
    the 500-row Rotten Tomatoes validation split of `movie_reviews.make_splits`), or a folder
    holding train.jsonl and validation.jsonl.
    """
    if source == "fixture_sentiment":
        from sparse_transfer.embedded.fixtures import sentiment_rows

        return sentiment_rows(96, seed=3), sentiment_rows(48, seed=4)
    if source == "movie_reviews":
        import tempfile

        from sparse_transfer.embedded.movie_reviews import make_splits

        with tempfile.TemporaryDirectory() as tmp:
            make_splits(Path(tmp) / "splits", validation_size=500, train_size=1000)
            read = [
                Path(tmp) / "splits" / n
                for n in ("train.jsonl", "validation_rotten_tomatoes.jsonl")
            ]
            return tuple(
                [json.loads(ln) for ln in f.read_text().splitlines() if ln.strip()] for f in read
            )  # type: ignore[return-value]
    folder = Path(source)
    files = [folder / "train.jsonl", folder / "validation.jsonl"]
    for f in files:
        if not f.is_file():
            raise DataError(
                f"probe data: {f}: missing (a folder with train.jsonl, validation.jsonl)"
            )
    return tuple([json.loads(ln) for ln in f.read_text().splitlines() if ln.strip()] for f in files)  # type: ignore[return-value]


def probe_accuracy(model, tokenizer, train: list[dict], test: list[dict], max_length: int) -> float:
    """Logistic regression on frozen embeddings: accuracy on `test`."""
    from sklearn.linear_model import LogisticRegression

    def split(rows):
        text = [r.get("sentence", r.get("text")) for r in rows]
        if any(not isinstance(t, str) for t in text):
            raise DataError("probe data: every row needs a 'sentence' or 'text' string")
        return embed(model, tokenizer, text, max_length).numpy(), [r["label"] for r in rows]

    (x, y), (xt, yt) = split(train), split(test)
    classifier = LogisticRegression(max_iter=2000, C=10.0).fit(x, y)
    return round(float(classifier.score(xt, yt)), 4)


def _probe(probe: str, sparse, dense, tok, max_length: int) -> dict[str, Any]:
    try:
        train, test = probe_rows(probe)
    except DataError as exc:
        if probe not in NAMED_PROBES:
            raise
        # a named probe whose data package is not installed (e.g. the image): said, not fatal
        log.warning("transfer probe %r skipped: %s", probe, exc)
        return {"probe_skipped": str(exc)[:200]}
    return {
        "probe_accuracy": probe_accuracy(sparse, tok, train, test, max_length),
        "dense_probe_accuracy": probe_accuracy(dense, tok, train, test, max_length),
        "probe_samples": len(test),
    }


def evaluate_upstream(
    sparse_dir: Path,
    dense_dir: Path,
    sentences: list[str],
    *,
    max_length: int,
    sparsity: float,
    probe: str = "",
) -> dict[str, Any]:
    """Every quality figure of a sparse upstream, with the dense model's beside it."""
    metrics = embedding_metrics(sparse_dir, dense_dir, sentences, max_length, sparsity)
    sparse, tok, sparse_head = _load(sparse_dir)
    dense, _, dense_head = _load(dense_dir)
    if sparse_head and dense_head:
        metrics.update(mlm_metrics(sparse, tok, sentences, max_length))
        metrics.update(
            {
                f"dense_{k}": v
                for k, v in mlm_metrics(dense, tok, sentences, max_length).items()
                if k != "mlm_masked_tokens"
            }
        )
    if probe:
        metrics.update(_probe(probe, sparse, dense, tok, max_length))
    for name, value in metrics.items():
        require_finite(value, f"upstream metric {name}")
    return metrics
