"""`evaluate`: scores a torch model folder or an ONNX deployment with the task's metrics.

The one evaluation path: the CLI, the pipeline's evaluation step and its
confusion matrix all use the `EvaluationResult` it returns, which carries the
predictions and labels along with the metrics, so nothing predicts twice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sparse_transfer.errors import DataError
from sparse_transfer.runtime.engines import ENGINE_HELP, ENGINES
from sparse_transfer.tasks import output_dir as output_rules
from sparse_transfer.tasks.args import DataArguments
from sparse_transfer.tasks.outputs import write_json
from sparse_transfer.tasks.registry import get_task
from sparse_transfer.zoo import resolve


@dataclass
class EvaluateArguments:
    """What to evaluate and where results go."""

    model_path: str = field(
        metadata={"help": "Trained model dir, ONNX deployment dir (has model.onnx), stub or s3://."}
    )
    task: str = field(metadata={"help": "text-classification, token-classification, ..."})
    output_dir: str | None = field(
        default=None,
        metadata={
            "help": "Folder for eval_results.json (default: none, results on stdout only; "
            "the evaluated model, zoo entry or cache is never written to)."
        },
    )
    per_device_eval_batch_size: int = field(default=32, metadata={"help": "Batch size."})
    split: str = field(
        default="validation", metadata={"help": "Split to evaluate (validation or test)."}
    )
    threads: int | None = field(default=None, metadata={"help": "ONNX Runtime threads."})
    engine: str = field(
        default="auto",
        metadata={
            "help": "ONNX deployments: auto, onnxruntime or onnxruntime-sparse. " + ENGINE_HELP,
            "choices": ENGINES,
        },
    )
    seed: int = field(default=42, metadata={"help": "Seed (for --validation_ratio splits)."})


@dataclass
class EvaluationResult:
    """Metrics of every evaluated split, and what a confusion matrix needs.

    Attributes:
        task / model / format: the task, the model reference, ``torch`` or ``onnx``.
        metrics: ``eval_*`` metrics (MNLI mismatched with ``_mm``).
        eval_results: the eval_results.json written (None without ``output_dir``).
        truncated: split -> texts cut at ``max_seq_length``.
        sparsity: ``overall_sparsity``/``prunable_params``/``zeros`` (torch models only).
        outputs: split -> model output name -> numpy array, gathered like the
            Trainer gathers them (reduced per batch where the task reduces, e.g. MLM).
        label_ids: split -> the labels in the same order (None without labels).
        label_names: the class names in id order (classification; else empty).
        problem_type: ``single_label_classification``, ... (text classification; else None).
    """

    task: str
    model: str
    format: str
    metrics: dict[str, Any]
    eval_results: str | None
    truncated: dict[str, int] = field(default_factory=dict)
    sparsity: dict[str, Any] | None = None
    outputs: dict[str, dict[str, np.ndarray]] = field(default_factory=dict, repr=False)
    label_ids: dict[str, Any] = field(default_factory=dict, repr=False)
    label_names: list[str] = field(default_factory=list)
    problem_type: str | None = None

    def summary(self) -> dict[str, Any]:
        """The JSON-able part (what ``sparse-transfer evaluate`` reports)."""
        return {
            "task": self.task,
            "model": self.model,
            "format": self.format,
            "metrics": self.metrics,
            "eval_results": self.eval_results,
            "truncated": self.truncated,
        }


def evaluate(
    eval_args: EvaluateArguments,
    data_args: DataArguments,
    task_args: Any = None,
    *,
    zoo: str | None = None,
) -> EvaluationResult:
    """Evaluates ``eval_args.model_path`` on the data `data_args` names.

    Args:
        eval_args: model, task, batch size, split, output folder.
        data_args: where the data comes from and how it is tokenised.
        task_args: the task's own dataclass; None: its defaults.
        zoo: zoo root for stubs (default: `sparse_transfer.zoo.zoo_root()`).
    """
    from sparse_transfer.tasks.lengths import model_positions
    from sparse_transfer.tasks.models import load_config, load_tokenizer

    spec = get_task(eval_args.task)
    if task_args is None and spec.args_class is not None:
        task_args = spec.args_class()
    ours = True
    if eval_args.output_dir:  # refused before any work, as training refuses
        ours = output_rules.check_results_folder(Path(eval_args.output_dir), eval_args.model_path)
    model_dir = resolve(eval_args.model_path, "deployment", root=zoo)
    is_onnx = Path(model_dir, "model.onnx").exists()
    raw, splits, prepared = _load_data(spec, eval_args, data_args, task_args)
    config = load_config(model_dir)
    prepared.adopt_model_config(config, eval_args.model_path)
    tokenizer = load_tokenizer(model_dir)
    prepared.fit_lengths(model_positions(config, tokenizer))
    if is_onnx:
        data_args.pad_to_max_length = True  # exported graphs may have a fixed length
        run = _evaluate_onnx(model_dir, spec, prepared, tokenizer, splits, eval_args)
    else:
        run = _evaluate_torch(model_dir, spec, prepared, tokenizer, splits, eval_args)
    metrics, outputs, label_ids, sparsity = run
    results_file = _write_results(eval_args, metrics, sparsity, ours)
    return EvaluationResult(
        task=spec.name,
        model=eval_args.model_path,
        format="onnx" if is_onnx else "torch",
        metrics=metrics,
        eval_results=results_file,
        truncated=dict(prepared.truncated),
        sparsity=sparsity,
        outputs=outputs,
        label_ids=label_ids,
        label_names=[str(n) for n in getattr(prepared, "label_list", None) or []],
        problem_type=getattr(prepared, "problem_type", None),
    )


def _load_data(spec, eval_args: EvaluateArguments, data_args: DataArguments, task_args):
    """The raw splits, the ones to evaluate (checked to exist) and the prepared task."""
    from sparse_transfer.tasks.data import load_raw_datasets
    from sparse_transfer.tasks.trainer_glue import eval_splits

    glue = data_args.task_name if spec.glue_task_names else None
    raw, sources = load_raw_datasets(data_args, seed=eval_args.seed, glue_task=glue)
    splits = eval_splits(raw) if eval_args.split == "validation" else [eval_args.split]
    splits = [s for s in splits if s in raw]
    if not splits:
        raise DataError(
            f"no {eval_args.split} data: pass --validation_file (or --test_file with --split test)"
        )
    return raw, splits, spec.prepare(raw, sources, data_args, task_args)


def _evaluate_onnx(model_dir, spec, prepared, tokenizer, splits, eval_args):
    """``(metrics, outputs, label_ids, None)`` of every split through onnxruntime."""
    from sparse_transfer.runtime import OnnxModel
    from sparse_transfer.tasks.predict import predict_numpy
    from sparse_transfer.tasks.trainer_glue import rename_split_metrics

    metrics: dict[str, Any] = {}
    outputs: dict[str, dict[str, np.ndarray]] = {}
    label_ids: dict[str, Any] = {}
    onnx_model = OnnxModel(
        model_dir, threads=eval_args.threads, engine=eval_args.engine, verify=True
    )
    for split in splits:
        feats = prepared.preprocess(split, tokenizer, train=False)
        outputs[split], label_ids[split] = predict_numpy(
            onnx_model,
            prepared.model_features(feats),
            prepared.collator(tokenizer, return_tensors="np"),
            eval_args.per_device_eval_batch_size,
            spec.output_names,
            prepared.reduce_batch,
            desc=f"Evaluating {split} (ONNX)",
        )
        prepared.active_split = split
        m = prepared.compute_metrics(outputs[split], label_ids[split], split)
        m = {f"eval_{k}": v for k, v in m.items()}
        m["eval_samples"] = len(prepared.raw[split])
        metrics.update(rename_split_metrics(m, split))
    return metrics, outputs, label_ids, None


def _evaluate_torch(model_dir, spec, prepared, tokenizer, splits, eval_args):
    """``(metrics, outputs, label_ids, sparsity)`` of every split through the Trainer."""
    from sparse_transfer.tasks.models import load_model
    from sparse_transfer.tasks.trainer_glue import rename_split_metrics
    from sparse_transfer.training import sparsity_report

    metrics: dict[str, Any] = {}
    outputs: dict[str, dict[str, np.ndarray]] = {}
    label_ids: dict[str, Any] = {}
    model = load_model(model_dir, spec.name, **prepared.config_overrides())
    prepared.check_model(model, eval_args.model_path)
    report = sparsity_report(model)
    sparsity = {k: report[k] for k in ("overall_sparsity", "prunable_params", "zeros")}
    for split in splits:
        m, outputs[split], label_ids[split] = _torch_predict(
            model, tokenizer, spec, prepared, split, eval_args.per_device_eval_batch_size
        )
        metrics.update(rename_split_metrics(m, split))
    return metrics, outputs, label_ids, sparsity


def _write_results(eval_args: EvaluateArguments, metrics: dict, sparsity, ours: bool) -> str | None:
    """eval_results.json in ``--output_dir`` (never into what was read, issue 13.3)."""
    if not eval_args.output_dir:
        return None
    written = dict(metrics)
    if sparsity is not None:
        written["sparsity"] = sparsity
    Path(eval_args.output_dir).mkdir(parents=True, exist_ok=True)
    results_file = Path(eval_args.output_dir) / "eval_results.json"
    write_json(results_file, written)
    if ours:
        output_rules.record_results(Path(eval_args.output_dir))
    return str(results_file)


def _torch_predict(model, tokenizer, spec, prepared, split: str, batch_size: int):
    """``(metrics, outputs, label_ids)`` of one split through the Trainer's prediction loop."""
    import tempfile

    import torch
    from transformers import Trainer, TrainingArguments

    from sparse_transfer.tasks.trainer_glue import logits_reducer, metrics_fn

    with tempfile.TemporaryDirectory() as tmp:
        targs = TrainingArguments(
            output_dir=tmp,
            per_device_eval_batch_size=batch_size,
            report_to=[],
            dataloader_pin_memory=torch.cuda.is_available(),
        )
        trainer = Trainer(
            model=model,
            args=targs,
            processing_class=tokenizer,
            data_collator=prepared.collator(tokenizer),
            compute_metrics=metrics_fn(spec, prepared),
            preprocess_logits_for_metrics=logits_reducer(spec, prepared),
        )
        feats = prepared.preprocess(split, tokenizer, train=False)
        prepared.active_split = split
        result = trainer.predict(prepared.model_features(feats), metric_key_prefix="eval")
    metrics = dict(result.metrics)
    metrics["eval_samples"] = len(prepared.raw[split])
    preds = result.predictions if isinstance(result.predictions, tuple) else (result.predictions,)
    outputs = {n: np.asarray(p) for n, p in zip(spec.output_names, preds, strict=False)}
    return metrics, outputs, result.label_ids
