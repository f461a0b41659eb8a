"""QAT mechanism: exact zeros, observers, save/restore, modifier lifecycle."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from sparse_transfer.embedded.fixtures import make_tiny_bert
from sparse_transfer.errors import RecipeError
from sparse_transfer.quantization import (
    QATEmbedding,
    QATLinear,
    calibrate,
    is_qat_prepared,
    observers_enabled,
    prepare_qat,
    qat_modules,
    quantize_weight,
    restore_qat,
    save_qat_config,
    set_observers_enabled,
    uninitialized_observers,
)

SUBMODULES = ["bert.embeddings", "bert.encoder", "bert.pooler", "classifier"]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return make_tiny_bert(tmp_path_factory.mktemp("tiny"), hidden_size=32, sparsity=0.9)


def _load(path):
    from transformers import AutoModelForSequenceClassification

    return AutoModelForSequenceClassification.from_pretrained(str(path))


def _batch(seed=0, n=4, length=12):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 60, (n, length), generator=g)
    return {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "labels": torch.randint(0, 2, (n,), generator=g),
    }


def _zero_counts(model):
    return {n: int((p == 0).sum()) for n, p in model.named_parameters() if n.endswith(".weight")}


def test_prepare_keeps_parameters_and_state_dict(tiny_dir):
    model = _load(tiny_dir)
    params_before = {n: p for n, p in model.named_parameters()}
    keys_before = list(model.state_dict())
    names = prepare_qat(model, submodules=SUBMODULES, exclude_module_types=["LayerNorm", "Tanh"])
    assert is_qat_prepared(model)
    assert all(p is params_before[n] for n, p in model.named_parameters())
    assert list(model.state_dict()) == keys_before
    kinds = {type(m) for m in qat_modules(model).values()}
    assert kinds == {QATLinear, QATEmbedding}
    # 2 layers x 6 Linear + pooler + classifier, and the 3 embeddings.
    assert len(names) == 2 * 6 + 2 + 3
    assert isinstance(model.classifier, nn.Linear)


def test_weight_quantization_keeps_zero_pattern_exactly(tiny_dir):
    model = _load(tiny_dir)
    prepare_qat(model, submodules=SUBMODULES)
    for name, module in qat_modules(model).items():
        w = module.weight.detach()
        q = quantize_weight(w, module.current_weight_scale(), module.qat_weight_axis, 8)
        assert torch.equal(q == 0, w == 0), name
        assert int(q.abs().max()) <= 127
        if name.startswith("bert."):  # the fixture prunes the encoder, not the head
            assert (w == 0).float().mean() > 0.85, name


@pytest.mark.parametrize(
    ("reduce_weight_range", "qmax"),
    [(None, 63), (True, 63), (False, 127)],
    ids=["default-7bit", "7bit", "full-range"],
)
def test_fake_quant_matches_formula_and_passes_gradient_straight_through(reduce_weight_range, qmax):
    torch.manual_seed(0)
    layer = nn.Linear(8, 4)
    with torch.no_grad():
        layer.weight[0, :4] = 0.0
        layer.weight[1, 0] = 1e-6  # far below one step: must not become zero
    model = nn.Sequential(layer)
    if reduce_weight_range is None:
        prepare_qat(model)  # the default: 7-bit Linear weights, exact on every CPU
    else:
        prepare_qat(model, reduce_weight_range=reduce_weight_range)
    assert layer.qat_weight_bits == (7 if qmax == 63 else 8)
    x = torch.randn(3, 8, requires_grad=True)
    model.train()
    y = model(x)
    scale = layer.weight.detach().abs().amax(dim=1) / qmax
    q = torch.round(layer.weight.detach() / scale[:, None]).clamp(-qmax, qmax)
    q[1, 0] = 1.0
    aq = layer.input_quant
    s, zp = aq.qparams()
    xq = (torch.clamp(torch.round(x.detach() / s) + zp, 0, 255) - zp) * s
    expected = xq @ (q * scale[:, None]).T + layer.bias.detach()
    torch.testing.assert_close(y.detach(), expected, atol=1e-5, rtol=1e-5)
    y.sum().backward()
    # straight-through: d/dW of sum(x_fq @ W^T) = sum over batch of x_fq
    torch.testing.assert_close(layer.weight.grad, xq.sum(0).expand(4, 8), atol=1e-5, rtol=1e-5)
    # and to the input unchanged
    torch.testing.assert_close(
        x.grad, (q * scale[:, None]).sum(0).expand(3, 8), atol=1e-5, rtol=1e-5
    )


def test_zeros_stay_zero_through_fake_quant_training_steps(tiny_dir):
    model = _load(tiny_dir)
    before = _zero_counts(model)
    masks = {n: (p != 0) for n, p in model.named_parameters() if n.endswith(".weight")}
    # Optimizer made before QAT: it must keep updating the very same tensors.
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.01)
    prepare_qat(model, submodules=SUBMODULES)
    model.train()
    for step in range(3):
        loss = model(**_batch(step)).loss
        loss.backward()
        for n, p in model.named_parameters():
            if n in masks and p.grad is not None:
                p.grad.mul_(masks[n])  # what ConstantPruningModifier does
        opt.step()
        opt.zero_grad()
    assert _zero_counts(model) == before
    for name, module in qat_modules(model).items():
        q = quantize_weight(module.weight, module.current_weight_scale(), module.qat_weight_axis, 8)
        assert int((q == 0).sum()) == before[f"{name}.weight"], name


def test_observers_freeze(tiny_dir):
    model = _load(tiny_dir)
    prepare_qat(model, submodules=SUBMODULES)
    assert len(uninitialized_observers(model)) > 0
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    model.train()
    model(**_batch(0)).loss.backward()
    opt.step()
    assert uninitialized_observers(model) == []
    set_observers_enabled(model, False)
    assert not observers_enabled(model)
    frozen = {
        n: (m.weight_scale.clone(), m.input_quant.min_val.clone() if m.input_quant else None)
        for n, m in qat_modules(model).items()
    }
    for step in range(2):
        opt.zero_grad()
        model(**_batch(step + 1)).loss.backward()
        opt.step()
    for n, m in qat_modules(model).items():
        assert torch.equal(m.weight_scale, frozen[n][0]), n
        if m.input_quant is not None:
            assert torch.equal(m.input_quant.min_val, frozen[n][1]), n
    # the weights did move, so a live observer would have moved the scale
    live = model.classifier.weight.detach().abs().amax(dim=1) / 127
    assert not torch.equal(live, model.classifier.weight_scale)


def test_eval_does_not_move_observers_but_calibrate_does(tiny_dir):
    model = _load(tiny_dir)
    prepare_qat(model, submodules=SUBMODULES)
    model.eval()
    with torch.no_grad():
        model(**_batch(0))
    assert len(uninitialized_observers(model)) > 0
    batch = {k: v for k, v in _batch(0).items() if k != "labels"}
    assert calibrate(model, [batch]) == 1
    assert uninitialized_observers(model) == []
    assert not model.training


def test_save_restore_round_trip(tiny_dir, tmp_path):
    model = _load(tiny_dir)
    prepare_qat(model, submodules=SUBMODULES, exclude_module_types=["LayerNorm", "Tanh"])
    calibrate(model, [{k: v for k, v in _batch(0).items() if k != "labels"}])
    set_observers_enabled(model, False)
    model.save_pretrained(str(tmp_path))
    assert save_qat_config(model, tmp_path)
    loaded = _load(tmp_path)
    assert restore_qat(loaded, tmp_path)
    assert not observers_enabled(loaded)
    for (n, a), (_, b) in zip(qat_modules(model).items(), qat_modules(loaded).items(), strict=True):
        assert torch.equal(a.weight_scale, b.weight_scale), n
        for attr in ("input_quant", "output_quant"):
            qa, qb = getattr(a, attr, None), getattr(b, attr, None)
            assert (qa is None) == (qb is None)
            if qa is not None:
                assert torch.equal(qa.min_val, qb.min_val) and torch.equal(qa.max_val, qb.max_val)
    model.eval()
    loaded.eval()
    batch = {k: v for k, v in _batch(3).items() if k != "labels"}
    with torch.no_grad():
        torch.testing.assert_close(model(**batch).logits, loaded(**batch).logits, atol=0, rtol=0)
    # a float model dir has no QAT state
    plain = _load(tiny_dir)
    assert restore_qat(plain, tiny_dir) is False and not is_qat_prepared(plain)


@pytest.mark.parametrize("reduce_weight_range", [True, False])
def test_weight_range_is_saved_and_restored(tiny_dir, tmp_path, reduce_weight_range):
    import json

    model = _load(tiny_dir)
    prepare_qat(model, submodules=SUBMODULES, reduce_weight_range=reduce_weight_range)
    linear_bits = 7 if reduce_weight_range else 8
    bits = {n: m.qat_weight_bits for n, m in qat_modules(model).items()}
    assert bits["bert.encoder.layer.0.attention.self.query"] == linear_bits
    assert bits["bert.embeddings.word_embeddings"] == 8  # gathered, never multiplied: all 8
    model.save_pretrained(str(tmp_path))
    save_qat_config(model, tmp_path)
    loaded = _load(tmp_path)
    restore_qat(loaded, tmp_path)
    assert {n: m.qat_weight_bits for n, m in qat_modules(loaded).items()} == bits
    # a save from before the setting existed trained full-range weights: restored as such
    config_path = tmp_path / "quantization.json"
    payload = json.loads(config_path.read_text())
    del payload["config"]["reduce_weight_range"]
    config_path.write_text(json.dumps(payload))
    legacy = _load(tmp_path)
    restore_qat(legacy, tmp_path)
    assert legacy.bert.encoder.layer[0].attention.self.query.qat_weight_bits == 8


def test_submodules_and_exclusions(tiny_dir):
    model = _load(tiny_dir)
    names = prepare_qat(model, submodules=["classifier"])
    assert names == ["classifier"]
    model = _load(tiny_dir)
    names = prepare_qat(model, exclude_module_types=["Linear"])
    assert all("embeddings" in n for n in names) and len(names) == 3
    model = _load(tiny_dir)
    names = prepare_qat(model, quantize_embeddings=False)
    assert not any("embeddings" in n for n in names)
    with pytest.raises(RecipeError, match="bert.encodr.*nearest: bert.encoder"):
        prepare_qat(_load(tiny_dir), submodules=["bert.encodr"])


def test_linear_output_quantization_flag(tiny_dir):
    model = _load(tiny_dir)
    prepare_qat(model, quantize_linear_activations=False)
    assert model.classifier.output_quant is None and model.classifier.input_quant is not None
    model = _load(tiny_dir)
    prepare_qat(model, quantize_linear_activations=True)
    assert model.classifier.output_quant is not None


def test_modifier_lifecycle(tiny_dir):
    from sparse_transfer.modifiers import Event, modifier_class

    cls = modifier_class("QuantizationModifier")
    mod = cls.from_fields(
        {
            "start_epoch": 1.0,
            "disable_quantization_observer_epoch": 2.0,
            "freeze_bn_stats_epoch": 2.0,
            "quantize_embeddings": 1,
            "quantize_linear_activations": 0,
            "exclude_module_types": ["LayerNorm", "Tanh"],
            "submodules": SUBMODULES,
        }
    )
    model = _load(tiny_dir)
    state = SimpleNamespace(model=model, epoch=0.0)
    mod.initialize(state)
    assert not is_qat_prepared(model)
    state.epoch = 1.0
    mod.on_event(Event.BATCH_START, state)
    assert is_qat_prepared(model) and observers_enabled(model)
    assert model.classifier.output_quant is None
    state.epoch = 2.5
    mod.on_event(Event.BATCH_START, state)
    assert not observers_enabled(model)


def test_modifier_rejects_bad_fields():
    from sparse_transfer.modifiers import FieldError, modifier_class

    cls = modifier_class("QuantizationModifier")
    with pytest.raises(FieldError, match="end_epoch"):
        cls.from_fields({"start_epoch": 1.0, "end_epoch": 3.0})
    with pytest.raises(FieldError, match="disable_quantization_observer_epoch"):
        cls.from_fields({"start_epoch": 4.0, "disable_quantization_observer_epoch": 2.0})
    with pytest.raises(FieldError, match="weight_bits"):
        cls.from_fields({"weight_bits": 16})
