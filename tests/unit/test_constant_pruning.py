"""ConstantPruningModifier: every pruned zero stays exactly zero through training."""

from __future__ import annotations

import pytest
import torch

from sparse_transfer.errors import RecipeError
from sparse_transfer.modifiers import FieldError, known_modifiers
from sparse_transfer.modifiers._masks import ParamMasks, prunable_params, select_params
from tests.unit._train_utils import make_trainer, mod, tiny_dataset, tiny_model, zero_counts


def _zero_positions(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().eq(0).clone() for n, (p, _) in prunable_params(model).items()}


def _recipe(epochs: float = 2.0, extra=()):
    return [
        mod("EpochRangeModifier", start_epoch=0.0, end_epoch=epochs),
        mod("LearningRateFunctionModifier", start_epoch=0.0, end_epoch=epochs, lr_func="linear",
            init_lr=5e-3, final_lr=0.0),
        mod("ConstantPruningModifier", start_epoch=0.0, params="__ALL_PRUNABLE__"),
        mod("SetWeightDecayModifier", start_epoch=0.0, weight_decay=0.1),
        *extra,
    ]  # fmt: skip


def test_zeros_kept_through_adamw_weight_decay_and_grad_accumulation(tmp_path):
    model, tok = tiny_model(tmp_path, sparsity=0.9)
    before = _zero_positions(model)
    counts = zero_counts(model)
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer = make_trainer(tmp_path, model, tiny_dataset(tok, 20), recipe=_recipe(), grad_accum=2)
    trainer.train()
    after = _zero_positions(model)
    assert zero_counts(model) == counts
    for name, zeros in before.items():
        assert torch.equal(zeros, after[name]), name
    # The run really trained: surviving weights moved.
    moved = [n for n, p in model.named_parameters() if not torch.equal(p.detach(), start[n])]
    assert "bert.encoder.layer.0.attention.self.query.weight" in moved
    # AdamW moments of pruned weights stayed exactly zero (grads were masked pre-step).
    name = "bert.encoder.layer.1.output.dense.weight"
    param = dict(model.named_parameters())[name]
    moments = trainer.optimizer.state[param]
    assert moments["exp_avg"][before[name]].abs().max() == 0
    assert moments["exp_avg_sq"][before[name]].abs().max() == 0
    # Most prunable tensors in the fixture are ~90% sparse.
    dense = [n for n, c in counts.items() if c == 0]
    assert set(dense) <= {"classifier.weight", "bert.pooler.dense.weight"}


def test_zeros_kept_with_qat(tmp_path):
    if "QuantizationModifier" not in known_modifiers():
        pytest.skip("QuantizationModifier (export helper) not available yet")
    quantization = pytest.importorskip("sparse_transfer.quantization")
    model, tok = tiny_model(tmp_path, sparsity=0.9)
    before = _zero_positions(model)
    qat = mod(
        "QuantizationModifier",
        start_epoch=1.0,
        disable_quantization_observer_epoch=1.5,
        freeze_bn_stats_epoch=1.5,
        quantize_embeddings=1,
        quantize_linear_activations=0,
        exclude_module_types=["LayerNorm", "Tanh"],
        submodules=["bert.embeddings", "bert.encoder", "bert.pooler", "classifier"],
    )
    trainer = make_trainer(
        tmp_path, model, tiny_dataset(tok, 16), recipe=_recipe(extra=[qat]), grad_accum=2
    )
    trainer.train()
    assert quantization.is_qat_prepared(model)
    after = _zero_positions(model)
    for name, zeros in before.items():
        assert torch.equal(zeros, after[name]), name


def test_param_selection_forms(tmp_path):
    model, _ = tiny_model(tmp_path)
    prunable = select_params(model, "__ALL_PRUNABLE__")
    assert "bert.embeddings.word_embeddings.weight" in prunable
    assert "classifier.weight" in prunable
    assert not any(n.endswith("bias") or "LayerNorm" in n for n in prunable)
    everything = select_params(model, "__ALL__")
    assert len(everything) == len(list(model.named_parameters()))
    regex = select_params(model, ["re:bert.encoder.layer.0.*weight$"])
    assert regex and all(n.startswith("bert.encoder.layer.0.") for n in regex)
    exact = select_params(model, ["classifier.weight", "classifier.bias"])
    assert list(exact) == ["classifier.weight", "classifier.bias"]


def test_pattern_matching_nothing_names_pattern_and_nearest(tmp_path):
    model, tok = tiny_model(tmp_path)
    with pytest.raises(FieldError) as info:
        select_params(model, ["bert.encoder.layer.0.attention.self.qury.weight"])
    message = str(info.value)
    assert "qury" in message and "bert.encoder.layer.0.attention.self.query.weight" in message
    # Through the trainer it surfaces as a RecipeError naming the modifier.
    recipe = [mod("ConstantPruningModifier", params="re:bert\\.encoderz\\..*")]
    trainer = make_trainer(tmp_path, model, tiny_dataset(tok, 8), recipe=recipe)
    with pytest.raises(RecipeError, match=r"ConstantPruningModifier.*encoderz"):
        trainer.train()


def test_masks_apply_and_mask_grads(tmp_path):
    w = torch.nn.Parameter(torch.tensor([[0.0, 1.0], [2.0, 0.0]]))
    masks = ParamMasks.from_zeros({"w": (w, None)})
    with torch.no_grad():
        w.add_(1.0)
    w.grad = torch.ones_like(w)
    masks.mask_grads_()
    masks.apply_()
    assert w.detach().tolist() == [[0.0, 2.0], [3.0, 0.0]]
    assert w.grad.tolist() == [[0.0, 1.0], [1.0, 0.0]]
