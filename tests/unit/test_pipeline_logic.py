"""Gate, metrics, training options, report and snapshot selection (the logic behind the steps)."""

import json

import pytest

from sparse_transfer.errors import DataError, PipelineError
from sparse_transfer.pipeline import steps
from sparse_transfer.pipeline.gate import evaluate_gate, points
from sparse_transfer.pipeline.metrics import confusion_matrix, find_metric, primary_metric
from sparse_transfer.pipeline.options import eval_options, training_options
from sparse_transfer.pipeline.report import render_report
from sparse_transfer.pipeline.snapshots import newest_snapshot
from sparse_transfer.tasks.registry import get_task

TEXT, QA = get_task("text-classification"), get_task("question-answering")


def test_points_scale_fractions_but_not_percentages():
    assert points(0.0092, 0.9197, 0.9289) == pytest.approx(0.92)
    assert points(2.45, 88.0, 85.55) == pytest.approx(2.45)


def test_gate_passes_within_drop_and_blocks_beyond():
    teacher = {"eval_accuracy": 0.9289}
    ok = evaluate_gate(
        0.9197, metric="accuracy", min_metric=0.9, max_drop_vs_teacher=1.0, teacher_metrics=teacher
    )
    assert ok.passed and not ok.failures and len(ok.checks) == 2
    blocked = evaluate_gate(
        0.9, metric="accuracy", min_metric=0.0, max_drop_vs_teacher=1.0, teacher_metrics=teacher
    )
    assert not blocked.passed
    assert "2.89 points" in blocked.failures[0]


def test_gate_min_metric_disabled_when_negative_and_teacher_missing_is_said():
    result = evaluate_gate(
        0.1, metric="f1", min_metric=-1, max_drop_vs_teacher=2.0, teacher_metrics={}
    )
    assert result.passed and "not checked" in result.checks[0]
    assert not evaluate_gate(0.1, metric="f1", min_metric=0.5).passed


def test_gate_must_beat_published():
    assert evaluate_gate(
        0.9, metric="accuracy", must_beat_published=True, published_metrics=None
    ).passed
    assert evaluate_gate(
        0.91, metric="accuracy", must_beat_published=True, published_metrics={"accuracy": 0.9}
    ).passed
    assert not evaluate_gate(
        0.9, metric="accuracy", must_beat_published=True, published_metrics={"eval_accuracy": 0.9}
    ).passed


def test_primary_metric_per_task_explicit_and_declared():
    assert primary_metric(TEXT, {"eval_accuracy": 0.8, "eval_loss": 1}) == (
        "accuracy",
        0.8,
    )
    assert primary_metric(QA, {"exact_match": 70.0, "f1": 80.0}) == ("f1", 80.0)
    assert (
        primary_metric(
            TEXT,
            {
                "eval_matthews_correlation": 0.4,
                "eval_accuracy": 0.8,
                "primary_metric": "matthews_correlation",
            },
        )[1]
        == 0.4
    )
    assert primary_metric(TEXT, {"eval_loss": 1.0}, "loss") == ("loss", 1.0)
    with pytest.raises(PipelineError, match="available: eval_loss"):
        primary_metric(TEXT, {"eval_loss": 1.0})
    assert find_metric({"test_f1": 0.5}, "f1") == 0.5 and find_metric({}, "f1") is None


def test_confusion_matrix_counts_and_rejects_bad_ids():
    assert confusion_matrix([0, 0, 1, 1, 1], [0, 1, 1, 1, 0], ["neg", "pos"]) == [[1, 1], [1, 2]]
    with pytest.raises(PipelineError, match="outside the 2 labels"):
        confusion_matrix([0, 2], [0, 0], ["neg", "pos"])


def test_training_options_validate_drop_unset_and_rename():
    out = training_options(
        "text-classification", max_seq_length=128, doc_stride=128, fp16=True, seed=42.0,
        evaluation_strategy="epoch", eval_steps=0, max_steps=-1, max_train_samples=0,
    )  # fmt: skip
    assert out == {"max_seq_length": 128, "fp16": True, "seed": 42, "eval_strategy": "epoch"}
    assert training_options("question-answering", doc_stride=64) == {"doc_stride": 64}
    with pytest.raises(PipelineError) as err:
        training_options("text-classification", evaluation_strategy="daily", seed="x", bogus=1)
    assert (
        "daily" in str(err.value)
        and "'seed' must be int" in str(err.value)
        and "bogus" in str(err.value)
    )
    with pytest.raises(PipelineError, match="needs eval_steps"):
        training_options("text-classification", evaluation_strategy="steps")
    assert eval_options({"max_seq_length": 64, "seed": 1, "per_device_eval_batch_size": 8}) == {
        "max_seq_length": 64, "per_device_eval_batch_size": 8}  # fmt: skip


def test_report_shows_metrics_vs_teacher_gate_size_latency_and_layers():
    gate = evaluate_gate(
        0.9, metric="accuracy", max_drop_vs_teacher=1.0, teacher_metrics={"eval_accuracy": 0.93}
    )
    text = render_report(
        title="zoo:demo", task="text-classification",
        torch_metrics={"eval_accuracy": 0.91, "eval_runtime": 3.0},
        onnx_metrics={"eval_accuracy": 0.9}, teacher_metrics={"eval_accuracy": 0.93},
        sparsity={"overall_sparsity": 0.9, "zeros": 90, "prunable_params": 100,
                  "layers": {"bert.encoder.layer.0.attention.self.query.weight": {"numel": 100, "zeros": 90, "sparsity": 0.9}}},
        export={"model_size_bytes": 2048, "latency_ms": 1.234, "sequence_length": 128},
        gate=gate, published=None,
    )  # fmt: skip
    assert "## Gate: BLOCKED (not published)" in text
    assert "| accuracy | 0.9100 | 0.9000 | 0.9300 | -3.00 |" in text
    assert "runtime" not in text
    assert "model size: 2.0 KiB" in text and "1.23 ms" in text
    assert "| `bert.encoder.layer.0.attention.self.query.weight` | 100 | 90 | 90.00% |" in text


def test_newest_snapshot_by_name(tmp_path):
    for name in ("2024-06-03", "2024-06-10", "2024-05-30"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "train.csv").write_text("sentence,label\n")
    (tmp_path / "2024-07-01").mkdir()  # empty: not a snapshot (yet)
    (tmp_path / "notes.txt").write_text("ignored: not a folder")
    assert newest_snapshot(str(tmp_path)) == f"{tmp_path}/2024-06-10"
    assert newest_snapshot(f"file://{tmp_path}") == f"file://{tmp_path}/2024-06-10"
    with pytest.raises(DataError, match="no dataset snapshot"):
        newest_snapshot(str(tmp_path / "2024-06-03"))


def test_fetch_data_copies_files_and_data_values_point_at_them(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "train.jsonl").write_text('{"sentence": "good", "label": 1}\n')
    (src / "dev.jsonl").write_text('{"sentence": "bad", "label": 0}\n')
    dest = tmp_path / "artifact"
    spec = steps.fetch_data_step(
        dest, train_file=str(src / "train.jsonl"), validation_file=f"file://{src / 'dev.jsonl'}",
        task_name="sst2", label_column_name="", validation_ratio=0.0,
    )  # fmt: skip
    assert spec["train_file"] == "train.jsonl" and spec["validation_file"] == "validation.jsonl"
    assert json.loads((dest / "data.json").read_text())["task_name"] == "sst2"
    assert steps.data_values(dest) == {
        "task_name": "sst2", "train_file": str(dest / "train.jsonl"),
        "validation_file": str(dest / "validation.jsonl"),
    }  # fmt: skip


def test_fetch_data_reads_newest_snapshot(tmp_path):
    for name, text in (("2024-01-01", "old"), ("2024-02-01", "new")):
        (tmp_path / "snaps" / name).mkdir(parents=True)
        (tmp_path / "snaps" / name / "train.csv").write_text(f"sentence,label\n{text},1\n")
    spec = steps.fetch_data_step(tmp_path / "a", dataset_snapshot_prefix=str(tmp_path / "snaps"))
    assert spec["snapshot"].endswith("2024-02-01")
    assert "new" in (tmp_path / "a" / "train.csv").read_text()


def test_fetch_data_rejects_no_data_and_missing_files(tmp_path):
    with pytest.raises(DataError, match="no data"):
        steps.fetch_data_step(tmp_path / "a")
    with pytest.raises(DataError, match="does not exist"):
        steps.fetch_data_step(tmp_path / "b", train_file=str(tmp_path / "missing.csv"))


def test_disabled_teacher_is_a_placeholder(tmp_path):
    meta = steps.fetch_model_step("disable", tmp_path / "t")
    assert meta == {"source": "disable", "present": False}
    assert not steps.has_model(tmp_path / "t")
    assert steps.evaluate_step("text-classification", tmp_path / "t", tmp_path) == {
        "metrics": {}, "confusion_matrix": None}  # fmt: skip


def test_task_arguments_put_each_flag_in_its_dataclass():
    from transformers import TrainingArguments

    from sparse_transfer.tasks.args import DataArguments, ModelArguments
    from sparse_transfer.tasks.question_answering import QuestionAnsweringArguments

    values = {"model_name_or_path": "m", "recipe_args": "", "max_seq_length": 32.0,
              "doc_stride": 16, "seed": 7, "fp16": False, "output_dir": "o", "x": None}  # fmt: skip
    args = steps.task_arguments("question-answering", values, TrainingArguments)
    assert args[ModelArguments].model_name_or_path == "m"
    assert args[ModelArguments].recipe_args is None  # empty means unset
    assert args[DataArguments].max_seq_length == 32 and isinstance(
        args[DataArguments].max_seq_length, int
    )  # KFP's 32.0
    assert args[QuestionAnsweringArguments].doc_stride == 16
    assert args[TrainingArguments].seed == 7 and args[TrainingArguments].fp16 is False
    with pytest.raises(PipelineError, match="no text-classification argument is called doc_stride"):
        steps.task_arguments("text-classification", {"doc_stride": 16})


def test_evaluate_step_matrix_comes_from_the_same_predictions_as_the_metrics(tmp_path):
    from sparse_transfer.embedded import fixtures

    model = fixtures.make_tiny_bert(tmp_path / "m", hidden_size=32, seed=3)
    rows = fixtures.sentiment_rows(20, seed=4)
    data = tmp_path / "data"
    steps.fetch_data_step(
        data, train_file=str(fixtures.write_jsonl(rows, tmp_path / "t.jsonl")),
        validation_file=str(fixtures.write_jsonl(rows, tmp_path / "v.jsonl")),
    )  # fmt: skip
    result = steps.evaluate_step(
        "text-classification", model, data, eval_args={"max_seq_length": 16.0}
    )
    matrix = result["confusion_matrix"]["matrix"]
    assert sum(map(sum, matrix)) == len(rows)
    by_label = [sum(1 for r in rows if r["label"] == i) for i in range(2)]
    assert [sum(row) for row in matrix] == by_label  # rows are the true labels
    correct = sum(matrix[i][i] for i in range(len(matrix)))
    assert result["metrics"]["eval_accuracy"] == pytest.approx(correct / len(rows))
    assert not (model / "eval_results.json").exists()  # reading never writes into the input
