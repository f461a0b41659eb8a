"""The real-results run, stage by stage, resumable.

Stages (each writes ``OUT/stages/<name>.json`` when done; a rerun skips it):

1. ``data``: fixed seeded splits of the movie-review data (`sparse_transfer.embedded.movie_reviews`).
2. ``zoo``: the embedded zoo seeded with schedule ``results``: all-MiniLM-L6-v2 pruned
   to 90% by our GMP recipe with hidden-state distillation on the training pool's text
   (no validation text), snapshots saved as the cubic schedule passes 50/70/80%.
3. ``teacher``: `pipeline run --local pipelines/configs/real-results-teacher.yaml`
   (dense teacher trained and published to the zoo).
4. ``sparse``: `pipeline run --local pipelines/configs/real-results-sparse.yaml`
   (sparse transfer, int8 ONNX export, torch and ONNX evaluation, gate, publish).
5. ``accuracy``: every variant on each dataset's own validation split.
6. ``sweep``: accuracy vs upstream sparsity (0/50/70/80/90%), FP32 students at a smaller
   budget (constant pruning + distillation, no QAT).
7. ``inference``: dense FP32 ONNX vs sparse int8 ONNX in ONNX Runtime (+ sizes).
8. ``training``: seconds per step, plain vs masks vs masks+QAT vs full recipe.
9. ``full_range``: the sparse transfer again with full-range int8 weights instead of the
   default 7-bit ones (`weight_range.py`): what the weights that are exact on every CPU cost.
10. ``sparseml``: real SparseML 1.8 trains the same transfer (`sparseml_side.py`); runs only
    when ``SPARSE_TRANSFER_SPARSEML_PYTHON`` names its venv (`make sparseml-venv`).
11. ``report``: results.json, PNG plots, Markdown tables; metrics onto the zoo cards.
12. ``upstreams`` (only with ``--upstreams``; hours): four 90% upstreams, GMP/oBS x
    unstructured/block4 at the same budget, built, published, transferred and compared
    (`upstreams.py`).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import tarfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipelines.results.settings import (
    CONFIGS,
    SPARSE_STUB,
    TASK,
    TEACHER_STUB,
    TRANSFER_RECIPE,
    zoo_root,
)
from pipelines.results.weight_range import stage_full_range

log = logging.getLogger("pipelines.results")

SNAPSHOT_SPARSITIES = (0.5, 0.7, 0.8)
SWEEP = (0, 50, 70, 80, 90)

# What each stage costs is set here (and in the two run configs), sized for ~1 hour on 2 CPU
# cores. "smoke" is the same run at toy size (minutes) to check the plumbing first.
SIZES: dict[str, dict[str, Any]] = {
    "full": {
        "validation_size": 1000,
        "train_size": 4000,
        "upstream_sentences": 6656,  # 6,400 GMP sentences + 256 held out for the cosine check
        "seed_overrides": {
            "train_samples": 6400,
            "eval_samples": 256,
            "recipe_args": {
                "num_epochs": 2.0,
                "pruning_end_epoch": 1.4,
                "update_frequency": 0.05,
                "init_lr": 5e-4,
            },
        },
        "seed_schedule": "results",
        "overrides": {},
        "sweep_train_samples": 3200,
        "sweep_recipe_args": {"num_epochs": 1.0, "init_lr": 1.5e-4},
        "eval_max_samples": 0,
        "training_bench_steps": 6,
        "training_bench_rounds": 2,
        "inference_iterations": 20,
        "inference_rounds": 3,
    },
    # The first run of this session (kept for comparison; see docs/results): 100 GMP steps,
    # 1,600 training rows, teacher 2 epochs, sparse transfer 3 epochs, 500 validation rows each.
    "quick": {
        "validation_size": 500,
        "train_size": 1600,
        "upstream_sentences": 3456,
        "seed_schedule": "results",
        "seed_overrides": {
            "train_samples": 3200,
            "eval_samples": 256,
            "recipe_args": {
                "num_epochs": 1.0,
                "pruning_end_epoch": 0.6,
                "update_frequency": 0.04,
                "init_lr": 5e-4,
            },
        },
        "overrides": {
            "recipe_args": '{"num_epochs": 3.0, "init_lr": 1.5e-4, "qat_start_epoch": 2.0, "observer_epoch": 2.67}'
        },
        "teacher_overrides": {"recipe_args": '{"num_epochs": 2, "init_lr": 6e-5}'},
        "sweep_train_samples": 448,
        "sweep_recipe_args": {"num_epochs": 1.0, "init_lr": 1.5e-4},
        "eval_max_samples": 0,
        "training_bench_steps": 6,
        "training_bench_rounds": 2,
        "inference_iterations": 20,
        "inference_rounds": 3,
    },
    "smoke": {
        "validation_size": 500,
        "train_size": 1600,
        "upstream_sentences": 64,
        "seed_schedule": "results",
        "overrides": {
            "max_train_samples": 64,
            "max_eval_samples": 64,
            "recipe_args": '{"num_epochs": 1.0, "init_lr": 1.5e-4, "qat_start_epoch": 0.5, "observer_epoch": 0.75}',
        },
        "teacher_overrides": {"max_train_samples": 64, "max_eval_samples": 64},
        "sweep_train_samples": 32,
        "sweep_recipe_args": {"num_epochs": 1.0, "init_lr": 1.5e-4},
        "eval_max_samples": 64,
        "training_bench_steps": 3,
        "training_bench_rounds": 1,
        "inference_iterations": 3,
        "inference_rounds": 1,
    },
}


# ----------------------------------------------------------------------------- helpers
class _Stages:
    """Runs each stage once: its result is kept as JSON and reused on a rerun."""

    def __init__(self, out: Path):
        self.dir = out / "stages"
        self.dir.mkdir(parents=True, exist_ok=True)

    def __call__(self, name: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        path = self.dir / f"{name}.json"
        if path.is_file():
            log.info("stage %s: done before, reusing %s", name, path)
            return json.loads(path.read_text())
        log.info("stage %s: start", name)
        start = time.time()
        result = fn()
        result["stage_seconds"] = round(time.time() - start, 1)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(result, indent=2, default=str) + "\n")
        tmp.rename(path)
        log.info("stage %s: done in %.0f s", name, result["stage_seconds"])
        return result


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _targz_bytes(path: Path, dest: Path) -> int:
    with tarfile.open(dest, "w:gz") as tar:
        for p in sorted(path.rglob("*")):
            if p.is_file():
                tar.add(p, arcname=str(p.relative_to(path)))
    return dest.stat().st_size


def _accuracy(result: dict[str, Any]) -> float:
    metrics = result.get("metrics", result)
    for key in ("eval_accuracy", "accuracy"):
        if key in metrics:
            return float(metrics[key])
    raise KeyError(f"no accuracy in {sorted(metrics)}")


# ----------------------------------------------------------------------------- stages
def stage_data(out: Path, size: dict[str, Any]) -> dict[str, Any]:
    from sparse_transfer.embedded.movie_reviews import make_splits

    return make_splits(
        out / "data",
        validation_size=size["validation_size"],
        train_size=size["train_size"],
        upstream_size=size["upstream_sentences"],
    )


class _Snapshots:
    """A TrainerCallback saving the encoder when the GMP schedule passes given sparsities."""

    def __new__(cls, *args, **kwargs):  # build the real callback lazily (transformers import)
        from transformers import TrainerCallback

        class Snapshots(TrainerCallback):
            def __init__(self, out: Path, tokenizer_dir: Path, targets):
                self.out, self.tokenizer_dir = out, tokenizer_dir
                self.pending = sorted(targets)
                self.saved: dict[str, Any] = {}

            def on_step_end(self, args, state, control, model=None, **kwargs):
                if not self.pending or model is None:
                    return
                sparsity = _encoder_sparsity(model.bert)
                while self.pending and sparsity >= self.pending[0]:
                    target = self.pending.pop(0)
                    dest = self.out / f"sparsity{round(target * 100)}"
                    model.bert.save_pretrained(str(dest))
                    for f in (
                        "tokenizer.json",
                        "tokenizer_config.json",
                        "vocab.txt",
                        "special_tokens_map.json",
                    ):
                        if (self.tokenizer_dir / f).is_file():
                            shutil.copy2(self.tokenizer_dir / f, dest / f)
                    self.saved[str(round(target * 100))] = {
                        "path": str(dest),
                        "encoder_sparsity": round(sparsity, 4),
                        "step": state.global_step,
                        "epoch": round(float(state.epoch or 0), 3),
                    }
                    log.info(
                        "snapshot at %.1f%% sparsity (step %d)", 100 * sparsity, state.global_step
                    )

        return Snapshots(*args, **kwargs)


def _encoder_sparsity(encoder) -> float:
    zeros = total = 0
    for name, p in encoder.named_parameters():
        if name.startswith("encoder.layer.") and name.endswith(".weight") and p.dim() == 2:
            zeros += int((p == 0).sum())
            total += p.numel()
    return zeros / max(1, total)


def _saved_encoder_sparsity(model_dir: Path) -> float:
    """Zeros in the encoder's Linear weights of a saved model (what the sweep's x axis shows)."""
    from safetensors.torch import load_file

    zeros = total = 0
    for f in Path(model_dir).glob("*.safetensors"):
        for name, t in load_file(str(f)).items():
            if "encoder.layer." in name and name.endswith(".weight") and t.dim() == 2:
                zeros += int((t == 0).sum())
                total += t.numel()
    return zeros / max(1, total)


def stage_zoo(out: Path, size: dict[str, Any]) -> dict[str, Any]:
    from sparse_transfer.embedded import upstream as _upstream
    from sparse_transfer.embedded import zoo_seed
    from sparse_transfer.embedded.movie_reviews import read_texts

    sentences = read_texts(out / "data" / "upstream.jsonl")
    schedule = size["seed_schedule"]
    sched = zoo_seed.SCHEDULES[schedule]
    if size.get("seed_overrides"):
        o = size["seed_overrides"]
        zoo_seed.SCHEDULES[schedule] = sched = type(sched)(
            sched.architecture, sched.corpus, o["train_samples"], o["eval_samples"],
            sched.batch_size, sched.max_length, dict(o["recipe_args"]),
        )  # fmt: skip
    if len(sentences) < sched.train_samples + sched.eval_samples:
        # smoke size: shrink the schedule's sample counts to what the toy corpus holds
        zoo_seed.SCHEDULES[schedule] = sched = type(sched)(
            sched.architecture, sched.corpus, len(sentences) - 16, 16, 16, sched.max_length,
            dict(sched.recipe_args),
        )  # fmt: skip
    snaps = _Snapshots(out / "snapshots", _upstream.minilm_dir(), SNAPSHOT_SPARSITIES)
    result = zoo_seed.seed(
        schedule,
        force=True,
        sentences=sentences,
        gmp_callbacks=[snaps],
        work_dir=out / "zoo-work",
        root=zoo_root(out),
    )
    shutil.rmtree(out / "zoo-work", ignore_errors=True)
    return {
        "stubs": result["stubs"],
        "upstream": result["upstream"],
        "snapshots": snaps.saved,
        "schedule": {
            "train_samples": sched.train_samples,
            "batch_size": sched.batch_size,
            "max_length": sched.max_length,
            "recipe_args": sched.recipe_args,
        },
    }


def _run_config(
    out: Path, config: str, overrides: dict[str, Any], pipeline_root: str
) -> dict[str, Any]:
    from pipelines.client import run_local

    data = out / "data"
    params = {
        "train_file": str(data / "train.jsonl"),
        "validation_file": str(data / "validation.jsonl"),
        "zoo_root": zoo_root(out),
        **overrides,
    }
    result = run_local(CONFIGS / config, pipeline_root=out / pipeline_root, overrides=params)
    report = result.report.read_text() if result.report and result.report.is_file() else ""
    return {"passed": result.passed, "published": result.published, "report": report}


def stage_teacher(out: Path, size: dict[str, Any]) -> dict[str, Any]:
    return _run_config(
        out,
        "real-results-teacher.yaml",
        dict(size.get("teacher_overrides", {})),
        "pipeline-teacher",
    )


def transfer_parameters(size: dict[str, Any]) -> dict[str, Any]:
    """The sparse transfer run's parameters: its run config with the run size's overrides."""
    from pipelines.client import read_config

    params = dict(read_config(CONFIGS / "real-results-sparse.yaml").parameters)
    params.update(size.get("overrides", {}))
    return params


def stage_sparse(out: Path, size: dict[str, Any]) -> dict[str, Any]:
    return _run_config(
        out, "real-results-sparse.yaml", dict(size.get("overrides", {})), "pipeline-sparse"
    )


def _evaluate(
    model_dir: str | Path, validation: Path, out_dir: Path, size: dict[str, Any]
) -> float:
    """Accuracy (percent) of a model folder or deployment on one validation file."""
    from sparse_transfer.tasks import evaluate
    from sparse_transfer.tasks.args import DataArguments
    from sparse_transfer.tasks.evaluation import EvaluateArguments

    eval_args = EvaluateArguments(
        model_path=str(model_dir), task=TASK, per_device_eval_batch_size=64,
        output_dir=str(out_dir),
    )  # fmt: skip
    data_args = DataArguments(
        validation_file=str(validation), input_column_names="sentence",
        label_column_name="label", max_seq_length=64,
        max_eval_samples=size["eval_max_samples"] or None,
    )  # fmt: skip
    return round(100 * _accuracy(evaluate(eval_args, data_args).metrics), 2)


def _fp32_copy(model_dir: Path, dest: Path) -> Path:
    """The QAT model's weights without its fake quantization (``quantization.json`` left out)."""
    from sparse_transfer.quantization.state import CONFIG_NAME

    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(model_dir, dest, ignore=shutil.ignore_patterns(CONFIG_NAME, "deployment"))
    return dest


def _zoo_paths(out: Path) -> dict[str, Path]:
    from sparse_transfer.zoo import resolve

    root = zoo_root(out)
    return {
        "teacher": Path(resolve(TEACHER_STUB, "model", root=root)),
        "sparse": Path(resolve(SPARSE_STUB, "model", root=root)),
        "deployment": Path(resolve(SPARSE_STUB, "deployment", root=root)),
    }


def stage_accuracy(out: Path, size: dict[str, Any]) -> dict[str, Any]:
    from sparse_transfer.embedded.movie_reviews import DATASETS

    paths = _zoo_paths(out)
    variants = {
        "dense teacher (FP32)": paths["teacher"],
        "90% sparse FP32": _fp32_copy(paths["sparse"], out / "eval" / "sparse-fp32-model"),
        "90% sparse int8 (torch QAT)": paths["sparse"],
        "90% sparse int8 ONNX": paths["deployment"],
    }
    table: dict[str, dict[str, float]] = {}
    for name, model_dir in variants.items():
        table[name] = {}
        for ds in DATASETS:
            where = (
                out
                / "eval"
                / name.replace(" ", "_").replace("(", "").replace(")", "").replace("%", "")
                / ds
            )
            table[name][ds] = _evaluate(
                model_dir, out / "data" / f"validation_{ds}.jsonl", where, size
            )
            log.info("accuracy %s on %s: %.2f", name, ds, table[name][ds])
    return {"accuracy": table, "paths": {k: str(v) for k, v in variants.items()}}


def _sweep_train(out: Path, size: dict[str, Any], start: str, out_dir: Path, recipe_args, teacher):
    """One sweep point's training through the typed `train` (the flags the CLI would take)."""
    from transformers import TrainingArguments

    from sparse_transfer.tasks import train
    from sparse_transfer.tasks.args import DataArguments, ModelArguments

    model_args = ModelArguments(
        model_name_or_path=str(start), recipe=TRANSFER_RECIPE,
        recipe_args=json.dumps(recipe_args), distill_teacher=teacher,
    )  # fmt: skip
    data_args = DataArguments(
        train_file=str(out / "data" / "train.jsonl"),
        validation_file=str(out / "data" / "validation.jsonl"),
        input_column_names="sentence", label_column_name="label", max_seq_length=64,
        max_train_samples=size["sweep_train_samples"], preprocessing_num_workers=0,
    )  # fmt: skip
    training_args = TrainingArguments(
        output_dir=str(out_dir), per_device_train_batch_size=32, per_device_eval_batch_size=64,
        do_train=True, save_strategy="no", logging_steps=10, seed=42, report_to=[],
    )  # fmt: skip
    # an unfinished point of an earlier run is ours to redo
    result = train(
        TASK, model_args, data_args, training_args, zoo=zoo_root(out), overwrite_output_dir=True
    )
    return result.to_dict()


def stage_sweep(out: Path, size: dict[str, Any], zoo: dict[str, Any]) -> dict[str, Any]:
    from sparse_transfer.embedded.movie_reviews import DATASETS
    from sparse_transfer.zoo import resolve

    root = zoo_root(out)
    starts = {0: resolve(zoo["stubs"]["upstream_dense"], "model", root=root)}
    for pct, snap in zoo["snapshots"].items():
        starts[int(pct)] = snap["path"]
    starts[90] = resolve(zoo["stubs"]["upstream"], "model", root=root)
    teacher = str(_zoo_paths(out)["teacher"])
    # QAT never starts: the sweep compares FP32 sparsities at one budget.
    recipe_args = {**size["sweep_recipe_args"], "qat_start_epoch": 1e3, "observer_epoch": 1e3 + 1}
    points = []
    for pct in SWEEP:
        if pct not in starts:
            log.warning("no upstream at %d%% sparsity (snapshot missing); skipped", pct)
            continue
        out_dir = out / "sweep" / f"sparsity{pct}"
        done = out / "sweep" / f"sparsity{pct}.json"
        if done.is_file():  # resume: this point was measured before
            points.append(json.loads(done.read_text()))
            continue
        summary = _sweep_train(out, size, starts[pct], out_dir, recipe_args, teacher)
        acc = {
            ds: _evaluate(
                out_dir, out / "data" / f"validation_{ds}.jsonl", out_dir / f"eval-{ds}", size
            )
            for ds in DATASETS
        }
        points.append({
            "target_sparsity": pct,
            "encoder_sparsity": round(_saved_encoder_sparsity(out_dir), 4),
            "upstream": str(starts[pct]),
            "accuracy": acc,
            "train_metrics": summary.get("train_metrics", {}),
        })  # fmt: skip
        done.write_text(json.dumps(points[-1]) + "\n")
        log.info("sweep %d%%: %s", pct, acc)
        shutil.rmtree(out_dir, ignore_errors=True)  # weights are not results
    return {
        "points": points,
        "budget": {"train_samples": size["sweep_train_samples"], "recipe_args": recipe_args},
    }


def stage_inference(out: Path, size: dict[str, Any]) -> dict[str, Any]:
    from sparse_transfer.export import benchmark, export_onnx

    paths = _zoo_paths(out)
    dense = out / "onnx-dense-fp32"
    if dense.exists():
        shutil.rmtree(dense)
    export_onnx(paths["teacher"], TASK, output=dense, sequence_length=128, format="fp32")
    sparse = paths["deployment"]
    threads = os.cpu_count() or 2
    # Interleaved rounds, best round per model and batch size: on a shared machine a burst
    # of another process's work then spoils one round, not one model.
    runs: dict[str, Any] = {}
    rounds = size.get("inference_rounds", 3)
    for _ in range(rounds):
        for name, folder in (("dense FP32 ONNX", dense), ("90% sparse int8 ONNX", sparse)):
            run = benchmark(
                folder, batch_sizes=(1, 32), sequence_length=128, threads=threads,
                iterations=size["inference_iterations"],
            )  # fmt: skip
            best = runs.setdefault(name, run)
            for key, stats in run["onnxruntime"].items():
                if stats["mean_ms"] < best["onnxruntime"][key]["mean_ms"]:
                    best["onnxruntime"][key] = stats
            best.setdefault("rounds_mean_ms", []).append(
                {k: v["mean_ms"] for k, v in run["onnxruntime"].items()}
            )
    sizes = {}
    for name, folder in (("dense FP32 ONNX", dense), ("90% sparse int8 ONNX", sparse)):
        onnx_files = list(folder.glob("*.onnx"))
        sizes[name] = {
            "model_onnx_bytes": sum(p.stat().st_size for p in onnx_files),
            "folder_bytes": _dir_bytes(folder),
            "tar_gz_bytes": _targz_bytes(folder, out / f"{folder.name}.tar.gz"),
        }
    return {
        "threads": threads,
        "rounds": rounds,
        "engines": runs,
        "sizes": sizes,
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
    }


def stage_training(out: Path, size: dict[str, Any]) -> dict[str, Any]:
    from pipelines.results.bench import training_step_benchmark

    paths = _zoo_paths(out)
    return training_step_benchmark(
        _fp32_copy(paths["sparse"], out / "bench-student"),
        paths["teacher"],
        batch_size=32,
        sequence_length=64,
        steps=size["training_bench_steps"],
        rounds=size.get("training_bench_rounds", 2),
        work=out / "bench-work",
    )


def stage_full_range_weights(out: Path, size: dict[str, Any]) -> dict[str, Any]:
    """The same transfer with full-range int8 weights (`weight_range.stage_full_range`)."""
    return stage_full_range(
        out,
        size,
        transfer_parameters(size),
        _run_config,
        lambda model, validation, where: _evaluate(model, validation, where, size),
    )


def transfer_from(
    out: Path, size: dict[str, Any], extra: dict[str, Any] | None = None
) -> Callable[[str, str], str]:
    """``(upstream stub, publish stub) -> deployment folder``: the sparse stage's run, re-aimed
    (`extra`: further run-config overrides, e.g. another ``train_file``)."""

    def transfer(upstream: str, stub: str) -> str:
        from sparse_transfer.zoo import resolve

        overrides = {**size.get("overrides", {}), **(extra or {}), "model_name_or_path": upstream,
                     "publish_stub": stub, "publish_force": True}  # fmt: skip
        _run_config(
            out, "real-results-sparse.yaml", overrides, f"pipeline-{stub.rsplit('/', 1)[-1]}"
        )
        return resolve(stub, "deployment", root=zoo_root(out))  # where the pipeline published

    return transfer


def run_all(
    out: Path,
    smoke: bool = False,
    skip_sweep: bool = False,
    size_name: str = "full",
    docs_dir: str | Path | None = None,
    upstreams: bool = False,
) -> dict[str, Any]:
    """Runs (or resumes) every stage under `out`; returns the collected results."""
    from pipelines.results.report import write_report
    from pipelines.results.sparseml_side import sparseml_python, stage_sparseml

    size_name = "smoke" if smoke else size_name
    size = SIZES[size_name]
    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    stage = _Stages(out)
    results: dict[str, Any] = {
        "size": size_name,
        "size_settings": size,
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    results["data"] = stage("data", lambda: stage_data(out, size))
    results["zoo"] = stage("zoo", lambda: stage_zoo(out, size))
    results["teacher"] = stage("teacher", lambda: stage_teacher(out, size))
    results["sparse"] = stage("sparse", lambda: stage_sparse(out, size))
    results["accuracy"] = stage("accuracy", lambda: stage_accuracy(out, size))
    results["inference"] = stage("inference", lambda: stage_inference(out, size))
    docs = Path(docs_dir) if docs_dir else (out / "docs" if smoke else Path("docs") / "results")
    write_report(results, docs, out, cards=False)  # partial figures, in case a later stage dies
    results["training"] = stage("training", lambda: stage_training(out, size))
    write_report(results, docs, out, cards=False)
    results["full_range"] = stage("full_range", lambda: stage_full_range_weights(out, size))
    write_report(results, docs, out, cards=False)
    python, why = sparseml_python()
    if python:
        params = transfer_parameters(size)
        results["sparseml"] = stage("sparseml", lambda: stage_sparseml(out, size, params))
        write_report(results, docs, out, cards=False)
    else:
        log.warning("stage sparseml skipped: %s", why)
    if not skip_sweep:
        results["sweep"] = stage("sweep", lambda: stage_sweep(out, size, results["zoo"]))
    if upstreams:
        from pipelines.results.upstreams import stage_upstreams

        transfer = transfer_from(out, size)
        results["upstreams"] = stage("upstreams", lambda: stage_upstreams(out, size_name, transfer))
    results["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    write_report(results, docs, out)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.results", description=__doc__)
    parser.add_argument("--out", default="real-results-output", help="work folder (resumable)")
    parser.add_argument(
        "--smoke", action="store_true", help="toy sizes: check the plumbing in minutes"
    )
    parser.add_argument("--skip-sweep", action="store_true", help="leave out the sparsity sweep")
    parser.add_argument("--size", choices=sorted(SIZES), default="full", help="run size")
    parser.add_argument(
        "--upstreams",
        action="store_true",
        help="also build and compare the GMP/oBS x unstructured/block4 upstreams (hours)",
    )
    parser.add_argument(
        "--docs",
        default=None,
        help="where results.md/json and the plots go (default: docs/results under the current "
        "directory; OUT/docs with --smoke)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    run_all(
        Path(args.out),
        smoke=args.smoke,
        skip_sweep=args.skip_sweep,
        size_name=args.size,
        docs_dir=args.docs,
        upstreams=args.upstreams,
    )
    return 0
