"""DistillationModifier: blend the task loss with KL to a teacher's outputs.

For each distilled output key (default: whichever of ``logits``,
``start_logits``, ``end_logits`` both models return)::

    kd   = T^2 * KL(softmax(teacher / T) || softmax(student / T))
    loss = (1 - hardness) * task_loss + hardness * mean_over_keys(kd)

Reduction (the SparseML ``kl_div(..., reduction="batchmean")`` convention,
extended to token-level outputs):

* sequence-level logits ``(batch, classes)``: KL summed over classes, averaged
  over the batch.
* token-level logits ``(batch, seq, classes)`` (token classification, MLM): KL
  summed over classes, averaged over the *real* tokens (attention mask), so the
  loss does not grow with padding or sequence length.
* span logits ``start_logits`` / ``end_logits`` ``(batch, seq)``: the softmax is
  over positions; padded positions are excluded from both distributions
  (filled with a large negative number), then averaged over the batch.

Several keys are averaged, as SparseML 1.8's ``DistillationModifier`` does
(``sum(kd per key) / len(keys)``). The teacher runs in eval mode under ``torch.inference_mode``;
its outputs may be cached per example (see `TeacherCache`) so later epochs skip
its forward pass entirely.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sparse_transfer.modifiers.base import Event, Modifier, bounded, register_modifier

DEFAULT_KEYS = ("logits", "start_logits", "end_logits")
SPAN_KEYS = ("start_logits", "end_logits")
_NEG = -1e9


def _get(outputs: Any, key: str) -> Any:
    if isinstance(outputs, dict) or hasattr(outputs, "keys"):
        return outputs[key] if key in outputs else None
    return getattr(outputs, key, None)


def kd_loss(
    student: Any, teacher: Any, temperature: float, key: str = "logits", attention_mask: Any = None
):
    """T^2-scaled KL(teacher_T || student_T) for one output (see module docstring)."""
    import torch.nn.functional as F

    s = student.float() / temperature
    t = teacher.detach().float() / temperature
    if key in SPAN_KEYS:
        if attention_mask is not None and attention_mask.shape == s.shape:
            pad = attention_mask.eq(0)
            s = s.masked_fill(pad, _NEG)
            t = t.masked_fill(pad, _NEG)
        kl = F.kl_div(F.log_softmax(s, dim=-1), F.softmax(t, dim=-1), reduction="sum") / s.shape[0]
        return kl * temperature**2
    if s.dim() >= 3:
        per_token = F.kl_div(F.log_softmax(s, dim=-1), F.softmax(t, dim=-1), reduction="none").sum(
            -1
        )
        if attention_mask is not None and attention_mask.shape == per_token.shape:
            weights = attention_mask.to(per_token.dtype)
            kl = (per_token * weights).sum() / weights.sum().clamp_min(1.0)
        else:
            kl = per_token.mean()
        return kl * temperature**2
    kl = F.kl_div(F.log_softmax(s, dim=-1), F.softmax(t, dim=-1), reduction="batchmean")
    return kl * temperature**2


def distillation_loss(
    task_loss: Any,
    student_outputs: Any,
    teacher_outputs: Any,
    hardness: float,
    temperature: float,
    keys: list[str] | tuple[str, ...],
    attention_mask: Any = None,
):
    """(1 - hardness) * task_loss + hardness * mean over keys of `kd_loss`."""
    terms = [
        kd_loss(_get(student_outputs, k), _get(teacher_outputs, k), temperature, k, attention_mask)
        for k in keys
    ]
    kd = sum(terms) / len(terms)
    if hardness >= 1.0 or task_loss is None:
        return hardness * kd
    return (1.0 - hardness) * task_loss + hardness * kd


def check_label_alignment(student: Any, teacher: Any) -> None:
    """Raises DataError when teacher and student heads disagree on labels.

    Distilling logits only makes sense when class i means the same label in
    both models; a silently permuted teacher would teach the wrong answers.
    """
    from sparse_transfer.errors import DataError

    s_cfg, t_cfg = getattr(student, "config", None), getattr(teacher, "config", None)
    if s_cfg is None or t_cfg is None:
        return
    s_n, t_n = getattr(s_cfg, "num_labels", None), getattr(t_cfg, "num_labels", None)
    s_arch = " ".join(getattr(s_cfg, "architectures", None) or [type(student).__name__])
    if (
        "QuestionAnswering" in s_arch
        or "MaskedLM" in s_arch
        or "MaskedLM" in type(student).__name__
    ):
        return
    if s_n is not None and t_n is not None and s_n != t_n:
        raise DataError(
            f"distillation teacher has {t_n} labels but the student has {s_n}; "
            "use a teacher fine-tuned on the same task and label set"
        )
    s_labels = {int(k): v for k, v in (getattr(s_cfg, "id2label", None) or {}).items()}
    t_labels = {int(k): v for k, v in (getattr(t_cfg, "id2label", None) or {}).items()}
    if s_labels and t_labels and s_labels != t_labels:
        raise DataError(
            "distillation teacher's label order differs from the student's: "
            f"teacher id2label={t_labels}, student id2label={s_labels}; "
            "train the student with the teacher's label mapping (or re-export the teacher)"
        )


@register_modifier("DistillationModifier")
@dataclass(kw_only=True)
class DistillationModifier(Modifier):
    """loss = (1 - hardness) * task + hardness * T^2 * KL(teacher_T || student_T)."""

    hardness: float = bounded(0.5, ge=0, le=1)
    temperature: float = bounded(2.0, gt=0)
    distill_output_keys: list[str] | None = None
    teacher_input_keys: list[str] | None = None

    clock_events = frozenset({Event.LOSS_CALCULATED})

    def on_initialize(self, state: Any) -> None:
        from sparse_transfer.errors import RecipeError

        if state.teacher is None:
            raise RecipeError(
                "the recipe has a DistillationModifier but no teacher was given "
                "(pass --distill_teacher, or remove the modifier / set hardness: 0)"
            )
        check_label_alignment(state.model, state.teacher)
        state.teacher.eval()
        for p in state.teacher.parameters():
            p.requires_grad_(False)

    def act(self, event: Event, state: Any) -> None:
        if event is not Event.LOSS_CALCULATED or state.teacher is None:
            return
        if not self.running or self.hardness == 0.0:
            return
        inputs = state.inputs or {}
        keys = self.distill_output_keys or [
            k for k in DEFAULT_KEYS if _get(state.outputs, k) is not None
        ]
        teacher_outputs = state.extras["teacher_forward"](inputs, self.teacher_input_keys, keys)
        for k in keys:
            if _get(state.outputs, k) is None or _get(teacher_outputs, k) is None:
                from sparse_transfer.errors import RecipeError

                raise RecipeError(
                    f"DistillationModifier: distill_output_keys entry {k!r} is not an output of both "
                    "the student and the teacher"
                )
        state.loss = distillation_loss(
            state.loss,
            state.outputs,
            teacher_outputs,
            self.hardness,
            self.temperature,
            keys,
            inputs.get("attention_mask"),
        )
