"""More task runs: s3:// data files, making an upstream model with masked-LM +
gradual pruning, SQuAD v2, --do_predict, and a crash leaving no complete-looking output."""

from __future__ import annotations

import json

import pytest

from sparse_transfer.cli import main
from sparse_transfer.embedded import fixtures

pytestmark = pytest.mark.integration

GMP_RECIPE = """
version: 1.1.0
num_epochs: 2
modifiers:
  - !EpochRangeModifier
      start_epoch: 0.0
      end_epoch: eval(num_epochs)
  - !SetLearningRateModifier
      start_epoch: 0.0
      learning_rate: 1e-3
  - !GMPruningModifier
      params: __ALL_PRUNABLE__
      init_sparsity: 0.05
      final_sparsity: 0.5
      start_epoch: 0.0
      end_epoch: 1.0
      update_frequency: 0.5
"""


def test_data_files_from_s3(s3_bucket, s3_server, tmp_path):
    import boto3
    from botocore.config import Config

    s3 = boto3.client(
        "s3",
        endpoint_url=s3_server.endpoint,
        aws_access_key_id=s3_server.access_key,
        aws_secret_access_key=s3_server.secret_key,
        region_name=s3_server.region,
        config=Config(s3={"addressing_style": "path"}),
    )
    rows = fixtures.sentiment_rows(24)
    for name, part in (("train.jsonl", rows[:16]), ("validation.jsonl", rows[16:])):
        body = "".join(json.dumps(r) + "\n" for r in part).encode()
        s3.put_object(Bucket=s3_bucket, Key=f"data/{name}", Body=body)
    model = fixtures.make_tiny_bert(tmp_path / "m", hidden_size=32)
    out = tmp_path / "out"
    argv = ["train", "text-classification", "--output_dir", str(out), "--model_name_or_path", str(model),
            "--train_file", f"s3://{s3_bucket}/data/train.jsonl",
            "--validation_file", f"s3://{s3_bucket}/data/validation.jsonl",
            "--max_seq_length", "32", "--max_steps", "2", "--do_train", "--do_eval", "--report_to", "none"]  # fmt: skip
    assert main(argv) == 0
    results = json.loads((out / "eval_results.json").read_text())
    assert results["eval_samples"] == 8
    summary = json.loads((out / "run_summary.json").read_text())
    assert summary["metrics"]["eval_accuracy"] == results["eval_accuracy"]


def test_masked_lm_with_gradual_pruning_makes_a_sparse_upstream_model(tmp_path):
    model = fixtures.make_tiny_bert(
        tmp_path / "dense", task="masked-language-modeling", hidden_size=32
    )
    recipe = tmp_path / "gmp.yaml"
    recipe.write_text(GMP_RECIPE)
    text = [{"text": r["sentence"]} for r in fixtures.sentiment_rows(64)]
    train = fixtures.write_jsonl(text[:48], tmp_path / "train.jsonl")
    val = fixtures.write_jsonl(text[48:], tmp_path / "val.jsonl")
    out = tmp_path / "pruned50"
    argv = ["train", "masked-language-modeling", "--output_dir", str(out), "--model_name_or_path", str(model),
            "--recipe", str(recipe), "--train_file", str(train), "--validation_file", str(val),
            "--max_seq_length", "16", "--per_device_train_batch_size", "8", "--do_train", "--do_eval",
            "--report_to", "none", "--save_strategy", "no"]  # fmt: skip
    assert main(argv) == 0
    results = json.loads((out / "eval_results.json").read_text())
    assert 0.0 <= results["eval_accuracy"] <= 1.0 and results["eval_perplexity"] > 1.0
    assert results["sparsity"]["after"] > 0.4 > results["sparsity"]["before"]
    # The pruned checkpoint is itself a valid upstream model for sparse transfer.
    from sparse_transfer.tasks import load_model

    clf = load_model(out, "text-classification", num_labels=2)
    assert clf.config.num_labels == 2


def test_squad_v2_and_predictions(tmp_path):
    model = fixtures.make_tiny_bert(tmp_path / "m", task="question-answering", hidden_size=32)
    train = fixtures.write_jsonl(
        fixtures.squad_rows(16, unanswerable=0.3), tmp_path / "train.jsonl"
    )
    val = fixtures.write_jsonl(
        fixtures.squad_rows(6, seed=1, unanswerable=0.5), tmp_path / "val.jsonl"
    )
    test = fixtures.write_jsonl(fixtures.squad_rows(3, seed=2), tmp_path / "test.jsonl")
    out = tmp_path / "out"
    argv = ["train", "question-answering", "--output_dir", str(out), "--model_name_or_path", str(model),
            "--train_file", str(train), "--validation_file", str(val), "--test_file", str(test),
            "--version_2_with_negative", "--max_seq_length", "32", "--doc_stride", "8",
            "--max_steps", "2", "--do_train", "--do_eval", "--do_predict", "--report_to", "none"]  # fmt: skip
    assert main(argv) == 0
    results = json.loads((out / "eval_results.json").read_text())
    assert {"eval_exact", "eval_f1", "eval_HasAns_exact", "eval_NoAns_exact"} <= set(results)
    assert results["eval_HasAns_total"] + results["eval_NoAns_total"] == results["eval_total"] == 6
    lines = (out / "predict_results.jsonl").read_text().splitlines()
    assert [json.loads(x)["id"] for x in lines] == ["q0", "q1", "q2"]


def test_a_failed_run_leaves_no_complete_looking_output(tmp_path):
    model = fixtures.make_tiny_bert(tmp_path / "m", hidden_size=32)
    train = fixtures.write_jsonl(fixtures.sentiment_rows(8), tmp_path / "train.jsonl")
    bad_recipe = tmp_path / "bad.yaml"
    bad_recipe.write_text(
        "modifiers:\n  - !ConstantPruningModifier\n      params: ['re:no_such_param']\n"
    )
    out = tmp_path / "out"
    argv = ["train", "text-classification", "--output_dir", str(out), "--model_name_or_path", str(model),
            "--recipe", str(bad_recipe), "--train_file", str(train), "--max_steps", "1", "--do_train",
            "--report_to", "none"]  # fmt: skip
    assert main(argv) == 2
    assert not out.exists()


def test_teacher_with_another_label_order_is_refused(tmp_path, capsys):
    student = fixtures.make_tiny_bert(
        tmp_path / "s", task="masked-language-modeling", hidden_size=32
    )
    teacher = fixtures.make_tiny_bert(
        tmp_path / "t", hidden_size=32, id2label={0: "positive", 1: "negative"}
    )
    train = fixtures.write_jsonl(fixtures.sentiment_rows(8), tmp_path / "train.jsonl")
    out = tmp_path / "out"
    argv = ["train", "text-classification", "--output_dir", str(out), "--model_name_or_path", str(student),
            "--distill_teacher", str(teacher), "--task_name", "sst2", "--train_file", str(train),
            "--max_steps", "1", "--do_train", "--report_to", "none"]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "orders its labels ['positive', 'negative']" in err and "['negative', 'positive']" in err
    assert not out.exists()


def test_evaluation_only_run_adds_results_without_replacing_the_model_dir(tmp_path):
    model = fixtures.make_tiny_bert(
        tmp_path / "m", hidden_size=32, id2label={0: "negative", 1: "positive"}
    )
    val = fixtures.write_jsonl(fixtures.sentiment_rows(8), tmp_path / "val.jsonl")
    before = sorted(p.name for p in model.iterdir())
    argv = ["train", "text-classification", "--output_dir", str(model), "--model_name_or_path", str(model),
            "--task_name", "sst2", "--validation_file", str(val), "--do_eval", "--report_to", "none"]  # fmt: skip
    assert main(argv) == 0
    after = sorted(p.name for p in model.iterdir())
    assert set(before) < set(after) and {"eval_results.json", "run_summary.json"} <= set(after)
    assert json.loads((model / "eval_results.json").read_text())["eval_samples"] == 8
