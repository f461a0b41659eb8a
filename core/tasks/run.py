"""`sparse-transfer train TASK ...` and `sparse-transfer evaluate ...`.

One loop for every task: parse (our dataclasses + HF `TrainingArguments`),
resolve model/recipe/teacher references, load and check data, tokenise, train
with `SparseTrainer` (recipe + teacher), evaluate, and publish the output dir
atomically: everything is written into a sibling ``.NAME.partial`` staging dir
that is renamed to ``--output_dir`` only at the very end, so a crashed run
never leaves an output dir that looks complete (and ``--resume_from_checkpoint
true`` finds the crashed run's checkpoints in the staging dir).
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sparse_transfer.errors import DataError, SparseTransferError
from sparse_transfer.tasks.args import DataArguments, ModelArguments
from sparse_transfer.tasks.registry import get_task

logger = logging.getLogger(__name__)

# Old TrainingArguments names (transformers 4.x / SparseML docs) -> current ones.
LEGACY_FLAGS = {
    "--evaluation_strategy": "--eval_strategy",
    "--no_cuda": "--use_cpu",
    "--per_gpu_train_batch_size": "--per_device_train_batch_size",
    "--per_gpu_eval_batch_size": "--per_device_eval_batch_size",
}
# Flags transformers 5 dropped that only change behaviour we already have.
DROPPED_FLAGS = {"--overwrite_output_dir": "output dirs are always replaced atomically"}
HEAD_MODULES = ("classifier", "qa_outputs", "cls", "lm_head")


def normalize_argv(argv: list[str]) -> list[str]:
    """Translates legacy flag names and drops flags with no effect any more."""
    out: list[str] = []
    skip_value = False
    for i, arg in enumerate(argv):
        if skip_value:
            skip_value = False
            continue
        name, eq, value = arg.partition("=")
        if name in LEGACY_FLAGS:
            logger.info("%s is the old name of %s", name, LEGACY_FLAGS[name])
            out.append(LEGACY_FLAGS[name] + (eq + value if eq else ""))
        elif name in DROPPED_FLAGS:
            logger.info("ignoring %s: %s", name, DROPPED_FLAGS[name])
            nxt = argv[i + 1] if i + 1 < len(argv) else ""
            if not eq and nxt.lower() in {"true", "false", "1", "0", "yes", "no"}:
                skip_value = True
        else:
            out.append(arg)
    return out


def parse_args(spec, argv: list[str]):
    """Parses argv into (model_args, data_args, task_args, training_args)."""
    import torch
    from transformers import HfArgumentParser, TrainingArguments

    argv = normalize_argv(list(argv))
    flags = {a.split("=", 1)[0].replace("-", "_") for a in argv if a.startswith("--")}
    if "__output_dir" not in flags and not ({"-h", "--help"} & set(argv)):
        raise DataError("--output_dir is required: where the trained model and results go")
    classes = [ModelArguments, DataArguments]
    if spec.args_class is not None:
        classes.append(spec.args_class)
    classes.append(TrainingArguments)
    parser = HfArgumentParser(classes)
    parser.prog = f"sparse-transfer train {spec.name}"
    try:
        parsed = parser.parse_args_into_dataclasses(args=argv, return_remaining_strings=True)
    except ValueError as exc:  # raised by TrainingArguments.__post_init__ validation
        raise DataError(f"invalid training arguments: {exc}") from exc
    *objs, remaining = parsed
    if remaining:
        raise DataError(f"unrecognized arguments for {spec.name}: {' '.join(remaining)}")
    training_args = objs[-1]
    if not torch.cuda.is_available():
        extra = []
        if training_args.fp16 or training_args.fp16_full_eval:
            logger.warning("--fp16 needs a GPU; none is available, so training runs in fp32")
            extra += ["--fp16", "false", "--fp16_full_eval", "false"]
        if not any(a.startswith("--dataloader_pin_memory") for a in argv):
            extra += ["--dataloader_pin_memory", "false"]  # pinning needs an accelerator
        objs = parser.parse_args_into_dataclasses(args=argv + extra)
        training_args = objs[-1]
    model_args, data_args = objs[0], objs[1]
    task_args = objs[2] if spec.args_class is not None else None
    return model_args, data_args, task_args, training_args


# -- references, recipe ---------------------------------------------------------------


def _resolve(ref: str | None, kind: str) -> str | None:
    from sparse_transfer.tasks.models import resolve_ref

    if ref is None:
        return None
    return resolve_ref(ref, kind)


def load_task_recipe(recipe_ref: str | None, recipe_args: str | None, spec, model, teacher):
    """Loads the recipe and fits task-independent parts of it to this task's model.

    The reference recipes are written for sequence classification; reused for
    another head, their ``distill_output_keys`` become the task's outputs and
    QuantizationModifier ``submodules`` that this model lacks (a pooler, another
    task's head) are dropped, this head added. Every change is logged and ends
    up in the saved recipe.yaml.
    """
    if recipe_ref is None:
        if recipe_args:
            raise DataError("--recipe_args given without --recipe")
        return None
    from sparse_transfer.recipe import load_recipe

    recipe = load_recipe(recipe_ref, recipe_args)
    distill = recipe.find("DistillationModifier")
    if distill and teacher is None:
        logger.warning(
            "the recipe has a DistillationModifier but no teacher is given "
            "(--distill_teacher unset or 'disable'): distillation is off for this run"
        )
        recipe.modifiers = [m for m in recipe.modifiers if m not in distill]
    elif teacher is not None and not distill:
        logger.warning("--distill_teacher is set but the recipe has no DistillationModifier")
    for mod in recipe.find("DistillationModifier"):
        keys = list(mod.distill_output_keys or [])
        if keys and not set(keys) <= set(spec.output_names):
            logger.warning(
                "DistillationModifier distill_output_keys %s are not outputs of a %s model; "
                "distilling %s instead",
                keys,
                spec.name,
                list(spec.distill_output_keys),
            )
            mod.distill_output_keys = list(spec.distill_output_keys)
    names = dict(model.named_modules())
    own_head = next((h for h in HEAD_MODULES if h in names), None)
    for mod in recipe.find("QuantizationModifier"):
        if not mod.submodules:
            continue
        kept, dropped = [], []
        for sub in mod.submodules:
            (kept if sub in names else dropped).append(sub)
        if not dropped:
            continue
        if (
            any(d.split(".")[0] in HEAD_MODULES for d in dropped)
            and own_head
            and own_head not in kept
        ):
            kept.append(own_head)
        logger.warning(
            "QuantizationModifier submodules %s do not exist in this %s model; quantizing %s",
            dropped,
            spec.name,
            kept,
        )
        mod.submodules = kept
    return recipe


# -- sparsity ------------------------------------------------------------------------


def sparsity_summary(model) -> dict[str, Any]:
    """`sparse_transfer.training.sparsity_report` when available, else a local count."""
    try:
        from sparse_transfer.training import sparsity_report

        return sparsity_report(model)
    except ImportError:
        pass
    import torch

    layers, zeros, total = {}, 0, 0
    for name, module in model.named_modules():
        if isinstance(module, (torch.nn.Linear, torch.nn.Embedding)):
            w = module.weight.detach()
            n, z = w.numel(), int((w == 0).sum())
            layers[f"{name}.weight"] = {"numel": n, "zeros": z, "sparsity": z / n}
            zeros, total = zeros + z, total + n
    return {
        "overall_sparsity": zeros / max(total, 1),
        "prunable_params": total,
        "zeros": zeros,
        "layers": layers,
    }


def compare_sparsity(before: dict, after: dict) -> dict[str, Any]:
    """Overall sparsity before/after and whether every layer kept its zeros."""
    lost = 0
    for name, layer in before["layers"].items():
        if name in after["layers"]:
            lost += max(0, layer["zeros"] - after["layers"][name]["zeros"])
    lost = max(lost, before["zeros"] - after["zeros"])
    return {
        "before": before["overall_sparsity"],
        "after": after["overall_sparsity"],
        "zeros_before": before["zeros"],
        "zeros_after": after["zeros"],
        "prunable_params": after["prunable_params"],
        "zeros_lost": lost,
        "kept": lost == 0,
    }


# -- output dir --------------------------------------------------------------------


def staging_dir(output_dir: Path) -> Path:
    return output_dir.parent / f".{output_dir.name}.partial"


def publish(staging: Path, final: Path) -> None:
    """Replaces `final` with `staging` by renames (same filesystem)."""
    if final.exists():
        backup = final.parent / f".{final.name}.old-{os.getpid()}"
        final.rename(backup)
        staging.rename(final)
        shutil.rmtree(backup, ignore_errors=True)
    else:
        staging.rename(final)


def write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=_json_default) + "\n")
    tmp.replace(path)


def _json_default(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


# -- trainer glue ------------------------------------------------------------------


def trainer_class():
    """`SparseTrainer` (recipes, teacher) when the training module is installed."""
    try:
        from sparse_transfer.training import SparseTrainer

        return SparseTrainer, True
    except ImportError:
        from transformers import Trainer

        return Trainer, False


def metrics_fn(spec, prepared):
    """Adapts a task's numpy metric function to the Trainer's `compute_metrics`."""

    def compute_metrics(prediction) -> dict:
        preds = prediction.predictions
        if not isinstance(preds, (tuple, list)):
            preds = (preds,)
        outputs = dict(zip(spec.output_names, (np.asarray(p) for p in preds), strict=False))
        return prepared.compute_metrics(outputs, prediction.label_ids, prepared.active_split)

    return compute_metrics


def logits_reducer(spec, prepared):
    """Per-batch reduction hook (MLM: argmax + NLL instead of full-vocab logits)."""
    from sparse_transfer.tasks.base import PreparedTask

    if type(prepared).reduce_batch is PreparedTask.reduce_batch:
        return None
    import torch

    def reduce(logits, labels):
        if isinstance(logits, (tuple, list)):
            logits = logits[0]
        out = prepared.reduce_batch(
            {"logits": logits.detach().float().cpu().numpy()}, labels.detach().cpu().numpy()
        )
        return torch.from_numpy(out["logits"]).to(logits.device)

    return reduce


def eval_splits(raw) -> list[str]:
    return [s for s in ("validation", "validation_mismatched") if s in raw]


def split_metric_suffix(split: str) -> str:
    """MNLI mismatched metrics get run_glue's ``_mm`` suffix (eval_accuracy_mm)."""
    return "_mm" if split == "validation_mismatched" else ""


def rename_split_metrics(metrics: dict, split: str) -> dict:
    suffix = split_metric_suffix(split)
    return {f"{k}{suffix}": v for k, v in metrics.items()} if suffix else dict(metrics)


# -- train ----------------------------------------------------------------------


@dataclass
class _Run:
    spec: Any
    prepared: Any = None
    summary: dict = field(default_factory=dict)


def train_main(task: str, argv: list[str]) -> dict:
    """Runs ``sparse-transfer train TASK`` and returns the final summary.

    Args:
        task: a task name (aliases accepted, e.g. ``ner``).
        argv: the flags, exactly as on the command line.

    Returns:
        ``{"task", "output_dir", "metrics", "sparsity", "truncated", ...}``.
    """
    from sparse_transfer.tasks.data import load_raw_datasets
    from sparse_transfer.tasks.models import load_config, load_model, load_tokenizer
    from transformers import set_seed

    spec = get_task(task)
    model_args, data_args, task_args, training_args = parse_args(spec, argv)
    if not (training_args.do_train or training_args.do_eval or training_args.do_predict):
        raise DataError("nothing to do: pass --do_train, --do_eval and/or --do_predict")
    set_seed(training_args.seed)
    output_dir = Path(training_args.output_dir).resolve()

    model_path = _resolve(model_args.model_name_or_path, "model")
    recipe_path = _resolve(model_args.recipe, "recipe")
    teacher_ref = model_args.distill_teacher
    if teacher_ref is not None and teacher_ref.lower() in {"disable", "disabled", "none", ""}:
        teacher_ref = None
    teacher_path = _resolve(teacher_ref, "teacher")

    glue = data_args.task_name if spec.name == "text-classification" else None
    raw, sources = load_raw_datasets(data_args, seed=training_args.seed, glue_task=glue)
    if training_args.do_train and "train" not in raw:
        raise DataError(
            "--do_train needs training data: pass --train_file or a dataset with a train split"
        )
    if training_args.do_eval and not eval_splits(raw):
        raise DataError(
            "--do_eval needs a validation split: pass --validation_file, or --validation_ratio "
            "to split one off the training data"
        )
    if training_args.do_predict and "test" not in raw:
        raise DataError("--do_predict needs test data: pass --test_file")
    prepared = spec.prepare(raw, sources, data_args, task_args)

    config = load_config(model_path)
    prepared.adopt_model_config(config, model_args.model_name_or_path)
    tokenizer = load_tokenizer(model_args.tokenizer_name or model_path)
    model = load_model(model_path, spec.name, **prepared.config_overrides())
    prepared.check_model(model, model_args.model_name_or_path)
    teacher = None
    if teacher_path is not None:
        teacher = load_model(teacher_path, spec.name)
        prepared.check_model(teacher, model_args.distill_teacher, role="teacher")
        if teacher.config.vocab_size != model.config.vocab_size:
            raise DataError(
                f"teacher {model_args.distill_teacher} has a vocabulary of "
                f"{teacher.config.vocab_size} tokens, the student {model.config.vocab_size}; "
                "distillation feeds both the same token ids"
            )
    recipe = load_task_recipe(recipe_path, model_args.recipe_args, spec, model, teacher)
    sparsity_before = sparsity_summary(model)

    features = {}
    if training_args.do_train:
        features["train"] = prepared.preprocess("train", tokenizer, train=True)
    if training_args.do_eval or training_args.do_train:
        for split in eval_splits(raw):
            features[split] = prepared.preprocess(split, tokenizer, train=False)
    if training_args.do_predict and "test" in raw:
        features["test"] = prepared.preprocess("test", tokenizer, train=False)

    # Training publishes a whole new output dir; evaluation/prediction only adds
    # result files (atomically) to it, so an existing model dir is never replaced.
    staging = staging_dir(output_dir) if training_args.do_train else output_dir
    staging.mkdir(parents=True, exist_ok=True)
    training_args.output_dir = str(staging)
    cls, sparse = trainer_class()
    if not sparse and recipe is not None:
        raise SparseTransferError(
            "this installation has no sparse_transfer.training module; recipes cannot be applied"
        )
    eval_sets = {s: prepared.model_features(features[s]) for s in eval_splits(raw) if s in features}
    kwargs: dict[str, Any] = {
        "model": model,
        "args": training_args,
        "train_dataset": prepared.model_features(features["train"])
        if "train" in features
        else None,
        "eval_dataset": (
            eval_sets.get("validation") if len(eval_sets) == 1 else (eval_sets or None)
        ),
        "processing_class": tokenizer,
        "data_collator": prepared.collator(tokenizer, 8 if training_args.fp16 else None),
        "compute_metrics": metrics_fn(spec, prepared),
        "preprocess_logits_for_metrics": logits_reducer(spec, prepared),
    }
    if sparse:
        kwargs.update(recipe=recipe, teacher=teacher)
    trainer = cls(**kwargs)

    all_metrics: dict[str, Any] = {}
    if training_args.do_train:
        result = trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
        trainer.save_model()
        train_metrics = dict(result.metrics)
        train_metrics["train_samples"] = len(features["train"])
        trainer.log_metrics("train", train_metrics)
        trainer.save_metrics("train", train_metrics)
        trainer.save_state()
        all_metrics.update(train_metrics)
    if training_args.do_eval:
        for split, dataset in eval_sets.items():
            prepared.active_split = split
            metrics = trainer.evaluate(eval_dataset=dataset, metric_key_prefix="eval")
            metrics["eval_samples"] = len(prepared.raw[split])
            metrics = rename_split_metrics(metrics, split)
            trainer.log_metrics(f"eval{split_metric_suffix(split)}", metrics)
            all_metrics.update(metrics)
    if training_args.do_predict and "test" in features:
        _predict(trainer, spec, prepared, features["test"], staging)

    sparsity = compare_sparsity(sparsity_before, sparsity_summary(trainer.model))
    summary = {
        "task": spec.name,
        "output_dir": str(output_dir),
        "model": model_args.model_name_or_path,
        "recipe": model_args.recipe,
        "teacher": teacher_ref,
        "metrics": {k: v for k, v in all_metrics.items() if k.startswith("eval_")},
        "train_metrics": {k: v for k, v in all_metrics.items() if k.startswith("train")},
        "sparsity": sparsity,
        "truncated": dict(prepared.truncated),
        "max_seq_length": prepared.max_seq_length,
    }
    from sparse_transfer.training.distributed import is_main_process

    if not is_main_process():
        return summary  # under torchrun, rank 0 alone writes and publishes the output dir
    if training_args.do_eval:
        write_json(staging / "eval_results.json", {**all_metrics, "sparsity": sparsity})
    write_json(staging / "run_summary.json", summary)
    if training_args.do_train and not (staging / "config.json").exists():
        raise SparseTransferError(f"training finished but no model was saved into {staging}")
    if staging != output_dir:
        publish(staging, output_dir)
    print_summary(summary)
    return summary


def _predict(trainer, spec, prepared, features, out_dir: Path) -> None:
    prepared.active_split = "test"
    result = trainer.predict(prepared.model_features(features), metric_key_prefix="predict")
    preds = result.predictions if isinstance(result.predictions, tuple) else (result.predictions,)
    outputs = dict(zip(spec.output_names, preds, strict=False))
    if hasattr(prepared, "predictions_to_rows"):
        rows = prepared.predictions_to_rows(outputs)
    elif hasattr(prepared, "predict_answers"):
        answers = prepared.predict_answers(outputs, "test")
        rows = [{"id": k, "prediction": v} for k, v in answers.items()]
    else:
        logger.info("--do_predict writes no predictions for %s", spec.name)
        return
    from sparse_transfer.training.distributed import is_main_process

    if not is_main_process():
        return  # every rank ran the (gathering) prediction; rank 0 writes it
    path = out_dir / "predict_results.jsonl"
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w") as handle:
        for row in rows:
            handle.write(json.dumps(row, default=_json_default) + "\n")
    tmp.replace(path)
    logger.info("wrote %d predictions to %s", len(rows), path)


def print_summary(summary: dict) -> None:
    """The human-readable end of a run: metrics, sparsity, where the model went."""
    lines = [f"== sparse-transfer {summary['task']}: done =="]
    for key, value in sorted(summary.get("metrics", {}).items()):
        if _shown(key, value):
            lines.append(f"  {key:<32} {value:.4f}")
    sp = summary.get("sparsity")
    if sp:
        state = "kept exactly" if sp["kept"] else f"LOST {sp['zeros_lost']} zeros"
        lines.append(
            f"  sparsity before / after          {sp['before']:.2%} / {sp['after']:.2%} "
            f"({sp['zeros_after']:,} of {sp['prunable_params']:,} prunable weights zero; {state})"
        )
    for split, count in summary.get("truncated", {}).items():
        if count:
            lines.append(f"  truncated to max_seq_length      {count} texts in {split}")
    where = summary.get("output_dir")
    if where:
        lines.append(f"  output                           {where}")
    print("\n".join(lines), flush=True)


def _shown(key: str, value) -> bool:
    """Metrics worth a summary line (not timings or per-label scores)."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return False
    return not any(t in key for t in ("runtime", "per_second", "samples", "eval_f1_"))


# -- evaluate -----------------------------------------------------------------------


@dataclass
class EvaluateArguments:
    """What to evaluate and where results go."""

    model_path: str = field(
        metadata={"help": "Trained model dir, ONNX deployment dir (has model.onnx), stub or s3://."}
    )
    task: str = field(metadata={"help": "text-classification, token-classification, ..."})
    output_dir: str | None = field(
        default=None, metadata={"help": "Where eval_results.json goes (default: --model_path)."}
    )
    per_device_eval_batch_size: int = field(default=32, metadata={"help": "Batch size."})
    split: str = field(
        default="validation", metadata={"help": "Split to evaluate (validation or test)."}
    )
    threads: int | None = field(default=None, metadata={"help": "ONNX Runtime threads."})
    seed: int = field(default=42, metadata={"help": "Seed (for --validation_ratio splits)."})


def evaluate_main(argv: list[str]) -> dict:
    """``sparse-transfer evaluate``: scores a torch or ONNX model with the task's metrics."""
    import argparse

    from sparse_transfer.tasks.data import load_raw_datasets
    from sparse_transfer.tasks.models import load_config, load_model, load_tokenizer
    from transformers import HfArgumentParser

    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--task", required=True)
    known, _ = pre.parse_known_args(argv)
    spec = get_task(known.task)
    classes = [EvaluateArguments, DataArguments] + ([spec.args_class] if spec.args_class else [])
    parser = HfArgumentParser(classes)
    parser.prog = "sparse-transfer evaluate"
    objs = parser.parse_args_into_dataclasses(args=normalize_argv(list(argv)))
    eval_args, data_args = objs[0], objs[1]
    task_args = objs[2] if spec.args_class else None

    model_dir = _resolve(eval_args.model_path, "deployment")
    is_onnx = Path(model_dir, "model.onnx").exists()
    glue = data_args.task_name if spec.name == "text-classification" else None
    raw, sources = load_raw_datasets(data_args, seed=eval_args.seed, glue_task=glue)
    splits = eval_splits(raw) if eval_args.split == "validation" else [eval_args.split]
    splits = [s for s in splits if s in raw]
    if not splits:
        raise DataError(
            f"no {eval_args.split} data: pass --validation_file (or --test_file with --split test)"
        )
    prepared = spec.prepare(raw, sources, data_args, task_args)
    config = load_config(model_dir)
    prepared.adopt_model_config(config, eval_args.model_path)
    tokenizer = load_tokenizer(model_dir)
    if is_onnx:
        data_args.pad_to_max_length = True  # exported graphs may have a fixed length
    metrics: dict[str, Any] = {}
    sparsity = None
    if is_onnx:
        from sparse_transfer.export import OnnxModel

        onnx_model = OnnxModel(model_dir, threads=eval_args.threads)
        for split in splits:
            feats = prepared.preprocess(split, tokenizer, train=False)
            outputs, labels = predict_numpy(
                onnx_model,
                prepared.model_features(feats),
                prepared.collator(tokenizer, return_tensors="np"),
                eval_args.per_device_eval_batch_size,
                spec.output_names,
                prepared.reduce_batch,
                desc=f"Evaluating {split} (ONNX)",
            )
            prepared.active_split = split
            m = prepared.compute_metrics(outputs, labels, split)
            m = {f"eval_{k}": v for k, v in m.items()}
            m["eval_samples"] = len(raw[split])
            metrics.update(rename_split_metrics(m, split))
    else:
        import tempfile

        import torch
        from transformers import Trainer, TrainingArguments

        model = load_model(model_dir, spec.name, **prepared.config_overrides())
        prepared.check_model(model, eval_args.model_path)
        sparsity = sparsity_summary(model)
        with tempfile.TemporaryDirectory() as tmp:
            targs = TrainingArguments(
                output_dir=tmp,
                per_device_eval_batch_size=eval_args.per_device_eval_batch_size,
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
            for split in splits:
                feats = prepared.preprocess(split, tokenizer, train=False)
                prepared.active_split = split
                m = trainer.evaluate(prepared.model_features(feats), metric_key_prefix="eval")
                m["eval_samples"] = len(raw[split])
                metrics.update(rename_split_metrics(m, split))
    out_dir = Path(eval_args.output_dir or model_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    result = dict(metrics)
    if sparsity is not None:
        result["sparsity"] = {
            k: sparsity[k] for k in ("overall_sparsity", "prunable_params", "zeros")
        }
    write_json(out_dir / "eval_results.json", result)
    summary = {
        "task": spec.name,
        "model": eval_args.model_path,
        "format": "onnx" if is_onnx else "torch",
        "metrics": metrics,
        "eval_results": str(out_dir / "eval_results.json"),
        "truncated": dict(prepared.truncated),
    }
    lines = [f"== sparse-transfer evaluate {spec.name} ({summary['format']}) =="]
    for key, value in sorted(metrics.items()):
        if _shown(key, value):
            lines.append(f"  {key:<32} {value:.4f}")
    lines.append(f"  results                          {summary['eval_results']}")
    print("\n".join(lines), flush=True)
    return summary


def predict_numpy(
    forward,
    features,
    collator,
    batch_size: int,
    output_names: tuple[str, ...],
    reduce=None,
    desc: str = "Predicting",
):
    """Runs `forward(dict of numpy inputs) -> dict of numpy outputs` over features.

    Returns ``(outputs, label_ids)`` gathered like the Trainer gathers them
    (padded with -100 along the sequence axis), so the task metric functions
    see the same arrays from ONNX as from torch.
    """
    from sparse_transfer.tasks.base import pad_concat
    from tqdm.auto import tqdm

    label_keys = ("labels", "start_positions", "end_positions")
    input_names = getattr(forward, "input_names", None)
    gathered: dict[str, list[np.ndarray]] = {n: [] for n in output_names}
    labels: dict[str, list[np.ndarray]] = {}
    for start in tqdm(range(0, len(features), batch_size), desc=desc):
        rows = [features[i] for i in range(start, min(start + batch_size, len(features)))]
        batch = {k: np.asarray(v) for k, v in collator(rows).items()}
        batch_labels = {k: batch.pop(k) for k in label_keys if k in batch}
        if input_names is not None:
            batch = {k: v for k, v in batch.items() if k in input_names}
        batch = {k: v.astype(np.int64) for k, v in batch.items()}
        out = forward(batch)
        out = {n: np.asarray(out[n]) for n in output_names}
        if reduce is not None:
            out = reduce(out, batch_labels.get("labels"))
        for n in output_names:
            gathered[n].append(out[n])
        for k, v in batch_labels.items():
            labels.setdefault(k, []).append(v)
    outputs = {n: pad_concat(v) for n, v in gathered.items()}
    label_arrays = [pad_concat(labels[k]) for k in label_keys if k in labels]
    label_ids = (
        None
        if not label_arrays
        else label_arrays[0]
        if len(label_arrays) == 1
        else tuple(label_arrays)
    )
    if math.prod(outputs[output_names[0]].shape) == 0:
        raise DataError("no predictions were produced (empty evaluation set)")
    return outputs, label_ids
