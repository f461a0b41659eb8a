"""The publish gate: a trained model reaches the zoo only when it is good enough.

Three checks, each optional: an absolute floor (`min_metric`, in the metric's
own units), the drop versus the dense teacher (`max_drop_vs_teacher`, in
points), and for scheduled retraining "must beat the model currently
published". A point is one hundredth of the metric's full scale: 0.01 for
fraction metrics such as accuracy 0.92, 1.0 for percent metrics such as
SQuAD F1 88.0.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from sparse_transfer.errors import PipelineError
from sparse_transfer.pipeline.metrics import find_metric
from sparse_transfer.validation import require_finite


def points(delta: float, *values: float) -> float:
    """`delta` in points: scaled by 100 when every value it came from is a fraction (<= 1)."""
    return delta * 100.0 if all(abs(v) <= 1.0 for v in values) else delta


@dataclass
class GateResult:
    """The decision plus every check's outcome, for the report and the logs."""

    passed: bool
    metric: str
    value: float
    checks: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def evaluate_gate(
    value: float,
    *,
    metric: str,
    min_metric: float | None = None,
    max_drop_vs_teacher: float | None = None,
    teacher_metrics: Mapping[str, Any] | None = None,
    published_metrics: Mapping[str, Any] | None = None,
    must_beat_published: bool = False,
    precision: str | None = None,
    require_int8: bool = False,
) -> GateResult:
    """Decides whether a model with `metric` = `value` may be published.

    Args:
        value: the candidate's metric (normally from the ONNX evaluation: what ships).
        metric: its name, also looked up in the teacher/published metrics.
        min_metric: floor in the metric's units; None or a negative value disables it.
        max_drop_vs_teacher: allowed drop below the teacher in points; None or a
            negative value disables it; skipped (and said so) without teacher metrics.
        teacher_metrics: the dense teacher's evaluation on the same data.
        published_metrics: the current zoo model's metrics (from its card).
        must_beat_published: require a strict improvement over the published model;
            passes when nothing is published yet.
        precision: what the deployment holds (``int8``/``fp32``; None: no deployment).
        require_int8: fail unless `precision` is ``int8`` (a recipe whose quantization
            never ran exports FP32).
    """
    for name, threshold in (
        ("min_metric", min_metric),
        ("max_drop_vs_teacher", max_drop_vs_teacher),
    ):
        require_finite(threshold, f"gate parameter {name}", PipelineError)  # NaN would disable it
    result = GateResult(passed=True, metric=metric, value=value)

    def check(ok: bool, text: str) -> None:
        (result.checks if ok else result.failures).append(text)

    if min_metric is not None and min_metric >= 0:
        check(value >= min_metric, f"{metric} {value:.4f} >= min_metric {min_metric:.4f}")
    if max_drop_vs_teacher is not None and max_drop_vs_teacher >= 0:
        teacher = find_metric(teacher_metrics or {}, metric)
        if teacher is None:
            result.checks.append(f"no teacher {metric}: max_drop_vs_teacher not checked")
        else:
            drop = points(teacher - value, teacher, value)
            check(
                drop <= max_drop_vs_teacher,
                f"drop vs teacher {drop:.2f} points (teacher {teacher:.4f}) "
                f"<= max_drop_vs_teacher {max_drop_vs_teacher:.2f}",
            )
    if must_beat_published:
        current = find_metric(published_metrics or {}, metric)
        if current is None:
            result.checks.append(f"no published {metric} yet: nothing to beat")
        else:
            check(value > current, f"{metric} {value:.4f} > published {current:.4f}")
    if require_int8:
        check(precision == "int8", f"exported precision {precision or 'none'} == int8")
    result.passed = not result.failures
    return result
