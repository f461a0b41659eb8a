"""The upstream comparison stage's logic: paired rows against the GMP baseline, the table."""

from pathlib import Path

import numpy as np
import pytest

from pipelines.results import upstreams
from pipelines.results.upstreams import BASELINE, compare_rows, markdown


def test_rows_pair_every_variant_with_the_baseline_on_the_same_rows():
    base = np.array([True] * 80 + [False] * 20)
    block = base.copy()
    block[:6] = False  # 6 rows only the baseline gets right
    block[80:82] = True  # 2 rows only block4 gets right
    rights = {BASELINE: {"rotten_tomatoes": base}, "gmp-block4": {"rotten_tomatoes": block}}
    latencies = {
        BASELINE: {"onnxruntime": 9.3},
        "gmp-block4": {"onnxruntime": 9.1, "onnxruntime-sparse": 4.2},
    }
    rows = {r["variant"]: r for r in compare_rows(rights, latencies)}
    assert rows[BASELINE]["accuracy"] == 80.0 and rows[BASELINE]["vs_baseline"] == 0.0
    b = rows["gmp-block4"]
    assert b["accuracy"] == 76.0 and b["vs_baseline"] == -4.0
    # sqrt(6 + 2 - (2 - 6)^2 / 100) / 100, in points
    assert b["paired_standard_error"] == pytest.approx(round(100 * (8 - 16 / 100) ** 0.5 / 100, 2))
    assert (
        b["p50_ms_onnxruntime-sparse"] == 4.2
        and rows[BASELINE]["p50_ms_onnxruntime-sparse"] is None
    )
    table = markdown(
        list(rows.values()), {"gmp-block4": {"metrics": {"eval_cosine_to_dense": 0.7}}}
    )
    assert "| gmp-block4 | 0.7 |  | rotten_tomatoes | 76.00 | -4.00 ± 2.80 | 9.1 | 4.2 |" in table
    assert "| 9.3 | not installed |" in table


def test_no_baseline_is_refused_and_the_budget_is_the_same_for_every_variant():
    with pytest.raises(ValueError, match="baseline gmp-unstructured"):
        compare_rows({"gmp-block4": {}}, {})
    assert set(upstreams.VARIANTS) == {
        "gmp-unstructured",
        "gmp-block4",
        "gmp-block16x4",
        "obs-unstructured",
        "obs-block4",
    }
    from sparse_transfer.embedded.upstream import upstream_recipe_path
    from sparse_transfer.recipe import load_recipe

    for variant, recipe in upstreams.VARIANTS.items():  # one schedule for all: the same budget
        budget = upstreams.BUDGET["full"]
        extra = budget["obs_args"] if variant.startswith("obs") else {}
        loaded = load_recipe(upstream_recipe_path(recipe), {**budget["recipe_args"], **extra})
        (pruner,) = [m for m in loaded.modifiers if "Pruning" in type(m).__name__]
        assert (pruner.final_sparsity, pruner.end_epoch, pruner.update_frequency) == (
            0.9,
            1.4,
            0.05,
        ), variant
        assert pruner.mask_type == variant.split("-")[1], variant
    assert upstreams.transfer_stub("obs-block4").endswith(
        "movie_reviews/pruned90_quant_obs_block4-none"
    )


def test_latencies_are_read_per_engine_and_a_fallback_is_not_reported_as_sparse():
    timed = {
        "gmp-block4 [onnxruntime]": {"p50_ms": 9.123, "engine": "onnxruntime"},
        "gmp-block4 [onnxruntime-sparse]": {"p50_ms": 4.2, "engine": "onnxruntime-sparse"},
        "obs-block4 [onnxruntime]": {"p50_ms": 9.0, "engine": "onnxruntime"},
        "obs-block4 [onnxruntime-sparse]": {"p50_ms": 8.9, "engine": "onnxruntime"},  # fell back
    }
    both = ("onnxruntime", "onnxruntime-sparse")
    assert upstreams.latencies_of(timed, ["gmp-block4", "obs-block4"], both) == {
        "gmp-block4": {"onnxruntime": 9.12, "onnxruntime-sparse": 4.2},
        "obs-block4": {"onnxruntime": 9.0},
    }
    alone = {"gmp-block4": {"p50_ms": 9.1, "engine": "onnxruntime"}}
    assert upstreams.latencies_of(alone, ["gmp-block4"], both[:1]) == {
        "gmp-block4": {"onnxruntime": 9.1}
    }


def test_a_transfer_is_read_from_the_runs_zoo_where_its_pipeline_published_it(
    tmp_path, monkeypatch
):
    """The stage's transfer resolves the stub it published in the run's zoo (`zoo_root(out)`,
    the pipeline's ``zoo_root`` parameter), never the user's default zoo."""
    import onnx
    from onnx import TensorProto, helper

    from pipelines.results import run
    from pipelines.results.settings import zoo_root
    from sparse_transfer.zoo import push

    out = tmp_path / "out"

    def pipeline(out_, config, overrides, pipeline_root):  # what its publish step does
        entry = tmp_path / "entry"
        (entry / "deployment").mkdir(parents=True)
        (entry / "model.md").write_text("# a transfer\n")
        x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
        graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [x],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])  # fmt: skip
        onnx.save(helper.make_model(graph), str(entry / "deployment" / "model.onnx"))
        push(entry, overrides["publish_stub"], root=zoo_root(out_))
        return {"passed": True, "published": overrides["publish_stub"], "report": ""}

    monkeypatch.setattr(run, "_run_config", pipeline)
    monkeypatch.setenv("SPARSE_TRANSFER_ZOO", str(tmp_path / "users-zoo"))  # stays empty
    stub = upstreams.transfer_stub("gmp-block4")
    folder = run.transfer_from(out, run.SIZES["smoke"])(upstreams.upstream_stub("gmp-block4"), stub)
    assert (Path(folder) / "model.onnx").is_file()
    assert Path(folder).resolve().is_relative_to(Path(zoo_root(out)).resolve())
