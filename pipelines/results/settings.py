"""What every stage of the real-results driver shares: the run configs, task, stubs and
where the run's own zoo lives (handed to each call, never through the environment)."""

from __future__ import annotations

from pathlib import Path

from sparse_transfer.tasks.names import TEXT_CLASSIFICATION

# The run configs ship inside the `pipelines` package (package data), so an installed wheel
# finds them without a source checkout.
CONFIGS = Path(__file__).resolve().parents[1] / "configs"
TASK = TEXT_CLASSIFICATION
ARCH = "minilm-l6"
TEACHER_STUB = f"zoo:nlp/sentiment_analysis/{ARCH}/pytorch/huggingface/movie_reviews/base-none"
SPARSE_STUB = (
    f"zoo:nlp/sentiment_analysis/{ARCH}/pytorch/huggingface/movie_reviews/pruned90_quant-none"
)
TRANSFER_RECIPE = f"zoo:nlp/sentiment_analysis/{ARCH}/pytorch/huggingface/sst2/pruned90_quant-none"


def zoo_root(out: Path) -> str:
    """The run's zoo: seeded, trained into and read from under the work folder."""
    return str(Path(out) / "zoo")
