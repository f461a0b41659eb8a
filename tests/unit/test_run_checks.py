"""Checks of issue 24 that run before any data or teacher step: lengths, gate metric,
recipe windows; and the gate's view of imbalanced data (macro-F1, int8, the report)."""

from __future__ import annotations

import json
import logging

import datasets
import pytest

from sparse_transfer.errors import DataError, PipelineError
from sparse_transfer.pipeline import steps
from sparse_transfer.pipeline.options import configure_run, training_options
from sparse_transfer.recipe import builtin_recipe_path, inert_modifiers, load_recipe
from sparse_transfer.serving.options import ServeOptions, ServingError
from sparse_transfer.tasks.args import NO_MODEL, DataArguments, is_no_model
from sparse_transfer.tasks.class_metrics import single_label_metrics
from sparse_transfer.tasks.lengths import resolve_lengths, trained_length
from sparse_transfer.tasks.registry import get_task

TEXT, QA = get_task("text-classification"), get_task("question-answering")
SST2 = str(builtin_recipe_path("sst2_pruned90_quant"))


def test_unset_lengths_take_each_tasks_default_and_the_stride_fits():
    assert resolve_lengths(TEXT) == (128, None)
    assert resolve_lengths(QA) == (384, 128)
    assert resolve_lengths(QA, 0, 0) == (384, 128)  # the pipeline's "unset"
    assert resolve_lengths(QA, 128) == (128, 64)  # unset stride: half a shorter window
    assert resolve_lengths(QA, 256, 100) == (256, 100)
    with pytest.raises(
        DataError, match=r"^--doc_stride 128 must be smaller than --max_seq_length 128$"
    ):
        resolve_lengths(QA, 128, 128)
    with pytest.raises(DataError, match=r"^--max_seq_length must be at least 8, got 4$"):
        resolve_lengths(TEXT, 4)


def test_lengths_are_capped_at_the_models_positions_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="sparse_transfer.tasks.lengths"):
        assert resolve_lengths(QA, None, None, positions=64) == (64, 32)
    assert "max_seq_length 384 is larger than the model's maximum length 64" in caplog.text
    with pytest.raises(DataError, match="doc_stride 60 must be smaller than --max_seq_length 32"):
        resolve_lengths(QA, 512, 60, positions=32)


def test_question_answering_with_default_parameters_configures():
    # The pipeline hands over 0 for both: QA's own 384 / 128 apply (before: 128 / 128 failed
    # at the training step, after data and teacher had run).
    assert training_options("question-answering", max_seq_length=0, doc_stride=0) == {}
    with pytest.raises(PipelineError) as info:
        training_options("question-answering", max_seq_length=128, doc_stride=128)
    assert str(info.value) == (
        "parameter doc_stride 128 must be smaller than parameter max_seq_length 128"
    )
    assert training_options("text-classification", doc_stride=64) == {}  # not a text flag


def test_gate_metric_is_checked_at_configure_time():
    assert configure_run("text-classification", gate_metric="macro_f1") == {}
    assert configure_run("text-classification", gate_metric="f1_spam") == {}
    assert configure_run("token-classification", gate_metric="PER_f1") == {}
    with pytest.raises(PipelineError) as info:
        configure_run("question-answering", gate_metric="macro_f1")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(
        "parameter gate_metric 'macro_f1' is not a metric of question-answering; available: "
        "exact_match, exact, f1,"
    )


def test_recipe_window_outside_training_is_refused_naming_the_variable(capsys):
    (line,) = inert_modifiers(load_recipe(SST2, {"num_epochs": 2}))
    assert line == (
        "QuantizationModifier starts at epoch 8 but training ends at epoch 2, so it never runs: "
        "set recipe variable qat_start_epoch below 2 (--recipe_args '{\"qat_start_epoch\": ...}')"
    )
    assert inert_modifiers(load_recipe(SST2)) == []
    short = '{"num_epochs": 2}'
    with pytest.raises(PipelineError, match="qat_start_epoch.*set allow_inert_modifiers"):
        configure_run("text-classification", recipe="sst2_pruned90_quant", recipe_args=short)
    assert (
        configure_run(
            "text-classification", recipe=SST2, recipe_args=short, allow_inert_modifiers=True
        )
        == {}
    )
    from sparse_transfer.cli.recipe import check_command

    class Args:
        recipe, recipe_args, json = "sst2_pruned90_quant", short, False

    assert check_command(Args) == 0
    assert "WARNING: QuantizationModifier starts at epoch 8" in capsys.readouterr().err


def test_one_no_model_set_and_serving_uses_the_schema_limits():
    assert NO_MODEL == {"", "disable", "disabled", "none"}
    assert is_no_model(" Disable ") and is_no_model(None) and not is_no_model("zoo:x")
    with pytest.raises(ServingError, match="max_seq_length must be at least 8, got 4"):
        ServeOptions(max_seq_length=4)
    with pytest.raises(ServingError, match="doc_stride must be at least 1, got -1"):
        ServeOptions(doc_stride=-1)
    assert DataArguments(max_seq_length=0).max_seq_length == 0  # unset


def test_export_length_defaults_to_the_trained_one(tmp_path):
    assert trained_length(tmp_path) is None
    (tmp_path / "run_summary.json").write_text(json.dumps({"max_seq_length": 96}))
    assert trained_length(tmp_path) == 96


def test_balanced_class_weights_from_label_frequencies():
    rows = [{"text": f"t{i}", "label": "ham" if i < 90 else "spam"} for i in range(100)]
    raw = datasets.DatasetDict({"train": datasets.Dataset.from_list(rows)})
    args = TEXT.args_class(class_weights="balanced")
    prepared = TEXT.prepare(raw, {"train": "train.jsonl"}, DataArguments(), args)
    assert prepared.class_weights() == pytest.approx([100 / (2 * 90), 100 / (2 * 10)])
    assert TEXT.prepare(raw, {}, DataArguments(), TEXT.args_class()).class_weights() is None


def _publish(tmp_path, metrics, **gate):
    (tmp_path / "model").mkdir(exist_ok=True)
    return steps.publish_step(
        gate.pop("deployment", None), tmp_path / "model", task="text-classification", stub="",
        torch_metrics=metrics, **gate,
    )  # fmt: skip


@pytest.mark.parametrize("shares", [(90, 10), (80, 15, 5)])
def test_majority_class_predictor_passes_accuracy_but_fails_macro_f1(tmp_path, shares):
    labels = [c for c, n in enumerate(shares) for _ in range(n)]
    names = ["ham", "spam", "other"][: len(shares)]
    metrics = {
        f"eval_{k}": v for k, v in single_label_metrics([0] * len(labels), labels, names).items()
    }
    majority = shares[0] / 100
    by_accuracy = _publish(tmp_path, metrics, min_metric=0.75)
    assert by_accuracy["passed"] and by_accuracy["gate"]["value"] == majority
    warning = f"largest class holds {100 * majority:.1f}% of the rows"
    assert (warning in by_accuracy["report"]) is (majority > 0.8)  # "exceeds 80%"
    assert "## Deployment" not in by_accuracy["report"]  # nothing exported
    by_macro = _publish(tmp_path, metrics, gate_metric="macro_f1", min_metric=0.75)
    assert not by_macro["passed"]
    f1_major = 2 * majority / (1 + majority)
    assert by_macro["gate"]["value"] == pytest.approx(f1_major / len(shares))
    assert "| spam | 0.0000 | 0.0000 | 0.0000 | " in by_macro["report"]
    assert f"| ham | {majority:.4f} | 1.0000 | {f1_major:.4f} | {shares[0]} |" in by_macro["report"]
    assert "largest class holds" not in by_macro["report"]  # the warning is for accuracy only


def test_gate_can_require_an_int8_deployment(tmp_path):
    deployment = tmp_path / "deployment"
    deployment.mkdir()
    (deployment / "export_report.json").write_text(json.dumps({"quantized": False}))
    metrics = {"eval_accuracy": 0.9}
    result = _publish(tmp_path, metrics, deployment=deployment, require_int8=True)
    assert not result["passed"]
    assert result["gate"]["failures"] == ["exported precision fp32 == int8"]
    assert "- precision exported: fp32" in result["report"]
    (deployment / "export_report.json").write_text(json.dumps({"quantized": True}))
    assert _publish(tmp_path, metrics, deployment=deployment, require_int8=True)["passed"]


@pytest.mark.parametrize("alias", ["text-classification", "ner", "qa", "mlm"])
def test_every_task_configures_with_the_pipelines_default_parameters(alias):
    """The configure step with the sparse pipeline's own defaults passes for every task (the
    question-answering run used to fail at its training step, after data and teacher)."""
    import inspect

    from components import configure_training
    from pipelines._opening import RUN_CHECKS, TRAINING_FLAGS
    from pipelines.sparse_transfer_pipeline import sparse_transfer_pipeline

    defaults = {
        name: p.default
        for name, p in inspect.signature(sparse_transfer_pipeline.pipeline_func).parameters.items()
    }
    values = {name: defaults[name] for name in TRAINING_FLAGS + RUN_CHECKS if name in defaults}
    values["recipe"] = "sst2_pruned90_quant"  # the default stub's recipe, shipped built in
    options = configure_training.python_func(task=alias, **values)
    assert "max_seq_length" not in options and "doc_stride" not in options  # task defaults
    assert options["per_device_train_batch_size"] == 32
    values["gate_metric"] = "no_such_metric"
    with pytest.raises(PipelineError, match=r"^parameter gate_metric 'no_such_metric' is not"):
        configure_training.python_func(task=alias, **values)


def test_builtin_recipe_names_resolve_wherever_a_recipe_is_accepted(tmp_path):
    from sparse_transfer.tasks.recipe_fit import resolve_recipe

    assert resolve_recipe("sst2_pruned90_quant") == SST2  # train --recipe, steps, recipe check
    assert resolve_recipe("sst2_pruned90_quant.yaml") == SST2
    mine = tmp_path / "sst2_pruned90_quant"
    mine.write_text("version: 1.1.0\n")
    assert resolve_recipe(str(mine)) == str(mine)  # an existing path wins over the name
    assert resolve_recipe(str(tmp_path / "missing.yaml")) == str(tmp_path / "missing.yaml")
    assert resolve_recipe(None) is None


def test_train_warns_about_a_modifier_that_never_runs(tmp_path, caplog):
    from sparse_transfer.tasks.recipe_fit import load_task_recipe
    from tests.unit._train_utils import tiny_model

    model, _ = tiny_model(tmp_path)
    with caplog.at_level(logging.WARNING, logger="sparse_transfer.tasks.recipe_fit"):
        recipe = load_task_recipe(SST2, '{"num_epochs": 2}', TEXT, model, None)
    assert recipe.find("QuantizationModifier")  # kept: train warns, the pipeline refuses
    assert "QuantizationModifier starts at epoch 8 but training ends at epoch 2" in caplog.text
    assert "qat_start_epoch" in caplog.text


def test_trainer_warns_when_a_modifier_never_started(tmp_path, caplog):
    # One step per epoch: QAT from epoch 0.5 never sees a forward pass (export then refuses).
    from tests.unit._train_utils import make_trainer, mod, tiny_dataset, tiny_model

    model, tok = tiny_model(tmp_path)
    recipe = [
        mod("EpochRangeModifier", start_epoch=0.0, end_epoch=1.0),
        mod("ConstantPruningModifier", start_epoch=0.0, params="__ALL_PRUNABLE__"),
        mod("QuantizationModifier", start_epoch=0.5),
    ]
    trainer = make_trainer(tmp_path, model, tiny_dataset(tok, 4), recipe=recipe)
    with caplog.at_level(logging.WARNING, logger="sparse_transfer.training.trainer"):
        trainer.train()
    assert "recipe: QuantizationModifier never ran (start_epoch 0.5; training stopped after 1 " in (
        caplog.text
    )
    assert "ConstantPruningModifier never ran" not in caplog.text
