"""GMPruningModifier: schedule values, exact targets, block4, N:M and global sparsity."""

from __future__ import annotations

import pytest
import torch
from transformers import TrainerCallback

from sparse_transfer.modifiers import FieldError
from sparse_transfer.modifiers._masks import prunable_params
from sparse_transfer.modifiers.magnitude_pruning import interpolate_sparsity
from tests.unit._train_utils import make_trainer, mod, tiny_dataset, tiny_model

ENCODER = "re:bert\\.encoder\\..*(query|key|value|dense)\\.weight$"


def _encoder_linear(model) -> dict[str, torch.nn.Parameter]:
    return {
        n: p
        for n, (p, _) in prunable_params(model).items()
        if n.startswith("bert.encoder.") and p.dim() == 2
    }


class _Recorder(TrainerCallback):
    """Records each tensor's zero count after every optimizer step."""

    def __init__(self, model):
        self.model = model
        self.zeros: list[dict[str, int]] = []

    def on_step_end(self, args, state, control, **kwargs):
        self.zeros.append({n: int((p == 0).sum()) for n, p in _encoder_linear(self.model).items()})


def _gmp(**overrides):
    name = overrides.pop("name", "GMPruningModifier")
    fields = dict(
        init_sparsity=0.05, final_sparsity=0.8, start_epoch=0.0, end_epoch=2.0,
        update_frequency=0.5, params=ENCODER, inter_func="cubic",
    )  # fmt: skip
    fields.update(overrides)
    return mod(name, **fields)


def test_cubic_and_linear_closed_forms():
    # SparseML / Zhu & Gupta cubic: s_f + (s_i - s_f) * (1 - p)^3
    assert interpolate_sparsity(0.0, 0, 2, 0.05, 0.8, "cubic") == pytest.approx(0.05)
    assert interpolate_sparsity(0.5, 0, 2, 0.05, 0.8, "cubic") == pytest.approx(
        0.8 - 0.75 * 0.75**3
    )
    assert interpolate_sparsity(1.0, 0, 2, 0.05, 0.8, "cubic") == pytest.approx(0.8 - 0.75 * 0.125)
    assert interpolate_sparsity(3.0, 0, 2, 0.05, 0.8, "cubic") == pytest.approx(0.8)
    assert interpolate_sparsity(0.5, 0, 2, 0.0, 0.8, "linear") == pytest.approx(0.2)


def test_gmp_follows_cubic_schedule_and_hits_target_at_end_epoch(tmp_path):
    model, tok = tiny_model(tmp_path)
    # 16 rows / batch 4 = 4 steps per epoch; updates every 0.5 epoch = every 2 steps.
    trainer = make_trainer(tmp_path, model, tiny_dataset(tok, 16), recipe=[_gmp()], epochs=2)
    recorder = _Recorder(model)
    trainer.add_callback(recorder)
    trainer.train()
    assert trainer.sparse_state.steps_per_epoch == 4
    numel = {n: p.numel() for n, p in _encoder_linear(model).items()}
    gmp = trainer.manager.modifiers[0]
    for step, zeros in enumerate(recorder.zeros, start=1):
        epoch = step / 4
        last_update = min((step // 2) * 0.5, 2.0)  # update points 0, 0.5, 1.0, ...
        expected = gmp.sparsity_at(last_update)
        for name, count in zeros.items():
            assert abs(count - expected * numel[name]) <= 1, (step, epoch, name, count)
    # At end_epoch (the last step) every tensor holds the final sparsity within one weight.
    for name, p in _encoder_linear(model).items():
        assert abs(int((p == 0).sum()) - 0.8 * p.numel()) <= 1, name
    # Intermediate point really is cubic, not linear.
    mid = recorder.zeros[3]  # after step 4: epoch 1.0
    name = "bert.encoder.layer.0.intermediate.dense.weight"
    assert mid[name] == round((0.8 - 0.75 * 0.125) * numel[name])


def test_block4_masks_whole_blocks_along_input_dim(tmp_path):
    model, tok = tiny_model(tmp_path)
    gmp = _gmp(
        init_sparsity=0.5,
        final_sparsity=0.5,
        end_epoch=0.5,
        update_frequency=0.25,
        mask_type="block4",
    )
    make_trainer(tmp_path, model, tiny_dataset(tok, 8), recipe=[gmp], epochs=0.5).train()
    for name, p in _encoder_linear(model).items():
        blocks = p.detach().reshape(p.shape[0], -1, 4).eq(0)  # (out, in/4, 4)
        whole = blocks.all(-1)
        assert torch.equal(whole, blocks.any(-1)), f"{name}: partially zero block"
        assert abs(int(whole.sum()) - 0.5 * whole.numel()) <= 1, name


def test_global_sparsity_ranks_all_tensors_together(tmp_path):
    model, tok = tiny_model(tmp_path)
    with torch.no_grad():  # make one layer much larger in magnitude: global pruning spares it
        _encoder_linear(model)["bert.encoder.layer.1.output.dense.weight"].mul_(100.0)
    gmp = _gmp(
        init_sparsity=0.6,
        final_sparsity=0.6,
        end_epoch=0.5,
        update_frequency=0.25,
        global_sparsity=True,
    )
    make_trainer(tmp_path, model, tiny_dataset(tok, 8), recipe=[gmp], epochs=0.5).train()
    params = _encoder_linear(model)
    total = sum(p.numel() for p in params.values())
    zeros = sum(int((p == 0).sum()) for p in params.values())
    assert abs(zeros - 0.6 * total) <= 1
    big = params["bert.encoder.layer.1.output.dense.weight"]
    assert int((big == 0).sum()) < 0.05 * big.numel()


def test_magnitude_alias_and_bad_fields():
    m = _gmp(name="MagnitudePruningModifier")
    assert m.recipe_name == "MagnitudePruningModifier"
    with pytest.raises(FieldError, match="final_sparsity"):
        _gmp(final_sparsity=1.5)
    with pytest.raises(FieldError, match="mask_type"):
        _gmp(mask_type="channelz")
    with pytest.raises(FieldError, match="inter_func"):
        _gmp(inter_func="quartic")


def test_gmp_from_a_sparse_start_ranks_by_magnitude_at_start_epoch():
    """Zeros present at step 0 are not 'already pruned': at start_epoch GMP prunes exactly
    the round(s * n) smallest-magnitude weights of that moment (issue 16, fix 1)."""
    from types import SimpleNamespace

    from sparse_transfer.modifiers import Event

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 8, bias=False))
    weight = model[0].weight
    with torch.no_grad():
        weight.view(-1)[: int(0.9 * 128)] = 0.0  # 90% sparse at step 0
    gmp = mod("GMPruningModifier", init_sparsity=0.25, final_sparsity=0.75, start_epoch=1.0,
              end_epoch=2.0, update_frequency=0.5, params=["0.weight"], inter_func="linear")  # fmt: skip
    state = SimpleNamespace(model=model, epoch=0.0, global_step=0, log=None)
    gmp.initialize(state)
    with torch.no_grad():  # before start nothing holds the zeros: training revives them
        weight.copy_(torch.randn(8, 16))
    snapshot = weight.detach().abs().clone()
    state.global_step, state.epoch = 4, 1.0
    gmp.on_event(Event.OPTIMIZER_POST_STEP, state)
    expected = torch.zeros(128, dtype=torch.bool)
    expected[snapshot.view(-1).argsort()[:32]] = True
    assert torch.equal(weight.detach().view(-1) == 0, expected)
    # Then the schedule, exactly: 0.5 at epoch 1.5, 0.75 at the end.
    for epoch, zeros in ((1.5, 64), (2.0, 96)):
        with torch.no_grad():
            weight.add_(torch.where(weight == 0, torch.zeros_like(weight), 1e-3))
        state.epoch = epoch
        gmp.on_event(Event.OPTIMIZER_POST_STEP, state)
        assert int((weight == 0).sum()) == zeros, epoch
        assert bool((weight.view(-1)[expected] == 0).all())  # pruned stay pruned


def test_constant_pruning_holds_initial_zeros_until_gmp_starts(tmp_path):
    """With a ConstantPruningModifier holding the step-0 zeros, they are the first pruned."""
    model, tok = tiny_model(tmp_path, sparsity=0.5)
    params = _encoder_linear(model)
    initial = {n: (p == 0).clone() for n, p in params.items()}
    recipe = [
        mod("ConstantPruningModifier", params=ENCODER, start_epoch=0.0, end_epoch=1.0),
        _gmp(init_sparsity=0.6, final_sparsity=0.6, start_epoch=1.0, end_epoch=1.0),
    ]
    make_trainer(tmp_path, model, tiny_dataset(tok, 8), recipe=recipe, epochs=1.5).train()
    for name, p in params.items():
        zeros = p == 0
        assert bool(zeros[initial[name]].all()), name
        assert abs(int(zeros.sum()) - 0.6 * p.numel()) <= 1, name


def test_block4_kept_exactly_through_training(tmp_path):
    model, tok = tiny_model(tmp_path)
    gmp = _gmp(init_sparsity=0.3, final_sparsity=0.7, end_epoch=1.0, update_frequency=0.5,
               mask_type="block4")  # fmt: skip
    trainer = make_trainer(tmp_path, model, tiny_dataset(tok, 16), recipe=[gmp], epochs=2)
    recorder = _Recorder(model)
    trainer.add_callback(recorder)
    trainer.train()
    for name, p in _encoder_linear(model).items():
        blocks = p.detach().reshape(p.shape[0], -1, 4).eq(0)
        whole = blocks.all(-1)
        assert torch.equal(whole, blocks.any(-1)), name
        assert int(whole.sum()) == round(0.7 * whole.numel()), name
    # held for the epoch after end_epoch (leave_enabled): the count never moves
    assert all(z == recorder.zeros[3] for z in recorder.zeros[4:])


def _nm_groups_zero(p: torch.Tensor, m: int) -> torch.Tensor:
    """Zeros per group of `m` consecutive weights along a Linear's input axis."""
    return p.detach().reshape(p.shape[0], -1, m).eq(0).sum(-1)


def test_two_four_masks_keep_the_two_largest_of_every_four_and_hold_through_training(tmp_path):
    model, tok = tiny_model(tmp_path)
    before = {n: p.detach().clone() for n, p in _encoder_linear(model).items()}
    gmp = _gmp(init_sparsity=0.5, final_sparsity=0.5, start_epoch=0.0, end_epoch=1.0,
               update_frequency=0.5, mask_type="2:4")  # fmt: skip
    trainer = make_trainer(tmp_path, model, tiny_dataset(tok, 16), recipe=[gmp], epochs=2)
    recorder = _Recorder(model)
    trainer.add_callback(recorder)
    trainer.train()
    for name, p in _encoder_linear(model).items():
        # exactly 2 of every 4 consecutive input weights are zero (random init: no other zeros)
        assert torch.equal(_nm_groups_zero(p, 4), torch.full_like(_nm_groups_zero(p, 4), 2)), name
        assert int((p == 0).sum()) == p.numel() // 2
    # The first update (start_epoch, before any step) pruned the two smallest of each group
    # of the initial weights; weights move little in 4 steps, so check on a tensor whose
    # masks were fixed at that first update: the held zeros never move afterwards.
    first = recorder.zeros[0]
    assert all(z == first for z in recorder.zeros)
    name = "bert.encoder.layer.0.attention.self.query.weight"
    w0 = before[name].reshape(before[name].shape[0], -1, 4).abs()
    expected_pruned = torch.zeros_like(w0, dtype=torch.bool)
    expected_pruned.scatter_(-1, torch.argsort(w0, dim=-1)[..., :2], True)
    got = _encoder_linear(model)[name].detach().reshape_as(w0).eq(0)
    assert torch.equal(got, expected_pruned)


def test_n_m_fields_are_checked_when_the_recipe_loads():
    from sparse_transfer.modifiers.magnitude_pruning import nm_pattern

    assert nm_pattern("2:4") == (2, 4) and nm_pattern("tensorrt") == (2, 4)
    assert nm_pattern("block4") is None and nm_pattern([1, 4]) is None
    _gmp(init_sparsity=0.75, final_sparsity=0.75, mask_type="1:4")
    _gmp(init_sparsity=0.5, final_sparsity=0.5, mask_type="tensorrt")
    with pytest.raises(FieldError, match="final_sparsity.*prunes 2 of every 4"):
        _gmp(init_sparsity=0.5, final_sparsity=0.9, mask_type="2:4")
    with pytest.raises(FieldError, match="init_sparsity.*one sparsity"):
        _gmp(init_sparsity=0.05, final_sparsity=0.5, mask_type="2:4")  # a schedule N:M can't take
    _gmp(init_sparsity=0.0, final_sparsity=0.5, start_epoch=1.0, end_epoch=1.0, mask_type="2:4")
    with pytest.raises(FieldError, match="0 < N < M"):
        _gmp(init_sparsity=0.5, final_sparsity=0.5, mask_type="4:4")
    with pytest.raises(FieldError, match="OBSPruningModifier supports unstructured or block4"):
        _gmp(name="OBSPruningModifier", init_sparsity=0.5, final_sparsity=0.5, mask_type="2:4")


def test_n_m_refuses_a_weight_whose_input_axis_does_not_divide(tmp_path):
    model, tok = tiny_model(tmp_path)
    gmp = _gmp(init_sparsity=0.6, final_sparsity=0.6, end_epoch=0.5, update_frequency=0.25,
               mask_type="2:5")  # fmt: skip
    from sparse_transfer.errors import RecipeError

    with pytest.raises(RecipeError, match="2:5 needs weights whose input axis is a multiple of 5"):
        make_trainer(tmp_path, model, tiny_dataset(tok, 8), recipe=[gmp], epochs=0.5).train()


def test_two_four_pattern_is_in_the_exported_onnx_weights(tmp_path):
    import numpy as np
    import onnx
    from onnx import numpy_helper

    from sparse_transfer.export import export_onnx

    model, tok = tiny_model(tmp_path)
    gmp = _gmp(init_sparsity=0.5, final_sparsity=0.5, end_epoch=0.5, update_frequency=0.25,
               mask_type="2:4")  # fmt: skip
    make_trainer(tmp_path, model, tiny_dataset(tok, 8), recipe=[gmp], epochs=1).train()
    saved = tmp_path / "nm"
    model.save_pretrained(saved)
    tok.save_pretrained(saved)
    deployment = export_onnx(saved, "text-classification", format="fp32", sequence_length=16)
    graph = onnx.load(str(deployment / "model.onnx"))
    checked = 0
    for init in graph.graph.initializer:
        w = numpy_helper.to_array(init)
        if w.ndim == 2 and w.shape in ((32, 32), (32, 64), (64, 32)):
            # ONNX MatMul weights are (in, out): groups of 4 run along axis 0
            groups = (w.T.reshape(w.shape[1], -1, 4) == 0).sum(-1)
            if (w == 0).mean() > 0.4:  # the pruned encoder Linears (pooler/classifier are dense)
                assert np.array_equal(groups, np.full_like(groups, 2)), init.name
                checked += 1
    assert checked == 12  # 2 layers x (q, k, v, attention out, intermediate, output)


def test_block16x4_masks_whole_row_blocks_through_training(tmp_path):
    """blockRxC: every 16-output-row x 4-input block is all zero or all kept, round(s * blocks)
    of them zero, in every encoder Linear (tiny BERT: hidden 32, intermediate 64)."""
    model, tok = tiny_model(tmp_path)
    gmp = _gmp(init_sparsity=0.05, final_sparsity=0.5, end_epoch=0.5, update_frequency=0.25,
               mask_type="block16x4")  # fmt: skip
    make_trainer(tmp_path, model, tiny_dataset(tok, 8), recipe=[gmp], epochs=0.5).train()
    for name, p in _encoder_linear(model).items():
        zero = p.detach().eq(0)
        out, width = zero.shape
        padded = torch.nn.functional.pad(zero, (0, (-width) % 4), value=True)
        blocks = padded.reshape(out // 16, 16, -1, 4).transpose(1, 2).reshape(out // 16, -1, 64)
        whole = blocks.all(-1)
        assert torch.equal(whole, blocks.any(-1)), f"{name}: partially zero 16x4 block"
        assert int(whole.sum()) == round(0.5 * whole.numel()), name


def test_block16x4_keeps_the_blocks_with_the_largest_mean_magnitude():
    from types import SimpleNamespace

    from sparse_transfer.modifiers import Event

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 32, bias=False))  # [32 out, 8 in]: 2 x 2 blocks
    with torch.no_grad():
        model[0].weight.copy_(torch.randn(32, 8) * 0.01)
        model[0].weight[16:, 4:] += 5.0  # block (1, 1): largest mean |w|
        model[0].weight[:16, :4] -= 3.0  # block (0, 0): second (sign does not matter)
        model[0].weight[0, 4] = 9.0  # one big weight cannot carry block (0, 1) past them
    gmp = mod("GMPruningModifier", init_sparsity=0.5, final_sparsity=0.5, start_epoch=0.0,
              end_epoch=0.0, update_frequency=1.0, params=["0.weight"], mask_type="block16x4")  # fmt: skip
    state = SimpleNamespace(model=model, epoch=0.0, global_step=0, log=None)
    gmp.initialize(state)
    gmp.on_event(Event.OPTIMIZER_POST_STEP, state)
    kept = model[0].weight.detach().ne(0)
    expected = torch.zeros(32, 8, dtype=torch.bool)
    expected[16:, 4:] = expected[:16, :4] = True
    assert torch.equal(kept, expected)


def test_block_mask_type_names_are_checked():
    assert _gmp(mask_type="block16x4").mask_type == "block16x4"
    for bad in ("block16x0", "block0x4", "block16x", "blockx4", "block16x4x2"):
        with pytest.raises(FieldError, match="mask_type"):
            _gmp(mask_type=bad)
    with pytest.raises(FieldError, match="blockRxC"):
        _gmp(mask_type=[16, 4])  # SparseML's list form groups 64 inputs of one row


def test_block16x4_refuses_an_output_axis_not_a_multiple_of_16():
    from types import SimpleNamespace

    model = torch.nn.Sequential(torch.nn.Linear(8, 24, bias=False))
    gmp = mod("GMPruningModifier", init_sparsity=0.5, final_sparsity=0.5, start_epoch=0.0,
              end_epoch=0.0, update_frequency=1.0, params=["0.weight"], mask_type="block16x4")  # fmt: skip
    with pytest.raises(FieldError, match=r"0\.weight has shape \(24, 8\)"):
        gmp.initialize(SimpleNamespace(model=model, epoch=0.0, global_step=0, log=None))
