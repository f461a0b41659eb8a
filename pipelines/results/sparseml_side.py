"""Stage ``sparseml``: real SparseML 1.8 trains the very transfer `stage_sparse` trains.

Issue 16's accuracy side by side. SparseML pins its own torch/transformers stack, so
it runs in its own venv (`make sparseml-venv`), named by ``SPARSE_TRANSFER_SPARSEML_PYTHON``
as for the differential suite. Its own entry point, ``sparseml.transformers.
text_classification``, gets every input of our sparse-transfer run by construction:
the parameters are the same run config's (`real-results-sparse.yaml`, with the run
size's overrides: `run.transfer_parameters`), the upstream, recipe and teacher are the same zoo entries, the
data the same files, the seed the same (42, both sides' default). Its accuracy is
SparseML's own ``--do_eval`` on each dataset's validation split (its QAT model as it
reloads it), so neither side's evaluation code judges the other.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
from pathlib import Path
from typing import Any

from pipelines.results.paired import onnx_right, paired_stats

log = logging.getLogger("pipelines.results")

ENV_PYTHON = "SPARSE_TRANSFER_SPARSEML_PYTHON"


# SparseML's text_classification calls ``datasets.load_metric("accuracy")`` before training,
# which downloads a script from GitHub unless ``./accuracy/accuracy.py`` exists in the working
# directory (datasets 2.18 `load.py`, `metric_module_factory`: a local path is tried first).
# Without a task name its scores do not use that metric ("accuracy" is computed inline as
# mean(argmax == label)); this offline copy computes the same, should anything call it.
_OFFLINE_ACCURACY_METRIC = """\
import datasets


class Accuracy(datasets.Metric):
    def _info(self):
        return datasets.MetricInfo(
            description="accuracy = mean(prediction == reference)",
            citation="",
            inputs_description="predictions and references: class ids",
            features=datasets.Features(
                {"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}
            ),
        )

    def _compute(self, predictions, references):
        pairs = list(zip(predictions, references))
        return {"accuracy": sum(int(p == r) for p, r in pairs) / len(pairs)}
"""


def sparseml_python() -> tuple[str | None, str]:
    """(interpreter, "") when the SparseML venv is configured, else (None, why not)."""
    python = os.environ.get(ENV_PYTHON, "")
    if not python:
        return None, f"{ENV_PYTHON} is unset (make sparseml-venv builds one)"
    if not (Path(python).is_file() and os.access(python, os.X_OK)):
        return None, f"{ENV_PYTHON}={python} is not an executable file"
    return python, ""


def _run(argv: list[str], log_path: Path) -> None:
    """Runs SparseML in `log_path`'s folder, output in `log_path`; RuntimeError with its tail."""
    metric = log_path.parent / "accuracy" / "accuracy.py"
    metric.parent.mkdir(exist_ok=True)
    metric.write_text(_OFFLINE_ACCURACY_METRIC)
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    with log_path.open("w") as sink:
        done = subprocess.run(
            argv, stdout=sink, stderr=subprocess.STDOUT, cwd=log_path.parent, env=env, check=False
        )
    if done.returncode != 0:
        tail = log_path.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"SparseML exited {done.returncode} (log {log_path}):\n{tail}")


def _json_named_copies(data: Path, dest: Path) -> Path:
    """The JSON-lines files under a ``.json`` name: SparseML asserts on the extension."""
    import shutil

    dest.mkdir(parents=True, exist_ok=True)
    for path in data.glob("*.jsonl"):
        shutil.copyfile(path, dest / f"{path.stem}.json")
    return dest


def _data_args(params: dict[str, Any], train: Path, validation: Path) -> list[str]:
    return [
        "--train_file", str(train), "--validation_file", str(validation),
        "--input_column_names", str(params["input_column_names"]),
        "--label_column_name", str(params["label_column_name"]),
        "--max_seq_length", str(params["max_seq_length"]),
        "--per_device_train_batch_size", str(params["per_device_train_batch_size"]),
        "--per_device_eval_batch_size", str(params["per_device_eval_batch_size"]),
        "--seed", "42", "--report_to", "none", "--save_strategy", "no",
        "--evaluation_strategy", "no", "--logging_steps", str(params["logging_steps"]),
    ]  # fmt: skip


def stage_sparseml(out: Path, size: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    """Trains with SparseML, evaluates on each validation split; accuracies in %.

    `params` are the sparse transfer run's (`run.transfer_parameters`).
    """
    from pipelines.results.settings import zoo_root
    from sparse_transfer.embedded.movie_reviews import DATASETS
    from sparse_transfer.zoo import resolve

    root = zoo_root(out)
    python, why = sparseml_python()
    if python is None:
        raise RuntimeError(why)
    work = out / "sparseml"
    work.mkdir(parents=True, exist_ok=True)
    model_dir = work / "model"
    data = _json_named_copies(out / "data", work / "data")
    train_argv = [
        python, "-m", "sparseml.transformers.text_classification",
        "--model_name_or_path", resolve(params["model_name_or_path"], "model", root=root),
        "--distill_teacher", resolve(params["distill_teacher"], "teacher", root=root),
        "--recipe", resolve(params["recipe"], "recipe", root=root),
        "--recipe_args", str(params["recipe_args"]),
        "--output_dir", str(model_dir), "--overwrite_output_dir", "--do_train",
        *_data_args(params, data / "train.json", data / "validation.json"),
    ]  # fmt: skip
    if params.get("max_train_samples"):
        train_argv += ["--max_train_samples", str(params["max_train_samples"])]
    if not (model_dir / "train_results.json").is_file():  # a rerun keeps a finished training
        _run(train_argv, work / "train.log")
    train_metrics = json.loads((model_dir / "train_results.json").read_text())
    _weights_sparseml_reloads(python, model_dir, work)
    accuracy: dict[str, float] = {}
    paired: dict[str, dict] = {}  # a = our int8 ONNX deployment, b = SparseML's QAT model
    ours = Path(resolve(params["publish_stub"], "deployment", root=root))
    for ds in DATASETS:
        eval_dir = work / f"eval-{ds}"
        eval_argv = [
            python, "-m", "sparseml.transformers.text_classification",
            "--model_name_or_path", str(model_dir),
            "--output_dir", str(eval_dir), "--overwrite_output_dir", "--do_eval",
            "--do_predict", "--test_file", str(data / f"validation_{ds}.json"),
            *_data_args(params, data / "train.json", data / f"validation_{ds}.json"),
        ]  # fmt: skip
        if size.get("eval_max_samples"):
            eval_argv += ["--max_eval_samples", str(size["eval_max_samples"])]
        _run(eval_argv, work / f"eval-{ds}.log")
        if "Model state was not reloaded" in (work / f"eval-{ds}.log").read_text(errors="replace"):
            raise RuntimeError(f"SparseML evaluated untrained weights (see {work}/eval-{ds}.log)")
        metrics = json.loads((eval_dir / "eval_results.json").read_text())
        accuracy[ds] = round(100 * float(metrics["eval_accuracy"]), 2)
        log.info("SparseML 1.8 accuracy on %s: %.2f", ds, accuracy[ds])
        rows_file = out / "data" / f"validation_{ds}.jsonl"
        paired[ds] = paired_stats(
            onnx_right(ours, rows_file, params),
            _sparseml_right(eval_dir / "predict_results_None.txt", rows_file, params),
        )
        log.info("SparseML vs our int8 ONNX on %s, paired: %s", ds, paired[ds])
    return {
        "accuracy": accuracy,
        "paired_vs_ours_onnx": paired,
        "train_seconds": round(float(train_metrics["train_runtime"]), 1),
        "train_metrics": train_metrics,
        "sparseml_version": _version(python),
        "command": [str(a) for a in train_argv[1:]],
    }


def _sparseml_right(predictions: Path, rows_file: Path, params: dict[str, Any]):
    """Per row: is SparseML's ``--do_predict`` prediction (``index<TAB>label``) the label?"""
    import numpy as np

    rows = [json.loads(line) for line in rows_file.read_text().splitlines() if line.strip()]
    lines = predictions.read_text().splitlines()[1:]  # header: index, prediction
    predicted = {int(i): int(p) for i, p in (line.split("\t") for line in lines)}
    if sorted(predicted) != list(range(len(rows))):
        raise RuntimeError(f"{predictions}: {len(predicted)} predictions for {len(rows)} rows")
    labels = np.array([r[params["label_column_name"]] for r in rows])
    return np.array([predicted[i] for i in range(len(rows))]) == labels


def _weights_sparseml_reloads(python: str, model_dir: Path, work: Path) -> None:
    """Writes the trained weights as ``pytorch_model.bin``, the only file SparseML reloads.

    After re-applying the saved recipe, SparseML 1.8 reloads the QAT model's state from
    ``pytorch_model*.bin`` only (`sparseml/transformers/sparsification/trainer.py`,
    ``_reload_model_state``), but transformers 4.40 saves ``model.safetensors`` by default:
    evaluating SparseML's own output would run on freshly initialised Linears (chance
    accuracy) with only a warning. The same tensors, converted in SparseML's own venv.
    """
    source, dest = model_dir / "model.safetensors", model_dir / "pytorch_model.bin"
    if dest.is_file() or not source.is_file():
        return
    convert = (
        "import sys, torch; from safetensors.torch import load_file; "
        "torch.save(load_file(sys.argv[1]), sys.argv[2])"
    )
    _run([python, "-c", convert, str(source), str(dest)], work / "convert.log")


def _version(python: str) -> str:
    done = subprocess.run(
        [python, "-c", "import sparseml; print(sparseml.__version__)"],
        capture_output=True,
        text=True,
        check=False,
    )
    return done.stdout.strip() or "unknown"
