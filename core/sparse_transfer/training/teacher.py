"""Runs the distillation teacher cheaply: inference mode plus a per-example cache.

The teacher is frozen and in eval mode (no dropout), so its outputs for a given
example never change. Caching them per example (keyed by the example's real,
unpadded tokens) means only the first epoch pays for teacher forward passes;
later epochs, whatever the shuffling or dynamic padding, are served from
memory. A batch with any miss runs the teacher on the whole batch once.

Under ``torchrun`` every process has its own runner and cache, filled with the
examples of its own shards. That is correct by construction: the key is the
example's content, not its index or rank, and a frozen teacher's output for it
is the same on every rank, so a cache hit on any rank returns exactly what the
teacher would compute there. (Memory is per process: a rank caches at most the
examples it was given, up to ``max_cache_bytes``.)
"""

from __future__ import annotations

from typing import Any

import torch

DEFAULT_INPUT_KEYS = ("input_ids", "attention_mask", "token_type_ids", "position_ids")
SPAN_KEYS = ("start_logits", "end_logits")


class TeacherRunner:
    """``runner(inputs, input_keys, output_keys) -> {key: tensor}``."""

    def __init__(
        self, teacher: torch.nn.Module, cache: bool = True, max_cache_bytes: int = 2 << 30
    ):
        self.teacher = teacher
        self.cache_enabled = cache
        self.max_cache_bytes = max_cache_bytes
        self._cache: dict[bytes, dict[str, torch.Tensor]] = {}
        self._cache_bytes = 0
        self.hits = 0
        self.misses = 0

    def __call__(
        self,
        inputs: dict[str, Any],
        input_keys: list[str] | None,
        output_keys: list[str] | tuple[str, ...],
    ) -> dict[str, torch.Tensor]:
        keys = input_keys or [k for k in DEFAULT_INPUT_KEYS if k in inputs]
        missing = [k for k in keys if k not in inputs]
        if missing:
            from sparse_transfer.errors import RecipeError

            raise RecipeError(
                f"DistillationModifier: teacher_input_keys {missing} are not in the batch "
                f"(batch keys: {sorted(inputs)})"
            )
        feed = {k: inputs[k] for k in keys}
        mask = feed.get("attention_mask", inputs.get("attention_mask"))
        row_keys = self._row_keys(feed, mask) if self.cache_enabled else None
        if row_keys is not None:
            rows = [self._cache.get(k) for k in row_keys]
            if all(r is not None for r in rows) and all(
                all(o in r for o in output_keys) for r in rows
            ):
                self.hits += len(rows)
                return self._assemble(rows, output_keys, mask)
        self.teacher.eval()
        with torch.inference_mode():
            out = self.teacher(**feed)
        result = {}
        for k in output_keys:
            value = out[k] if k in out else None
            if value is None:
                from sparse_transfer.errors import RecipeError

                raise RecipeError(f"DistillationModifier: the teacher returns no {k!r} output")
            result[k] = value.clone()  # a normal tensor, safe to use outside inference mode
        self.misses += len(next(iter(feed.values())))
        if row_keys is not None:
            self._store(row_keys, result, mask)
        return result

    # --- cache ---------------------------------------------------------------
    @staticmethod
    def _row_keys(feed: dict[str, Any], mask: Any) -> list[bytes] | None:
        if mask is None or not all(torch.is_tensor(v) and v.dim() == 2 for v in feed.values()):
            return None
        valid = mask.detach().bool().cpu()
        cpu = {k: v.detach().cpu() for k, v in sorted(feed.items())}
        keys = []
        for i in range(valid.shape[0]):
            row = valid[i]
            keys.append(b"|".join(v[i][row].numpy().tobytes() for v in cpu.values()))
        return keys

    @staticmethod
    def _token_level(key: str, value: torch.Tensor) -> bool:
        return key in SPAN_KEYS or value.dim() >= 3

    def _store(self, row_keys: list[bytes], result: dict[str, torch.Tensor], mask: Any) -> None:
        if self._cache_bytes >= self.max_cache_bytes:
            return
        valid = mask.bool()
        for i, rk in enumerate(row_keys):
            entry = {}
            for k, v in result.items():
                row = v[i][valid[i]] if self._token_level(k, v) else v[i]
                entry[k] = row.detach().clone()
                self._cache_bytes += row.numel() * row.element_size()
            self._cache[rk] = entry

    @staticmethod
    def _assemble(rows: list[dict], output_keys, mask: Any) -> dict[str, torch.Tensor]:
        out = {}
        valid = mask.bool()
        for k in output_keys:
            first = rows[0][k]
            token_level = k in SPAN_KEYS or first.dim() >= 2
            if not token_level:
                out[k] = torch.stack([r[k] for r in rows])
                continue
            full = first.new_zeros((valid.shape[0], valid.shape[1], *first.shape[1:]))
            for i, r in enumerate(rows):
                full[i][valid[i]] = r[k]
            out[k] = full
        return out
