"""Step: gate every frontier point, publish the fastest that passes, draw the frontier."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Artifact, Input, Markdown, Metrics, Model, Output

from components._image import COMPONENT_OPTIONS


@dsl.component(**COMPONENT_OPTIONS)
def pick_deployment(
    measured: list[dict],
    deployments: Input[list[Model]],
    report: Output[Markdown],
    plot: Output[Artifact],
    teacher_metrics: Input[Metrics] = None,
    min_metric: float = -1.0,
    max_drop_vs_teacher: float = 2.0,
    publish_stub: str = "",
    zoo_root: str = "",
    force: bool = False,
    engine: str = "onnxruntime",
) -> NamedTuple("Outputs", [("passed", bool), ("published", str)]):
    """The report holds the table; `plot` is the accuracy-latency PNG. Nothing passes: no publish."""
    from collections import namedtuple

    from sparse_transfer.pipeline.frontier_steps import pick_step

    folders = {d.uri: d.path for d in deployments}
    result = pick_step(
        measured, {m["label"]: folders.get(m["deployment_uri"], "") for m in measured}, plot.path,
        teacher_metrics=dict(teacher_metrics.metadata) if teacher_metrics else None,
        min_metric=min_metric, max_drop_vs_teacher=max_drop_vs_teacher,
        publish_stub=publish_stub, zoo=zoo_root, force=force, engine=engine,
    )  # fmt: skip
    with open(report.path, "w") as handle:
        handle.write(result["report"])
    return namedtuple("Outputs", ["passed", "published"])(result["passed"], result["published"])
