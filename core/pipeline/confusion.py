"""The confusion matrix the evaluate step shows in the KFP UI (single-label classification).

`evaluate_main` reports scalar metrics only; the matrix needs every prediction,
so this module predicts the validation split again with the task's own data
pipeline (`sparse_transfer.tasks`): same files, same tokenisation, same
ONNX/torch forward helper as the evaluation, hence the same predictions.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from sparse_transfer.pipeline.metrics import confusion_matrix


def classification_confusion(
    task: str,
    model_dir: str | Path,
    data_argv: list[str],
    eval_args: Mapping[str, Any] | None = None,
) -> dict[str, Any] | None:
    """``{"labels": [...], "matrix": [[...]]}`` for single-label text classification, else None.

    Args:
        task: task name; other tasks (and multi-label / regression heads) give None.
        model_dir: trained model folder or ONNX deployment folder (``model.onnx``).
        data_argv: the data flags (`sparse_transfer.pipeline.steps.data_argv`).
        eval_args: ``max_seq_length``, ``per_device_eval_batch_size``, ``max_eval_samples``.
    """
    from sparse_transfer.tasks.registry import get_task

    spec = get_task(task)
    if spec.name != "text-classification":
        return None
    from sparse_transfer.tasks.args import DataArguments
    from sparse_transfer.tasks.data import load_raw_datasets
    from sparse_transfer.tasks.models import load_config, load_tokenizer
    from sparse_transfer.tasks.run import eval_splits, predict_numpy
    from sparse_transfer.tasks.text_classification import SINGLE
    from transformers import HfArgumentParser

    eval_args = dict(eval_args or {})
    batch_size = int(eval_args.pop("per_device_eval_batch_size", 32))
    argv = list(data_argv)
    for key in ("max_seq_length", "max_eval_samples"):
        if eval_args.get(key):
            argv += [f"--{key}", str(int(eval_args[key]))]  # KFP hands ints over as floats
    classes = [DataArguments] + ([spec.args_class] if spec.args_class else [])
    parsed = HfArgumentParser(classes).parse_args_into_dataclasses(args=argv)
    data_args, task_args = parsed[0], (parsed[1] if spec.args_class else None)
    raw, sources = load_raw_datasets(data_args, seed=42, glue_task=data_args.task_name)
    splits = eval_splits(raw)
    if not splits:
        return None
    prepared = spec.prepare(raw, sources, data_args, task_args)
    prepared.adopt_model_config(load_config(str(model_dir)), str(model_dir))
    if prepared.problem_type != SINGLE:
        return None
    tokenizer = load_tokenizer(str(model_dir))
    forward = _forward(Path(model_dir), spec.name, prepared, data_args)
    split = splits[0]
    prepared.active_split = split
    features = prepared.preprocess(split, tokenizer, train=False)
    outputs, labels = predict_numpy(
        forward,
        prepared.model_features(features),
        prepared.collator(tokenizer, return_tensors="np"),
        batch_size,
        spec.output_names,
        prepared.reduce_batch,
        desc=f"Predicting {split} for the confusion matrix",
    )
    predictions = np.argmax(outputs["logits"], axis=-1).reshape(-1)
    names = [str(name) for name in prepared.label_list]
    matrix = confusion_matrix(np.asarray(labels).reshape(-1).tolist(), predictions.tolist(), names)
    return {"labels": names, "matrix": matrix}


def _forward(model_dir: Path, task: str, prepared, data_args):
    """A numpy-in/numpy-out forward over the ONNX deployment or the PyTorch model."""
    if (model_dir / "model.onnx").exists():
        from sparse_transfer.export import OnnxModel

        data_args.pad_to_max_length = True  # exported graphs may have a fixed length
        return OnnxModel(model_dir)
    import torch
    from sparse_transfer.tasks.models import load_model

    model = load_model(str(model_dir), task, **prepared.config_overrides()).eval()

    def forward(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        with torch.no_grad():
            out = model(**{k: torch.from_numpy(v) for k, v in batch.items()})
        return {"logits": out.logits.float().numpy()}

    return forward
