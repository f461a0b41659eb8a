"""The upstream comparison's build step publishes into the run's own zoo, and a rerun reuses it.

The transfer step resolves the upstream from the run's zoo (`settings.zoo_root`), so an
upstream published anywhere else would be missing there.
"""

import numpy as np
from safetensors.numpy import load_file

from pipelines.results import upstreams
from pipelines.results.settings import zoo_root
from sparse_transfer.zoo import card, resolve


def test_a_block4_upstream_lands_in_the_runs_zoo_and_is_not_pruned_twice(tmp_path):
    out = tmp_path / "run"
    built = upstreams.build_upstream(out, "gmp-block4", upstreams.BUDGET["smoke"])
    root = zoo_root(out)
    meta = card(built["stub"], root=root)
    assert (meta["structure"], meta["sparsity"], meta["recipe_name"]) == (
        "block4",
        0.9,
        "upstream_gmp_block4_pruned90",
    )
    weights = load_file(f"{resolve(built['stub'], 'model', root=root)}/model.safetensors")
    ffn = weights["encoder.layer.0.intermediate.dense.weight"]
    quads = (ffn.reshape(ffn.shape[0], -1, 4) != 0).sum(axis=2)
    assert set(np.unique(quads)) <= {0, 4}  # every 1x4 block along K all zero or all kept
    assert (quads == 0).sum() == int(0.9 * quads.size)  # 90% of the blocks pruned, rounded down

    checkpoints = sorted((out / "upstreams" / "gmp-block4" / "ckpt").rglob("*"))
    again = upstreams.build_upstream(out, "gmp-block4", upstreams.BUDGET["smoke"])
    assert again["metrics"] == built["metrics"] and again["stub"] == built["stub"]
    assert sorted((out / "upstreams" / "gmp-block4" / "ckpt").rglob("*")) == checkpoints
