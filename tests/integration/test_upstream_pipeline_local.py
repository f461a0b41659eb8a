"""sparse_upstream_pipeline on kfp's local runner: tiny MLM BERT, fixture corpus, zoo and
checkpoints on loopback S3. A second run with the same checkpoint prefix resumes from the
first run's last checkpoint (the stage that resumes) and publishes the same weights."""

import json
from pathlib import Path

import pytest
from safetensors.numpy import load_file

from sparse_transfer import storage
from sparse_transfer import zoo as zoo_api
from sparse_transfer.embedded.fixtures import make_tiny_bert

pytestmark = pytest.mark.integration

STUB = "zoo:nlp/masked_language_modeling/tiny-bert/pytorch/huggingface/fixture_text/pruned90-itest"
QUICK = {
    "corpus": "fixture_text",
    "train_samples": 64,
    "eval_samples": 16,
    "recipe_args": '{"num_epochs": 1, "pruning_end_epoch": 0.5, "update_frequency": 0.25, "init_lr": 0.001}',
    "batch_size": 8,
    "max_length": 24,
    "save_steps": 3,
    "probe": "fixture_sentiment",
}


def run(tmp_path, name: str, **parameters):
    from pipelines.client import run_local

    config = tmp_path / f"{name}.yaml"
    config.write_text(
        f"pipeline: sparse_upstream\nrun_name: {name}\nparameters: {json.dumps(dict(QUICK, **parameters))}\n"
    )
    return run_local(config, pipeline_root=tmp_path / name)


def test_prunes_evaluates_publishes_and_resumes(s3_bucket, tmp_path):
    dense = make_tiny_bert(tmp_path / "dense", task="masked-language-modeling", hidden_size=32)
    zoo_root, ckpt = f"s3://{s3_bucket}/zoo", f"s3://{s3_bucket}/ckpt/run1"
    common = {"model_name_or_path": str(dense), "zoo_root": zoo_root, "checkpoint_uri": ckpt}
    first = run(tmp_path, "first", publish_stub=STUB, min_cosine=0.5, **common)
    assert first.passed is True and first.published == STUB
    card = zoo_api.card(STUB, root=zoo_root)
    assert card["structure"] == "unstructured" and card["method"] == "GMP" and card["mlm_head"]
    assert card["corpus"]["corpus"] == "fixture_text" and card["corpus"]["train_sentences"] == 64
    assert card["train_steps"] == 8 and card["resumed_from"] is None
    assert {"mlm_accuracy", "mlm_perplexity", "probe_accuracy", "eval_cosine_to_dense"} <= set(
        card["metrics"]
    )
    report = first.report.read_text()
    assert "| mlm_accuracy |" in report and "Gate: cosine to dense >= 0.5: passed" in report
    # Checkpoints were published under the prefix as the run went (save_total_limit keeps 2).
    assert {"checkpoint-6", "checkpoint-8"} <= set(storage.list_published(ckpt))

    # Same prefix: the stage resumes from checkpoint-8 (the end) instead of starting over.
    again = run(tmp_path, "again", **common)
    assert again.published == "" and "resumed from checkpoint-8" in again.report.read_text()
    weights = {}
    for label, result in (("first", first), ("again", again)):
        (run_dir,) = [
            p for p in result.pipeline_root.iterdir() if p.name.startswith("sparse-upstream-")
        ]
        weights[label] = load_file(
            str(run_dir / "prune-upstream" / "sparse_model" / "model.safetensors")
        )
    for name, value in weights["first"].items():
        assert (weights["again"][name] == value).all(), name
    assert (
        Path(zoo_api.resolve(STUB, "recipe", root=zoo_root)).read_text().count("GMPruningModifier")
        == 1
    )
