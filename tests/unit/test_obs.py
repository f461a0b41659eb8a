"""OBSPruningModifier: Fisher inverse, OBS saliency and weight update, in training."""

from __future__ import annotations

import pytest
import torch
from sparse_transfer.modifiers import FieldError
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


def _state(model, grads):
    def sampler(n):
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


def test_obs_rejects_block_masks():
    with pytest.raises(FieldError, match="unstructured"):
        _obs(mask_type="block4")
