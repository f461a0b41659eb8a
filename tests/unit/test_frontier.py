"""The frontier's decisions: the grid, the fastest passing deployment, refusal, the Pareto set."""

import json
import math

import pytest

from sparse_transfer.errors import PipelineError
from sparse_transfer.pipeline import frontier
from sparse_transfer.pipeline.frontier import Point, pareto, pick_fastest
from sparse_transfer.pipeline.frontier_steps import pick_step

POINTS = [
    Point("unstructured-70", 0.7, "unstructured", 0.912, 9.1, True),
    Point("unstructured-90", 0.9, "unstructured", 0.897, 8.7, True),
    Point("block4-90", 0.9, "block4", 0.871, 4.2, False),  # fastest, but blocked by the gate
    Point("block4-80", 0.8, "block4", 0.893, 5.0, True),
    Point("block4-95", 0.95, "block4", 0.850, 3.1, False),
]


def test_picks_the_fastest_deployment_that_passes():
    assert pick_fastest(POINTS).label == "block4-80"
    # a tie on latency goes to the more accurate point
    tie = [*POINTS, Point("unstructured-80", 0.8, "unstructured", 0.90, 5.0, True)]
    assert pick_fastest(tie).label == "unstructured-80"


def test_refuses_when_nothing_passes():
    blocked = [
        Point(p.label, p.sparsity, p.structure, p.metric, p.latency_ms, False) for p in POINTS
    ]
    with pytest.raises(
        PipelineError, match=r"no deployment passes the gate.*block4-90: 0.8710 @ 4.20 ms"
    ):
        pick_fastest(blocked)
    with pytest.raises(PipelineError, match="no points"):
        pick_fastest([])


def test_non_finite_figures_are_refused():
    with pytest.raises(PipelineError, match="unstructured-70: latency_ms is nan"):
        Point("unstructured-70", 0.7, "unstructured", 0.9, math.nan, True)


def test_pareto_keeps_points_nothing_beats_on_both_axes():
    assert [p.label for p in pareto(POINTS)] == [
        "block4-95",
        "block4-90",
        "block4-80",
        "unstructured-90",
        "unstructured-70",
    ]
    dominated = [*POINTS, Point("slow", 0.5, "unstructured", 0.80, 20.0, True)]
    assert "slow" not in [p.label for p in pareto(dominated)]


def test_grid_has_one_point_per_sparsity_and_structure():
    points = frontier.grid([0.7, 0.9], ["unstructured", "block4"], {"num_epochs": 2})
    assert [p["label"] for p in points] == [
        "unstructured-70",
        "unstructured-90",
        "block4-70",
        "block4-90",
    ]
    assert json.loads(points[3]["recipe_args"]) == {"final_sparsity": 0.9, "num_epochs": 2}
    assert points[3]["recipe"] == "frontier_block4_quant"
    with pytest.raises(PipelineError, match="structure '2:4'"):
        frontier.grid([0.5], ["2:4"])
    with pytest.raises(PipelineError, match="sparsity 1.0"):
        frontier.grid([1.0], ["block4"])


def test_pick_step_gates_against_the_teacher_plots_and_tabulates(tmp_path):
    measured = [
        {"label": p.label, "sparsity": p.sparsity, "structure": p.structure, "metric_name": "accuracy",
         "metric": p.metric, "latency_ms": p.latency_ms}
        for p in POINTS
    ]  # fmt: skip
    # teacher 0.90, at most 2 points below: 0.871 and 0.850 are blocked, 0.893 passes
    result = pick_step(measured, {}, tmp_path / "frontier.png",
                       teacher_metrics={"eval_accuracy": 0.90}, max_drop_vs_teacher=2.0)  # fmt: skip
    assert result["passed"] is True and result["published"] == ""
    assert "Published: **block4-80**" in result["report"]
    assert (
        "| block4-80 **published** | 80% | block4 | 0.8930 | 5.00 | passed | yes |"
        in result["report"]
    )
    assert "| block4-90 | 90% | block4 | 0.8710 | 4.20 | blocked | yes |" in result["report"]
    assert (tmp_path / "frontier.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    none = pick_step(measured, {}, tmp_path / "none.png", min_metric=0.95)
    assert none["passed"] is False and "Nothing published: no deployment passes" in none["report"]
    assert (tmp_path / "none.png").is_file()


def test_points_parse_and_bad_ones_are_refused():
    from sparse_transfer.pipeline.frontier_steps import parse_point, point_recipe_step

    assert parse_point("block4:0.9") == ("block4", 0.9)
    recipe, args, label = point_recipe_step("unstructured:0.95", '{"num_epochs": 2}')
    assert recipe.endswith("frontier_unstructured_quant.yaml") and label == "unstructured-95"
    assert json.loads(args) == {"final_sparsity": 0.95, "num_epochs": 2}
    with pytest.raises(PipelineError, match="expected STRUCTURE:SPARSITY"):
        parse_point("block4:ninety")
    with pytest.raises(PipelineError, match="sparsity nan"):
        point_recipe_step("block4")
