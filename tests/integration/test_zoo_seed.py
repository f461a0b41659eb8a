"""The embedded zoo (tiny variant) on the loopback S3 server, and the issue's end-to-end path:
a training run started from three stubs fetches them from S3 and its result is published back."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from sparse_transfer import storage, zoo
from sparse_transfer.cli import main
from sparse_transfer.embedded import fixtures, zoo_seed

pytestmark = pytest.mark.integration

NAMES = zoo_seed.stubs("tiny")


@pytest.fixture(scope="module")
def seeded(s3_server, tmp_path_factory):
    """A tiny embedded zoo seeded once into a fresh bucket; AWS_* and the zoo root point at it."""
    bucket = f"seed-{uuid.uuid4().hex[:10]}"
    s3_server.create_bucket(bucket)
    with pytest.MonkeyPatch.context() as mp:
        for name, value in s3_server.env().items():
            mp.setenv(name, value)
        mp.delenv("AWS_ENDPOINT_URL_S3", raising=False)
        mp.setenv("SPARSE_TRANSFER_CACHE", str(tmp_path_factory.mktemp("cache")))
        mp.setenv("SPARSE_TRANSFER_ZOO", f"s3://{bucket}/zoo")
        result = zoo_seed.seed("tiny")
        yield result


def test_seed_publishes_upstreams_and_a_recipe_pair_per_reference_task(seeded):
    expected = {NAMES["upstream"], NAMES["upstream_dense"]}
    expected |= set(NAMES["transfer"].values()) | set(NAMES["teacher"].values())
    assert len(expected) == 2 + 2 * 7
    assert set(seeded["pushed"]) == expected
    assert {e["stub"] for e in zoo.list_entries()} == expected
    assert NAMES["transfer"]["sst2"] == (
        "zoo:nlp/sentiment_analysis/tiny-bert/pytorch/huggingface/sst2/pruned90_quant-none"
    )
    # A second seed keeps everything (no retraining, no re-upload).
    again = zoo_seed.seed("tiny")
    assert again["pushed"] == [] and set(again["skipped"]) == expected
    sparse_recipes = zoo.search(min_sparsity=0.9, has="recipe", quantized=True)
    assert {e["stub"] for e in sparse_recipes} == set(NAMES["transfer"].values())


def test_upstream_is_exactly_90_percent_sparse_in_every_encoder_linear(seeded):
    from safetensors.numpy import load_file

    model_dir = Path(zoo.resolve(NAMES["upstream"], "model"))
    tensors = load_file(str(model_dir / "model.safetensors"))
    linears = {
        k: v
        for k, v in tensors.items()
        if k.startswith("bert.encoder.layer.") and k.endswith(".weight") and "LayerNorm" not in k
    }
    assert len(linears) == 2 * 6  # 2 layers x (q, k, v, attn out, intermediate, out)
    for name, weight in linears.items():
        assert int((weight == 0).sum()) == round(0.9 * weight.size), name
    # Embeddings stay dense: at most BERT's initial all-zero [PAD] row (the MLM decoder, tied
    # to the embeddings, moves it during training).
    embeddings = tensors["bert.embeddings.word_embeddings.weight"]
    assert int((embeddings[1:] == 0).sum()) == 0
    card = zoo.card(NAMES["upstream"])
    assert card["sparsity"] == 0.9 and card["parent"] == NAMES["upstream_dense"]
    assert card["train_steps"] == 8 and "eval_cosine_to_dense" in card["metrics"]
    # The tiny upstream has an MLM head: the MLM loss trained it and the card reports it.
    assert card["mlm_head"] is True and 0.0 <= card["metrics"]["mlm_accuracy"] <= 1.0
    assert card["structure"] == "unstructured" and card["method"] == "GMP"
    assert card["corpus"]["corpus"] == "fixture_text" and card["corpus"]["train_sentences"] == 64
    assert card["recipe_name"] == "upstream_gmp_pruned90" and card["resumed_from"] is None
    recipe = Path(zoo.resolve(NAMES["upstream"], "recipe")).read_text()
    assert "GMPruningModifier" in recipe and "final_sparsity: 0.9" in recipe


def test_every_task_recipe_loads_with_its_head(seeded):
    from sparse_transfer.recipe import load_recipe

    for key, stub in NAMES["transfer"].items():
        recipe = load_recipe(zoo.resolve(stub, "recipe"))
        names = [type(m).__name__ for m in recipe.modifiers]
        assert "ConstantPruningModifier" in names and "QuantizationModifier" in names, key
        (quant,) = recipe.find("QuantizationModifier")
        (distill,) = recipe.find("DistillationModifier")
        head = {"squad": "qa_outputs"}.get(key, "classifier")
        assert quant.submodules[-1] == head, key
        keys = ["start_logits", "end_logits"] if key == "squad" else ["logits"]
        assert distill.distill_output_keys == keys, key
    for key, stub in NAMES["teacher"].items():
        recipe = load_recipe(zoo.resolve(stub, "recipe"))
        assert [type(m).__name__ for m in recipe.modifiers] == [
            "EpochRangeModifier",
            "LearningRateFunctionModifier",
        ], key


def test_training_from_three_stubs_on_s3_publishes_back_with_a_card(seeded, tmp_path):
    rows = fixtures.sentiment_rows(40)
    train = fixtures.write_jsonl(rows[:32], tmp_path / "train.jsonl")
    val = fixtures.write_jsonl(rows[32:], tmp_path / "val.jsonl")
    data = ["--task_name", "sst2", "--train_file", str(train), "--validation_file", str(val),
            "--max_seq_length", "32", "--per_device_train_batch_size", "16", "--do_train", "--do_eval"]  # fmt: skip
    teacher_stub, recipe_stub = NAMES["teacher"]["sst2"], NAMES["transfer"]["sst2"]

    # The dense teacher path: dense upstream + the teacher recipe stub, pushed back to its stub.
    teacher_out = tmp_path / "teacher"
    assert main(["train", "text-classification", "--output_dir", str(teacher_out),
                 "--model_name_or_path", NAMES["upstream_dense"], "--recipe", teacher_stub,
                 "--recipe_args", '{"num_epochs": 1}', *data]) == 0  # fmt: skip
    assert main(["zoo", "push", str(teacher_out), teacher_stub, "--force",
                 "--parent", NAMES["upstream_dense"]]) == 0  # fmt: skip
    assert zoo.card(teacher_stub)["task"] == "text-classification"

    # Sparse transfer with three stubs: model, recipe and teacher all come from S3.
    out = tmp_path / "sparse"
    short = json.dumps({"num_epochs": 2, "qat_start_epoch": 1.0, "observer_epoch": 1.5})
    assert main(["train", "text-classification", "--output_dir", str(out),
                 "--model_name_or_path", NAMES["upstream"], "--recipe", recipe_stub, "--recipe_args", short,
                 "--distill_teacher", teacher_stub, *data]) == 0  # fmt: skip
    published = "zoo:nlp/sentiment_analysis/tiny-bert/pytorch/huggingface/sst2/pruned90_quant-demo"
    command = (
        f"sparse-transfer train text-classification --model_name_or_path {NAMES['upstream']} ..."
    )
    assert main(["zoo", "push", str(out), published, "--parent", NAMES["upstream"],
                 "--training_command", command]) == 0  # fmt: skip

    card = zoo.card(published)
    assert card["parent"] == NAMES["upstream"] and card["task"] == "text-classification"
    assert card["quantized"] is True and card["sparsity"] > 0.5
    assert 0.0 <= card["metrics"]["eval_accuracy"] <= 1.0
    assert card["training_command"] == command
    files = {f["path"] for f in zoo.show(published)["files"]}
    assert {"training/config.json", "training/quantization.json", "recipe/recipe.yaml"} <= files
    assert storage.is_remote(zoo.entry_uri(published))


def test_seed_with_another_recipe_publishes_under_its_name(tmp_path):
    """`zoo seed --tiny --recipe gmp_block4_pruned90`: the pipeline's stages with that recipe."""
    root = tmp_path / "zoo"
    assert (
        main(["zoo", "seed", "--tiny", "--recipe", "gmp_block4_pruned90", "--zoo", str(root)]) == 0
    )
    stub = "zoo:nlp/masked_language_modeling/tiny-bert/pytorch/huggingface/fixture_text/gmp_block4_pruned90-none"
    card = zoo.card(stub, root=str(root))
    assert card["structure"] == "block4" and card["recipe_name"] == "upstream_gmp_block4_pruned90"
    assert card["training_command"] == (
        "sparse-transfer zoo seed --tiny --corpus fixture_text --recipe gmp_block4_pruned90"
    )
