"""Tiny-model training helpers shared by the modifier / trainer tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer, TrainingArguments

from sparse_transfer.embedded.fixtures import make_tiny_bert, sentiment_rows
from sparse_transfer.modifiers import modifier_class
from sparse_transfer.training.trainer import SparseTrainer


def mod(name: str, **fields: Any):
    """A validated modifier built the way the recipe parser builds it."""
    return modifier_class(name).from_fields(fields)


class ListDataset(torch.utils.data.Dataset):
    def __init__(self, rows: list[dict]):
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict:
        return self.rows[i]


def tiny_model(tmp_path: Path, sparsity: float = 0.0, hidden_size: int = 32, seed: int = 0):
    directory = make_tiny_bert(
        tmp_path / f"model{seed}", hidden_size=hidden_size, sparsity=sparsity, seed=seed
    )
    model = AutoModelForSequenceClassification.from_pretrained(str(directory))
    tokenizer = AutoTokenizer.from_pretrained(str(directory))
    return model, tokenizer


def tiny_dataset(tokenizer, n: int = 24, max_length: int = 16) -> ListDataset:
    rows = sentiment_rows(n)
    enc = tokenizer(
        [r["sentence"] for r in rows], padding="max_length", truncation=True, max_length=max_length
    )
    items = []
    for i, r in enumerate(rows):
        item = {k: torch.tensor(v[i]) for k, v in enc.items()}
        item["labels"] = torch.tensor(r["label"])
        items.append(item)
    return ListDataset(items)


def make_trainer(
    tmp_path: Path,
    model,
    dataset,
    recipe=None,
    teacher=None,
    batch_size: int = 4,
    grad_accum: int = 1,
    epochs: float = 1.0,
    **arg_overrides: Any,
) -> SparseTrainer:
    args = TrainingArguments(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=batch_size,
        gradient_accumulation_steps=grad_accum,
        num_train_epochs=epochs,
        learning_rate=arg_overrides.pop("learning_rate", 1e-3),
        weight_decay=arg_overrides.pop("weight_decay", 0.0),
        save_strategy=arg_overrides.pop("save_strategy", "no"),
        report_to=[],
        logging_strategy="no",
        disable_tqdm=True,
        use_cpu=True,
        seed=0,
        dataloader_num_workers=0,
        **arg_overrides,
    )
    return SparseTrainer(
        model=model, args=args, train_dataset=dataset, recipe=recipe, teacher=teacher
    )


def zero_counts(model) -> dict[str, int]:
    from sparse_transfer.modifiers._masks import prunable_params

    return {n: int((p == 0).sum()) for n, (p, _) in prunable_params(model).items()}
