"""Step: the sparse upstream's card (what it saw, how it was pruned, its quality); publish."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Input, Markdown, Metrics, Model, Output

from components._image import COMPONENT_OPTIONS


@dsl.component(**COMPONENT_OPTIONS)
def publish_upstream(
    sparse_model: Input[Model],
    metrics: Input[Metrics],
    corpus_facts: dict,
    report: Output[Markdown],
    publish_stub: str = "",
    parent: str = "",
    zoo_root: str = "",
    force: bool = False,
    min_cosine: float = -1.0,
) -> NamedTuple("Outputs", [("passed", bool), ("published", str)]):
    """Publishes to `publish_stub` when given and the cosine floor holds (negative: off)."""
    from collections import namedtuple

    from sparse_transfer.pipeline.upstream_steps import publish_step

    result = publish_step(
        sparse_model.path, corpus_facts, dict(metrics.metadata), stub=publish_stub,
        parent=parent, zoo=zoo_root, force=force, min_cosine=min_cosine,
    )  # fmt: skip
    with open(report.path, "w") as handle:
        handle.write(result["report"])
    return namedtuple("Outputs", ["passed", "published"])(result["passed"], result["published"])
