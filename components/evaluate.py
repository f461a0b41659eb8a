"""Step: PyTorch model or ONNX deployment -> metrics (and a confusion matrix for classification)."""

from kfp import dsl
from kfp.dsl import ClassificationMetrics, Dataset, Input, Metrics, Model, Output

from components._image import COMPONENT_OPTIONS


@dsl.component(**COMPONENT_OPTIONS)
def evaluate(
    task: str,
    model: Input[Model],
    dataset: Input[Dataset],
    training_args: dict,
    metrics: Output[Metrics],
    classification_metrics: Output[ClassificationMetrics],
):
    """Scores `model` on the validation split; a disabled-teacher placeholder scores nothing."""
    from sparse_transfer.pipeline.options import eval_options
    from sparse_transfer.pipeline.steps import evaluate_step

    results = evaluate_step(task, model.path, dataset.path, eval_args=eval_options(training_args))
    for name, value in results.get("metrics", {}).items():
        metrics.log_metric(name, value)
    matrix = results.get("confusion_matrix")
    if matrix:
        classification_metrics.log_confusion_matrix(matrix["labels"], matrix["matrix"])
