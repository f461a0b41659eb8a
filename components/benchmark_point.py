"""Step: one frontier point's deployment evaluated and benchmarked on the target engine."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Model

from components._image import COMPONENT_OPTIONS


@dsl.component(**COMPONENT_OPTIONS)
def benchmark_point(
    task: str,
    point: str,
    deployment: Input[Model],
    dataset: Input[Dataset],
    engine: str = "onnxruntime",
    max_seq_length: int = 128,
    per_device_eval_batch_size: int = 32,
    gate_metric: str = "",
    iterations: int = 20,
) -> dict:
    """The ONNX metric and batch-1 p50 latency on `engine` (``onnxruntime``, ``onnxruntime-sparse``)."""
    from sparse_transfer.pipeline.frontier_steps import benchmark_point_step

    flags = {
        "max_seq_length": max_seq_length,
        "per_device_eval_batch_size": per_device_eval_batch_size,
    }
    measured = benchmark_point_step(
        deployment.path, dataset.path, point, task=task, flags=flags, engine=engine,
        sequence_length=max_seq_length, gate_metric=gate_metric, iterations=iterations,
    )  # fmt: skip
    measured["deployment_uri"] = deployment.uri  # how the pick step finds this point's folder
    return measured
