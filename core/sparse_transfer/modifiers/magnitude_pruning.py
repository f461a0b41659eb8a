"""Gradual magnitude pruning (GMP, Zhu & Gupta 2017) as in SparseML.

Sparsity follows `inter_func` from `init_sparsity` at `start_epoch` to
`final_sparsity` at `end_epoch`, with p = (epoch - start) / (end - start):

    linear: s = s_i + (s_f - s_i) * p
    cubic:  s = s_f + (s_i - s_f) * (1 - p) ** 3      (Zhu & Gupta; SparseML's default)

Masks are recomputed at `start_epoch` and then every `update_frequency` epochs
(checked after each optimizer step, when the epoch just completed crosses an
update point), and once more at `end_epoch` so the target is reached exactly
there: per tensor, ``round(s * numel)`` weights (``round(s * blocks)`` blocks for
block masks) are zero; ``blockRxC`` (e.g. ``block16x4``, this project's own) blocks R
output rows by C inputs, what AMX tiles can skip whole; N:M masks (``"2:4"``) prune the
M - N lowest of every M consecutive input weights, so their one sparsity is 1 - N/M
(`_nm_keep`).
`global_sparsity` ranks all selected tensors together.
Between updates the masks are held like ConstantPruningModifier holds them.

Nothing is held before `start_epoch`: the first update ranks every selected
weight by its score at that moment, zeros the model happened to have at step 0
included (they count as pruned only if something held them, e.g. a
ConstantPruningModifier). From then on the weights this modifier pruned stay
pruned, as SparseML 1.8's masks start all-ones and its scorers pin masked
weights (``modifier_pruning_base.py`` / ``modifier_pruning_obs.py``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

from sparse_transfer.modifiers.base import Event, FieldError, Modifier, register_modifier

MASK_TYPES = ("unstructured", "block4", "block")
#: SparseML's alias for 2:4 (``get_mask_creator_default``: ``tensorrt`` -> N=2, M=4).
NM_ALIASES = {"tensorrt": (2, 4)}
#: How far a scheduled target may be from an N:M pattern's sparsity (SparseML's 1e-2).
NM_TOLERANCE = 1e-2
#: ``blockN`` (1 x N) or ``blockRxC`` (R output rows x C inputs).
_BLOCK_RE = re.compile(r"block(?:(\d+)|(\d+)x(\d+))")


def nm_pattern(mask_type: str | list[int]) -> tuple[int, int] | None:
    """(N, M) for an ``"N:M"`` mask type (keep N of every M weights), else None."""
    if not isinstance(mask_type, str):
        return None
    if mask_type in NM_ALIASES:
        return NM_ALIASES[mask_type]
    parts = mask_type.split(":")
    if len(parts) == 2 and all(p.strip().isdigit() for p in parts):
        return int(parts[0]), int(parts[1])
    return None


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


def block_shape(mask_type: str | list[int]) -> tuple[int, int]:
    """(output rows, inputs) of one block: (1, 1) unstructured, (1, N) for ``blockN`` /
    ``[1, N]``, (R, C) for ``blockRxC``.

    ``blockRxC`` is ours: SparseML's list form ``[R, C]`` is refused here because its
    BlockMaskCreator reshapes a ``[N, K]`` weight to ``[N*K/(R*C), R*C]``, which groups R*C
    consecutive weights of one row, not an R x C block
    (``sparseml/pytorch/sparsification/pruning/mask_creator.py``,
    ``_get_blocked_tens_shape_and_validate``).
    """
    if isinstance(mask_type, list):
        return 1, int(mask_type[1])
    if mask_type == "unstructured":
        return 1, 1
    if mask_type == "block":
        return 1, 4
    match = _BLOCK_RE.fullmatch(mask_type)
    if match is None:
        raise ValueError(f"not a block mask type: {mask_type!r}")
    rows, cols = match.group(2), match.group(3)
    return (int(rows), int(cols)) if rows else (1, int(match.group(1)))


@dataclass(kw_only=True)
class _GradualPruningFields(Modifier):
    """Fields and behaviour shared by GMP and oBS (SparseML names and defaults)."""

    init_sparsity: float | str
    final_sparsity: float | dict[Any, Any]
    params: str | list[str]
    leave_enabled: bool = True
    inter_func: Literal["linear", "cubic"] = "cubic"
    mask_type: str | list[int] = "unstructured"
    global_sparsity: bool = False
    log_types: str | list[str] = "__ALL__"
    masks: Any = field(default=None, init=False, repr=False, compare=False)

    required_fields = ("start_epoch", "end_epoch", "update_frequency")
    clock_events = frozenset({Event.OPTIMIZER_POST_STEP})
    update_at_end = True  # the last update reaches final_sparsity exactly at end_epoch

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
        nm = nm_pattern(self.mask_type)
        if nm is not None:
            self._validate_nm(nm)
        elif isinstance(self.mask_type, str) and not (
            self.mask_type in MASK_TYPES or self._valid_block_name()
        ):
            raise FieldError(
                "mask_type",
                f"expected unstructured, block4 (blockN), block16x4 (blockRxC), N:M (e.g. 2:4) "
                f"or [1, N], got {self.mask_type!r}",
            )
        if isinstance(self.mask_type, list) and (
            len(self.mask_type) != 2 or self.mask_type[0] != 1 or self.mask_type[1] < 1
        ):
            raise FieldError(
                "mask_type",
                f"block shapes must be [1, N] (for R x C blocks write blockRxC, e.g. "
                f"block16x4), got {self.mask_type!r}",
            )

    def _valid_block_name(self) -> bool:
        match = _BLOCK_RE.fullmatch(self.mask_type)
        return match is not None and min(block_shape(self.mask_type)) > 0

    def _validate_nm(self, nm: tuple[int, int]) -> None:
        """N:M: 0 < N < M, and every target the schedule can reach is the pattern's sparsity.

        SparseML's NMPruningMaskCreator raises at the first mask update whose target is
        more than 1e-2 from ``1 - N/M``; here such a recipe is refused when it loads.
        """
        n, m = nm
        if not 0 < n < m:
            raise FieldError("mask_type", f"N:M needs 0 < N < M, got {self.mask_type!r}")
        pattern = 1.0 - n / m
        for value in self._finals():
            if abs(value - pattern) > NM_TOLERANCE:
                raise FieldError(
                    "final_sparsity",
                    f"mask_type {self.mask_type} prunes {m - n} of every {m} weights "
                    f"(sparsity {pattern:g}); got {value}",
                )
        if self.end_epoch > self.start_epoch and (
            not isinstance(self.init_sparsity, float | int)
            or abs(float(self.init_sparsity) - pattern) > NM_TOLERANCE
        ):
            raise FieldError(
                "init_sparsity",
                f"mask_type {self.mask_type} has one sparsity ({pattern:g}): set init_sparsity "
                f"to it too (or start_epoch = end_epoch), got {self.init_sparsity!r}",
            )

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
        if init is None:
            init = getattr(self, "_init", None)
        if init is None:  # 'auto' before the start: the schedule is not known yet
            init = 0.0 if self.init_sparsity == "auto" else float(self.init_sparsity)
        final = self._finals()[0] if final is None else final
        return interpolate_sparsity(
            epoch, self.start_epoch, self.end_epoch, init, final, self.inter_func
        )

    # --- actions (the schedule is the base's) -------------------------------------
    def on_initialize(self, state: Any) -> None:
        from sparse_transfer.modifiers._masks import ParamMasks, select_params

        groups: list[tuple[float, dict]] = []
        if isinstance(self.final_sparsity, dict):
            for value, patterns in self.final_sparsity.items():
                groups.append((float(value), select_params(state.model, patterns)))
        else:
            groups.append((float(self.final_sparsity), select_params(state.model, self.params)))
        self._groups = groups
        if nm_pattern(self.mask_type) is not None:
            for _, selected in groups:
                self._check_nm_shapes(selected)
        elif block_shape(self.mask_type)[0] > 1:
            for _, selected in groups:
                self._check_row_blocks(selected)
        self._init = None if self.init_sparsity == "auto" else float(self.init_sparsity)
        # Nothing is held before start_epoch: zeros the model happens to have now are not
        # "already pruned" (AdamW revives them); the first update ranks every weight by
        # this modifier's own score, as SparseML's all-ones starting masks do.
        self.masks = ParamMasks()
        self._last_targets = [0.0] * len(groups)
        self._disabled = False
        self._resume_step = state.global_step if state.global_step > 0 else None
        self._resuming = False

    def on_start(self, state: Any) -> None:
        from sparse_transfer.modifiers._masks import ParamMasks

        if state.global_step != self._resume_step:
            return
        # Resumed inside (or after) the window: the checkpoint's zeros are the masks of
        # the last update, so hold them instead of pruning again.
        all_selected = {n: pm for _, sel in self._groups for n, pm in sel.items()}
        self.masks = ParamMasks.from_zeros(all_selected)
        if self._init is None:
            self._init = self._current_sparsity(all_selected)
        self._last_targets = [self.sparsity_at(state.epoch, final=f) for f, _ in self._groups]
        self._resuming = True

    def on_update(self, state: Any) -> None:
        if self._resuming:
            self._resuming = False
            return
        self._update_masks(state)

    def on_end(self, state: Any) -> None:
        if not self.leave_enabled:
            self._disabled = True

    def act(self, event: Event, state: Any) -> None:
        if not self.started or self._disabled:
            return
        if event is Event.OPTIMIZER_PRE_STEP:
            self.masks.mask_grads_()
        elif event is Event.OPTIMIZER_POST_STEP:
            self.masks.apply_()

    @staticmethod
    def _current_sparsity(selected: dict) -> float:
        zeros = sum(int((p == 0).sum()) for p, _ in selected.values())
        total = sum(p.numel() for p, _ in selected.values())
        return zeros / max(total, 1)

    def _update_masks(self, state: Any) -> None:
        """Recomputes masks for the scheduled sparsity at `state.epoch`."""
        if self._init is None:  # init_sparsity: auto = the selected weights' zeros at start
            self._init = self._current_sparsity(
                {n: pm for _, sel in self._groups for n, pm in sel.items()}
            )
        for i, (final, selected) in enumerate(self._groups):
            target = self.sparsity_at(state.epoch, final=final)
            self._prune_group(state, selected, self._last_targets[i], target)
            self._last_targets[i] = target
        self.masks.apply_()
        if state.log is not None:
            state.log({f"{self.recipe_name}/sparsity": self.sparsity_at(state.epoch)})

    def _held(self, name: str) -> Any:
        """This modifier's own keep-mask of `name` (None before its first update)."""
        for n, m in zip(self.masks.names, self.masks.masks, strict=True):
            if n == name:
                return m
        return None

    def _prune_group(self, state: Any, selected: dict, previous: float, target: float) -> None:
        """Magnitude pruning of one group to `target` (`previous` is oBS's; unused here)."""
        scores = [p.detach().abs().float() for p, _ in selected.values()]
        keeps = self._keep_masks(selected, scores, target)
        for name, keep in zip(selected, keeps, strict=True):
            self.masks.set(name, selected[name][0], keep)

    def _keep_masks(self, selected: dict, scores: list, target: float) -> list:
        """The one place masks are computed: keep-masks at `target` from per-weight scores.

        Weights this modifier already pruned rank lowest (sparsity only grows);
        block masks rank each block (1 x N along the input dimension, or R x C) by its
        mean score (SparseML's FourBlockMaskCreator, grouping_fn mean).
        """
        from sparse_transfer.modifiers._masks import (
            block_ranking,
            input_dim,
            keep_masks_from_scores,
        )

        nm = nm_pattern(self.mask_type)
        if nm is not None:
            return [
                self._nm_keep(selected[name][1], score, name, nm, target)
                for name, score in zip(selected, scores, strict=True)
            ]
        rows, cols = block_shape(self.mask_type)
        rankings = [
            block_ranking(self._pinned(name, score), input_dim(selected[name][1]), rows, cols)
            for name, score in zip(selected, scores, strict=True)
        ]
        keeps = keep_masks_from_scores([r for r, _ in rankings], target, self.global_sparsity)
        return [restore(keep) for keep, (_, restore) in zip(keeps, rankings, strict=True)]

    def _nm_keep(self, module: Any, score: Any, name: str, nm: tuple[int, int], target: float):
        """Keep the N best-scoring of every M consecutive weights along the input axis.

        SparseML's NMPruningMaskCreator: groups of M along the last axis of a Linear
        weight, ``argsort`` of the scores, the M - N lowest pruned; a target of 0
        prunes nothing. Weights this modifier already pruned score -1, so they stay
        pruned. `global_sparsity` does not apply (every group has its own count).
        """
        import torch

        from sparse_transfer.modifiers._masks import from_blocks, input_dim, to_blocks

        n, m = nm
        if target == 0.0:
            return torch.ones_like(score, dtype=torch.bool)
        groups, info = to_blocks(self._pinned(name, score), input_dim(module), m)
        keep = torch.ones_like(groups, dtype=torch.bool)
        keep.scatter_(-1, torch.argsort(groups, dim=-1)[..., : m - n], False)
        return from_blocks(keep, info)

    def _pinned(self, name: str, score: Any) -> Any:
        """`score` with the weights this modifier already pruned at -1: they rank lowest,
        so sparsity only grows."""
        import torch

        held = self._held(name)
        if held is None:
            return score
        return torch.where(held.bool(), score, torch.full_like(score, -1.0))

    def _check_row_blocks(self, selected: dict) -> None:
        from sparse_transfer.modifiers._masks import input_dim

        rows, _ = block_shape(self.mask_type)
        for name, (p, module) in selected.items():
            out_axis = 1 - input_dim(module)
            if p.dim() != 2 or p.shape[out_axis] % rows:
                raise FieldError(
                    "mask_type",
                    f"{self.mask_type} needs 2-D weights whose output axis is a multiple of "
                    f"{rows}; {name} has shape {tuple(p.shape)}",
                )

    def _check_nm_shapes(self, selected: dict) -> None:
        from sparse_transfer.modifiers._masks import input_dim

        _, m = nm_pattern(self.mask_type)
        for name, (p, module) in selected.items():
            if p.dim() < 2 or p.shape[input_dim(module)] % m:
                raise FieldError(
                    "mask_type",
                    f"{self.mask_type} needs weights whose input axis is a multiple of {m}; "
                    f"{name} has shape {tuple(p.shape)}",
                )


@register_modifier("GMPruningModifier")
@dataclass(kw_only=True)
class GMPruningModifier(_GradualPruningFields):
    """Gradual magnitude pruning from init to final sparsity."""


@register_modifier("MagnitudePruningModifier")
@dataclass(kw_only=True)
class MagnitudePruningModifier(GMPruningModifier):
    """SparseML's per-layer GMP alias (same fields and behaviour)."""
