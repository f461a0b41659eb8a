"""Shared parameter selection and masking for the pruning modifiers.

Selection follows SparseML's `params` syntax: ``__ALL_PRUNABLE__`` (the
``.weight`` of every Linear, Embedding, ConvNd and HF ``Conv1D``), ``__ALL__``
(every parameter), exact parameter names, and ``re:`` regular expressions
(``re.match`` against the full parameter name, as SparseML does).

Masks are float tensors (1 keep / 0 pruned) in the parameter's dtype so one
``torch._foreach_mul_`` call applies all of them: the per-step cost is a single
fused pass over the pruned weights (and one over their gradients), with no
Python loop over elements.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from sparse_transfer.modifiers.base import FieldError

ALL_PRUNABLE = "__ALL_PRUNABLE__"
ALL = "__ALL__"

_PRUNABLE_CLASS_NAMES = {"Linear", "Embedding", "Conv1d", "Conv2d", "Conv3d", "Conv1D"}


def is_prunable_module(module: nn.Module) -> bool:
    """Linear / Embedding / ConvNd / HF Conv1D, including QAT subclasses of them."""
    if isinstance(module, (nn.Linear, nn.Embedding, nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        return True
    # HF's Conv1D (GPT-2 style) and QAT wrappers are matched by class name in the MRO,
    # so we neither import transformers here nor miss swapped-in QAT modules.
    return any(cls.__name__ in _PRUNABLE_CLASS_NAMES for cls in type(module).__mro__)


def input_dim(module: nn.Module | None) -> int:
    """The weight axis that indexes a layer's inputs (for block masks)."""
    if module is not None and any(c.__name__ == "Conv1D" for c in type(module).__mro__):
        return 0  # HF Conv1D stores (in_features, out_features)
    return 1


def prunable_params(model: nn.Module) -> dict[str, tuple[nn.Parameter, nn.Module]]:
    """``{param_name: (weight, module)}`` for every prunable layer's ``.weight``."""
    found: dict[str, tuple[nn.Parameter, nn.Module]] = {}
    seen: set[int] = set()
    for mod_name, module in model.named_modules():
        weight = getattr(module, "weight", None)
        if not isinstance(weight, nn.Parameter) or not is_prunable_module(module):
            continue
        if id(weight) in seen:  # tied weights (e.g. MLM decoder = word embeddings)
            continue
        seen.add(id(weight))
        found[f"{mod_name}.weight" if mod_name else "weight"] = (weight, module)
    return found


def select_params(
    model: nn.Module, params: str | Iterable[str], field: str = "params"
) -> dict[str, tuple[nn.Parameter, nn.Module | None]]:
    """Resolves a recipe's `params` value to ``{name: (parameter, owning module)}``.

    Raises:
        FieldError: a pattern matches nothing; names the pattern and the nearest
            parameter names so a typo is easy to fix.
    """
    patterns = [params] if isinstance(params, str) else list(params)
    if not patterns:
        raise FieldError(field, "no parameters given")
    owners = {}
    for mod_name, module in model.named_modules():
        for p_name, _ in module.named_parameters(recurse=False):
            owners[f"{mod_name}.{p_name}" if mod_name else p_name] = module
    named = dict(model.named_parameters())
    prunable = prunable_params(model)
    selected: dict[str, tuple[nn.Parameter, nn.Module | None]] = {}
    for pattern in patterns:
        if pattern == ALL_PRUNABLE:
            matched = {n: (p, m) for n, (p, m) in prunable.items()}
        elif pattern == ALL:
            matched = {n: (p, owners.get(n)) for n, p in named.items()}
        elif pattern.startswith("re:"):
            try:
                regex = re.compile(pattern[3:])
            except re.error as exc:
                raise FieldError(field, f"invalid regular expression {pattern!r}: {exc}") from None
            matched = {n: (p, owners.get(n)) for n, p in named.items() if regex.match(n)}
        else:
            matched = {pattern: (named[pattern], owners.get(pattern))} if pattern in named else {}
        if not matched:
            probe = pattern[3:] if pattern.startswith("re:") else pattern
            near = difflib.get_close_matches(probe, list(named), n=5, cutoff=0.3)
            hint = f"; nearest parameter names: {', '.join(near)}" if near else ""
            raise FieldError(field, f"{pattern!r} matches no parameter of the model{hint}")
        for name, value in matched.items():
            if all(value[0] is not other[0] for other in selected.values()):
                selected[name] = value
    return selected


class ParamMasks:
    """Masks for a set of parameters, applied with fused in-place ops."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self.params: list[nn.Parameter] = []
        self.masks: list[torch.Tensor] = []

    def __len__(self) -> int:
        return len(self.params)

    def set(self, name: str, param: nn.Parameter, keep: torch.Tensor) -> None:
        """Adds or replaces the mask of `param` (`keep` is bool or 0/1)."""
        mask = keep.to(device=param.device, dtype=param.dtype).detach()
        for i, p in enumerate(self.params):
            if p is param:
                self.masks[i] = mask
                return
        self.names.append(name)
        self.params.append(param)
        self.masks.append(mask)

    @classmethod
    def from_zeros(cls, selected: dict[str, tuple[nn.Parameter, Any]]) -> ParamMasks:
        """Masks that keep exactly the currently non-zero entries."""
        masks = cls()
        with torch.no_grad():
            for name, (param, _) in selected.items():
                masks.set(name, param, param.ne(0))
        return masks

    def _sync_dtypes(self) -> None:
        for i, (p, m) in enumerate(zip(self.params, self.masks, strict=True)):
            if m.dtype != p.dtype or m.device != p.device:
                self.masks[i] = m.to(device=p.device, dtype=p.dtype)

    @torch.no_grad()
    def apply_(self) -> None:
        """Zeros every masked weight (one fused pass)."""
        if not self.params:
            return
        try:
            torch._foreach_mul_([p.data for p in self.params], self.masks)
        except RuntimeError:  # dtype/device changed under us (e.g. .half()): resync once
            self._sync_dtypes()
            torch._foreach_mul_([p.data for p in self.params], self.masks)

    @torch.no_grad()
    def mask_grads_(self) -> None:
        """Zeros the gradients of masked weights so optimizer moments stay zero."""
        pairs = [
            (p.grad, m) for p, m in zip(self.params, self.masks, strict=True) if p.grad is not None
        ]
        if not pairs:
            return
        grads, masks = zip(*pairs, strict=True)
        if any(g.is_sparse for g in grads):
            for g, m in pairs:
                g.mul_(m)
            return
        if any(g.dtype != m.dtype for g, m in pairs):
            for g, m in pairs:
                g.mul_(m.to(g.dtype))
            return
        torch._foreach_mul_(list(grads), list(masks))

    def zero_counts(self) -> dict[str, int]:
        return {
            n: int(m.numel() - m.count_nonzero())
            for n, m in zip(self.names, self.masks, strict=True)
        }


def to_blocks(tensor: torch.Tensor, dim: int, size: int) -> tuple[torch.Tensor, tuple]:
    """Reshapes so the last axis holds `size` consecutive entries along `dim`.

    Returns the ``(..., size)`` view (zero padded when the axis is not a
    multiple of `size`) and what `from_blocks` needs to undo it.
    """
    moved = tensor.movedim(dim, -1)
    shape = moved.shape
    pad = (-shape[-1]) % size
    if pad:
        moved = torch.nn.functional.pad(moved, (0, pad))
    return moved.reshape(*shape[:-1], -1, size), (dim, shape, pad)


def from_blocks(blocks: torch.Tensor, info: tuple) -> torch.Tensor:
    dim, shape, pad = info
    flat = blocks.reshape(*shape[:-1], shape[-1] + pad)
    if pad:
        flat = flat[..., : shape[-1]]
    return flat.movedim(-1, dim)


def to_row_blocks(
    tensor: torch.Tensor, dim: int, rows: int, cols: int
) -> tuple[torch.Tensor, tuple]:
    """A 2-D weight as ``[out / rows, in / cols, rows * cols]`` blocks (`dim` its input axis).

    The input axis is zero padded to a multiple of `cols`; the output axis must be a
    multiple of `rows` (checked when the modifier starts).
    """
    moved = tensor.movedim(dim, -1)  # [out, in]
    out, width = moved.shape
    pad = (-width) % cols
    if pad:
        moved = torch.nn.functional.pad(moved, (0, pad))
    blocks = moved.reshape(out // rows, rows, -1, cols).transpose(1, 2)
    return blocks.reshape(out // rows, -1, rows * cols), (dim, out, width, rows, cols)


def from_row_blocks(keep: torch.Tensor, info: tuple) -> torch.Tensor:
    """A ``[out / rows, in / cols]`` block keep-mask back to the weight's shape."""
    dim, out, width, rows, cols = info
    full = keep[:, None, :, None].expand(-1, rows, -1, cols).reshape(out, -1)[:, :width]
    return full.movedim(-1, dim)


def block_ranking(score: torch.Tensor, dim: int, rows: int, cols: int):
    """`score` ranked per block of `rows` output rows x `cols` inputs (by mean, SparseML's
    grouping_fn mean), and the map from a block keep-mask back to the weight's shape.

    1 x 1 (or a 1-D tensor) ranks each weight; 1 x C groups along `dim` (`to_blocks`, any
    rank); R x C needs a 2-D weight (`to_row_blocks`).
    """
    if rows > 1:
        blocks, info = to_row_blocks(score, dim, rows, cols)
        return blocks.mean(dim=-1), lambda keep: from_row_blocks(keep, info)
    if cols > 1 and score.dim() >= 2:
        blocks, info = to_blocks(score, dim, cols)
        return blocks.mean(dim=-1), lambda keep: from_blocks(
            keep.unsqueeze(-1).expand(*keep.shape, cols), info
        )
    return score, lambda keep: keep


def keep_masks_from_scores(
    scores: list[torch.Tensor], sparsity: float, global_sparsity: bool
) -> list[torch.Tensor]:
    """Bool keep-masks zeroing the lowest-scoring ``round(sparsity * n)`` entries.

    Per tensor (or over the concatenation when `global_sparsity`); `topk`
    breaks ties deterministically, so the count is exact.
    """

    def _mask(flat: torch.Tensor) -> torch.Tensor:
        k = int(round(sparsity * flat.numel()))
        keep = torch.ones_like(flat, dtype=torch.bool)
        if k > 0:
            keep[torch.topk(flat, k, largest=False, sorted=False).indices] = False
        return keep

    if global_sparsity:
        flats = [s.reshape(-1).float() for s in scores]
        keep = _mask(torch.cat(flats))
        return [
            part.view_as(s)
            for part, s in zip(keep.split([f.numel() for f in flats]), scores, strict=True)
        ]
    return [_mask(s.reshape(-1).float()).view_as(s) for s in scores]
