"""Optimal BERT Surgeon pruning (Kurtic et al. 2022, arXiv 2203.07259).

Same schedule as GMP (`_GradualPruningFields`); at each pruning update:

1. collect `num_grads` fresh mini-batch gradients (through the trainer's
   gradient sampler) and build, for every selected tensor, the inverse of the
   block-diagonal empirical Fisher ``F = damp * I + (1/m) sum g g^T`` over
   blocks of `fisher_block_size` consecutive weights, with one Sherman-Morrison
   rank-1 update per gradient (no matrix inversion);
2. score each weight by the OBS saliency ``w_i^2 / (2 [F^-1]_ii)`` and prune the
   lowest (per tensor, or across tensors with `global_sparsity`);
3. update the surviving weights of each block to compensate:
   ``dw = -F^-1 (w_Q / diag(F^-1)_Q)`` summed over the pruned set Q (the
   oBERT / SparseML approximation that treats pruned weights independently).

`num_recomputations` > 1 reaches each target in that many smaller steps,
re-estimating the Fisher in between. Memory is ``numel * fisher_block_size``
floats per tensor, as in the paper.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from sparse_transfer.modifiers.base import FieldError, register_modifier
from sparse_transfer.modifiers.magnitude_pruning import _GradualPruningFields


@register_modifier("OBSPruningModifier")
@dataclass
class OBSPruningModifier(_GradualPruningFields):
    """Second-order pruning with a block-diagonal empirical Fisher."""

    inter_func: Literal["linear", "cubic"] = "cubic"
    global_sparsity: bool = True
    num_grads: int = 64
    damp: float = 1e-7
    fisher_block_size: int = 50
    grad_sampler_kwargs: dict[str, Any] = field(default_factory=dict)
    num_recomputations: int = 1

    def validate(self) -> None:
        super().validate()
        if self.num_grads < 1:
            raise FieldError("num_grads", f"must be >= 1, got {self.num_grads}")
        if self.damp <= 0:
            raise FieldError("damp", f"must be > 0, got {self.damp}")
        if self.fisher_block_size < 1:
            raise FieldError("fisher_block_size", f"must be >= 1, got {self.fisher_block_size}")
        if self.num_recomputations < 1:
            raise FieldError("num_recomputations", f"must be >= 1, got {self.num_recomputations}")
        if self.mask_type != "unstructured":
            raise FieldError(
                "mask_type",
                f"OBSPruningModifier supports 'unstructured' only, got {self.mask_type!r}",
            )

    def initialize(self, state: Any) -> None:
        if getattr(state, "grad_sampler", None) is None:
            raise FieldError(
                "num_grads",
                "OBSPruningModifier needs the trainer's gradient sampler (use SparseTrainer)",
            )
        super().initialize(state)

    # --- Fisher -------------------------------------------------------------------
    def _blocks(self, flat: Any) -> Any:
        import torch

        b = self.fisher_block_size
        pad = (-flat.numel()) % b
        if pad:
            flat = torch.nn.functional.pad(flat, (0, pad))
        return flat.view(-1, b)

    def _fisher_inverses(self, state: Any, selected: dict, keeps: dict) -> dict:
        """Block-diagonal inverse empirical Fisher per tensor, ``(blocks, B, B)``."""
        import torch

        b = self.fisher_block_size
        finv = {}
        for name, (p, _) in selected.items():
            nblocks = -(-p.numel() // b)
            eye = torch.eye(b, device=p.device, dtype=torch.float32)
            finv[name] = eye.expand(nblocks, b, b).clone() / self.damp
        m = float(self.num_grads)
        for _ in state.grad_sampler(self.num_grads):
            with torch.no_grad():
                for name, (p, _) in selected.items():
                    if p.grad is None:
                        continue
                    g = self._blocks((p.grad.detach().float() * keeps[name]).reshape(-1))
                    fg = torch.bmm(finv[name], g.unsqueeze(-1)).squeeze(-1)  # F^-1 g
                    denom = m + (g * fg).sum(-1)
                    finv[name].sub_(
                        torch.bmm(fg.unsqueeze(-1), fg.unsqueeze(1)) / denom.view(-1, 1, 1)
                    )
        return finv

    # --- pruning step ---------------------------------------------------------------
    def _prune_group(self, state: Any, selected: dict, target: float) -> None:
        import torch
        from sparse_transfer.modifiers._masks import keep_masks_from_scores

        names = list(selected)
        current = dict(zip(self.masks.names, self.masks.masks, strict=True))
        keeps = {
            n: current[n].float()
            if n in current
            else torch.ones_like(selected[n][0], dtype=torch.float32)
            for n in names
        }
        total = sum(k.numel() for k in keeps.values())
        start = sum(int(k.numel() - k.count_nonzero()) for k in keeps.values()) / max(total, 1)
        if target <= start + 0.5 / max(total, 1):
            return
        steps = self.num_recomputations
        for r in range(1, steps + 1):
            level = start + (target - start) * r / steps
            finv = self._fisher_inverses(state, selected, keeps)
            scores, diags = [], {}
            for name in names:
                p = selected[name][0]
                n = p.numel()
                diag = torch.diagonal(finv[name], dim1=-2, dim2=-1).reshape(-1)[:n]
                diags[name] = diag
                w = p.detach().float().reshape(-1)
                score = w.pow(2) / (2.0 * diag)
                score = torch.where(
                    keeps[name].reshape(-1).bool(), score, torch.full_like(score, -1.0)
                )
                scores.append(score.view_as(p))
            new_keeps = keep_masks_from_scores(scores, level, self.global_sparsity)
            with torch.no_grad():
                for name, keep in zip(names, new_keeps, strict=True):
                    p = selected[name][0]
                    pruned_now = keeps[name].bool() & ~keep
                    if pruned_now.any():
                        w = p.detach().float().reshape(-1)
                        q = pruned_now.reshape(-1)
                        v = torch.zeros_like(w)
                        v[q] = w[q] / diags[name][q]
                        dw = torch.bmm(finv[name], self._blocks(v).unsqueeze(-1)).reshape(-1)[
                            : w.numel()
                        ]
                        p.data.add_((-dw).view_as(p).to(p.dtype))
                    keeps[name] = keep.float()
                    self.masks.set(name, p, keep)
            self.masks.apply_()
