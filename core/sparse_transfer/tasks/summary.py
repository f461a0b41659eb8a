"""The human-readable end of a run: the lines `train` and `evaluate` print."""

from __future__ import annotations


def print_summary(summary: dict) -> None:
    """The human-readable end of a run: metrics, sparsity, where the model went."""
    lines = [f"== sparse-transfer {summary['task']}: done =="]
    for key, value in sorted(summary.get("metrics", {}).items()):
        if _shown(key, value):
            lines.append(f"  {key:<32} {value:.4f}")
    sp = summary.get("sparsity")
    if sp:
        state = "kept exactly" if sp["kept"] else f"LOST {sp['zeros_lost']} zeros"
        lines.append(
            f"  sparsity before / after          {sp['before']:.2%} / {sp['after']:.2%} "
            f"({sp['zeros_after']:,} of {sp['prunable_params']:,} prunable weights zero; {state})"
        )
    for split, count in summary.get("truncated", {}).items():
        if count:
            lines.append(f"  truncated to max_seq_length      {count} texts in {split}")
    where = summary.get("output_dir")
    if where:
        lines.append(f"  output                           {where}")
    print("\n".join(lines), flush=True)


def _shown(key: str, value) -> bool:
    """Metrics worth a summary line (not timings or per-label scores)."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return False
    return not any(t in key for t in ("runtime", "per_second", "samples", "eval_f1_"))


def print_evaluation(summary: dict) -> None:
    """The human-readable end of ``sparse-transfer evaluate``."""
    lines = [f"== sparse-transfer evaluate {summary['task']} ({summary['format']}) =="]
    for key, value in sorted(summary["metrics"].items()):
        if _shown(key, value):
            lines.append(f"  {key:<32} {value:.4f}")
    lines.append(
        f"  results                          {summary['eval_results'] or 'not saved (--output_dir)'}"
    )
    print("\n".join(lines), flush=True)
