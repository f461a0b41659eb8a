"""One function per pipeline step: what each KFP component does, minus kfp.

A component (in `components/`) maps its artifacts to folders and calls exactly
one function here; so every step also runs from plain Python and is tested
without a cluster. Paths in, JSON-able dicts out (they become artifact
metadata and KFP metrics).
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sparse_transfer.errors import DataError, PipelineError
from sparse_transfer.scaleout.plan import ScaleOut, train_scaled_out
from sparse_transfer.tasks import flags as flag_schema
from sparse_transfer.tasks.args import is_no_model

log = logging.getLogger(__name__)

DATA_SPEC = "data.json"
NO_MODEL_MARKER = "NO_MODEL"

# Data flags a Dataset artifact carries to the training and evaluation steps (the schema's
# data flags but the files, which the artifact holds itself).
DATA_FLAGS = tuple(
    f.name
    for f in flag_schema.DATA_FLAGS
    if f.name not in ("train_file", "validation_file", "dataset_snapshot_prefix")
)


def has_model(directory: str | Path) -> bool:
    """False for the placeholder a disabled teacher leaves (see `fetch_model_step`)."""
    directory = Path(directory)
    return directory.is_dir() and not (directory / NO_MODEL_MARKER).exists()


def _copy_into(src: Path, dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    if src.is_dir():
        shutil.copytree(src, dest, dirs_exist_ok=True)
    else:
        shutil.copy2(src, dest / src.name)


def fetch_model_step(
    ref: str, dest: str | Path, *, kind: str = "model", task: str = "", zoo: str = ""
) -> dict[str, Any]:
    """Materialises a model reference into `dest` (the Model artifact folder).

    Args:
        ref: zoo stub, s3:// / file:// URI, local folder or hub id; ``disable``
            (or empty) leaves a placeholder meaning "no model" (no distillation).
        dest: folder to fill.
        kind: zoo kind (``model``, ``teacher``, ``deployment``).
        task: head to build when `ref` is a hub id.
        zoo: zoo root for stubs (empty: the environment's).

    Returns:
        Metadata: ``source``, ``present`` and, for real models, ``resolved``.
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    if is_no_model(ref):
        (dest / NO_MODEL_MARKER).write_text(f"no model: reference was {ref!r}\n")
        return {"source": ref, "present": False}
    from sparse_transfer import zoo as zoo_api

    resolved = zoo_api.resolve(ref, kind, root=zoo or None)
    local = Path(resolved)
    if local.exists():
        _copy_into(local, dest)
    else:  # a hub id: build the task's head and save it with its tokenizer
        from sparse_transfer.tasks import load_model, load_tokenizer

        if not task:
            raise PipelineError(f"model {ref!r} is a hub id: the step needs a task to load it")
        load_model(resolved, task).save_pretrained(str(dest))
        load_tokenizer(resolved).save_pretrained(str(dest))
    return {"source": ref, "resolved": str(resolved), "present": True}


def fetch_data_step(
    dest: str | Path,
    *,
    train_file: str = "",
    validation_file: str = "",
    dataset_snapshot_prefix: str = "",
    **data_args: Any,
) -> dict[str, Any]:
    """Fills the Dataset artifact: data files (copied) plus ``data.json`` with the data flags.

    Args:
        dest: the Dataset artifact folder.
        train_file / validation_file: local, file:// or s3:// files (optional).
        dataset_snapshot_prefix: when set, the newest snapshot folder under it
            provides the files (``train.*`` and ``validation.*``), overriding
            `train_file`/`validation_file` (scheduled retraining).
        **data_args: the other data flags (`DATA_FLAGS`); empty values are dropped.

    Returns:
        The data spec written (also the artifact's metadata).
    """
    from sparse_transfer.pipeline.snapshots import newest_snapshot, snapshot_files

    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    unknown = sorted(set(data_args) - set(DATA_FLAGS))
    if unknown:
        raise PipelineError(f"unknown data arguments {unknown}; known: {list(DATA_FLAGS)}")
    spec: dict[str, Any] = {k: v for k, v in data_args.items() if v not in ("", None, 0, 0.0)}
    sources = {"train_file": train_file, "validation_file": validation_file}
    if dataset_snapshot_prefix:
        snapshot = newest_snapshot(dataset_snapshot_prefix)
        spec["snapshot"] = snapshot
        sources = snapshot_files(snapshot)
    for flag, uri in sources.items():
        if not uri:
            continue
        local = _fetch(uri)
        target = dest / f"{flag.removesuffix('_file')}{''.join(Path(local).suffixes)}"
        shutil.copy2(local, target)
        spec[flag] = target.name
        spec[f"{flag}_source"] = uri
    if not any(spec.get(k) for k in ("task_name", "dataset_name", "train_file", "validation_file")):
        raise DataError(
            "no data: set train_file/validation_file, dataset_snapshot_prefix, dataset_name or task_name"
        )
    (dest / DATA_SPEC).write_text(json.dumps(spec, indent=2, sort_keys=True))
    return spec


def _fetch(uri: str) -> Path:
    from sparse_transfer import storage

    if not uri.startswith("s3://") and not Path(uri.removeprefix("file://")).is_file():
        raise DataError(f"data file {uri} does not exist")
    return Path(storage.fetch_file(uri))


def data_values(data_dir: str | Path) -> dict[str, Any]:
    """The data flags of a Dataset artifact, as `DataArguments` field values."""
    data_dir = Path(data_dir)
    spec = json.loads((data_dir / DATA_SPEC).read_text())
    values = {flag: spec[flag] for flag in DATA_FLAGS if spec.get(flag) not in (None, "")}
    for flag in ("train_file", "validation_file"):
        if spec.get(flag):
            values[flag] = str(data_dir / spec[flag])
    return values


def task_arguments(task: str, values: Mapping[str, Any], *extra: type) -> dict[type, Any]:
    """Builds the task layer's argument dataclasses from flag values, each flag in its class.

    Args:
        task: the task (its own dataclass, e.g. ``doc_stride``, is included).
        values: flag -> value; empty strings and None mean "not set" (the default applies);
            integral floats for int fields become ints (KFP hands dict values over as JSON
            numbers).
        *extra: more dataclasses to fill (``TrainingArguments``, ``EvaluateArguments``).

    Returns:
        dataclass -> instance, for `ModelArguments` (when `values` names a model),
        `DataArguments`, the task's own class and every class in `extra`.

    Raises:
        PipelineError: a flag no class has.
    """
    import dataclasses

    from sparse_transfer.tasks.args import DataArguments, ModelArguments
    from sparse_transfer.tasks.registry import get_task

    spec = get_task(task)
    classes = [
        ModelArguments,
        DataArguments,
        *([spec.args_class] if spec.args_class else []),
        *extra,
    ]
    given = {k: v for k, v in values.items() if v is not None and v != ""}
    out: dict[type, Any] = {}
    used: set[str] = set()
    for cls in classes:
        types = {f.name: str(f.type) for f in dataclasses.fields(cls) if f.init}
        mine = {k: _as_field_type(v, types[k]) for k, v in given.items() if k in types}
        if cls is ModelArguments and "model_name_or_path" not in mine:
            continue
        out[cls] = cls(**mine)
        used |= set(mine)
    unknown = sorted(set(given) - used)
    if unknown:
        raise PipelineError(f"no {spec.name} argument is called {', '.join(unknown)}")
    return out


def _as_field_type(value: Any, annotation: str) -> Any:
    """An integral float for an int field becomes an int (KFP's JSON numbers: 32 -> 32.0)."""
    is_int = "int" in annotation and "float" not in annotation
    return flag_schema.as_int(value) if is_int else value


def command_line(values: Mapping[str, Any]) -> list[str]:
    """Flag values as ``--name value`` argv, for training in other processes (torchrun, TrainJob).

    Unset values (empty, None) are left out; integral floats become ints, as
    `task_arguments` does (KFP hands dict values over as JSON numbers).
    """
    argv: list[str] = []
    for name, value in values.items():
        if value in ("", None):
            continue
        value = flag_schema.as_int(value)
        argv += [f"--{name}", json.dumps(value) if isinstance(value, dict | list) else str(value)]
    return argv


def train_step(
    task: str,
    model_dir: str | Path,
    output_dir: str | Path,
    data_dir: str | Path,
    *,
    recipe: str,
    recipe_args: str = "",
    teacher_dir: str | Path | None = None,
    training_args: Mapping[str, Any] | None = None,
    zoo: str = "",
    scale: ScaleOut | None = None,
) -> dict[str, Any]:
    """Runs `sparse_transfer.tasks.train` on artifact folders.

    Args:
        task: task name.
        model_dir: starting model (Model artifact).
        output_dir: where the trained model goes (Model artifact).
        data_dir: Dataset artifact from `fetch_data_step`.
        recipe: recipe stub / URI / path; resolved by the library.
        recipe_args: JSON object overriding recipe variables (empty: none).
        teacher_dir: teacher Model artifact; None or a placeholder disables distillation.
        training_args: validated flags from
            `sparse_transfer.pipeline.options.training_options`.
        zoo: zoo root for stubs.
        scale: processes and nodes (`sparse_transfer.scaleout.plan.ScaleOut`);
            None or 1 x 1 trains in this process.

    Returns:
        The run summary (`TrainResult.to_dict`: metrics, sparsity, output_dir).
    """
    from transformers import TrainingArguments

    from sparse_transfer.tasks.args import DataArguments, ModelArguments
    from sparse_transfer.tasks.recipe_fit import resolve_recipe
    from sparse_transfer.tasks.registry import get_task
    from sparse_transfer.tasks.training import train

    teacher = str(teacher_dir) if teacher_dir is not None and has_model(teacher_dir) else "disable"
    values = {
        **data_values(data_dir),
        **dict(training_args or {}),
        "model_name_or_path": str(model_dir),
        "recipe": recipe,
        "recipe_args": recipe_args,
        "distill_teacher": teacher,
        "output_dir": str(output_dir),
        "do_train": True,
        "do_eval": True,
    }
    args = task_arguments(task, values, TrainingArguments)
    spec = get_task(task)
    log.info("train %s %s", task, {k: v for k, v in values.items() if v not in ("", None)})
    if scale is not None and scale.distributed:
        # torchrun or a TrainJob starts fresh interpreters: the flags cross that process
        # boundary as a command line, with zoo references resolved to paths here.
        if recipe:
            values["recipe"] = resolve_recipe(recipe, zoo or None)
        summary = train_scaled_out(task, command_line(values), Path(output_dir), scale)
    else:
        summary = train(
            task,
            args[ModelArguments],
            args[DataArguments],
            args[TrainingArguments],
            args.get(spec.args_class),
            zoo=zoo or None,
        ).to_dict()
    for checkpoint in Path(output_dir).glob("checkpoint-*"):
        shutil.rmtree(
            checkpoint
        )  # the final model sits at the top; checkpoints only bloat the artifact
    return summary


def teacher_step(
    task: str,
    dest: str | Path,
    data_dir: str | Path,
    *,
    distill_teacher: str = "",
    base_model: str = "",
    recipe: str = "",
    recipe_args: str = "",
    training_args: Mapping[str, Any] | None = None,
    zoo: str = "",
) -> dict[str, Any]:
    """The teacher for distillation: fetched when given, else trained dense.

    One parameter-driven step instead of ``dsl.If``/``dsl.Else`` + ``dsl.OneOf``:
    kfp 2.17.3's local runner runs the branches but cannot select an artifact
    from them (``get_dag_output_artifacts`` expects one selector), and the
    pipeline must run locally too.

    Args:
        task: task name.
        dest: the teacher Model artifact folder.
        data_dir: Dataset artifact (used when training).
        distill_teacher: teacher stub/URI/path to fetch; ``disable`` leaves a
            "no teacher" placeholder; empty trains one.
        base_model: dense checkpoint to train from (the reference's base-none upstream).
        recipe / recipe_args: the dense teacher recipe.
        training_args: as for `train_step`.
        zoo: zoo root.

    Returns:
        ``mode`` (``fetched`` or ``trained``), the fetch metadata or ``metrics``
        (training metrics) and ``source``.
    """
    import tempfile

    if distill_teacher:
        meta = fetch_model_step(distill_teacher, dest, kind="teacher", task=task, zoo=zoo)
        return {"mode": "fetched", **meta}
    if not (base_model and recipe):
        raise PipelineError(
            "no distill_teacher given, so the teacher is trained: set teacher_model_name_or_path "
            "and teacher_recipe (or distill_teacher: disable to train without distillation)"
        )
    with tempfile.TemporaryDirectory(prefix="teacher-base-") as scratch:
        fetch_model_step(base_model, scratch, kind="model", task=task, zoo=zoo)
        summary = train_step(
            task, scratch, dest, data_dir, recipe=recipe, recipe_args=recipe_args,
            training_args=training_args, zoo=zoo,
        )  # fmt: skip
    return {"mode": "trained", "source": base_model, "metrics": training_metrics(summary)}


def training_metrics(summary: Mapping[str, Any]) -> dict[str, float]:
    """The numbers of a `train_main` summary worth a KFP metric: eval metrics plus sparsity."""
    from sparse_transfer.pipeline.metrics import numeric_metrics

    out = numeric_metrics(summary.get("metrics") or {})
    sparsity = summary.get("sparsity") or {}
    overall = sparsity.get("after", sparsity.get("overall_sparsity"))
    if isinstance(overall, (int, float)):
        out["overall_sparsity"] = float(overall)
    if isinstance(sparsity.get("zeros_lost"), (int, float)):
        out["zeros_lost"] = float(sparsity["zeros_lost"])
    return out


def evaluate_step(
    task: str,
    model_dir: str | Path,
    data_dir: str | Path,
    *,
    output_dir: str | Path | None = None,
    eval_args: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Runs `sparse_transfer.tasks.evaluate` (PyTorch folder or ONNX deployment).

    Returns:
        ``metrics`` (name -> number) and ``confusion_matrix`` (``{"labels", "matrix"}``
        for single-label classification, else None), both from the one evaluation;
        both empty for a "no model" placeholder (disabled teacher).
    """
    from sparse_transfer.pipeline.confusion import classification_confusion
    from sparse_transfer.pipeline.metrics import numeric_metrics

    if not has_model(model_dir):
        return {"metrics": {}, "confusion_matrix": None}
    import tempfile

    from sparse_transfer.tasks.args import DataArguments
    from sparse_transfer.tasks.evaluation import EvaluateArguments, evaluate
    from sparse_transfer.tasks.registry import get_task

    spec = get_task(task)
    with tempfile.TemporaryDirectory(prefix="evaluate-") as scratch:
        # eval_results.json goes to `output_dir` or a scratch dir, never into the input artifact
        values = {
            **data_values(data_dir),
            **dict(eval_args or {}),
            "model_path": str(model_dir),
            "task": task,
            "output_dir": str(output_dir or scratch),
        }
        args = task_arguments(task, values, EvaluateArguments)
        result = evaluate(args[EvaluateArguments], args[DataArguments], args.get(spec.args_class))
    return {
        "metrics": numeric_metrics(result.metrics),
        "confusion_matrix": classification_confusion(result),
    }


def export_step(
    model_dir: str | Path,
    task: str,
    output_dir: str | Path,
    *,
    sequence_length: int | None = None,
    benchmark_threads: int | None = None,
) -> dict[str, Any]:
    """Exports ONNX into `output_dir` and measures what the report needs.

    Args:
        sequence_length: None or 0 = the length the model was trained with.

    Returns:
        ``onnx_file``, ``model_size_bytes``, ``sequence_length``, ``precision`` (``int8`` or
        ``fp32``: what was exported) and ``latency_ms`` (batch 1, median of 10 runs in
        onnxruntime).
    """
    from sparse_transfer.export import benchmark, export_onnx

    deployment = Path(
        export_onnx(model_dir, task, output=output_dir, sequence_length=sequence_length or None)
    )
    report = json.loads((deployment / "export_report.json").read_text())
    onnx_files = sorted(deployment.glob("*.onnx"))
    length = (report.get("sequence_length") or {}).get("parity") or 128
    facts: dict[str, Any] = {
        "onnx_file": onnx_files[0].name if onnx_files else "",
        "model_size_bytes": sum(p.stat().st_size for p in onnx_files),
        "sequence_length": length,
        "precision": "int8" if report.get("quantized") else "fp32",
    }
    timing = benchmark(
        deployment, [1], length, benchmark_threads,
        warmup=2, iterations=10, engines=("onnxruntime",),
    )  # fmt: skip
    batch_1 = (timing.get("onnxruntime") or {}).get("batch_1") or {}
    facts["latency_ms"] = batch_1.get("p50_ms")
    return facts


def publish_step(
    deployment_dir: str | Path | None,
    model_dir: str | Path,
    *,
    task: str,
    stub: str,
    zoo: str = "",
    torch_metrics: Mapping[str, Any],
    onnx_metrics: Mapping[str, Any] | None = None,
    teacher_metrics: Mapping[str, Any] | None = None,
    export_facts: Mapping[str, Any] | None = None,
    gate_metric: str = "",
    min_metric: float = -1.0,
    max_drop_vs_teacher: float = -1.0,
    must_beat_published: bool = False,
    require_int8: bool = False,
    force: bool = False,
) -> dict[str, Any]:
    """Gates, then pushes the deployment (with the PyTorch model) to the zoo.

    Args:
        deployment_dir: ONNX deployment folder (what ships); None publishes the
            PyTorch model alone (the dense teacher pipeline).
        model_dir: trained PyTorch model (its ``sparsity.json`` feeds the report).
        task: task name.
        stub: zoo stub to publish to; empty: decide and report, push nothing.
        zoo: zoo root.
        torch_metrics / onnx_metrics / teacher_metrics: evaluation results.
        export_facts: `export_step`'s result.
        gate_metric: any metric the evaluation reports, e.g. ``macro_f1`` or ``f1_spam``
            (empty: the task's headline metric).
        min_metric / max_drop_vs_teacher: gate thresholds (negative: off).
        must_beat_published: also require beating the model published at `stub`.
        require_int8: also require an int8 deployment (``gate_require_int8``).
        force: overwrite an existing zoo entry.

    Returns:
        ``passed``, ``published`` (the stub or ""), ``gate`` (all checks) and
        ``report`` (Markdown).
    """
    from sparse_transfer.pipeline.gate import evaluate_gate
    from sparse_transfer.pipeline.metrics import primary_metric
    from sparse_transfer.pipeline.report import render_report
    from sparse_transfer.tasks.registry import get_task

    spec = get_task(task)
    shipped = onnx_metrics or torch_metrics
    metric, value = primary_metric(spec, shipped, gate_metric)
    precision = exported_precision(deployment_dir)
    root = zoo or None
    published_metrics = _published_metrics(stub, root) if (stub and must_beat_published) else None
    gate = evaluate_gate(
        value, metric=metric, min_metric=min_metric, max_drop_vs_teacher=max_drop_vs_teacher,
        teacher_metrics=teacher_metrics, published_metrics=published_metrics,
        must_beat_published=must_beat_published, precision=precision, require_int8=require_int8,
    )  # fmt: skip
    published = ""
    if gate.passed and stub:
        card = {"task": spec.name, "metrics": dict(shipped), "gate": gate.to_dict()}
        if precision:
            card["precision"] = precision
        _push(deployment_dir, model_dir, stub, card, force, root)
        published = stub
    sparsity_file = Path(model_dir) / "sparsity.json"
    sparsity = json.loads(sparsity_file.read_text()) if sparsity_file.exists() else None
    report = render_report(
        title=f"sparse-transfer: {stub or 'unpublished model'}", task=spec.name,
        torch_metrics=torch_metrics, onnx_metrics=onnx_metrics, teacher_metrics=teacher_metrics,
        sparsity=sparsity, export={**dict(export_facts or {}), "precision": precision},
        gate=gate, published=published or None,
    )  # fmt: skip
    return {"passed": gate.passed, "published": published, "gate": gate.to_dict(), "report": report}


def exported_precision(deployment_dir: str | Path | None) -> str | None:
    """``int8`` or ``fp32`` as the deployment's ``export_report.json`` says; None without one."""
    if deployment_dir is None:
        return None
    path = Path(deployment_dir) / "export_report.json"
    if not path.is_file():
        return None
    return "int8" if json.loads(path.read_text()).get("quantized") else "fp32"


def _published_metrics(stub: str, root: str | None) -> dict[str, Any] | None:
    """The metrics on the model card currently at `stub`, None when nothing is published."""
    from sparse_transfer import zoo as zoo_api
    from sparse_transfer.errors import StorageError, ZooError

    try:
        card = zoo_api.card(stub, root=root)
    except (ZooError, StorageError) as exc:  # a missing entry is the normal first run
        log.info("nothing published at %s yet (%s)", stub, exc)
        return None
    return dict(card.get("metrics") or {})


def _push(
    deployment_dir: str | Path | None,
    model_dir: str | Path,
    stub: str,
    card: Mapping[str, Any],
    force: bool,
    root: str | None,
) -> None:
    """Pushes one folder holding the deployment and the PyTorch model, so both stay linked."""
    import tempfile

    from sparse_transfer import zoo as zoo_api
    from sparse_transfer.tasks.registry import architecture_tasks

    with tempfile.TemporaryDirectory() as tmp:
        bundle = Path(tmp) / "bundle"
        shutil.copytree(model_dir, bundle)
        if deployment_dir is not None:
            shutil.copytree(deployment_dir, bundle / "deployment")
        zoo_api.push(
            bundle, stub, force=force, card=dict(card), root=root,
            architectures=architecture_tasks(),
        )  # fmt: skip
