"""PerLayerDistillationModifier: the student imitates the teacher's layer outputs.

SparseML 1.8's feature-imitation loss
(sparseml/pytorch/sparsification/distillation/modifier_per_layer.py), added to the
loss the earlier modifiers left::

    per_layer = sum over layer pairs of mean((s - t)^2) [/ (mean(t^2) + epsilon) if normalize]
    loss      = loss + gain * per_layer

As in SparseML the means run over every element, padded positions included, and
`student_layer_names[i]` pairs with `teacher_layer_names[i]` (one list alone names
both sides; none: every ``torch.nn.Linear`` / ``Conv2d`` of each model, in module
order). The manager adds this after a `DistillationModifier` with the same schedule,
as SparseML's modifier order does, so ``hardness: 1.0`` keeps the layer term.

Not supported: ``project_features: true`` (SparseML's default), which trains a
randomly initialised projection per layer pair in an extra optimizer group; a recipe
must say ``project_features: false``, and paired layers must have the same shape.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sparse_transfer.modifiers.base import (
    Event,
    FieldError,
    Modifier,
    bounded,
    register_modifier,
)

_TEACHER_INPUT_KEYS = ("input_ids", "attention_mask", "token_type_ids", "position_ids")


def layer_loss(student: Any, teacher: Any, normalize: bool, epsilon: float):
    """One pair's term: ``mean((s - t)^2)``, divided by ``mean(t^2) + epsilon`` if `normalize`."""
    teacher = teacher.detach().float()
    mse = (student.float() - teacher).square().mean()
    if normalize:
        mse = mse / (teacher.square().mean() + epsilon)
    return mse


def _default_layers(model: Any) -> list[str]:
    """SparseML's default pick: modules whose type is exactly Linear or Conv2d."""
    import torch

    kinds = (torch.nn.Linear, torch.nn.Conv2d)
    return [name for name, m in model.named_modules() if name and type(m) in kinds]


class _OutputCache:
    """Forward hooks that keep the latest output of each named module."""

    def __init__(self, model: Any, names: list[str], side: str):
        from sparse_transfer.errors import RecipeError

        modules = dict(model.named_modules())
        missing = [n for n in names if n not in modules]
        if missing:
            raise RecipeError(
                f"PerLayerDistillationModifier: {side}_layer_names {missing} are not modules "
                f"of the {side} model"
            )
        self.side = side
        self.outputs: dict[str, Any] = {}
        self.handles = [modules[n].register_forward_hook(self._hook(n)) for n in names]

    def _hook(self, name: str):
        def keep(module, inputs, output):
            self.outputs[name] = output

        return keep

    def take(self, name: str):
        import torch

        from sparse_transfer.errors import RecipeError

        out = self.outputs.get(name)
        if not torch.is_tensor(out):
            got = "no output" if out is None else f"a {type(out).__name__}"
            raise RecipeError(
                f"PerLayerDistillationModifier: {self.side} layer {name!r} returned {got}; "
                "name modules that return one tensor (e.g. bert.encoder.layer.0.output)"
            )
        return out

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles, self.outputs = [], {}


@register_modifier("PerLayerDistillationModifier")
@dataclass(kw_only=True)
class PerLayerDistillationModifier(Modifier):
    """loss += gain * sum of (normalised) MSEs between paired student and teacher layers."""

    gain: float = bounded(1.5, ge=0)
    normalize: bool = True
    student_layer_names: list[str] | None = None
    teacher_layer_names: list[str] | None = None
    project_features: bool = True
    epsilon: float = bounded(1e-6, gt=0)

    clock_events = frozenset({Event.LOSS_CALCULATED})

    def validate(self) -> None:
        super().validate()
        if self.project_features:
            raise FieldError(
                "project_features",
                "true (SparseML's default) trains a random projection per layer pair; "
                "only false is supported: set project_features: false and pair layers "
                "of the same shape",
            )
        s, t = self.student_layer_names, self.teacher_layer_names
        if s is not None and t is not None and len(s) != len(t):
            raise FieldError(
                "teacher_layer_names",
                f"{len(t)} names for {len(s)} student_layer_names; they pair one to one",
            )
        if s == [] or t == []:
            raise FieldError("student_layer_names", "an empty list names no layer")

    def on_initialize(self, state: Any) -> None:
        from sparse_transfer.errors import RecipeError

        if state.teacher is None:
            raise RecipeError(
                "the recipe has a PerLayerDistillationModifier but no teacher was given "
                "(pass --distill_teacher, or remove the modifier)"
            )
        student = self.student_layer_names or self.teacher_layer_names
        teacher = self.teacher_layer_names or self.student_layer_names
        student = list(student) if student else _default_layers(state.model)
        teacher = list(teacher) if teacher else _default_layers(state.teacher)
        if len(student) != len(teacher):
            raise RecipeError(
                f"PerLayerDistillationModifier: the student has {len(student)} Linear/Conv2d "
                f"layers and the teacher {len(teacher)}; name the pairs with "
                "student_layer_names and teacher_layer_names"
            )
        self._pairs = list(zip(student, teacher, strict=True))
        self._student = _OutputCache(state.model, student, "student")
        self._teacher = _OutputCache(state.teacher, teacher, "teacher")

    def act(self, event: Event, state: Any) -> None:
        if event is not Event.LOSS_CALCULATED or not self.running or self.gain == 0.0:
            return
        state.loss = state.loss + self.gain * self.layer_term(state)

    def layer_term(self, state: Any):
        """Runs the teacher on the batch and sums the pairs' terms (student hooks already ran)."""
        import torch

        inputs = state.inputs or {}
        feed = {k: inputs[k] for k in _TEACHER_INPUT_KEYS if k in inputs}
        state.teacher.eval()
        with torch.inference_mode():
            state.teacher(**feed)
        total = 0.0
        for s_name, t_name in self._pairs:
            s, t = self._student.take(s_name), self._teacher.take(t_name).clone()
            if s.shape != t.shape:
                from sparse_transfer.errors import RecipeError

                raise RecipeError(
                    f"PerLayerDistillationModifier: student {s_name} {tuple(s.shape)} and "
                    f"teacher {t_name} {tuple(t.shape)} differ in shape"
                )
            total = total + layer_loss(s, t, self.normalize, self.epsilon)
        return total

    def on_end(self, state: Any) -> None:
        self._release()

    def on_finalize(self, state: Any) -> None:
        self._release()

    def _release(self) -> None:
        for cache in (getattr(self, "_student", None), getattr(self, "_teacher", None)):
            if cache is not None:
                cache.remove()
