"""OBSPruningModifier: Fisher inverse, OBS saliency and weight update, in training."""

from __future__ import annotations

import pytest
import torch

from sparse_transfer.modifiers import Event, FieldError
from sparse_transfer.training.state import TrainingState
from tests.unit._train_utils import make_trainer, mod, tiny_dataset, tiny_model


class _Toy(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(4, 2, bias=False)


def _obs(**kw):
    fields = dict(init_sparsity=0.25, final_sparsity=0.25, start_epoch=0.0, end_epoch=0.0,
                  update_frequency=1.0, params=["lin.weight"], num_grads=3, damp=0.1,
                  fisher_block_size=4, global_sparsity=False)  # fmt: skip
    fields.update(kw)
    return mod("OBSPruningModifier", **fields)


def _state(model, grads, calls=None):
    def sampler(n, **kwargs):
        if calls is not None:
            calls.append(kwargs)
        assert n == len(grads)
        for g in grads:
            model.lin.weight.grad = g.clone()
            yield
        model.lin.weight.grad = None

    return TrainingState(model=model, grad_sampler=sampler)


def test_fisher_inverse_and_obs_update_match_direct_computation():
    torch.manual_seed(0)
    model = _Toy()
    with torch.no_grad():
        model.lin.weight.copy_(torch.tensor([[0.9, -0.2, 0.5, 1.1], [0.05, 0.7, -0.8, 0.3]]))
    grads = [torch.randn(2, 4) for _ in range(3)]
    w0 = model.lin.weight.detach().clone()
    obs = _obs()
    obs.initialize(_state(model, grads))  # one-shot at epoch 0: prune 2 of the 8 weights
    # Direct: F = damp I + (1/m) sum g g^T per block (a block = one row of 4 here).
    finvs, saliency = [], []
    for row in range(2):
        g = torch.stack([gr[row] for gr in grads])
        finv = torch.linalg.inv(0.1 * torch.eye(4) + g.T @ g / 3)
        finvs.append(finv)
        saliency.append(w0[row] ** 2 / (2 * torch.diagonal(finv)))
    pruned = torch.stack(saliency).flatten().argsort()[:2]
    pruned_mask = torch.zeros(8, dtype=torch.bool)
    pruned_mask[pruned] = True
    pruned_mask = pruned_mask.view(2, 4)
    w = model.lin.weight.detach()
    for row in range(2):
        v = torch.where(pruned_mask[row], w0[row] / torch.diagonal(finvs[row]), torch.zeros(4))
        expected = w0[row] - finvs[row] @ v
        expected[pruned_mask[row]] = 0.0
        assert torch.allclose(w[row], expected, atol=1e-5), row
    assert torch.equal(w == 0, pruned_mask)


def test_obs_prunes_to_target_in_training(tmp_path):
    model, tok = tiny_model(tmp_path)
    obs = mod(
        "OBSPruningModifier", init_sparsity=0.3, final_sparsity=0.6, start_epoch=0.0, end_epoch=1.0,
        update_frequency=0.5, params=["re:bert\\.encoder\\..*dense\\.weight$"], num_grads=2,
        fisher_block_size=8, damp=1e-4,
    )  # fmt: skip
    trainer = make_trainer(tmp_path, model, tiny_dataset(tok, 8), recipe=[obs], batch_size=4)
    trainer.train()
    params = [
        p
        for n, p in model.named_parameters()
        if n.startswith("bert.encoder.") and n.endswith("dense.weight")
    ]
    total = sum(p.numel() for p in params)
    zeros = sum(int((p == 0).sum()) for p in params)
    assert abs(zeros - 0.6 * total) <= 1  # global_sparsity defaults to True for oBS


def test_obs_block4_scores_and_updates_whole_blocks():
    """block4: score w_Q^T ([F^-1]_QQ)^-1 w_Q / 2, update -F^-1[:, Q] ([F^-1]_QQ)^-1 w_Q."""
    torch.manual_seed(1)
    model = _Toy()
    model.lin = torch.nn.Linear(8, 2, bias=False)
    with torch.no_grad():
        model.lin.weight.copy_(torch.randn(2, 8))
    grads = [torch.randn(2, 8) for _ in range(3)]
    w0 = model.lin.weight.detach().clone()
    obs = _obs(mask_type="block4", fisher_block_size=8, final_sparsity=0.5, init_sparsity=0.5)
    obs.initialize(_state(model, grads))  # prune 2 of the 4 blocks (global)
    finvs = []
    scores = []
    for row in range(2):  # one Fisher block of 8 = one row
        g = torch.stack([gr[row] for gr in grads])
        finv = torch.linalg.inv(0.1 * torch.eye(8) + g.T @ g / 3)
        finvs.append(finv)
        for q in range(2):
            sl = slice(4 * q, 4 * q + 4)
            wq = w0[row, sl]
            scores.append(0.5 * wq @ torch.linalg.solve(finv[sl, sl], wq))
    pruned_blocks = set(torch.stack(scores).argsort()[:2].tolist())
    w = model.lin.weight.detach()
    for row in range(2):
        v = torch.zeros(8)
        for q in range(2):
            if row * 2 + q in pruned_blocks:
                sl = slice(4 * q, 4 * q + 4)
                v[sl] = torch.linalg.solve(finvs[row][sl, sl], w0[row, sl])
        expected = w0[row] - finvs[row] @ v
        for q in range(2):
            sl = slice(4 * q, 4 * q + 4)
            if row * 2 + q in pruned_blocks:
                assert torch.equal(w[row, sl], torch.zeros(4)), (row, q)
            else:
                assert torch.allclose(w[row, sl], expected[sl], atol=1e-5), (row, q)
                assert bool((w[row, sl] != 0).all())


def test_obs_block4_validation():
    with pytest.raises(FieldError, match="fisher_block_size.*divisible by 4"):
        _obs(mask_type="block4", fisher_block_size=6)
    with pytest.raises(FieldError, match="mask_type"):
        _obs(mask_type="block8")
    with pytest.raises(FieldError, match="grad_sampler_kwargs.*unknown key"):
        _obs(grad_sampler_kwargs={"shuffle": False})
    with pytest.raises(FieldError, match="grad_sampler_kwargs.*batch_size"):
        _obs(grad_sampler_kwargs={"batch_size": 0})
    model = _Toy()
    model.lin = torch.nn.Linear(6, 2, bias=False)  # 6 inputs: not whole 4-blocks
    with pytest.raises(FieldError, match="lin.weight has shape"):
        _obs(mask_type="block4", fisher_block_size=4).initialize(_state(model, []))


def test_obs_from_a_sparse_start_follows_the_schedule():
    """Zeros present at step 0 are not 'already pruned': the first update prunes exactly
    init_sparsity by oBS's own score, then the schedule (issue 16, fix 1)."""
    torch.manual_seed(2)
    model = _Toy()
    model.lin = torch.nn.Linear(20, 5, bias=False)  # 100 weights
    with torch.no_grad():
        model.lin.weight.copy_(torch.randn(5, 20))
        model.lin.weight.view(-1)[:90] = 0.0  # 90% sparse at step 0
    grads = [torch.randn(5, 20) for _ in range(2)]
    calls = []
    state = _state(model, grads, calls)
    state.steps_per_epoch = 1
    obs = _obs(init_sparsity=0.3, final_sparsity=0.8, start_epoch=1.0, end_epoch=3.0,
               update_frequency=1.0, num_grads=2, fisher_block_size=10, inter_func="linear",
               grad_sampler_kwargs={"batch_size": 8})  # fmt: skip
    obs.initialize(state)
    assert int((model.lin.weight == 0).sum()) == 90  # nothing held or pruned before start
    with torch.no_grad():  # training revives the zeros (as AdamW does)
        model.lin.weight.add_(0.01)
    expected = {1: 30, 2: 55, 3: 80}
    for step in (1, 2, 3):
        state.global_step = step
        obs.on_event(Event.OPTIMIZER_POST_STEP, state)
        assert int((model.lin.weight == 0).sum()) == expected[step], step
    # grad_sampler_kwargs reach the sampler (batch_size for the Fisher gradients).
    assert calls == [{"batch_size": 8}] * 3


def test_grad_sampler_kwargs_batch_size_used_for_fisher_gradients(tmp_path):
    model, tok = tiny_model(tmp_path)
    obs = mod(
        "OBSPruningModifier", init_sparsity=0.3, final_sparsity=0.3, start_epoch=0.0, end_epoch=0.0,
        update_frequency=1.0, params=["re:bert\\.encoder\\..*dense\\.weight$"], num_grads=3,
        fisher_block_size=8, damp=1e-4, grad_sampler_kwargs={"batch_size": 2},
    )  # fmt: skip
    trainer = make_trainer(tmp_path, model, tiny_dataset(tok, 8), recipe=[obs], batch_size=4)
    sizes: list[int] = []
    model.register_forward_pre_hook(
        lambda m, args, kwargs: sizes.append(int(kwargs["input_ids"].shape[0])), with_kwargs=True
    )
    trainer.train()
    # one-shot at initialize: 3 Fisher gradients of batch 2, then 2 training steps of batch 4
    assert sizes == [2, 2, 2, 4, 4]
