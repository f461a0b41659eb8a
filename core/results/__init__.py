"""The real-results run: real model, real data, the whole pipeline, figures (`make real-results`).

`python -m sparse_transfer.results [--smoke] [--out DIR]` runs every stage (see
`sparse_transfer.results.run`); stages already done under ``DIR/stages`` are skipped, so
an interrupted run resumes.
"""

from sparse_transfer.results.run import SIZES, main, run_all

__all__ = ["SIZES", "main", "run_all"]
