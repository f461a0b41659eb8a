"""The sparse upstream pipeline's stages as plain functions: corpus -> prune -> evaluate -> card.

`sparse_upstream_pipeline` (pipelines/) runs each stage as a KFP step through
`sparse_transfer.pipeline.upstream_steps`; `zoo seed` runs the same stages in one process
(`build_upstream`), so the seeded upstream and a pipeline-built one are made the same way.
Every stage reads and writes folders:

    corpus/   train.txt, eval.txt (one sentence a line), corpus.json (source, counts, words)
    model/    the sparse upstream (HF checkpoint, recipe.yaml, sparsity.json), facts.json
    entry/    training/ + recipe/recipe.yaml + model.md: a zoo entry ready to push
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from sparse_transfer.embedded import corpus as corpora
from sparse_transfer.errors import DataError

CORPUS_SPEC = "corpus.json"
FACTS = "facts.json"


def _lines(path: Path) -> list[str]:
    return [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]


def write_corpus(
    source: str | list[str], out_dir: Path, *, train_samples: int, eval_samples: int, name: str = ""
) -> dict[str, Any]:
    """Splits a corpus (a source string or given sentences) into train / held-out files.

    Too few sentences are repeated to fill `train_samples` (tiny runs only; the card says so).
    """
    rows = corpora.read_corpus(source) if isinstance(source, str) else list(source)
    rows = [" ".join(r.split()) for r in rows if r.strip()]
    if len(rows) <= eval_samples:
        raise DataError(
            f"corpus {name or source}: {len(rows)} sentences, need more than {eval_samples}"
        )
    held_out, pool = rows[-eval_samples:], rows[:-eval_samples]
    repeated = len(pool) < train_samples
    train = (pool * (1 + train_samples // len(pool)))[:train_samples] if train_samples else pool
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "train.txt").write_text("\n".join(train) + "\n", encoding="utf-8")
    (out_dir / "eval.txt").write_text("\n".join(held_out) + "\n", encoding="utf-8")
    label = name or (source if isinstance(source, str) else "given sentences")
    spec = {
        "corpus": label,
        "description": corpora.describe(label),
        "train_sentences": len(train),
        "eval_sentences": len(held_out),
        "train_words": sum(len(s.split()) for s in train),
        "repeated": repeated,
    }
    (out_dir / CORPUS_SPEC).write_text(json.dumps(spec, indent=1))
    return spec


def _check_inputs(dense_dir: Path, corpus_dir: Path, settings) -> None:
    """Bad input fails here, in one line, before a model is loaded."""
    from sparse_transfer.embedded.upstream import upstream_recipe_path

    upstream_recipe_path(settings.recipe)
    for path, what in ((corpus_dir / "train.txt", "a folder written by `upstream corpus`"),
                       (corpus_dir / "eval.txt", "a folder written by `upstream corpus`"),
                       (dense_dir / "config.json", "a Hugging Face model folder")):  # fmt: skip
        if not path.is_file():
            raise DataError(f"{path}: missing ({path.parent} should be {what})")


def prune_stage(dense_dir: Path, corpus_dir: Path, out_dir: Path, settings, **kwargs) -> dict:
    from sparse_transfer.embedded.upstream import prune

    _check_inputs(dense_dir, corpus_dir, settings)
    facts = prune(dense_dir, out_dir, _lines(corpus_dir / "train.txt"), settings, **kwargs)
    facts["batch_size"], facts["max_length"] = settings.batch_size, settings.max_length
    facts["recipe_args"] = dict(settings.recipe_args)
    if os.environ.get("RANK", "0") == "0":  # torchrun: rank 0 wrote the model, it writes facts
        (out_dir / FACTS).write_text(json.dumps(facts, indent=1))
    return facts


def evaluate_stage(sparse_dir: Path, dense_dir: Path, corpus_dir: Path, probe: str = "") -> dict:
    from sparse_transfer.embedded.upstream_eval import evaluate_upstream

    facts = json.loads((sparse_dir / FACTS).read_text())
    return evaluate_upstream(
        sparse_dir, dense_dir, _lines(corpus_dir / "eval.txt"),
        max_length=facts["max_length"], sparsity=facts["target_sparsity"], probe=probe,
    )  # fmt: skip


def card_meta(
    facts: dict, metrics: dict, corpus: dict, *, parent: str, base_model: str, command: str
) -> dict:
    """The sparse upstream's card fields: what it saw, how it was pruned, how good it is."""
    return {
        "task": "feature-extraction",
        "dataset": corpus["corpus"],
        "sparsity": facts["sparsity"],
        "quantized": False,
        "metrics": metrics,
        "parent": parent,
        "recipe": "recipe/recipe.yaml",
        "recipe_name": facts["recipe"],
        "recipe_args": facts.get("recipe_args", {}),
        "training_command": command,
        "base_model": base_model,
        "corpus": corpus,
        "structure": facts["structure"],
        "method": facts["method"],
        "target_sparsity": facts["target_sparsity"],
        "overall_sparsity": facts["overall_sparsity"],
        "train_steps": facts["train_steps"],
        "train_samples": facts["train_samples"],
        "train_seconds": facts["train_seconds"],
        "mlm_head": facts["mlm_head"],
        "resumed_from": facts["resumed_from"],
        "description": f"Pre-sparsified upstream: every encoder Linear weight pruned to "
        f"{facts['sparsity']:.0%} ({facts['structure']}) by {facts['method']} while "
        + ("training the masked-LM loss and " if facts["mlm_head"] else "")
        + "distilling the dense model's hidden states; embeddings stay dense. Start sparse "
        "transfer learning from it.",
    }


def card_body(meta: dict, title: str) -> str:
    m, c = meta["metrics"], meta["corpus"]
    rows = [f"| {k} | {v} |" for k, v in m.items()]
    return "\n".join([
        f"# {title}", "", meta["description"], "",
        f"Corpus: {c['description']} - {c['train_sentences']} training sentences "
        f"({c['train_words']} words{', repeated to fill the schedule' if c['repeated'] else ''}), "
        f"{c['eval_sentences']} held out for the figures below.", "",
        f"Pruning: recipe `{meta['recipe_name']}` {json.dumps(meta['recipe_args'])} ({meta['method']}, {meta['structure']}, target "
        f"{meta['target_sparsity']:.0%}), {meta['train_steps']} steps over {meta['train_samples']} "
        f"sentences in {meta['train_seconds']} s"
        + (f", resumed from {meta['resumed_from']}" if meta["resumed_from"] else "") + ".", "",
        "| quality (held-out) | value |", "| --- | --- |", *rows, "",
        "```bash", meta["training_command"], "```", "",
    ])  # fmt: skip


def write_entry(sparse_dir: Path, entry: Path, meta: dict, title: str) -> Path:
    """Lays out a zoo entry (training/, recipe/, model.md) from the pruned model folder."""
    from sparse_transfer.zoo import ModelCard

    if entry.exists():
        shutil.rmtree(entry)
    shutil.copytree(sparse_dir, entry / "training", ignore=shutil.ignore_patterns(FACTS))
    (entry / "recipe").mkdir()
    shutil.copy2(sparse_dir / "recipe.yaml", entry / "recipe" / "recipe.yaml")
    (entry / "model.md").write_text(ModelCard(meta, card_body(meta, title)).render())
    return entry
