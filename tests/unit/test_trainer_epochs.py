"""SparseTrainer: the recipe sets the epochs, fractional epochs, resume, saved artifacts."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from safetensors.torch import load_file
from transformers import TrainerCallback

from sparse_transfer.modifiers._masks import prunable_params
from sparse_transfer.recipe import load_recipe
from tests.unit._train_utils import make_trainer, mod, tiny_dataset, tiny_model

RECIPE = """
version: 1.1.0
num_epochs: 1.5
training_modifiers:
  - !EpochRangeModifier
      start_epoch: 0.0
      end_epoch: eval(num_epochs)
  - !LearningRateFunctionModifier
      start_epoch: 0.0
      end_epoch: eval(num_epochs)
      lr_func: linear
      init_lr: 0.001
      final_lr: 0.0
pruning_modifiers:
  - !GMPruningModifier
      init_sparsity: 0.1
      final_sparsity: 0.7
      start_epoch: 0.0
      end_epoch: eval(num_epochs)
      update_frequency: 0.25
      params: ["re:bert\\\\.encoder\\\\..*dense\\\\.weight$"]
      inter_func: cubic
"""


class _Recorder(TrainerCallback):
    def __init__(self):
        self.trainer = None
        self.steps: list[tuple[int, float]] = []

    def on_optimizer_step(self, args, state, control, **kwargs):
        self.steps.append((state.global_step, self.trainer.optimizer.param_groups[0]["lr"]))


def _dense(model):
    return {
        n: p
        for n, (p, _) in prunable_params(model).items()
        if n.startswith("bert.encoder.") and "dense" in n
    }


def _train(tmp_path, recipe, rows=26, **kw):
    model, tok = tiny_model(tmp_path)
    trainer = make_trainer(tmp_path, model, tiny_dataset(tok, rows), recipe=recipe, **kw)
    rec = _Recorder()
    rec.trainer = trainer
    trainer.add_callback(rec)
    return trainer, rec


def test_recipe_epochs_override_and_fractional_end_with_accumulation(tmp_path, caplog):
    recipe = load_recipe(RECIPE)
    # 26 rows / batch 4 = 7 batches; accumulation 2 -> 4 optimizer steps per epoch (HF's count)
    trainer, rec = _train(tmp_path, recipe, grad_accum=2, epochs=7)
    with caplog.at_level(logging.WARNING):
        trainer.train()
    assert trainer.args.num_train_epochs == 1.5
    assert "overrides --num_train_epochs 7" in caplog.text
    assert trainer.sparse_state.steps_per_epoch == 4
    assert trainer.state.global_step == 6  # ceil(1.5 * 4)
    assert trainer.state.epoch == pytest.approx(1.5, abs=0.2)
    for step, lr in rec.steps:
        assert lr == pytest.approx(1e-3 * (1 - (step / 4) / 1.5)), step
    # GMP ends exactly at the recipe's end_epoch (the last step): final sparsity per tensor.
    for name, p in _dense(trainer.model).items():
        assert abs(int((p == 0).sum()) - 0.7 * p.numel()) <= 1, name


def test_resume_restores_masks_and_schedules(tmp_path):
    full, full_rec = _train(tmp_path / "a", load_recipe(RECIPE), rows=16)
    full.train()
    expected_zeros = {n: int((p == 0).sum()) for n, p in _dense(full.model).items()}

    first, _ = _train(
        tmp_path / "b", load_recipe(RECIPE), rows=16, save_strategy="steps", save_steps=3
    )
    first.train()
    checkpoint = tmp_path / "b" / "out" / "checkpoint-3"
    assert (checkpoint / "recipe.yaml").is_file() and (checkpoint / "sparsity.json").is_file()
    saved_zeros = {n: int((p == 0).sum()) for n, p in _dense(first.model).items()}

    resumed, rec = _train(tmp_path / "c", load_recipe(RECIPE), rows=16)
    resumed.train(resume_from_checkpoint=str(checkpoint))
    assert [s for s, _ in rec.steps] == [3, 4, 5]
    # LR continues on the recipe's closed form from the checkpoint's global step.
    assert [lr for _, lr in rec.steps] == pytest.approx([lr for _, lr in full_rec.steps[3:]])
    zeros = {n: int((p == 0).sum()) for n, p in _dense(resumed.model).items()}
    assert zeros == expected_zeros == saved_zeros  # both ended at final sparsity
    # Zeros of the checkpoint were kept as masks: everything pruned at step 3 is still zero.
    state = load_file(str(checkpoint / "model.safetensors"))
    for name, p in _dense(resumed.model).items():
        pruned_then = state[name].eq(0)
        assert torch.all(p.detach()[pruned_then] == 0), name


def test_save_model_writes_recipe_and_sparsity(tmp_path):
    recipe = load_recipe(RECIPE)
    trainer, _ = _train(tmp_path, recipe, rows=8)
    trainer.train()
    trainer.save_model(str(tmp_path / "final"))
    report = json.loads((tmp_path / "final" / "sparsity.json").read_text())
    assert set(report) == {"overall_sparsity", "prunable_params", "zeros", "layers"}
    layer = report["layers"]["bert.encoder.layer.0.output.dense.weight"]
    assert layer["sparsity"] == pytest.approx(0.7, abs=0.01)
    reloaded = load_recipe(str(tmp_path / "final" / "recipe.yaml"))
    assert [type(m) for m in reloaded.modifiers] == [type(m) for m in recipe.modifiers]
    assert reloaded.modifiers[2].final_sparsity == 0.7


def test_modifier_list_recipe_without_epochs_keeps_cli_epochs(tmp_path):
    trainer, _ = _train(
        tmp_path, [mod("ConstantPruningModifier", params="__ALL_PRUNABLE__")], rows=8, epochs=1
    )
    assert trainer.args.num_train_epochs == 1


def test_resume_restores_qat_state(tmp_path):
    quantization = pytest.importorskip("sparse_transfer.quantization")

    def recipe():
        return [
            mod("EpochRangeModifier", start_epoch=0.0, end_epoch=1.5),
            mod("ConstantPruningModifier", start_epoch=0.0, params="__ALL_PRUNABLE__"),
            mod("QuantizationModifier", start_epoch=0.5, disable_quantization_observer_epoch=1.0,
                freeze_bn_stats_epoch=1.0, quantize_embeddings=1, quantize_linear_activations=0,
                exclude_module_types=["LayerNorm", "Tanh"],
                submodules=["bert.embeddings", "bert.encoder", "bert.pooler", "classifier"]),
        ]  # fmt: skip

    model, tok = tiny_model(tmp_path, sparsity=0.9)
    data = tiny_dataset(tok, 16)
    first = make_trainer(
        tmp_path / "a", model, data, recipe=recipe(), save_strategy="steps", save_steps=3
    )
    first.train()
    checkpoint = tmp_path / "a" / "out" / "checkpoint-3"
    assert (checkpoint / quantization.CONFIG_NAME).is_file()

    class _AtStart(TrainerCallback):
        prepared = None

        def on_train_begin(self, args, state, control, model=None, **kwargs):
            _AtStart.prepared = quantization.is_qat_prepared(model)

    fresh, _ = tiny_model(tmp_path / "b", sparsity=0.9)
    zeros = {n: p.detach().eq(0) for n, (p, _) in prunable_params(fresh).items()}
    resumed = make_trainer(tmp_path / "b", fresh, data, recipe=recipe())
    resumed.add_callback(_AtStart())
    resumed.train(resume_from_checkpoint=str(checkpoint))
    assert _AtStart.prepared is True  # QAT modules and scales came back with the checkpoint
    assert quantization.is_qat_prepared(fresh)
    for name, (p, _) in prunable_params(fresh).items():
        assert torch.all(p.detach()[zeros[name]] == 0), name
