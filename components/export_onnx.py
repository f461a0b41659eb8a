"""Step: trained model -> ONNX deployment folder (int8 when the model was quantization-aware)."""

from kfp import dsl
from kfp.dsl import Input, Metrics, Model, Output

from components._image import COMPONENT_OPTIONS


@dsl.component(**COMPONENT_OPTIONS)
def export_onnx(
    task: str,
    model: Input[Model],
    deployment: Output[Model],
    metrics: Output[Metrics],
    sequence_length: int = 0,
):
    """Exports, then records the ONNX file size and batch-1 latency for the report
    (`sequence_length` 0: the length the model was trained with)."""
    from sparse_transfer.pipeline.steps import export_step

    facts = export_step(model.path, task, deployment.path, sequence_length=sequence_length)
    for name in ("model_size_bytes", "latency_ms", "sequence_length"):
        if facts.get(name) is not None:
            metrics.log_metric(name, float(facts[name]))
    metrics.log_metric("int8", float(facts["precision"] == "int8"))
    deployment.metadata.update(
        {"task": task, "onnx_file": facts.get("onnx_file", ""), "precision": facts["precision"]}
    )
