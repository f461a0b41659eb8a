"""Gradual magnitude pruning (GMP, Zhu & Gupta 2017) as in SparseML.

Sparsity follows `inter_func` from `init_sparsity` at `start_epoch` to
`final_sparsity` at `end_epoch`, with p = (epoch - start) / (end - start):

    linear: s = s_i + (s_f - s_i) * p
    cubic:  s = s_f + (s_i - s_f) * (1 - p) ** 3      (Zhu & Gupta; SparseML's default)

Masks are recomputed at `start_epoch` and then every `update_frequency` epochs
(checked after each optimizer step, when the epoch just completed crosses an
update point), and once more at `end_epoch` so the target is reached exactly
there: per tensor, ``round(s * numel)`` weights (``round(s * blocks)`` blocks for
block masks) are zero. `global_sparsity` ranks all selected tensors together.
Between updates the masks are held like ConstantPruningModifier holds them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

from sparse_transfer.modifiers.base import Event, FieldError, Modifier, register_modifier

MASK_TYPES = ("unstructured", "block4", "block")


def interpolate_sparsity(
    epoch: float, start: float, end: float, init: float, final: float, inter_func: str
) -> float:
    """Scheduled sparsity at `epoch` (clamped to [start, end])."""
    if end <= start:
        return final if epoch >= start else init
    p = min(max((epoch - start) / (end - start), 0.0), 1.0)
    if inter_func == "linear":
        return init + (final - init) * p
    if inter_func == "cubic":
        return final + (init - final) * (1.0 - p) ** 3
    raise ValueError(f"unknown inter_func {inter_func!r}")


def block_size(mask_type: str | list[int]) -> int:
    """1 for unstructured, N for ``blockN`` / ``[1, N]``."""
    if isinstance(mask_type, list):
        return int(mask_type[1])
    if mask_type == "unstructured":
        return 1
    if mask_type == "block":
        return 4
    return int(mask_type[len("block") :])


@dataclass
class _GradualPruningFields(Modifier):
    """Schedule fields and behaviour shared by GMP and oBS (SparseML names and defaults)."""

    init_sparsity: float | str
    final_sparsity: float | dict[Any, Any]
    start_epoch: float
    end_epoch: float
    update_frequency: float
    params: str | list[str]
    leave_enabled: bool = True
    inter_func: Literal["linear", "cubic"] = "cubic"
    mask_type: str | list[int] = "unstructured"
    global_sparsity: bool = False
    log_types: str | list[str] = "__ALL__"
    masks: Any = field(default=None, init=False, repr=False, compare=False)

    def validate(self) -> None:
        super().validate()
        if isinstance(self.init_sparsity, str):
            if self.init_sparsity != "auto":
                raise FieldError(
                    "init_sparsity",
                    f"expected a number in [0, 1) or 'auto', got {self.init_sparsity!r}",
                )
        elif not 0.0 <= self.init_sparsity < 1.0:
            raise FieldError("init_sparsity", f"must be in [0, 1), got {self.init_sparsity}")
        for value in self._finals():
            if not 0.0 < value < 1.0:
                raise FieldError("final_sparsity", f"must be in (0, 1), got {value}")
        if isinstance(self.final_sparsity, dict):
            for patterns in self.final_sparsity.values():
                if not (isinstance(patterns, str) or (isinstance(patterns, list) and patterns)):
                    raise FieldError(
                        "final_sparsity", "a {sparsity: [params]} mapping needs params lists"
                    )
        if self.end_epoch == -1 or self.end_epoch < self.start_epoch or self.start_epoch < 0:
            raise FieldError(
                "end_epoch",
                f"needs 0 <= start_epoch <= end_epoch, got {self.start_epoch}..{self.end_epoch}",
            )
        if self.update_frequency <= 0 and self.end_epoch > self.start_epoch:
            raise FieldError("update_frequency", f"must be > 0, got {self.update_frequency}")
        if isinstance(self.mask_type, str) and not (
            self.mask_type in MASK_TYPES
            or (
                self.mask_type.startswith("block")
                and self.mask_type[5:].isdigit()
                and int(self.mask_type[5:]) > 0
            )
        ):
            raise FieldError(
                "mask_type",
                f"expected unstructured, block4 (blockN) or [1, N], got {self.mask_type!r}",
            )
        if isinstance(self.mask_type, list) and (
            len(self.mask_type) != 2 or self.mask_type[0] != 1 or self.mask_type[1] < 1
        ):
            raise FieldError("mask_type", f"block shapes must be [1, N], got {self.mask_type!r}")

    def _finals(self) -> list[float]:
        raw = (
            self.final_sparsity.keys()
            if isinstance(self.final_sparsity, dict)
            else [self.final_sparsity]
        )
        out = []
        for value in raw:
            try:
                out.append(float(value))
            except (TypeError, ValueError):
                raise FieldError(
                    "final_sparsity", f"expected a number in (0, 1), got {value!r}"
                ) from None
        return out

    # --- schedule -----------------------------------------------------------
    def sparsity_at(
        self, epoch: float, final: float | None = None, init: float | None = None
    ) -> float:
        init = self._init if init is None else init
        final = self._finals()[0] if final is None else final
        return interpolate_sparsity(
            epoch, self.start_epoch, self.end_epoch, init, final, self.inter_func
        )

    def _update_index(self, epoch: float) -> int:
        """Which update point the epoch has reached (-1: before start; end counts as last)."""
        if epoch < self.start_epoch - 1e-9:
            return -1
        if epoch >= self.end_epoch - 1e-9:
            return 1 << 30
        return int(math.floor((epoch - self.start_epoch) / self.update_frequency + 1e-9))

    # --- lifecycle ----------------------------------------------------------
    def initialize(self, state: Any) -> None:
        from sparse_transfer.modifiers._masks import ParamMasks, select_params

        groups: list[tuple[float, dict]] = []
        if isinstance(self.final_sparsity, dict):
            for value, patterns in self.final_sparsity.items():
                groups.append((float(value), select_params(state.model, patterns)))
        else:
            groups.append((float(self.final_sparsity), select_params(state.model, self.params)))
        self._groups = groups
        all_selected = {n: pm for _, sel in groups for n, pm in sel.items()}
        if self.init_sparsity == "auto":
            zeros = sum(int((p == 0).sum()) for p, _ in all_selected.values())
            total = sum(p.numel() for p, _ in all_selected.values())
            self._init = zeros / max(total, 1)
        else:
            self._init = float(self.init_sparsity)
        # Existing zeros are the starting mask (on resume: the masks saved as zeros).
        self.masks = ParamMasks.from_zeros(all_selected)
        self._last_update = -1
        self._disabled = False
        idx = self._update_index(state.epoch)
        if idx >= 0:
            # Fresh start: apply the scheduled sparsity now. On resume the
            # checkpoint's zeros already are the masks of the last update.
            if state.global_step == 0:
                self._update_masks(state)
            self._last_update = idx

    def on_event(self, event: Event, state: Any) -> None:
        if self.masks is None or self._disabled:
            return
        if event is Event.OPTIMIZER_PRE_STEP:
            if state.epoch >= self.start_epoch:
                self.masks.mask_grads_()
        elif event is Event.OPTIMIZER_POST_STEP:
            idx = self._update_index(state.epoch)
            if idx > self._last_update:
                self._last_update = idx
                self._update_masks(state)
            if state.epoch >= self.start_epoch:
                self.masks.apply_()
            if not self.leave_enabled and state.epoch >= self.end_epoch - 1e-9:
                self._disabled = True

    def _update_masks(self, state: Any) -> None:
        """Recomputes masks for the scheduled sparsity at `state.epoch`."""
        for final, selected in self._groups:
            target = self.sparsity_at(state.epoch, final=final)
            self._prune_group(state, selected, target)
        self.masks.apply_()
        if state.log is not None:
            state.log({f"{self.recipe_name}/sparsity": self.sparsity_at(state.epoch)})

    def _scores(self, state: Any, selected: dict) -> list:
        """Importance per weight (higher = keep); GMP uses |w|."""
        return [p.detach().abs() for p, _ in selected.values()]

    def _prune_group(self, state: Any, selected: dict, target: float) -> None:
        import torch
        from sparse_transfer.modifiers._masks import (
            from_blocks,
            input_dim,
            keep_masks_from_scores,
            to_blocks,
        )

        names = list(selected)
        scores = self._scores(state, selected)
        current = dict(zip(self.masks.names, self.masks.masks, strict=True))
        size = block_size(self.mask_type)
        infos, ranked = [], []
        for name, score in zip(names, scores, strict=True):
            _, module = selected[name]
            score = score.float()
            if name in current:  # already-pruned weights rank lowest: sparsity only grows
                score = torch.where(current[name].bool(), score, torch.full_like(score, -1.0))
            if size > 1 and score.dim() >= 2:
                blocks, info = to_blocks(score, input_dim(module), size)
                infos.append(info)
                ranked.append(blocks.mean(dim=-1))
            else:
                infos.append(None)
                ranked.append(score)
        keeps = keep_masks_from_scores(ranked, target, self.global_sparsity)
        for name, keep, info in zip(names, keeps, infos, strict=True):
            if info is not None:
                keep = from_blocks(keep.unsqueeze(-1).expand(*keep.shape, size), info)
            self.masks.set(name, selected[name][0], keep)


@register_modifier("GMPruningModifier")
@dataclass
class GMPruningModifier(_GradualPruningFields):
    """Gradual magnitude pruning from init to final sparsity."""


@register_modifier("MagnitudePruningModifier")
@dataclass
class MagnitudePruningModifier(GMPruningModifier):
    """SparseML's per-layer GMP alias (same fields and behaviour)."""
