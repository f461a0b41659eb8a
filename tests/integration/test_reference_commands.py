"""The reference document's seven training command lines, run through our CLI.

Each command is copied flag for flag from
shared/reference/sparse-transfer-learning.md, with three kinds of change only:
our command name (`sparse-transfer train TASK`); local paths instead of zoo
stubs and hub datasets (tiny models from `make_tiny_bert`, fixture data files;
`--task_name` with local files selects the GLUE task's columns and labels); and
smaller numbers so each run takes seconds (`--max_seq_length 32`, batch sizes,
the built-in SST-2 recipe shortened with `--recipe_args`).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sparse_transfer.cli import main
from sparse_transfer.embedded import fixtures
from sparse_transfer.recipe import builtin_recipe_path

pytestmark = pytest.mark.integration

RECIPE = str(builtin_recipe_path("sst2_pruned90_quant"))
# Upstream checkpoints are masked-LM models, like the reference's obert-base stubs.
MLM = "masked-language-modeling"
SHORT = json.dumps({"num_epochs": 2, "qat_start_epoch": 1.0, "observer_epoch": 1.5})


def _zeros(model_dir: Path) -> int:
    """Zeros in the encoder/embedding weights of a saved model (the pruned part)."""
    from safetensors.numpy import load_file

    tensors = load_file(str(model_dir / "model.safetensors"))
    return sum(
        int((v == 0).sum())
        for k, v in tensors.items()
        if k.startswith("bert.") and k.endswith("weight") and "LayerNorm" not in k
    )


def _run(argv: list[str]) -> dict:
    assert main(argv) == 0
    out = Path(argv[argv.index("--output_dir") + 1])
    assert out.is_dir() and not (out.parent / f".{out.name}.partial").exists()
    return json.loads((out / "eval_results.json").read_text())


def _check_sparse(student: Path, out: Path, results: dict) -> None:
    assert results["sparsity"]["kept"] is True
    assert results["sparsity"]["zeros_lost"] == 0
    assert _zeros(out) >= _zeros(student)
    assert (out / "recipe.yaml").exists()


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("reference")


def _model(work: Path, name: str, **kwargs) -> Path:
    path = work / name
    if not (path / "config.json").exists():
        fixtures.make_tiny_bert(path, hidden_size=32, **kwargs)
    return path


def test_question_answering_squad(work):
    student = _model(work, "upstream", task=MLM, sparsity=0.9)
    teacher = _model(work, "teacher_qa", task="question-answering", seed=1)
    train = fixtures.write_jsonl(fixtures.squad_rows(24, facts=4), work / "squad_train.jsonl")
    val = fixtures.write_jsonl(fixtures.squad_rows(8, seed=1, facts=4), work / "squad_val.jsonl")
    out = work / "obert_base_pruned90_quant_squad"
    results = _run(
        ["train", "question-answering",
         "--output_dir", str(out),
         "--model_name_or_path", str(student),
         "--recipe", RECIPE, "--recipe_args", SHORT,
         "--distill_teacher", str(teacher),
         "--train_file", str(train), "--validation_file", str(val),
         "--do_train", "--do_eval", "--evaluation_strategy", "epoch", "--logging_steps", "1000", "--save_steps", "1000",
         "--per_device_train_batch_size", "8", "--per_device_eval_batch_size", "32", "--gradient_accumulation_steps", "2",
         "--max_seq_length", "32", "--doc_stride", "8", "--preprocessing_num_workers", "32",
         "--seed", "42"]
    )  # fmt: skip
    assert 0.0 <= results["eval_exact_match"] <= 100.0 and 0.0 <= results["eval_f1"] <= 100.0
    assert results["eval_f1"] >= results["eval_exact_match"]
    _check_sparse(student, out, results)


def test_text_classification_qqp(work):
    student = _model(work, "upstream", task=MLM, sparsity=0.9)
    labels = {0: "not_duplicate", 1: "duplicate"}
    teacher = _model(work, "teacher_qqp", id2label=labels, seed=1)
    rows = fixtures.pair_rows(40, first="question1", second="question2", num_labels=2)
    train = fixtures.write_jsonl(rows[:32], work / "qqp_train.jsonl")
    val = fixtures.write_jsonl(rows[32:], work / "qqp_val.jsonl")
    out = work / "obert_base_pruned90_quant_qqp"
    results = _run(
        ["train", "text-classification",
         "--output_dir", str(out),
         "--model_name_or_path", str(student),
         "--recipe", RECIPE, "--recipe_args", SHORT,
         "--distill_teacher", str(teacher),
         "--task_name", "qqp", "--train_file", str(train), "--validation_file", str(val),
         "--do_train", "--do_eval", "--evaluation_strategy", "epoch", "--logging_steps", "1000",
         "--save_steps", "1000", "--per_device_train_batch_size", "32", "--per_device_eval_batch_size", "32",
         "--max_seq_length", "32", "--preprocessing_num_workers", "32",
         "--seed", "10194"]
    )  # fmt: skip
    # GLUE QQP reports accuracy and F1 (and their mean).
    assert {"eval_accuracy", "eval_f1", "eval_combined_score"} <= set(results)
    config = json.loads((out / "config.json").read_text())
    assert config["id2label"] == {"0": "not_duplicate", "1": "duplicate"}
    _check_sparse(student, out, results)


def test_text_classification_mnli_matched_and_mismatched(work):
    student = _model(work, "upstream", task=MLM, sparsity=0.9)
    labels = {0: "entailment", 1: "neutral", 2: "contradiction"}
    teacher = _model(work, "teacher_mnli", num_labels=3, id2label=labels, seed=1)
    rows = fixtures.pair_rows(48, first="premise", second="hypothesis", num_labels=3)
    train = fixtures.write_jsonl(rows[:32], work / "mnli_train.jsonl")
    matched = fixtures.write_jsonl(rows[32:40], work / "mnli_val_m.jsonl")
    mismatched = fixtures.write_jsonl(rows[40:], work / "mnli_val_mm.jsonl")
    out = work / "obert_base_pruned80_quant_mnli"
    results = _run(
        ["train", "text-classification",
         "--output_dir", str(out),
         "--model_name_or_path", str(student),
         "--recipe", RECIPE, "--recipe_args", SHORT,
         "--distill_teacher", str(teacher),
         "--task_name", "mnli", "--train_file", str(train),
         "--validation_file", str(matched), "--validation_mismatched_file", str(mismatched),
         "--do_train", "--do_eval", "--evaluation_strategy", "epoch", "--logging_steps", "1000", "--save_steps", "1000",
         "--per_device_train_batch_size", "8", "--per_device_eval_batch_size", "32", "--gradient_accumulation_steps", "4",
         "--max_seq_length", "32", "--preprocessing_num_workers", "32",
         "--seed", "5114"]
    )  # fmt: skip
    assert "eval_accuracy" in results and "eval_accuracy_mm" in results
    assert results["eval_samples"] == 8 and results["eval_samples_mm"] == 8
    _check_sparse(student, out, results)


def test_text_classification_goemotions_multilabel(work):
    student = _model(work, "upstream", task=MLM, sparsity=0.9)
    names = sorted(fixtures.MULTI_LABEL_TOPICS)
    teacher = _model(
        work,
        "teacher_goemotions",
        num_labels=len(names),
        id2label=dict(enumerate(names)),
        problem_type="multi_label_classification",
        seed=1,
    )
    train = fixtures.write_jsonl(fixtures.multilabel_rows(32), work / "go_train.jsonl")
    val = fixtures.write_jsonl(fixtures.multilabel_rows(8, seed=1), work / "go_val.jsonl")
    out = work / "pruned_bert-multilabel_classification-goemotions"
    results = _run(
        ["train", "text-classification",
         "--output_dir", str(out),
         "--model_name_or_path", str(student),
         "--distill_teacher", str(teacher),
         "--recipe", RECIPE, "--recipe_args", SHORT,
         "--train_file", str(train), "--validation_file", str(val),
         "--label_column_name", "labels", "--input_column_names", "text",
         "--do_train", "--do_eval", "--fp16", "--evaluation_strategy", "steps", "--eval_steps", "200",
         "--logging_steps", "200", "--logging_first_step", "--per_device_train_batch_size", "16",
         "--per_device_eval_batch_size", "16", "--preprocessing_num_workers", "8",
         "--max_seq_length", "30", "--save_strategy", "epoch", "--save_total_limit", "1",
         "--seed", "5550"]
    )  # fmt: skip
    assert {"eval_micro_f1", "eval_macro_f1", "eval_avgF1"} <= set(results)
    assert results["eval_avgF1"] == results["eval_macro_f1"]
    config = json.loads((out / "config.json").read_text())
    assert config["problem_type"] == "multi_label_classification"
    assert list(config["id2label"].values()) == names
    _check_sparse(student, out, results)


def test_text_classification_imdb_validation_ratio_and_truncation(work):
    student = _model(work, "upstream", task=MLM, sparsity=0.9)
    teacher = _model(work, "teacher_imdb", id2label={0: "0", 1: "1"}, seed=1)
    # Documents: four sentiment sentences each, longer than --max_seq_length 32.
    rows = fixtures.sentiment_rows(160)
    by_label = {lab: [r["sentence"] for r in rows if r["label"] == lab] for lab in (0, 1)}
    docs = [
        {"text": " ".join(by_label[d % 2][(d // 2) * 4 : (d // 2) * 4 + 4]), "label": d % 2}
        for d in range(40)
    ]
    train = fixtures.write_jsonl(docs, work / "imdb_train.jsonl")
    out = work / "obert-document_classification-imdb"
    results = _run(
        ["train", "text-classification",
         "--output_dir", str(out),
         "--model_name_or_path", str(student),
         "--distill_teacher", str(teacher),
         "--recipe", RECIPE, "--recipe_args", SHORT,
         "--train_file", str(train),
         "--do_train", "--do_eval", "--validation_ratio", "0.1", "--fp16",
         "--evaluation_strategy", "steps", "--eval_steps", "100", "--logging_steps", "100", "--logging_first_step",
         "--per_device_train_batch_size", "8", "--per_device_eval_batch_size", "32", "--gradient_accumulation_steps", "5",
         "--save_strategy", "steps", "--save_steps", "100", "--save_total_limit", "1",
         "--preprocessing_num_workers", "6", "--max_seq_length", "32",
         "--seed", "31222"]
    )  # fmt: skip
    assert results["eval_samples"] == 4  # 10% of 40 documents
    summary = json.loads((out / "run_summary.json").read_text())
    assert summary["truncated"] == {"train": 36, "validation": 4}
    _check_sparse(student, out, results)


def test_text_classification_sst2_with_dense_teacher(work):
    """The SST-2 sparse transfer run, with its teacher made by the reference's
    dense-teacher command (dense_teacher recipe) first."""
    student = _model(work, "upstream", task=MLM, sparsity=0.9)
    upstream_dense = _model(work, "upstream_dense", task=MLM, seed=2)
    rows = fixtures.sentiment_rows(40)
    train = fixtures.write_jsonl(rows[:32], work / "sst2_train.jsonl")
    val = fixtures.write_jsonl(rows[32:], work / "sst2_val.jsonl")
    teacher = work / "dense_obert-text_classification_sst2"
    _run(
        ["train", "text-classification",
         "--output_dir", str(teacher),
         "--model_name_or_path", str(upstream_dense),
         "--recipe", str(builtin_recipe_path("dense_teacher")), "--recipe_args", '{"num_epochs": 1}',
         "--task_name", "sst2", "--train_file", str(train), "--validation_file", str(val),
         "--max_seq_length", "32", "--per_device_train_batch_size", "32", "--per_device_eval_batch_size", "32",
         "--preprocessing_num_workers", "6",
         "--do_train", "--do_eval", "--evaluation_strategy", "epoch", "--fp16", "--seed", "20811",
         "--save_strategy", "epoch", "--save_total_limit", "1"]
    )  # fmt: skip
    assert json.loads((teacher / "config.json").read_text())["id2label"] == {
        "0": "negative",
        "1": "positive",
    }
    out = work / "sparse_quantized_bert-text_classification_sst2"
    results = _run(
        ["train", "text-classification",
         "--output_dir", str(out),
         "--model_name_or_path", str(student),
         "--recipe", RECIPE, "--recipe_args", SHORT,
         "--distill_teacher", str(teacher),
         "--task_name", "sst2", "--train_file", str(train), "--validation_file", str(val),
         "--max_seq_length", "32", "--per_device_train_batch_size", "32", "--per_device_eval_batch_size", "32",
         "--preprocessing_num_workers", "6",
         "--do_train", "--do_eval", "--evaluation_strategy", "epoch", "--fp16",
         "--save_strategy", "epoch", "--save_total_limit", "1"]
    )  # fmt: skip
    assert 0.0 <= results["eval_accuracy"] <= 1.0
    _check_sparse(student, out, results)
    # save_total_limit 1 with epoch saves: exactly one checkpoint left.
    assert len(list(out.glob("checkpoint-*"))) == 1


def test_token_classification_conll2003(work):
    student = _model(work, "upstream", task=MLM, sparsity=0.9)
    tags = sorted({t for r in fixtures.ner_rows(64) for t in r["ner_tags"]})
    teacher = _model(
        work,
        "teacher_ner",
        task="token-classification",
        num_labels=len(tags),
        id2label=dict(enumerate(tags)),
        seed=1,
    )
    train = fixtures.write_jsonl(fixtures.ner_rows(32), work / "conll_train.jsonl")
    val = fixtures.write_jsonl(fixtures.ner_rows(8, seed=1), work / "conll_val.jsonl")
    out = work / "sparse_bert-token_classification_connl2003"
    results = _run(
        ["train", "token-classification",
         "--output_dir", str(out),
         "--model_name_or_path", str(student),
         "--distill_teacher", str(teacher),
         "--recipe", RECIPE, "--recipe_args", SHORT,
         "--train_file", str(train), "--validation_file", str(val),
         "--max_seq_length", "32",
         "--per_device_train_batch_size", "32", "--per_device_eval_batch_size", "32", "--preprocessing_num_workers", "6",
         "--do_train", "--do_eval", "--evaluation_strategy", "epoch", "--fp16", "--seed", "29204",
         "--save_strategy", "epoch", "--save_total_limit", "1"]
    )  # fmt: skip
    assert {"eval_precision", "eval_recall", "eval_f1", "eval_accuracy"} <= set(results)
    _check_sparse(student, out, results)
