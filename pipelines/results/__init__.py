"""The real-results run: real model, real data, the whole pipeline, figures (`make real-results`).

`python -m pipelines.results [--smoke] [--out DIR]` runs every stage (see
`pipelines.results.run`); stages already done under ``DIR/stages`` are skipped, so
an interrupted run resumes.
"""

from pipelines.results.run import SIZES, main, run_all

__all__ = ["SIZES", "main", "run_all"]
