"""Stop training the first time the loss or a weight is NaN/inf; never save such a model.

A NaN learning rate, an overflowing loss or a corrupted weights file makes
every weight NaN within a step or two, and the Trainer carries on (its
``logging_nan_inf_filter`` even hides the NaN loss from the logs). The run then
ends with exit code 0 and a model that is all NaN, its sparsity lost. The
checks here turn that into a `NonFiniteError` naming the step and the
parameters: the loss after every training step (`check_loss`), the weights at
every log, checkpoint and at the end of training (`FiniteGuard`) and before a
model is written or exported (`check_weights`).
"""

from __future__ import annotations

import math
from typing import Any

from transformers import TrainerCallback

from sparse_transfer.errors import NonFiniteError

SHOWN = 3  # parameters named in the message


def non_finite_weights(model: Any) -> dict[str, int]:
    """Parameter name -> number of NaN or infinite values, for every floating parameter.

    Buffers are left out: observers start their running min/max at +-inf.
    """
    import torch

    bad: dict[str, int] = {}
    for name, tensor in model.named_parameters():
        if not torch.is_floating_point(tensor):
            continue
        count = int(tensor.numel() - torch.isfinite(tensor.detach()).sum())
        if count:
            bad[name] = count
    return bad


def check_weights(model: Any, where: str) -> None:
    """Raises `NonFiniteError` if any weight of `model` is NaN or infinite."""
    bad = non_finite_weights(model)
    if not bad:
        return
    names = ", ".join(f"{n} ({c} values)" for n, c in list(bad.items())[:SHOWN])
    more = f" and {len(bad) - SHOWN} more" if len(bad) > SHOWN else ""
    raise NonFiniteError(
        f"{where}: {len(bad)} weight tensor(s) hold NaN or infinite values: {names}{more}. "
        "Check the learning rate and recipe numbers, and that the starting weights file "
        "is intact; nothing was saved"
    )


def check_loss(loss: Any, step: int) -> None:
    """Raises `NonFiniteError` if the training loss of `step` is NaN or infinite."""
    value = float(loss.detach().float().mean()) if hasattr(loss, "detach") else float(loss)
    if not math.isfinite(value):
        raise NonFiniteError(
            f"training stopped at step {step}: the loss is {value}. Check the learning rate "
            "and recipe numbers, and that the starting weights file is intact; nothing was saved"
        )


class FiniteGuard(TrainerCallback):
    """Checks the weights whenever the Trainer logs, saves a checkpoint or ends training."""

    def _check(self, state, model) -> None:
        if model is not None:
            check_weights(model, f"training stopped at step {state.global_step}")

    def on_log(self, args, state, control, model=None, logs=None, **kwargs):
        for key in ("loss", "eval_loss"):
            value = (logs or {}).get(key)
            if isinstance(value, float) and not math.isfinite(value):
                raise NonFiniteError(
                    f"training stopped at step {state.global_step}: {key} is {value}"
                )
        self._check(state, model)

    def on_save(self, args, state, control, model=None, **kwargs):
        self._check(state, model)

    def on_train_end(self, args, state, control, model=None, **kwargs):
        self._check(state, model)
