"""The upstream-transfer comparison: paired figures per dataset, datasets must match."""

import numpy as np
import pytest

from pipelines.results.upstream_transfer import compare, transfer_stub


def test_compare_is_paired_per_dataset():
    base = {"rt": np.array([True, True, False, False]), "pl": np.array([True, False])}
    mine = {"rt": np.array([True, False, True, True]), "pl": np.array([True, False])}
    out = compare(base, mine)
    assert list(out) == ["pl", "rt"]
    assert out["rt"]["accuracy_a"] == 50.0 and out["rt"]["accuracy_b"] == 75.0
    assert out["rt"]["b_minus_a"] == 25.0
    assert (out["rt"]["only_a_right"], out["rt"]["only_b_right"]) == (1, 2)
    # sqrt(n01 + n10 - (n01 - n10)^2 / n) / n in points: sqrt(3 - 1/4) / 4
    assert out["rt"]["paired_standard_error"] == round(100 * (3 - 0.25) ** 0.5 / 4, 2)
    assert out["pl"]["b_minus_a"] == 0.0 and out["pl"]["paired_standard_error"] == 0.0


def test_compare_refuses_different_datasets():
    with pytest.raises(ValueError, match="datasets differ"):
        compare({"rt": np.array([True])}, {"pl": np.array([True])})


def test_transfer_stub_is_its_own_entry():
    assert transfer_stub("cpu90min").endswith("/movie_reviews/pruned90_quant-cpu90min")
