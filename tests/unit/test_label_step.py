"""The pipeline's teacher-labels step: pass-through, the labelled training file, refusals."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from sparse_transfer.embedded.fixtures import make_tiny_bert
from sparse_transfer.errors import PipelineError
from sparse_transfer.pipeline.label_step import LABELLED_TRAIN, teacher_label_step
from sparse_transfer.pipeline.options import configure_run
from sparse_transfer.pipeline.settings import check_settings
from sparse_transfer.pipeline.steps import (
    DATA_SPEC,
    data_values,
    fetch_data_step,
    fetch_model_step,
)

TRAIN = [{"sentence": "a fine film", "label": 1}, {"sentence": "dull", "label": 0}]
VALIDATION = [{"sentence": "Never again", "label": 0}]
UNLABELED = ["what a ride", "NEVER  again", "a fine film", "so slow", "what a ride"]


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def _files(folder):
    return {p.name: p.read_bytes() for p in folder.iterdir()}


@pytest.fixture()
def dataset(tmp_path):
    train = _jsonl(tmp_path / "t.jsonl", TRAIN)
    validation = _jsonl(tmp_path / "v.jsonl", VALIDATION)
    fetch_data_step(tmp_path / "dataset", train_file=train, validation_file=validation,
                    task_name="sst2")  # fmt: skip
    return tmp_path / "dataset"


@pytest.fixture()
def unlabeled(tmp_path):
    return _jsonl(tmp_path / "u.jsonl", [{"sentence": t} for t in UNLABELED])


def test_without_an_unlabeled_file_the_dataset_passes_through(tmp_path, dataset):
    before = _files(dataset)
    spec = teacher_label_step(dataset, tmp_path / "no-teacher-needed", tmp_path / "out")
    assert _files(tmp_path / "out") == before and _files(dataset) == before
    assert spec == json.loads((dataset / DATA_SPEC).read_text())


def test_the_training_file_becomes_train_rows_plus_the_teachers_labels(
    tmp_path, dataset, unlabeled
):
    teacher = make_tiny_bert(tmp_path / "teacher", hidden_size=32, seed=3)
    before = _files(dataset)
    spec = teacher_label_step(dataset, teacher, tmp_path / "out", unlabeled_file=unlabeled,
                              max_seq_length=16)  # fmt: skip
    out = tmp_path / "out"
    rows = [json.loads(line) for line in (out / LABELLED_TRAIN).read_text().splitlines()]
    fresh = ["what a ride", "so slow"]  # training/validation texts (any case) and repeats dropped
    model = AutoModelForSequenceClassification.from_pretrained(str(teacher)).eval()
    tok = AutoTokenizer.from_pretrained(str(teacher))
    with torch.no_grad():
        ids = model(**tok(fresh, padding=True, return_tensors="pt")).logits.argmax(-1).tolist()
    assert rows == TRAIN + [{"sentence": t, "label": i} for t, i in zip(fresh, ids, strict=True)]
    assert sorted(_files(out)) == sorted([DATA_SPEC, LABELLED_TRAIN, "validation.jsonl"])
    assert _files(dataset) == before  # the fetched Dataset is never written
    assert spec["train_file"] == LABELLED_TRAIN and spec["unlabeled_file_source"] == unlabeled
    assert spec["teacher_labels"]["teacher_labelled_rows"] == 2
    assert data_values(out)["train_file"] == str(out / LABELLED_TRAIN)
    assert data_values(out)["validation_file"] == str(out / "validation.jsonl")


def test_labels_need_the_runs_teacher_and_a_training_file(tmp_path, dataset, unlabeled):
    placeholder = tmp_path / "teacher"
    fetch_model_step("disable", placeholder, kind="teacher")
    with pytest.raises(PipelineError, match="distill_teacher is disable"):
        teacher_label_step(dataset, placeholder, tmp_path / "out", unlabeled_file=unlabeled)
    assert not (tmp_path / "out").exists()
    hub = tmp_path / "hub"
    fetch_data_step(hub, dataset_name="imdb")
    teacher = make_tiny_bert(tmp_path / "real-teacher", hidden_size=32, seed=3)
    with pytest.raises(PipelineError, match="needs a train_file"):
        teacher_label_step(hub, teacher, tmp_path / "out2", unlabeled_file=unlabeled)


def test_configure_refuses_unlabeled_text_outside_text_classification_and_odd_files():
    with pytest.raises(PipelineError, match="text-classification runs, not token-classification"):
        configure_run("token-classification", advanced={"unlabeled_file": "s3://b/u.jsonl"},
                      pipeline="sparse_transfer")  # fmt: skip
    with pytest.raises(PipelineError, match=r"advanced\.unlabeled_file must name a .*'u\.txt'"):
        check_settings({"unlabeled_file": "u.txt"})
    with pytest.raises(PipelineError, match="unknown key 'unlabeled_file'"):
        configure_run("text-classification", advanced={"unlabeled_file": "u.jsonl"},
                      pipeline="dense_teacher")  # fmt: skip
    assert check_settings({"unlabeled_file": "s3://b/pool.parquet"})
