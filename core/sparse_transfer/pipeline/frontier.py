"""The accuracy-latency frontier: many sparse deployments of one task, the fastest that passes.

The frontier pipeline trains one deployment per grid point (sparsity x structure) in
parallel, benchmarks each on the target engine, and hands every point's figures here:
`pick_fastest` chooses the lowest-latency point that passes the gate (and refuses when
none does), `pareto` marks the points no other point beats on both axes, and
`frontier_report` draws the plot and writes the table.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sparse_transfer.errors import PipelineError

STRUCTURES = ("unstructured", "block4")
#: The built-in transfer recipe that prunes to a point's sparsity in its structure.
RECIPES = {s: f"frontier_{s}_quant" for s in STRUCTURES}


def grid(
    sparsities: list[float], structures: list[str], recipe_args: dict | None = None
) -> list[dict]:
    """One point per (sparsity, structure): its label, recipe name and recipe args (JSON)."""
    points = []
    for structure in structures:
        if structure not in RECIPES:
            raise PipelineError(
                f"frontier structure {structure!r}: use one of {', '.join(STRUCTURES)}"
            )
        for sparsity in sparsities:
            if not 0.0 < float(sparsity) < 1.0:  # NaN fails too
                raise PipelineError(f"frontier sparsity {sparsity!r}: must be in (0, 1)")
            args = {**(recipe_args or {}), "final_sparsity": float(sparsity)}
            points.append({
                "label": f"{structure}-{round(100 * float(sparsity))}",
                "sparsity": float(sparsity),
                "structure": structure,
                "recipe": RECIPES[structure],
                "recipe_args": json.dumps(args, sort_keys=True),
            })  # fmt: skip
    return points


def recipe_path(name: str) -> str:
    from sparse_transfer.recipe import builtin_recipe_path

    return str(builtin_recipe_path(name))


@dataclass(frozen=True)
class Point:
    """One trained and benchmarked deployment."""

    label: str
    sparsity: float
    structure: str
    metric: float  # the gate's metric on the deployment (ONNX), e.g. accuracy
    latency_ms: float  # p50 on the target engine
    passed: bool  # the quality gate's verdict
    deployment: str = ""  # where its deployment folder is (for publishing)

    def __post_init__(self) -> None:
        for name in ("metric", "latency_ms"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value):
                raise PipelineError(
                    f"frontier point {self.label}: {name} is {value!r}, not a finite number"
                )


def pick_fastest(points: list[Point]) -> Point:
    """The passing point with the lowest latency (ties: the more accurate, then sparser).

    Raises:
        PipelineError: no point passes the gate (names each point's figures).
    """
    passing = [p for p in points if p.passed]
    if not passing:
        seen = ", ".join(f"{p.label}: {p.metric:.4f} @ {p.latency_ms:.2f} ms" for p in points)
        raise PipelineError(
            f"no deployment passes the gate, none is published ({seen or 'no points'})"
        )
    return min(passing, key=lambda p: (p.latency_ms, -p.metric, -p.sparsity))


def pareto(points: list[Point]) -> list[Point]:
    """Points no other point beats on both accuracy (higher) and latency (lower), by latency."""

    def beaten(p: Point) -> bool:
        return any(
            q.metric >= p.metric and q.latency_ms <= p.latency_ms
            and (q.metric > p.metric or q.latency_ms < p.latency_ms)
            for q in points
        )  # fmt: skip

    return sorted([p for p in points if not beaten(p)], key=lambda p: p.latency_ms)


def plot(
    points: list[Point], chosen: Point | None, path: Path, *, metric: str, engine: str
) -> Path:
    """Accuracy vs latency, one marker per structure, the frontier as a line, the pick ringed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for structure, marker in zip(STRUCTURES, ("o", "s"), strict=True):
        mine = [p for p in points if p.structure == structure]
        ax.scatter(
            [p.latency_ms for p in mine], [p.metric for p in mine], marker=marker, label=structure
        )
        for p in mine:
            ax.annotate(
                f"{p.sparsity:.0%}",
                (p.latency_ms, p.metric),
                fontsize=7,
                xytext=(3, 3),
                textcoords="offset points",
            )
    front = pareto(points)
    ax.plot(
        [p.latency_ms for p in front], [p.metric for p in front], "k--", lw=0.8, label="frontier"
    )
    if chosen is not None:
        ax.scatter(
            [chosen.latency_ms],
            [chosen.metric],
            s=200,
            facecolors="none",
            edgecolors="red",
            label="published",
        )
    ax.set_xlabel(f"latency p50, batch 1 ({engine}) [ms]")
    ax.set_ylabel(metric)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    plt.close(fig)
    return path


def table(points: list[Point], chosen: Point | None, metric: str) -> str:
    front = {p.label for p in pareto(points)}
    rows = [
        f"| point | sparsity | structure | {metric} | latency ms | gate | frontier |",
        "| --- | ---: | --- | ---: | ---: | --- | --- |",
    ]
    for p in sorted(points, key=lambda p: p.latency_ms):
        pick = " **published**" if chosen is not None and p.label == chosen.label else ""
        rows.append(
            f"| {p.label}{pick} | {p.sparsity:.0%} | {p.structure} | {p.metric:.4f} | "
            f"{p.latency_ms:.2f} | {'passed' if p.passed else 'blocked'} | {'yes' if p.label in front else ''} |"
        )
    return "\n".join(rows)


def frontier_report(
    points: list[Point], plot_path: Path, *, metric: str, engine: str
) -> dict[str, Any]:
    """Picks, plots and tabulates; ``chosen`` is None (and the report says so) when none passes."""
    try:
        chosen: Point | None = pick_fastest(points)
        verdict = f"Published: **{chosen.label}** (the fastest deployment that passes the gate)."
    except PipelineError as exc:
        chosen, verdict = None, f"Nothing published: {exc}."
    plot(points, chosen, plot_path, metric=metric, engine=engine)
    markdown = "\n".join([
        f"# Accuracy-latency frontier ({engine}, batch 1)", "", verdict, "",
        table(points, chosen, metric), "", f"Plot: `{plot_path.name}`", "",
    ])  # fmt: skip
    return {
        "chosen": asdict(chosen) if chosen else None,
        "report": markdown,
        "points": [asdict(p) for p in points],
    }
