"""Every component's Python function runs on its own, on artifacts in a temp folder.

KFP components expose the wrapped function as ``.python_func``; calling it with
artifact objects whose URIs are local folders is exactly what the container
does after kfp's executor has mapped the artifacts. Tiny models (hidden 32, 2
layers) and 32 training rows keep the whole chain to seconds.
"""

import json
from pathlib import Path

import pytest
from kfp.dsl import ClassificationMetrics, Dataset, Markdown, Metrics, Model

import components
from sparse_transfer.embedded.fixtures import make_tiny_bert, sentiment_rows, write_jsonl
from sparse_transfer.recipe import builtin_recipe_path

TASK = "text-classification"
STUB = "zoo:nlp/sentiment_analysis/tiny-bert/pytorch/huggingface/sst2/pruned90_quant-none"
QUICK = '{"num_epochs": 2, "qat_start_epoch": 1.0, "observer_epoch": 1.5, "init_lr": 0.01}'


def artifact(cls, root: Path, name: str):
    return cls(name=name, uri=str(root / name), metadata={})


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    root = tmp_path_factory.mktemp("components")
    make_tiny_bert(root / "student-src", hidden_size=32, sparsity=0.9)
    make_tiny_bert(root / "base-src", hidden_size=32, seed=1)
    write_jsonl(sentiment_rows(32), root / "src" / "train.jsonl")
    write_jsonl(sentiment_rows(16, seed=1), root / "src" / "validation.jsonl")
    return root


@pytest.fixture(scope="module")
def data(work):
    dataset = artifact(Dataset, work, "dataset")
    components.fetch_data.python_func(
        dataset=dataset,
        train_file=str(work / "src" / "train.jsonl"),
        validation_file=f"file://{work / 'src' / 'validation.jsonl'}",
        label_column_name="label",
    )
    return dataset


@pytest.fixture(scope="module")
def config():
    return components.configure_training.python_func(
        task=TASK, max_seq_length=32, per_device_train_batch_size=16, per_device_eval_batch_size=16,
        fp16=False, seed=3, evaluation_strategy="no", save_strategy="no",
    )  # fmt: skip


@pytest.fixture(scope="module")
def student(work):
    model = artifact(Model, work, "student")
    components.fetch_model.python_func(ref=str(work / "student-src"), model=model, task=TASK)
    return model


@pytest.fixture(scope="module")
def teacher(work, data, config):
    """The sparse pipeline's teacher step with no stub: trains a dense teacher."""
    out, metrics = artifact(Model, work, "teacher"), artifact(Metrics, work, "teacher-metrics")
    components.teacher.python_func(
        task=TASK, dataset=data, training_args=config, teacher=out, metrics=metrics,
        base_model=str(work / "base-src"), recipe=str(builtin_recipe_path("dense_teacher")),
        recipe_args='{"num_epochs": 1, "init_lr": 0.01}', seed=20811,
    )  # fmt: skip
    return out, metrics


@pytest.fixture(scope="module")
def sparse(work, student, teacher, data, config):
    out, metrics = artifact(Model, work, "sparse"), artifact(Metrics, work, "sparse-metrics")
    components.sparse_transfer.python_func(
        task=TASK, model=student, teacher=teacher[0], dataset=data,
        recipe=str(builtin_recipe_path("sst2_pruned90_quant")), recipe_args=QUICK,
        training_args=config, sparse_model=out, metrics=metrics,
    )  # fmt: skip
    return out, metrics


def test_fetch_data_records_files_and_flags(data):
    spec = json.loads((Path(data.path) / "data.json").read_text())
    assert spec["train_file"] == "train.jsonl" and spec["label_column_name"] == "label"
    assert (Path(data.path) / "validation.jsonl").read_text().count("\n") == 16
    assert data.metadata["validation_file"] == "validation.jsonl"


def test_configure_training_validates_and_normalises(config):
    assert config["max_seq_length"] == 32 and config["eval_strategy"] == "no"
    assert "doc_stride" not in config and "max_steps" not in config  # QA-only / unset
    with pytest.raises(Exception, match="save_strategy"):
        components.configure_training.python_func(task=TASK, save_strategy="hourly")


def test_fetch_model_copies_and_disable_leaves_placeholder(work, student):
    assert (Path(student.path) / "config.json").is_file()
    assert student.metadata["present"] is True
    placeholder = artifact(Model, work, "no-teacher")
    components.fetch_model.python_func(ref="disable", model=placeholder, kind="teacher")
    assert placeholder.metadata == {"source": "disable", "present": False}


def test_teacher_step_trains_dense_without_a_stub(teacher):
    model, metrics = teacher
    assert (Path(model.path) / "model.safetensors").is_file()
    assert not list(Path(model.path).glob("checkpoint-*"))
    assert model.metadata["mode"] == "trained"
    assert 0.0 <= metrics.metadata["eval_accuracy"] <= 1.0
    assert metrics.metadata["overall_sparsity"] < 0.1  # dense


def test_teacher_step_fetches_a_given_teacher(work, data, config, teacher):
    out, metrics = (
        artifact(Model, work, "fetched-teacher"),
        artifact(Metrics, work, "fetched-metrics"),
    )
    components.teacher.python_func(
        task=TASK, dataset=data, training_args=config, teacher=out, metrics=metrics,
        distill_teacher=teacher[0].path,
    )  # fmt: skip
    assert out.metadata["mode"] == "fetched" and metrics.metadata == {}
    assert (Path(out.path) / "model.safetensors").read_bytes() == (
        Path(teacher[0].path) / "model.safetensors"
    ).read_bytes()


def test_train_teacher_component_trains_from_a_model_artifact(work, data, config):
    base = artifact(Model, work, "base")
    components.fetch_model.python_func(ref=str(work / "base-src"), model=base, task=TASK)
    out, metrics = artifact(Model, work, "dense"), artifact(Metrics, work, "dense-metrics")
    components.train_teacher.python_func(
        task=TASK, base_model=base, dataset=data, recipe=str(builtin_recipe_path("dense_teacher")),
        recipe_args='{"num_epochs": 1}', training_args=dict(config, max_steps=1), teacher=out, metrics=metrics,
    )  # fmt: skip
    assert (Path(out.path) / "config.json").is_file() and "eval_accuracy" in metrics.metadata


def test_sparse_transfer_keeps_sparsity_with_teacher(sparse):
    model, metrics = sparse
    report = json.loads((Path(model.path) / "sparsity.json").read_text())
    assert report["overall_sparsity"] == pytest.approx(metrics.metadata["overall_sparsity"])
    assert metrics.metadata["overall_sparsity"] > 0.85
    summary = json.loads((Path(model.path) / "run_summary.json").read_text())
    assert summary["teacher"] == str(Path(sparse[0].path).parent / "teacher")


def test_evaluate_logs_metrics_and_leaves_input_untouched(work, sparse, data, config):
    before = sorted(p.name for p in Path(sparse[0].path).iterdir())
    metrics = artifact(Metrics, work, "eval-metrics")
    cm = artifact(ClassificationMetrics, work, "eval-cm")
    components.evaluate.python_func(
        task=TASK,
        model=sparse[0],
        dataset=data,
        training_args=config,
        metrics=metrics,
        classification_metrics=cm,
    )
    assert 0.0 <= metrics.metadata["eval_accuracy"] <= 1.0
    assert sorted(p.name for p in Path(sparse[0].path).iterdir()) == before
    # the confusion matrix covers the 16 validation rows and agrees with the accuracy
    rows = [r["row"] for r in cm.metadata["confusionMatrix"]["rows"]]
    assert len(rows) == 2 and sum(map(sum, rows)) == 16
    assert (rows[0][0] + rows[1][1]) / 16 == pytest.approx(metrics.metadata["eval_accuracy"])


def test_evaluate_placeholder_teacher_scores_nothing(work, data, config):
    placeholder = artifact(Model, work, "placeholder")
    components.fetch_model.python_func(ref="disable", model=placeholder)
    metrics = artifact(Metrics, work, "placeholder-metrics")
    cm = artifact(ClassificationMetrics, work, "placeholder-cm")
    components.evaluate.python_func(
        task=TASK,
        model=placeholder,
        dataset=data,
        training_args=config,
        metrics=metrics,
        classification_metrics=cm,
    )
    assert metrics.metadata == {} and cm.metadata == {}


def test_publish_gate_blocks_then_passes_into_local_zoo(work, sparse):
    zoo = work / "zoo"
    torch_metrics = artifact(Metrics, work, "pub-metrics")
    torch_metrics.metadata.update({"eval_accuracy": 0.75})
    teacher_metrics = artifact(Metrics, work, "pub-teacher")
    teacher_metrics.metadata.update({"eval_accuracy": 0.80})

    def run(name, **gate):
        report, gate_metrics = (
            artifact(Markdown, work, f"{name}.md"),
            artifact(Metrics, work, f"{name}-gate"),
        )
        out = components.publish.python_func(
            task=TASK, model=sparse[0], torch_metrics=torch_metrics, teacher_metrics=teacher_metrics,
            report=report, gate=gate_metrics, publish_stub=STUB, zoo_root=str(zoo), **gate,
        )  # fmt: skip
        return out, Path(report.path).read_text(), gate_metrics.metadata

    (passed, published), text, gate = run("blocked", min_metric=0.5, max_drop_vs_teacher=2.0)
    assert (passed, published) == (False, "") and gate["passed"] == 0.0
    assert "BLOCKED" in text and "5.00 points" in text
    assert not (zoo / "nlp").exists()

    (passed, published), text, gate = run("passed", min_metric=0.5, max_drop_vs_teacher=10.0)
    assert (passed, published) == (True, STUB) and gate["accuracy"] == 0.75
    assert "PASSED (published to" in text and "## Sparsity" in text
    from sparse_transfer import zoo as zoo_api

    card = zoo_api.card(STUB, root=str(zoo))
    assert card["metrics"]["eval_accuracy"] == 0.75 and card["gate"]["passed"] is True


def test_export_onnx_records_size_and_latency(work, sparse):
    pytest.importorskip("sparse_transfer.export")
    deployment, metrics = (
        artifact(Model, work, "deployment"),
        artifact(Metrics, work, "export-metrics"),
    )
    components.export_onnx.python_func(
        task=TASK, model=sparse[0], deployment=deployment, metrics=metrics, sequence_length=32
    )
    onnx = sorted(Path(deployment.path).glob("*.onnx"))
    assert onnx and metrics.metadata["model_size_bytes"] == sum(p.stat().st_size for p in onnx)
    assert metrics.metadata["latency_ms"] > 0 and metrics.metadata["sequence_length"] == 32
