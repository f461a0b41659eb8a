"""The Markdown report the publish step leaves in the KFP UI.

One page answers "should this model ship?": headline metrics of the sparse
model (PyTorch and ONNX) next to the dense teacher, the gate's checks, the
ONNX model size and latency, and the sparsity of every prunable layer.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sparse_transfer.pipeline.gate import GateResult, points
from sparse_transfer.pipeline.metrics import find_metric, numeric_metrics, per_class_rows

# Bookkeeping numbers that are not quality metrics.
_SKIP = ("runtime", "per_second", "epoch", "loss", "preparation_time", "samples")
# Per-class numbers: shown in their own table, not in the metric table.
_PER_CLASS = ("precision_", "recall_", "f1_", "support_")
#: Above this majority-class share, accuracy alone says little (a constant answer scores it).
IMBALANCE_WARNING_SHARE = 0.8


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.4f}"


def _metric_names(*results: Mapping[str, Any]) -> list[str]:
    names: dict[str, None] = {}
    for result in results:
        for key in numeric_metrics(result):
            bare = key.removeprefix("eval_")
            if not any(skip in bare for skip in _SKIP) and not bare.startswith(_PER_CLASS):
                names[bare] = None
    return sorted(names)


def _bytes(n: int | float | None) -> str:
    if n is None:
        return "–"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n} B"  # pragma: no cover


def _gate_lines(gate: GateResult | None, published: str | None, shipped) -> list[str]:
    if gate is None:
        return []
    verdict = f"published to `{published}`" if published else "not published"
    lines = [f"## Gate: {'PASSED' if gate.passed else 'BLOCKED'} ({verdict})", ""]
    lines += [f"- ✅ {text}" for text in gate.checks]
    lines += [f"- ❌ {text}" for text in gate.failures]
    share = find_metric(shipped, "majority_class_share")
    if gate.metric == "accuracy" and share is not None and share > IMBALANCE_WARNING_SHARE:
        lines.append(
            f"- ⚠️ the gate judges accuracy on data whose largest class holds {100 * share:.1f}% "
            f"of the rows: always answering that class scores {share:.4f}. Gate on macro_f1 or "
            "minority_f1 (gate_metric) instead."
        )
    return [*lines, ""]


def _metric_lines(torch_metrics, onnx_metrics, teacher_metrics) -> list[str]:
    lines = [
        "## Metrics",
        "",
        "| metric | sparse (PyTorch) | sparse (ONNX) | dense teacher | Δ vs teacher (points) |",
        "|---|---|---|---|---|",
    ]
    for name in _metric_names(torch_metrics, onnx_metrics, teacher_metrics):
        mine = find_metric(torch_metrics, name)
        shipped = find_metric(onnx_metrics, name)
        teacher = find_metric(teacher_metrics, name)
        candidate = shipped if shipped is not None else mine
        delta = (
            "–"
            if candidate is None or teacher is None
            else f"{points(candidate - teacher, candidate, teacher):+.2f}"
        )
        lines.append(f"| {name} | {_fmt(mine)} | {_fmt(shipped)} | {_fmt(teacher)} | {delta} |")
    return [*lines, ""]


def _per_class_lines(shipped: Mapping[str, Any]) -> list[str]:
    """The per-class table of single-label classification (what ships: ONNX, else PyTorch)."""
    rows = per_class_rows(shipped)
    if not rows:
        return []
    lines = [
        "## Per class",
        "",
        "| class | precision | recall | F1 | support |",
        "|---|---|---|---|---|",
    ]
    for label, precision, recall, f1, support in rows:
        lines.append(f"| {label} | {precision:.4f} | {recall:.4f} | {f1:.4f} | {support} |")
    return [*lines, ""]


def _export_lines(export: Mapping[str, Any] | None) -> list[str]:
    if not export or all(v is None for v in export.values()):
        return []
    lines = ["## Deployment (ONNX)", ""]
    if export.get("precision"):
        lines.append(f"- precision exported: {export['precision']}")
    lines.append(f"- model size: {_bytes(export.get('model_size_bytes'))}")
    latency = export.get("latency_ms")
    if latency is not None:
        seq = int(export["sequence_length"]) if export.get("sequence_length") else None
        lines.append(
            f"- latency (batch 1{f', sequence {seq}' if seq else ''}): {float(latency):.2f} ms"
        )
    if export.get("onnx_file"):
        lines.append(f"- file: `{export['onnx_file']}`")
    return [*lines, ""]


def _sparsity_lines(sparsity: Mapping[str, Any] | None) -> list[str]:
    if not sparsity:
        return []
    overall = sparsity.get("overall_sparsity")
    lines = ["## Sparsity", ""]
    if overall is not None:
        lines.append(
            f"Overall: {100 * float(overall):.2f}% zeros "
            f"({sparsity.get('zeros', '?')} of {sparsity.get('prunable_params', '?')} prunable weights)"
        )
        lines.append("")
    layers = sparsity.get("layers") or {}
    if layers:
        lines += ["| layer | weights | zeros | sparsity |", "|---|---|---|---|"]
        for name, layer in layers.items():
            lines.append(
                f"| `{name}` | {layer.get('numel', '?')} | {layer.get('zeros', '?')} | "
                f"{100 * float(layer.get('sparsity', 0.0)):.2f}% |"
            )
        lines.append("")
    return lines


def render_report(
    *,
    title: str,
    task: str,
    torch_metrics: Mapping[str, Any],
    onnx_metrics: Mapping[str, Any] | None = None,
    teacher_metrics: Mapping[str, Any] | None = None,
    sparsity: Mapping[str, Any] | None = None,
    export: Mapping[str, Any] | None = None,
    gate: GateResult | None = None,
    published: str | None = None,
) -> str:
    """Renders the report.

    Args:
        title: first heading (e.g. the model being published).
        task: task name.
        torch_metrics / onnx_metrics / teacher_metrics: evaluation results.
        sparsity: `sparse_transfer.training.sparsity_report` output.
        export: export step facts: ``precision`` (int8/fp32), ``model_size_bytes``,
            ``latency_ms`` (batch 1), ``sequence_length``, ``onnx_file``.
        gate: the publish decision.
        published: the zoo stub pushed to, or None when nothing was published.
    """
    onnx_metrics = onnx_metrics or {}
    teacher_metrics = teacher_metrics or {}
    shipped = onnx_metrics or torch_metrics
    lines = [f"# {title}", "", f"Task: `{task}`", ""]
    lines += _gate_lines(gate, published, shipped)
    lines += _metric_lines(torch_metrics, onnx_metrics, teacher_metrics)
    lines += _per_class_lines(shipped)
    lines += _export_lines(export)
    lines += _sparsity_lines(sparsity)
    return "\n".join(lines)
