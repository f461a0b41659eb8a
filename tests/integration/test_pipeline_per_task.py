"""The whole sparse_transfer_pipeline, once per task, on kfp's local runner (issue 24, "Done
means" first bullet): text classification (single-label, multi-label, regression), token
classification, question answering and masked language modeling, each with the pipeline's
default parameters except what a user must give (task, the tiny zoo's stubs, data files, and
a one-epoch recipe so the run is short).

The embedded tiny zoo (`zoo_seed.seed("tiny")`, tiny random BERTs) is seeded once into a local
folder for the module; every step subprocess finds it through SPARSE_TRANSFER_ZOO. Every task
runs all ten steps; the gate's outcome is whatever the default gate (min_metric 0.0,
max_drop_vs_teacher 2.0) says about the ONNX evaluation, checked here against the teacher's and
the sparse model's metrics. About 35-60 s per task on 2 CPU cores, most of it the step
subprocesses importing torch. Multi-label data with the default ``task_name`` (sst2) runs once
more: it fails in the configure step, in one line naming task_name, before any other step.
"""

from __future__ import annotations

import json
import re
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


# name -> (task, rows, seed key of the recipes, what the user must give, the metric the task
# reports, the gate's metric: the task's headline, `TaskSpec.primary_metrics`)
CASES = {
    "single_label": ("text-classification", fixtures.sentiment_rows, "sst2", {}, "macro_f1",
                     "accuracy"),
    # the default task_name (sst2) fixes column `sentence` and labels negative/positive
    "multi_label": ("text-classification", fixtures.multilabel_rows, "goemotions",
                    {"task_name": "", "input_column_names": "text", "label_column_name": "labels"}, "micro_f1",
                    "avgF1"),
    "regression": ("text-classification", _regression, "sst2", {"task_name": "stsb"}, "spearmanr",
                   "pearson"),
    "ner": ("token-classification", fixtures.ner_rows, "conll2003", {}, "PER_f1", "f1"),
    "qa": ("question-answering", fixtures.squad_rows, "squad", {}, "exact_match", "f1"),
    "mlm": ("masked-language-modeling", _mlm, None, {}, "perplexity", "accuracy"),
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
    task, _, key, extra, _, _ = CASES[case]
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


def _run(tmp_path: Path, case: str, **changes):
    from pipelines.client import run_local

    rows = CASES[case][1]
    data = tmp_path / "data"
    fixtures.write_jsonl(rows(32), data / "train.jsonl")
    fixtures.write_jsonl(rows(40 if case == "mlm" else 12, seed=1), data / "validation.jsonl")
    config = tmp_path / "run.yaml"
    parameters = {**_user_parameters(case, data), **changes}  # None: the pipeline's default
    parameters = json.dumps({k: v for k, v in parameters.items() if v is not None})
    config.write_text(f"pipeline: sparse_transfer\nrun_name: {case}\nparameters: {parameters}\n")
    return run_local(config, pipeline_root=tmp_path / "root")


def _outputs(result, step: str) -> dict:
    """A step's executor output (kfp's local runner writes one per step folder)."""
    (run_dir,) = [
        p for p in result.pipeline_root.iterdir() if p.name.startswith("sparse-transfer-")
    ]
    return json.loads((run_dir / step / "executor_output.json").read_text())


def _metrics(result, step: str) -> dict:
    (artifact,) = _outputs(result, step)["artifacts"]["metrics"]["artifacts"]
    return {k.removeprefix("eval_"): v for k, v in artifact["metadata"].items()}


@pytest.mark.parametrize("case", list(CASES))
def test_pipeline_runs_each_task_with_defaults(tiny_zoo, tmp_path, case):
    task, _, _, _, reported, gate_metric = CASES[case]
    result = _run(tmp_path, case)
    assert result.published == ""  # no publish_stub: gate and report only
    # evaluate: the teacher; evaluate-2: the sparse model in PyTorch; evaluate-3: its ONNX
    teacher, torch_eval, onnx_eval = (
        _metrics(result, s) for s in ("evaluate", "evaluate-2", "evaluate-3")
    )
    for metrics in (teacher, torch_eval, onnx_eval):
        assert reported in metrics and gate_metric in metrics, sorted(metrics)
        assert metrics["samples"] > 0
    (gate,) = _outputs(result, "publish")["artifacts"]["gate"]["artifacts"]
    assert gate["metadata"] == {"passed": float(result.passed), gate_metric: onnx_eval[gate_metric]}
    # the default gate: min_metric 0.0 and at most 2.0 points below the teacher
    value = onnx_eval[gate_metric]
    assert result.passed is (value >= 0.0 and (teacher[gate_metric] - value) * 100 <= 2.0)
    report = result.report.read_text()
    assert f"Task: `{task}`" in report
    outcome = "PASSED (not published)" if result.passed else "BLOCKED (not published)"
    assert f"## Gate: {outcome}" in report
    (deployment,) = _outputs(result, "export-onnx")["artifacts"]["deployment"]["artifacts"]
    assert (Path(deployment["uri"]) / "model.onnx").stat().st_size > 0
    if case != "mlm":  # the seed's transfer recipes quantize; MLM ran the dense recipe
        assert deployment["metadata"]["precision"] == "int8"


def test_multi_label_data_with_the_default_task_name_fails_at_configure(tiny_zoo, tmp_path, capfd):
    """sst2 (the default task_name) fixes column `sentence` and labels negative/positive: the
    configure step reads the files' first rows and stops the run before any other step."""
    from sparse_transfer.errors import PipelineError

    with pytest.raises(PipelineError, match="local run of sparse_transfer failed"):
        _run(tmp_path, "multi_label", task_name=None)  # the pipeline's default: sst2
    train = tmp_path / "data" / "train.jsonl"
    expected = (
        "task_name 'sst2' expects column 'text' with labels negative/positive in column "
        f"'labels'; train_file {train} has label(s) 'complaint', 'person', 'place', 'praise' "
        "in column 'labels' (set task_name '' for your own labels)"
    )
    out = re.sub(r"\x1b\[[0-9;]*m", "", capfd.readouterr().out)  # kfp colours task names
    assert f"PipelineError: {expected}\n" in out, out[-3000:]
    # the configure step failed first: no data, model or teacher step started
    assert re.findall(r"Executing task '([\w-]+)'", out) == ["configure-training"]
    assert not list((tmp_path / "root").glob("sparse-transfer-*/*"))
