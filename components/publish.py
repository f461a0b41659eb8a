"""Step: quality gate, then push to the zoo with a model card; always leaves the report."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Input, Markdown, Metrics, Model, Output

from components._image import COMPONENT_OPTIONS


@dsl.component(**COMPONENT_OPTIONS)
def publish(
    task: str,
    model: Input[Model],
    torch_metrics: Input[Metrics],
    report: Output[Markdown],
    gate: Output[Metrics],
    deployment: Input[Model] | None = None,
    onnx_metrics: Input[Metrics] | None = None,
    teacher_metrics: Input[Metrics] | None = None,
    export_metrics: Input[Metrics] | None = None,
    publish_stub: str = "",
    zoo_root: str = "",
    gate_metric: str = "",
    min_metric: float = 0.0,
    max_drop_vs_teacher: float = 2.0,
    must_beat_published: bool = False,
    require_int8: bool = False,
    force: bool = False,
    advanced: dict = {},  # noqa: B006 (KFP reads the literal default; never mutated)
) -> NamedTuple("Outputs", [("passed", bool), ("published", str)]):
    """Publishes to `publish_stub` only when the gate passes (negative thresholds: check off).

    Without `deployment` (the dense teacher pipeline) the PyTorch model alone is published.
    The run form's `advanced` object's ``must_beat_published``, ``gate_require_int8`` and
    ``publish_force`` win over the flat switches.
    """
    from collections import namedtuple

    from sparse_transfer.pipeline.settings import run_settings
    from sparse_transfer.pipeline.steps import publish_step

    def meta(artifact):
        return dict(artifact.metadata) if artifact is not None else {}

    own = run_settings(advanced, must_beat_published=must_beat_published,
                       gate_require_int8=require_int8, publish_force=force)  # fmt: skip
    result = publish_step(
        deployment.path if deployment is not None else None, model.path, task=task,
        stub=publish_stub, zoo=zoo_root, torch_metrics=meta(torch_metrics),
        onnx_metrics=meta(onnx_metrics), teacher_metrics=meta(teacher_metrics),
        export_facts=meta(export_metrics),
        gate_metric=gate_metric, min_metric=min_metric, max_drop_vs_teacher=max_drop_vs_teacher,
        must_beat_published=own.must_beat_published, require_int8=own.gate_require_int8,
        force=own.publish_force,
    )  # fmt: skip
    with open(report.path, "w") as handle:
        handle.write(result["report"])
    gate.log_metric("passed", float(result["passed"]))
    gate.log_metric(result["gate"]["metric"], result["gate"]["value"])
    return namedtuple("Outputs", ["passed", "published"])(result["passed"], result["published"])
