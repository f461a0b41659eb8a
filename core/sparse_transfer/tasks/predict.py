"""Predictions outside the Trainer: a numpy forward over features (ONNX), and --do_predict rows."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np

from sparse_transfer import storage
from sparse_transfer.errors import DataError
from sparse_transfer.tasks.outputs import json_default

logger = logging.getLogger(__name__)


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
    from tqdm.auto import tqdm

    from sparse_transfer.tasks.base import pad_concat

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


def write_test_predictions(trainer, spec, prepared, features, out_dir: Path) -> None:
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
    text = "".join(json.dumps(row, default=json_default) + "\n" for row in rows)
    storage.write_bytes_atomic(path, text.encode())
    logger.info("wrote %d predictions to %s", len(rows), path)
