"""Drives real SparseML 1.8 through a recipe in a plain loop and records every step.

Runs in the interpreter that ``SPARSE_TRANSFER_SPARSEML_PYTHON`` names (its own
venv: `make sparseml-venv`), never in the project's: it imports only SparseML,
torch, transformers and numpy. `tests/integration/test_sparseml_diff.py`
drives this project's modifiers through the same loop (`_loop.py` holds what
both sides share) and compares the two traces.

The loop is SparseML's documented one
(``ScheduledModifierManager.from_yaml(path).modify(model, optimizer,
steps_per_epoch=N)``, then ``optimizer.loss_update(loss)`` and
``optimizer.step()`` per batch), with ``manager.loss_update`` called directly
so distillation sees the student's inputs and outputs.

Usage: python run_sparseml.py RUNS.json  (a list of run specs, each with its "out" folder)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _loop  # noqa: E402
import torch  # noqa: E402


def _fake_quants(model):
    from torch.ao.quantization import FakeQuantizeBase

    return [m for m in model.modules() if isinstance(m, FakeQuantizeBase)]


def qat_flags(model) -> tuple[bool, bool | None]:
    fqs = _fake_quants(model)
    if not fqs:
        return False, None
    # "observers on" = every observer still updates; the first freeze flips it. (With
    # `submodules`, SparseML's legacy modifier never freezes the QuantWrapper's input stub.)
    return True, all(bool(fq.observer_enabled[0]) for fq in fqs)


def _patch_qconfig_for_new_torch() -> None:
    """SparseML 1.8 sets ``qconfig.quantization_scheme``; torch 2.13's QConfig has
    ``__slots__ = ()``, so that raises AttributeError. Give SparseML a QConfig subclass
    with an instance dict (behaviour otherwise identical)."""
    import sparseml.pytorch.sparsification.quantization.quantization_scheme as scheme
    from torch import quantization

    class QConfig(quantization.QConfig):
        pass

    class _TorchQuantization:
        def __getattr__(self, name):
            return getattr(quantization, name)

    _TorchQuantization.QConfig = QConfig
    scheme.torch_quantization = _TorchQuantization()


def run(spec: dict) -> None:
    from sparseml.pytorch.optim import ScheduledModifierManager

    model, teacher, data, optimizer = _loop.setup(spec)
    manager = ScheduledModifierManager.from_yaml(spec["recipe"])
    spe = spec["steps_per_epoch"]
    kwargs = {}
    if teacher is not None:
        kwargs["distillation_teacher"] = teacher
    grad_batches = _loop.GradBatches(data)

    def data_loader_builder(loader_kwargs=None):
        batch_size = (loader_kwargs or {}).get("batch_size", spec["batch_size"])
        for batch in grad_batches.stream(batch_size):
            labels = batch.pop("labels")
            yield [], batch, labels

    def loss_function(outputs, labels):
        return torch.nn.functional.cross_entropy(outputs["logits"], labels)

    kwargs["grad_sampler"] = {
        "data_loader_builder": data_loader_builder,
        "loss_function": loss_function,
    }
    wrapped = manager.modify(model, optimizer, steps_per_epoch=spe, **kwargs)
    trace = _loop.Trace(model, optimizer, spec)
    for step in range(spec["steps"]):
        epoch = step / spe
        batch = data.batch(step, spec["batch_size"])
        model.train()
        trace.before_forward(step, *qat_flags(model))
        outputs = model(**batch)
        loss = outputs.loss
        loss = manager.loss_update(
            loss, model, optimizer, epoch, spe, student_outputs=outputs, student_inputs=batch
        )
        trace.loss(step, float(loss.detach()))
        optimizer.zero_grad()
        loss.backward()
        wrapped.step()  # update -> optimizer_pre_step -> AdamW.step -> optimizer_post_step
        trace.after_step(step)
    manager.finalize(model)
    trace.write(Path(spec["out"]))


def main(runs_path: str) -> None:
    _patch_qconfig_for_new_torch()
    for spec in json.loads(Path(runs_path).read_text()):
        run(spec)


if __name__ == "__main__":
    main(*sys.argv[1:])
