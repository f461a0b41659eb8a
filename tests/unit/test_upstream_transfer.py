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


def test_recipe_args_at_five_epochs_are_the_run_configs():
    import json
    from pathlib import Path

    from pipelines.results.upstream_transfer import recipe_args
    from sparse_transfer import safe_yaml

    config = Path(__file__).parents[2] / "pipelines/configs/real-results-sparse.yaml"
    params = safe_yaml.load(config.read_text(), str(config))["parameters"]
    assert recipe_args(5.0) == json.loads(params["recipe_args"])
    assert recipe_args(2.0) == {"num_epochs": 2.0, "init_lr": 1.5e-4, "qat_start_epoch": 1.2,
                                "observer_epoch": 1.84}  # fmt: skip
