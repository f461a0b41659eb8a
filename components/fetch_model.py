"""Step: zoo stub / s3:// URI / local folder / hub id -> Model artifact."""

from kfp import dsl
from kfp.dsl import Model, Output

from components._image import COMPONENT_OPTIONS


@dsl.component(**COMPONENT_OPTIONS)
def fetch_model(
    ref: str,
    model: Output[Model],
    kind: str = "model",
    task: str = "",
    zoo_root: str = "",
):
    """Copies the model `ref` points to into the artifact (``disable``: an empty placeholder).

    Args:
        ref: zoo stub, s3:// or file:// URI, local folder, hub id or ``disable``.
        model: the fetched model folder.
        kind: zoo kind of `ref` (model, teacher, deployment).
        task: head to build when `ref` is a hub id.
        zoo_root: zoo location for stubs (empty: the image's environment).
    """
    from sparse_transfer.pipeline.steps import fetch_model_step

    model.metadata.update(fetch_model_step(ref, model.path, kind=kind, task=task, zoo=zoo_root))
