"""The whole sparse_transfer_pipeline, once per task, on kfp's local runner (issue 24, "Done
means" first bullet): text classification (single-label, multi-label, regression), token
classification, question answering and masked language modeling, each with the pipeline's
default parameters except what a user must give (task, the tiny zoo's stubs, data files, and
a one-epoch recipe so the run is short).

The embedded tiny zoo (`zoo_seed.seed("tiny")`, tiny random BERTs) is seeded once into a local
folder for the module; every step subprocess finds it through SPARSE_TRANSFER_ZOO.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sparse_transfer.embedded import fixtures, zoo_seed
from sparse_transfer.recipe import builtin_recipe_path

pytestmark = pytest.mark.integration

NAMES = zoo_seed.stubs("tiny")
SHORT_TRANSFER = '{"num_epochs": 1, "qat_start_epoch": 0.0, "observer_epoch": 0.5}'
SHORT_DENSE = '{"num_epochs": 1}'


def _regression(n: int, seed: int = 0) -> list[dict]:
    return fixtures.pair_rows(n, seed, num_labels=1)


def _mlm(n: int, seed: int = 0) -> list[dict]:
    return [{"text": r["sentence"]} for r in fixtures.sentiment_rows(n, seed)]


# name -> (task, rows, seed key of the recipes, what the user must give, the task's metric)
CASES = {
    "single_label": ("text-classification", fixtures.sentiment_rows, "sst2", {}, "accuracy"),
    "multi_label": ("text-classification", fixtures.multilabel_rows, "goemotions",
                    {"label_column_name": "labels"}, "avgF1"),
    "regression": ("text-classification", _regression, "sst2", {"task_name": "stsb"}, "pearson"),
    "ner": ("token-classification", fixtures.ner_rows, "conll2003", {}, "overall_f1"),
    "qa": ("question-answering", fixtures.squad_rows, "squad", {}, "exact_match"),
    "mlm": ("masked-language-modeling", _mlm, None, {}, "perplexity"),
}  # fmt: skip


@pytest.fixture(scope="module")
def tiny_zoo(tmp_path_factory):
    """The embedded tiny zoo in a local folder, seeded once; the environment points at it."""
    root = tmp_path_factory.mktemp("zoo")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SPARSE_TRANSFER_CACHE", str(tmp_path_factory.mktemp("cache")))
        mp.setenv("SPARSE_TRANSFER_ZOO", str(root))
        zoo_seed.seed("tiny", root=root)
        yield root


def _user_parameters(case: str, data: Path) -> dict:
    task, _, key, extra, _ = CASES[case]
    if key is None:  # no MLM recipe pair in the seed: the built-in dense recipe for both
        recipe = teacher_recipe = str(builtin_recipe_path("dense_teacher"))
        recipe_args = SHORT_DENSE
    else:
        recipe, teacher_recipe = NAMES["transfer"][key], NAMES["teacher"][key]
        recipe_args = SHORT_TRANSFER
    return {
        "task": task,
        "model_name_or_path": NAMES["upstream"],
        "recipe": recipe,
        "recipe_args": recipe_args,
        "distill_teacher": "",  # the seed's teacher stubs hold recipes only: train one
        "teacher_model_name_or_path": NAMES["upstream_dense"],
        "teacher_recipe": teacher_recipe,
        "teacher_recipe_args": SHORT_DENSE,
        "train_file": str(data / "train.jsonl"),
        "validation_file": str(data / "validation.jsonl"),
        **extra,
    }


def _run(tmp_path: Path, case: str):
    from pipelines.client import run_local

    _, rows, _, _, _ = CASES[case]
    data = tmp_path / "data"
    fixtures.write_jsonl(rows(32), data / "train.jsonl")
    fixtures.write_jsonl(rows(40 if case == "mlm" else 12, seed=1), data / "validation.jsonl")
    config = tmp_path / "run.yaml"
    parameters = json.dumps(_user_parameters(case, data))
    config.write_text(f"pipeline: sparse_transfer\nrun_name: {case}\nparameters: {parameters}\n")
    return run_local(config, pipeline_root=tmp_path / "root")


def _step_dir(result, step: str) -> Path:
    (run_dir,) = [
        p for p in result.pipeline_root.iterdir() if p.name.startswith("sparse-transfer-")
    ]
    return run_dir / step


@pytest.mark.parametrize("case", list(CASES))
def test_pipeline_runs_each_task_with_defaults(tiny_zoo, tmp_path, case):
    task, _, _, _, metric = CASES[case]
    result = _run(tmp_path, case)
    assert result.passed in (True, False) and result.published == ""  # no publish_stub
    report = result.report.read_text()
    gate = "## Gate: PASSED" if result.passed else "## Gate: BLOCKED (not published)"
    assert gate in report
    metrics = json.loads(next(_step_dir(result, "evaluate").rglob("*.json")).read_text())
    assert metric in {k.removeprefix("eval_") for k in metrics}, sorted(metrics)
