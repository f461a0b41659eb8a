"""Quantized attention matmuls (SparseML's QATMatMul): selection, arithmetic, state, bypass."""

from __future__ import annotations

import json

import pytest
import torch

from sparse_transfer.embedded.fixtures import make_tiny_bert
from sparse_transfer.quantization import (
    ActivationFakeQuant,
    activation_quants,
    calibrate,
    prepare_qat,
    qat_bypassed,
    qat_config,
    restore_qat,
    save_qat_config,
    select_attention_modules,
    set_observers_enabled,
)
from sparse_transfer.quantization.attention import (
    ATTENTION_IMPLEMENTATION,
    QATAttentionMatMuls,
    attention_quants,
    qat_attention_forward,
)

SUBMODULES = ["bert.embeddings", "bert.encoder", "bert.pooler", "classifier"]
EXCLUDE = ["LayerNorm", "Tanh"]
LAYERS = 2


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return make_tiny_bert(
        tmp_path_factory.mktemp("tiny"), hidden_size=32, num_layers=LAYERS, sparsity=0.9
    )


def _load(path):
    from transformers import AutoModelForSequenceClassification

    return AutoModelForSequenceClassification.from_pretrained(str(path)).eval()


def _batch(seed=0, n=3, length=10):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 60, (n, length), generator=g)
    mask = torch.ones_like(ids)
    mask[0, length - 3 :] = 0  # padding must stay masked through the quantized path
    return {"input_ids": ids, "attention_mask": mask}


def _calibrated(path):
    model = _load(path)
    prepare_qat(model, submodules=SUBMODULES, exclude_module_types=EXCLUDE)
    calibrate(model, [_batch(s) for s in range(3)])
    set_observers_enabled(model, False)
    return model


def test_every_self_attention_is_selected_and_qatmatmul_exclusion_turns_it_off(tiny_dir):
    model = _load(tiny_dir)
    expected = [f"bert.encoder.layer.{i}.attention.self" for i in range(LAYERS)]
    assert select_attention_modules(model, SUBMODULES, EXCLUDE) == expected
    assert select_attention_modules(model, ["bert.encoder.layer.1"], EXCLUDE) == expected[1:]
    assert select_attention_modules(model, SUBMODULES, [*EXCLUDE, "QATMatMul"]) == []
    assert select_attention_modules(model, ["classifier"], EXCLUDE) == []
    prepare_qat(model, submodules=SUBMODULES, exclude_module_types=EXCLUDE)
    assert list(attention_quants(model)) == expected
    assert qat_config(model)["attention_modules"] == expected
    assert model.config._attn_implementation == ATTENTION_IMPLEMENTATION
    # observers only: nothing new in the parameters or the state dict
    assert list(_load(tiny_dir).state_dict()) == list(model.state_dict())


def test_unsupported_architecture_gets_no_attention_quantization(tiny_dir):
    model = _load(tiny_dir)
    model.config.model_type = "some-decoder"
    assert select_attention_modules(model, SUBMODULES, EXCLUDE) == []


def test_symmetric_activation_quantizer_matches_formula():
    aq = ActivationFakeQuant(symmetric=True).train()
    x = torch.tensor([-2.0, -0.3, 0.0, 0.01, 1.0, 1.5])
    y = aq(x)
    scale = 2.0 / 127.5  # max|x| / ((qmax - qmin) / 2), zero point 0
    s, zp = aq.qparams()
    assert float(s) == pytest.approx(scale, rel=1e-6) and int(zp) == 0
    expected = torch.clamp(torch.round(x / scale), -128, 127) * scale
    assert torch.allclose(y, expected, atol=1e-7)
    assert float(y[2]) == 0.0  # zero is exact


def test_quantized_attention_is_eager_attention_on_fake_quantized_operands(tiny_dir):
    model = _calibrated(tiny_dir)
    module = model.bert.encoder.layer[0].attention.self
    holder: QATAttentionMatMuls = module.qat_attention
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(2, 2, 7, 16, generator=g) for _ in range(3))
    mask = torch.zeros(2, 1, 1, 7)
    mask[1, ..., 5:] = -10000.0

    def fq(aq, x):
        s, zp = (float(t) for t in aq.qparams())
        return (torch.clamp(torch.round(x / s) + zp, aq.qmin, aq.qmax) - zp) * s

    scores = fq(holder.query, q) @ fq(holder.key, k).transpose(2, 3) * 0.25
    probs = torch.softmax(scores + mask, dim=-1)
    want = (fq(holder.probs, probs) @ fq(holder.value, v)).transpose(1, 2)
    got, got_probs = qat_attention_forward(module, q, k, v, mask, scaling=0.25)
    assert torch.allclose(got, want, atol=1e-6)
    assert torch.allclose(got_probs, probs, atol=1e-6)
    assert float(got_probs[1, ..., 5:].max()) < 1e-4  # padding still masked


def test_bypass_gives_the_float_model_and_quantization_moves_outputs(tiny_dir):
    reference = _load(tiny_dir)
    batch = _batch(5)
    with torch.no_grad():
        want = reference(**batch).logits
        model = _calibrated(tiny_dir)
        with qat_bypassed(model):
            float_out = model(**batch).logits
        # hidden states: the int8 classifier input can absorb small differences in logits
        quantized = model.bert(**batch).last_hidden_state
        for holder in attention_quants(model).values():
            holder.enabled = False
        linears_only = model.bert(**batch).last_hidden_state
    assert torch.allclose(float_out, want, atol=1e-5)
    assert not torch.allclose(quantized, linears_only, atol=1e-6)  # the attention quantizers act


def test_attention_observers_save_restore_and_config_json_stays_plain(tiny_dir, tmp_path):
    model = _calibrated(tiny_dir)
    batch = _batch(7)
    with torch.no_grad():
        want = model(**batch).logits
    model.save_pretrained(str(tmp_path))
    save_qat_config(model, tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert ATTENTION_IMPLEMENTATION not in json.dumps(saved)  # loads anywhere without us
    fresh = _load(tmp_path)
    assert restore_qat(fresh, tmp_path)
    labels = [n for n, _ in activation_quants(fresh) if ".qat_attention." in n]
    assert len(labels) == 4 * LAYERS
    old = dict(activation_quants(model))
    for name, aq in activation_quants(fresh):
        assert float(aq.min_val) == float(old[name].min_val)
        assert float(aq.max_val) == float(old[name].max_val)
        assert not aq.observer_enabled
    with torch.no_grad():
        assert torch.equal(fresh(**batch).logits, want)


def test_quantized_attention_runs_in_fp32_under_autocast(tiny_dir):
    """Mixed precision (fp16 on GPU, bf16 here) must not run the int8 simulation in half."""
    model = _calibrated(tiny_dir)
    module = model.bert.encoder.layer[0].attention.self
    g = torch.Generator().manual_seed(2)
    q, k, v = (torch.randn(1, 2, 6, 16, generator=g) for _ in range(3))
    q, k, v = (x.bfloat16() for x in (q, k, v))
    # the fp32 computation on the same (bf16-valued) inputs, autocast off
    want, _ = qat_attention_forward(module, q.float(), k.float(), v.float(), None, scaling=0.25)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got, _ = qat_attention_forward(module, q, k, v, None, scaling=0.25)
    assert got.dtype == torch.float32
    assert torch.allclose(got, want, atol=1e-6)  # a bf16 simulation is ~1e-3 off here
    batch = _batch(3)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.isfinite(model(**batch).logits).all()
