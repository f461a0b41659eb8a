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

`mask_type: block4` (oBERT's 4-block pattern) scores each block Q of four
consecutive weights along the input dimension by ``w_Q^T ([F^-1]_QQ)^-1 w_Q / 2``
and updates ``dw = -F^-1[:, Q] ([F^-1]_QQ)^-1 w_Q``; the Fisher blocks must hold
whole 4-blocks (`fisher_block_size` divisible by 4).

`num_recomputations` > 1 reaches each target in that many smaller steps from
the previous update's target, re-estimating the Fisher in between. Memory is
``numel * fisher_block_size`` floats per tensor, as in the paper.

Follows SparseML 1.8's `modifier_pruning_obs.py` (`OBSPruningModifier`,
`OBSPruningParamsScorer`, `EmpiricalBlockFisherInverse`): the scores of weights
this modifier pruned are -inf so they stay pruned; zeros it did not prune are
ranked by their (zero) score like any other weight; gradients are sampled with
`grad_sampler_kwargs` (its ``batch_size`` replaces the training batch size).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from sparse_transfer.modifiers.base import FieldError, bounded, register_modifier
from sparse_transfer.modifiers.magnitude_pruning import _GradualPruningFields

OBS_MASK_TYPES = ("unstructured", "block4")
#: `grad_sampler_kwargs` keys honoured (SparseML passes them to the DataLoader).
GRAD_SAMPLER_KEYS = ("batch_size",)


@register_modifier("OBSPruningModifier")
@dataclass(kw_only=True)
class OBSPruningModifier(_GradualPruningFields):
    """Second-order pruning with a block-diagonal empirical Fisher."""

    inter_func: Literal["linear", "cubic"] = "cubic"
    global_sparsity: bool = True
    num_grads: int = bounded(64, ge=1)
    damp: float = bounded(1e-7, gt=0)
    fisher_block_size: int = bounded(50, ge=1)
    grad_sampler_kwargs: dict[str, Any] = field(default_factory=dict)
    num_recomputations: int = bounded(1, ge=1)

    def validate(self) -> None:
        super().validate()
        if self.mask_type not in OBS_MASK_TYPES:
            raise FieldError(
                "mask_type",
                f"OBSPruningModifier supports {' or '.join(OBS_MASK_TYPES)}, got {self.mask_type!r}",
            )
        if self.mask_type == "block4" and self.fisher_block_size % 4:
            raise FieldError(
                "fisher_block_size",
                f"must be divisible by 4 for mask_type block4, got {self.fisher_block_size}",
            )
        unknown = sorted(set(self.grad_sampler_kwargs) - set(GRAD_SAMPLER_KEYS))
        if unknown:
            raise FieldError(
                "grad_sampler_kwargs",
                f"unknown key(s) {', '.join(unknown)}; supported: {', '.join(GRAD_SAMPLER_KEYS)}",
            )
        batch = self.grad_sampler_kwargs.get("batch_size")
        if batch is not None and (
            isinstance(batch, bool) or not isinstance(batch, int) or batch < 1
        ):
            raise FieldError(
                "grad_sampler_kwargs", f"batch_size must be an int >= 1, got {batch!r}"
            )

    def on_initialize(self, state: Any) -> None:
        if getattr(state, "grad_sampler", None) is None:
            raise FieldError(
                "num_grads",
                "OBSPruningModifier needs the trainer's gradient sampler (use SparseTrainer)",
            )
        if self.mask_type == "block4":
            self._check_block4(state)
        super().on_initialize(state)

    def _check_block4(self, state: Any) -> None:
        from sparse_transfer.modifiers._masks import input_dim, select_params

        patterns = (
            [p for v in self.final_sparsity.values() for p in ([v] if isinstance(v, str) else v)]
            if isinstance(self.final_sparsity, dict)
            else self.params
        )
        for name, (p, module) in select_params(state.model, patterns).items():
            if p.dim() < 2 or input_dim(module) != p.dim() - 1 or p.shape[-1] % 4:
                raise FieldError(
                    "mask_type",
                    f"block4 needs weights whose last axis is the input axis and a multiple of "
                    f"4; {name} has shape {tuple(p.shape)}",
                )

    # --- Fisher -------------------------------------------------------------------
    def _blocks(self, flat: Any) -> Any:
        import torch

        b = self.fisher_block_size
        pad = (-flat.numel()) % b
        if pad:
            flat = torch.nn.functional.pad(flat, (0, pad))
        return flat.view(-1, b)

    def _fisher_inverses(self, state: Any, selected: dict, keeps: dict) -> dict:
        """Block-diagonal inverse empirical Fisher per tensor, ``(blocks, B, B)``.

        The one place oBS accumulates Fisher statistics: `num_grads` sampled
        gradients (masked by the current keep-masks), each folded in by a
        Sherman-Morrison rank-1 update of ``F^-1``.
        """
        import torch

        b = self.fisher_block_size
        finv = {}
        for name, (p, _) in selected.items():
            nblocks = -(-p.numel() // b)
            eye = torch.eye(b, device=p.device, dtype=torch.float32)
            finv[name] = eye.expand(nblocks, b, b).clone() / self.damp
        m = float(self.num_grads)
        for _ in state.grad_sampler(self.num_grads, **self.grad_sampler_kwargs):
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

    def _saliency(self, finv: Any, w: Any) -> tuple[Any, Any]:
        """(per-weight score, v) with the OBS update ``dw = -F^-1 v`` restricted to pruned Q.

        unstructured: score ``w^2 / (2 [F^-1]_ii)``, ``v = w / [F^-1]_ii``;
        block4: score ``w_Q^T ([F^-1]_QQ)^-1 w_Q / 2`` per 4-block, ``v_Q = ([F^-1]_QQ)^-1 w_Q``.
        """
        import torch

        n = w.numel()
        if self.mask_type == "unstructured":
            diag = torch.diagonal(finv, dim1=-2, dim2=-1).reshape(-1)[:n]
            return w.pow(2) / (2.0 * diag), w / diag
        b = self.fisher_block_size
        # The 4x4 diagonal sub-blocks of every Fisher block: (nblocks * B/4, 4, 4).
        sub = torch.stack([finv[:, i : i + 4, i : i + 4] for i in range(0, b, 4)], dim=1)
        sub = sub.reshape(-1, 4, 4)[: n // 4]
        wq = w.reshape(-1, 4)
        v = torch.linalg.solve(sub, wq)
        score = 0.5 * (wq * v).sum(-1)
        return score.unsqueeze(-1).expand(-1, 4).reshape(-1), v.reshape(-1)

    # --- pruning step ---------------------------------------------------------------
    def _prune_group(self, state: Any, selected: dict, previous: float, target: float) -> None:
        """Prunes from the previous update's target to `target` in `num_recomputations` steps."""
        import torch

        names = list(selected)
        keeps = {}
        for n in names:
            held = self._held(n)
            p = selected[n][0]
            keeps[n] = held.float() if held is not None else torch.ones_like(p, dtype=torch.float32)
        steps = self.num_recomputations
        for r in range(1, steps + 1):
            level = previous + (target - previous) * r / steps
            finv = self._fisher_inverses(state, selected, keeps)
            scores, vs = [], {}
            for name in names:
                p = selected[name][0]
                w = p.detach().float().reshape(-1)
                score, vs[name] = self._saliency(finv[name], w)
                scores.append(score.view_as(p))
            new_keeps = self._keep_masks(selected, scores, level)
            with torch.no_grad():
                for name, keep in zip(names, new_keeps, strict=True):
                    p = selected[name][0]
                    pruned_now = (keeps[name].bool() & ~keep).reshape(-1)
                    if pruned_now.any():
                        v = torch.where(pruned_now, vs[name], torch.zeros_like(vs[name]))
                        dw = torch.bmm(finv[name], self._blocks(v).unsqueeze(-1)).reshape(-1)[
                            : p.numel()
                        ]
                        p.data.add_((-dw).view_as(p).to(p.dtype))
                    keeps[name] = keep.float()
                    self.masks.set(name, p, keep)
            self.masks.apply_()
