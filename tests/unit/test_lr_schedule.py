"""LearningRateFunctionModifier / SetLearningRateModifier: LR per step = closed form."""

from __future__ import annotations

import math

import pytest
from transformers import TrainerCallback

from sparse_transfer.modifiers import FieldError
from tests.unit._train_utils import make_trainer, mod, tiny_dataset, tiny_model


class _LRRecorder(TrainerCallback):
    def __init__(self):
        self.lrs: list[float] = []
        self.trainer = None

    def on_optimizer_step(self, args, state, control, optimizer=None, **kwargs):
        self.lrs.append(self.trainer.optimizer.param_groups[0]["lr"])


def _run(tmp_path, recipe, rows=16, batch=4, grad_accum=1):
    model, tok = tiny_model(tmp_path)
    trainer = make_trainer(tmp_path, model, tiny_dataset(tok, rows), recipe=recipe, batch_size=batch,
                           grad_accum=grad_accum)  # fmt: skip
    recorder = _LRRecorder()
    recorder.trainer = trainer
    trainer.add_callback(recorder)
    trainer.train()
    return trainer, recorder.lrs


def test_linear_lr_matches_closed_form_with_grad_accumulation(tmp_path):
    recipe = [
        mod("EpochRangeModifier", start_epoch=0.0, end_epoch=2.0),
        mod("LearningRateFunctionModifier", start_epoch=0, end_epoch=2.0, lr_func="linear",
            init_lr=1e-3, final_lr=0.0),
    ]  # fmt: skip
    # 20 rows / batch 4 = 5 batches; accumulation 2 -> 3 optimizer steps per epoch (last one partial)
    trainer, lrs = _run(tmp_path, recipe, rows=20, grad_accum=2)
    spe = trainer.sparse_state.steps_per_epoch
    assert spe == 3 and len(lrs) == 6
    for k, lr in enumerate(lrs):
        assert lr == pytest.approx(1e-3 * (1 - (k / spe) / 2.0)), k


def test_consecutive_ranges_cosine_then_linear(tmp_path):
    recipe = [
        mod("EpochRangeModifier", start_epoch=0.0, end_epoch=2.0),
        mod("LearningRateFunctionModifier", start_epoch=1.0, end_epoch=2.0, lr_func="linear",
            init_lr=1e-4, final_lr=0.0),
        mod("LearningRateFunctionModifier", start_epoch=0.0, end_epoch=1.0, lr_func="cosine",
            init_lr=1e-3, final_lr=1e-4),
    ]  # fmt: skip
    trainer, lrs = _run(tmp_path, recipe)
    assert trainer.sparse_state.steps_per_epoch == 4 and len(lrs) == 8
    for k, lr in enumerate(lrs):
        e = k / 4
        if e < 1.0:
            expected = 1e-4 + (1e-3 - 1e-4) * 0.5 * (1 + math.cos(math.pi * e))
        else:
            expected = 1e-4 * (1 - (e - 1.0))
        assert lr == pytest.approx(expected), k
    # The logged LR is the recipe's (the HF scheduler is a pass-through).
    assert trainer.lr_scheduler.get_last_lr()[0] == pytest.approx(lrs[-1])


def test_closed_forms_of_every_lr_func():
    def lrm(func, **kw):
        fields = dict(start_epoch=1.0, end_epoch=5.0, lr_func=func, init_lr=1e-2, final_lr=1e-4)
        fields.update(kw)
        return mod("LearningRateFunctionModifier", **fields)

    assert lrm("linear").lr_at(3.0) == pytest.approx(1e-2 + (1e-4 - 1e-2) * 0.5)
    assert lrm("linear").lr_at(0.0) == pytest.approx(1e-2)  # clamped before start
    assert lrm("cosine").lr_at(2.0) == pytest.approx(
        1e-4 + (1e-2 - 1e-4) * 0.5 * (1 + math.cos(math.pi / 4))
    )
    assert lrm("exponential").lr_at(3.0) == pytest.approx(1e-2 * (1e-4 / 1e-2) ** 0.5)
    # SparseML 1.8: init_lr on a cycle's first step, final_lr on its last (8 steps a cycle)
    cyc = lrm("cyclic_linear", cycle_epochs=2.0)
    assert cyc.lr_at(2.0, 4) == pytest.approx(1e-2 - 4 / 7 * (1e-2 - 1e-4))
    assert cyc.lr_at(2.75, 4) == pytest.approx(1e-4)  # last step of the first cycle
    assert cyc.lr_at(3.0, 4) == pytest.approx(1e-2)  # restarts every cycle
    short = lrm("cyclic_linear", cycle_epochs=1.25, end_epoch=4.0)  # cycles of 5, 5, then 2
    assert short.lr_at(3.5, 4) == pytest.approx(1e-2)  # step 10: first of the short cycle
    assert short.lr_at(3.75, 4) == pytest.approx(1e-4)  # step 11: its last
    step = lrm("step", cycle_epochs=1.0)
    assert step.lr_at(2.5) == pytest.approx(1e-2 + (1e-4 - 1e-2) * 0.25)
    assert step.lr_at(2.99) == pytest.approx(step.lr_at(2.0))
    held = lrm("linear", update_frequency=1.0)
    assert held.lr_at(2.7) == pytest.approx(lrm("linear").lr_at(2.0))


def test_set_learning_rate_and_validation(tmp_path):
    recipe = [
        mod("EpochRangeModifier", start_epoch=0.0, end_epoch=1.0),
        mod("SetLearningRateModifier", start_epoch=0.5, learning_rate=3e-4),
    ]
    _, lrs = _run(tmp_path, recipe, rows=16)
    assert lrs[2:] == [pytest.approx(3e-4)] * 2
    with pytest.raises(FieldError, match="lr_func"):
        mod(
            "LearningRateFunctionModifier",
            start_epoch=0,
            end_epoch=1,
            lr_func="poly",
            init_lr=1,
            final_lr=0,
        )
    with pytest.raises(FieldError, match="final_lr"):
        mod("LearningRateFunctionModifier", start_epoch=0, end_epoch=1, lr_func="exponential",
            init_lr=1e-3, final_lr=0)  # fmt: skip


def test_cyclic_linear_reaches_final_lr_on_each_cycles_last_step(tmp_path):
    recipe = [
        mod("EpochRangeModifier", start_epoch=0.0, end_epoch=2.0),
        mod("LearningRateFunctionModifier", start_epoch=0.0, end_epoch=2.0,
            lr_func="cyclic_linear", cycle_epochs=1.0, init_lr=1e-3, final_lr=1e-4),
    ]  # fmt: skip
    trainer, lrs = _run(tmp_path, recipe)
    assert trainer.sparse_state.steps_per_epoch == 4
    expected = [1e-3 - k / 3 * (1e-3 - 1e-4) for k in range(4)] * 2
    assert lrs == [pytest.approx(e) for e in expected]
    assert lrs[3] == lrs[7] == pytest.approx(1e-4)
