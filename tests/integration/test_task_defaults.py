"""Every task runs through the pipeline's steps with the pipeline's default training flags
(issue 24): configure, train, evaluate. Before, question answering with defaults failed at its
training step (max_seq_length 128 for every task, doc_stride 128 refused there).

Tiny models (hidden 32), 32 training rows, one epoch of the dense recipe: seconds per task.
"""

from __future__ import annotations

import json

import pytest

from sparse_transfer.embedded import fixtures
from sparse_transfer.pipeline import steps
from sparse_transfer.pipeline.options import configure_run, eval_options
from sparse_transfer.recipe import builtin_recipe_path

pytestmark = pytest.mark.integration


def _regression(n: int, seed: int = 0) -> list[dict]:
    return fixtures.pair_rows(n, seed, num_labels=1)


def _mlm(n: int, seed: int = 0) -> list[dict]:
    return [{"text": r["sentence"]} for r in fixtures.sentiment_rows(n, seed)]


# name -> (task, rows, data flags, model kwargs, a metric the evaluation must report)
CASES = {
    "single_label": ("text-classification", fixtures.sentiment_rows, {}, {}, "macro_f1"),
    "multi_label": (
        "text-classification", fixtures.multilabel_rows, {"label_column_name": "labels"},
        {"num_labels": len(fixtures.MULTI_LABEL_TOPICS),
         "problem_type": "multi_label_classification"}, "avgF1",
    ),
    "regression": (
        "text-classification", _regression, {},
        {"num_labels": 1, "problem_type": "regression"}, "pearson",
    ),
    "ner": ("token-classification", fixtures.ner_rows, {}, {"num_labels": 7}, "PER_f1"),
    "qa": ("question-answering", fixtures.squad_rows, {}, {}, "exact_match"),
    "mlm": ("masked-language-modeling", _mlm, {}, {}, "perplexity"),
}  # fmt: skip


def _pipeline_defaults() -> dict:
    """The training flags a run with the form's defaults hands the configure step, resolved
    as KFP resolves them from the compiled spec: what the pipeline passes (a run parameter's
    default, or a constant), else the step's own input default; the form's `trainer_flags`
    object (default empty) is laid over them by the step, as `configure_run` does here."""
    import yaml

    from pipelines._opening import TRAINING_FLAGS
    from pipelines.client import compiled_path

    spec = next(yaml.safe_load_all(compiled_path("sparse_transfer").read_text()))
    roots = spec["root"]["inputDefinitions"]["parameters"]
    passed = spec["root"]["dag"]["tasks"]["configure-training"]["inputs"]["parameters"]
    own = spec["components"]["comp-configure-training"]["inputDefinitions"]["parameters"]
    out = {}
    for name in (*TRAINING_FLAGS, "trainer_flags"):
        source = passed.get(name, {})
        if "componentInputParameter" in source:
            out[name] = roots[source["componentInputParameter"]]["defaultValue"]
        elif "runtimeValue" in source:
            out[name] = source["runtimeValue"]["constant"]
        else:
            out[name] = own[name]["defaultValue"]
    return out


def test_one_default_per_flag_whether_on_the_form_or_in_trainer_flags():
    """Every training flag's default on a run, on the form or left to `trainer_flags`, is the
    flag schema's (the reference's): no second default hides in a component or the form."""
    from sparse_transfer.tasks.flags import TRAINING_FLAGS

    defaults = _pipeline_defaults()
    assert defaults.pop("trainer_flags") == {}
    assert defaults == {f.name: f.default for f in TRAINING_FLAGS}
    assert defaults["doc_stride"] == 0 and defaults["max_seq_length"] == 0  # unset: the task's


@pytest.mark.parametrize("case", sorted(CASES))
def test_task_trains_and_evaluates_with_the_pipelines_defaults(tmp_path, case):
    task, rows, data_flags, model_kwargs, metric = CASES[case]
    src = tmp_path / "src"
    fixtures.write_jsonl(rows(32), src / "train.jsonl")
    # MLM groups texts into blocks of max_seq_length tokens: 40 short rows fill a few
    fixtures.write_jsonl(rows(40 if case == "mlm" else 12, seed=1), src / "validation.jsonl")
    data = tmp_path / "data"
    steps.fetch_data_step(
        data, train_file=str(src / "train.jsonl"), validation_file=str(src / "validation.jsonl"),
        **data_flags,
    )  # fmt: skip
    recipe = str(builtin_recipe_path("dense_teacher"))
    options = configure_run(task, recipe=recipe, recipe_args='{"num_epochs": 1}',
                            **_pipeline_defaults())  # fmt: skip
    assert "max_seq_length" not in options and "doc_stride" not in options  # task defaults
    model = fixtures.make_tiny_bert(tmp_path / "model", task=task, hidden_size=32, **model_kwargs)
    summary = steps.train_step(
        task, model, tmp_path / "trained", data, recipe=recipe,
        recipe_args='{"num_epochs": 1, "init_lr": 0.001}', training_args=options,
    )  # fmt: skip
    expected_length = 384 if case == "qa" else 128
    assert summary["max_seq_length"] == expected_length
    saved = json.loads((tmp_path / "trained" / "run_summary.json").read_text())
    assert saved["max_seq_length"] == expected_length  # what export defaults to
    result = steps.evaluate_step(task, tmp_path / "trained", data, eval_args=eval_options(options))
    assert metric in {k.removeprefix("eval_") for k in result["metrics"]}
    if case == "single_label":  # every single-label metric reaches eval_results.json
        written = json.loads((tmp_path / "trained" / "eval_results.json").read_text())
        for name in ("accuracy", "macro_f1", "balanced_accuracy", "majority_class_share",
                     "positive_f1", "minority_f1", "precision_0", "recall_1", "f1_1",
                     "support_0"):  # fmt: skip
            assert f"eval_{name}" in written, name
        assert written["eval_support_0"] + written["eval_support_1"] == 12
