"""What both sides of the SparseML differential share: model, data, optimizer, trace.

Imported by `run_sparseml.py` (SparseML's venv) and by
`tests/integration/test_sparseml_diff.py` (this project's venv), so it uses
only torch, transformers and numpy. Same model (dropout off, eager attention),
same batches in the same order, same AdamW groups (HF's: no decay for bias and
LayerNorm), and the same records per step.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import torch

NO_DECAY = ("bias", "LayerNorm.weight")


def load_model(directory: str):
    from transformers import AutoModelForSequenceClassification

    return AutoModelForSequenceClassification.from_pretrained(
        directory,
        attn_implementation="eager",
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        classifier_dropout=0.0,
    )


class Data:
    """Fixed rows (``data.npz``); batch k is rows ``k*B .. k*B+B`` (mod N), in order."""

    def __init__(self, path: str):
        with np.load(path, allow_pickle=False) as z:
            self.arrays = {k: torch.from_numpy(z[k]) for k in z.files}
        self.rows = len(self.arrays["labels"])

    def rows_at(self, start: int, size: int) -> dict[str, torch.Tensor]:
        index = torch.arange(start, start + size) % self.rows
        return {k: v[index] for k, v in self.arrays.items()}

    def batch(self, step: int, size: int) -> dict[str, torch.Tensor]:
        return self.rows_at(step * size, size)


class GradBatches:
    """oBS gradient batches: one endless stream per batch size, continued across updates
    (SparseML's GradSampler keeps iterating the generator it was built with)."""

    def __init__(self, data: Data):
        self.data = data
        self.positions: dict[int, int] = {}

    def stream(self, batch_size: int):
        while True:
            start = self.positions.get(batch_size, 0)
            self.positions[batch_size] = start + batch_size
            yield self.data.rows_at(start, batch_size)


def make_optimizer(model, spec: dict) -> torch.optim.AdamW:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if any(k in name for k in NO_DECAY) else decay).append(p)
    return torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": spec["weight_decay"]},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=spec["lr"],
    )


def setup(spec: dict):
    torch.manual_seed(0)
    model = load_model(spec["model"])
    teacher = load_model(spec["teacher"]) if spec.get("teacher") else None
    data = Data(spec["data"])
    return model, teacher, data, make_optimizer(model, spec)


class Trace:
    """Per step: the LR / weight decay each group trained with, QAT and observer state at
    the forward pass, the loss, and the exact zero positions after the step."""

    def __init__(self, model, optimizer, spec: dict):
        self.model = model
        self.watch = re.compile(spec["watch"])
        self.steps: list[dict] = []
        self.zeros: dict[str, np.ndarray] = {}
        self.names = [n for n, p in model.named_parameters() if self.watch.match(n)]
        optimizer.register_step_pre_hook(self._on_optimizer_step)
        self._current: dict = {}

    def _on_optimizer_step(self, optimizer, args, kwargs) -> None:
        self._current["lr"] = [g["lr"] for g in optimizer.param_groups]
        self._current["weight_decay"] = [g["weight_decay"] for g in optimizer.param_groups]

    def before_forward(self, step: int, qat: bool, observers: bool | None) -> None:
        self._current = {"step": step, "qat": qat, "observers": observers}

    def loss(self, step: int, value: float) -> None:
        self._current["loss"] = value

    def after_step(self, step: int) -> None:
        # SparseML's QAT wraps Linears (``query.module.weight``); compare under HF names.
        params = {re.sub(r"\.module(?=\.)", "", n): p for n, p in self.model.named_parameters()}
        for i, name in enumerate(self.names):
            self.zeros[f"s{step}_p{i}"] = (params[name].detach() == 0).numpy()
        self.steps.append(self._current)

    def write(self, out: Path) -> None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "trace.json").write_text(json.dumps({"names": self.names, "steps": self.steps}))
        np.savez_compressed(out / "zeros.npz", **self.zeros)


def read(out: Path) -> tuple[dict, dict[str, np.ndarray]]:
    trace = json.loads((out / "trace.json").read_text())
    with np.load(out / "zeros.npz", allow_pickle=False) as z:
        zeros = {k: z[k] for k in z.files}
    return trace, zeros
