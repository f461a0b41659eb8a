"""Finite numbers only: the one check every loader calls on numbers it accepts from a user.

NaN slips through range checks written ``x < 0`` (every comparison with NaN is False),
and a NaN learning rate or an infinite epoch count trains a model of NaNs or never
stops. So recipes, recipe args, CLI flags, run configs and pipeline parameters all
pass their numbers through `require_finite`, which names where the value came from.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

from sparse_transfer.errors import SparseTransferError


class NonFiniteError(SparseTransferError, ValueError):
    """A NaN or infinite number where only finite numbers make sense.

    Also a `ValueError`, so code that validates with ``except ValueError`` (argument
    dataclasses' ``__post_init__``) treats it as the bad value it is.
    """


def first_non_finite(value: Any, path: str = "") -> tuple[str, float] | None:
    """The first NaN/infinite float inside `value` (nested lists, tuples, dicts) as ``(path, x)``.

    `path` is extended with ``.key`` / ``[i]`` while descending, so a caller can name
    the exact field; None when every number is finite.
    """
    if isinstance(value, float):
        return None if math.isfinite(value) else (path, value)
    if isinstance(value, Mapping):
        for key, item in value.items():
            found = first_non_finite(item, f"{path}.{key}" if path else str(key))
            if found is not None:
                return found
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            found = first_non_finite(item, f"{path}[{i}]")
            if found is not None:
                return found
    return None


def require_finite(
    value: Any,
    where: str,
    error: type[SparseTransferError] = NonFiniteError,
) -> Any:
    """Returns `value` unchanged, or raises `error` naming `where` and the non-finite number.

    Args:
        value: a number, or nested lists/dicts of them (other types pass).
        where: what the value is, for the message, e.g. ``"run.yaml: parameter 'lr'"``.
        error: the error family of the caller (RecipeError, PipelineError, ...); the
            raised exception is also a `NonFiniteError`.
    """
    found = first_non_finite(value)
    if found is None:
        return value
    path, number = found
    label = f"{where}{'.' + path if path and not path.startswith('[') else path}"
    kind = error if issubclass(error, NonFiniteError) else _combined(error)
    raise kind(f"{label} is {_spell(number)}: only finite numbers are allowed (no NaN/infinity)")


def require_finite_fields(obj: Any, prefix: str = "--") -> None:
    """Checks every float field of a dataclass instance (argument dataclasses).

    The message names the flag as the user typed it (``--learning_rate``).
    """
    for item in dataclasses.fields(obj):
        require_finite(getattr(obj, item.name), f"{prefix}{item.name}")


def _spell(number: float) -> str:
    if math.isnan(number):
        return "NaN"
    return "infinity" if number > 0 else "-infinity"


_COMBINED: dict[type, type] = {}


def _combined(error: type[SparseTransferError]) -> type[NonFiniteError]:
    """A subclass of both `error` and NonFiniteError, so either ``except`` catches it."""
    if error not in _COMBINED:
        _COMBINED[error] = type(f"NonFinite{error.__name__}", (NonFiniteError, error), {})
    return _COMBINED[error]
