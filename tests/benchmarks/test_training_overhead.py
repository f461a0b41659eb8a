"""Seconds per optimizer step: plain HF vs masks vs masks+QAT vs the full SST-2 recipe.

Run: ``.venv/bin/python -m pytest -q -m benchmark tests/benchmarks/test_training_overhead.py -s``
(env: BENCH_HIDDEN, BENCH_LAYERS, BENCH_BATCH, BENCH_SEQ, BENCH_STEPS). Each variant trains
the same 90%-sparse model on the same batches; the per-step median excludes warm-up
steps. "full" runs two epochs: epoch 1 pays for teacher forwards, epoch 2 is served
from the teacher cache (as every later epoch of a real run is).
"""

from __future__ import annotations

import json
import os
import statistics
import time

import pytest
import torch
from transformers import (
    AutoModelForSequenceClassification,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)

from sparse_transfer.embedded.fixtures import make_tiny_bert
from sparse_transfer.modifiers import known_modifiers
from sparse_transfer.training.trainer import SparseTrainer
from tests.unit._train_utils import ListDataset, mod

pytestmark = pytest.mark.benchmark

HIDDEN = int(os.environ.get("BENCH_HIDDEN", "256"))
LAYERS = int(os.environ.get("BENCH_LAYERS", "4"))
BATCH = int(os.environ.get("BENCH_BATCH", "16"))
SEQ = int(os.environ.get("BENCH_SEQ", "64"))
STEPS = int(os.environ.get("BENCH_STEPS", "10"))
WARMUP = 2


class _Timer(TrainerCallback):
    def __init__(self):
        self.times: list[float] = []
        self._t = 0.0

    def on_step_begin(self, args, state, control, **kwargs):
        self._t = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.times.append(time.perf_counter() - self._t)


def _data(vocab: int) -> ListDataset:
    g = torch.Generator().manual_seed(0)
    rows = []
    for i in range(BATCH * STEPS):
        rows.append({
            "input_ids": torch.randint(5, vocab, (SEQ,), generator=g),
            "attention_mask": torch.ones(SEQ, dtype=torch.long),
            "token_type_ids": torch.zeros(SEQ, dtype=torch.long),
            "labels": torch.tensor(i % 2),
        })  # fmt: skip
    return ListDataset(rows)


def _run(tmp_path, name, recipe=None, teacher=False, epochs=1.0):
    path = make_tiny_bert(tmp_path / "m", hidden_size=HIDDEN, num_layers=LAYERS, sparsity=0.9)
    model = AutoModelForSequenceClassification.from_pretrained(str(path))
    args = TrainingArguments(
        output_dir=str(tmp_path / name), per_device_train_batch_size=BATCH, num_train_epochs=epochs,
        learning_rate=1e-4, weight_decay=0.01, save_strategy="no", report_to=[], logging_strategy="no",
        disable_tqdm=True, use_cpu=True, seed=0, dataloader_num_workers=0,
    )  # fmt: skip
    data = _data(model.config.vocab_size)
    timer = _Timer()
    if recipe is None:
        trainer = Trainer(model=model, args=args, train_dataset=data, callbacks=[timer])
    else:
        t_model = AutoModelForSequenceClassification.from_pretrained(str(path)) if teacher else None
        trainer = SparseTrainer(model=model, args=args, train_dataset=data, recipe=recipe, teacher=t_model,
                                callbacks=[timer])  # fmt: skip
    trainer.train()
    per_epoch = [timer.times[i * STEPS : (i + 1) * STEPS] for i in range(int(epochs))]
    return [statistics.median(t[WARMUP:]) for t in per_epoch]


def test_training_overhead(tmp_path):
    base = [
        mod("EpochRangeModifier", start_epoch=0.0, end_epoch=1.0),
        mod("LearningRateFunctionModifier", start_epoch=0.0, end_epoch=1.0, lr_func="linear",
            init_lr=1e-4, final_lr=0.0),
        mod("SetWeightDecayModifier", start_epoch=0.0, weight_decay=0.01),
        mod("ConstantPruningModifier", start_epoch=0.0, params="__ALL_PRUNABLE__"),
    ]  # fmt: skip
    results = {"plain": _run(tmp_path, "plain")[0], "masks": _run(tmp_path, "masks", base)[0]}
    if "QuantizationModifier" in known_modifiers():

        def qat(end):
            return mod("QuantizationModifier", start_epoch=0.0, disable_quantization_observer_epoch=end,
                       freeze_bn_stats_epoch=end, quantize_embeddings=1, quantize_linear_activations=0,
                       exclude_module_types=["LayerNorm", "Tanh"],
                       submodules=["bert.embeddings", "bert.encoder", "bert.pooler", "classifier"])  # fmt: skip

        results["masks+qat"] = _run(tmp_path, "qat", [*base, qat(1.0)])[0]
        full = [
            mod("EpochRangeModifier", start_epoch=0.0, end_epoch=2.0),
            *base[1:], qat(2.0),
            mod("DistillationModifier", hardness=1.0, temperature=2.0, distill_output_keys=["logits"]),
        ]  # fmt: skip
        first, cached = _run(tmp_path, "full", full, teacher=True, epochs=2.0)
        results["full (teacher forward)"] = first
        results["full (teacher cached)"] = cached
    plain = results["plain"]
    report = {
        k: {"s_per_step": round(v, 4), "overhead_pct": round(100 * (v / plain - 1), 1)}
        for k, v in results.items()
    }
    print(
        json.dumps(
            {"hidden": HIDDEN, "layers": LAYERS, "batch": BATCH, "seq": SEQ, **report}, indent=2
        )
    )
    assert plain > 0
