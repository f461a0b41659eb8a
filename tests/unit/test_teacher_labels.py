"""`data teacher-label`: the teacher's own predictions, no known text, the file's label form."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from sparse_transfer.cli import main
from sparse_transfer.embedded.fixtures import make_tiny_bert
from sparse_transfer.errors import DataError
from sparse_transfer.tasks.teacher_labels import label_with_teacher


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def _read(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture()
def teacher(tmp_path):
    return make_tiny_bert(tmp_path / "teacher", hidden_size=32, seed=3)


def _teacher_says(teacher, texts):
    model = AutoModelForSequenceClassification.from_pretrained(str(teacher)).eval()
    tok = AutoTokenizer.from_pretrained(str(teacher))
    with torch.no_grad():
        ids = model(**tok(texts, padding=True, return_tensors="pt")).logits.argmax(-1)
    return [str(int(i)) for i in ids]  # placeholder names LABEL_i: the ids are the labels


def test_rows_are_the_train_rows_then_the_teachers_labels(tmp_path, teacher):
    train = _jsonl(tmp_path / "train.jsonl", [{"sentence": "a fine film", "label": 1},
                                              {"sentence": "dull", "label": 0}])  # fmt: skip
    val = _jsonl(tmp_path / "val.jsonl", [{"sentence": "Never again", "label": 0}])
    texts = ["A  fine film", "never again", "what a ride", "so slow", "what a ride", "bold"]
    unlabeled = _jsonl(tmp_path / "u.jsonl", [{"sentence": t, "extra": 1} for t in texts])
    out = tmp_path / "out" / "train_plus.jsonl"
    report = label_with_teacher(str(teacher), unlabeled, out, train_file=train,
                                validation_files=(val,))  # fmt: skip
    rows = _read(out)
    fresh = ["what a ride", "so slow", "bold"]  # known texts (any case/spacing) and repeats dropped
    names = _teacher_says(teacher, fresh)
    assert rows[:2] == _read(tmp_path / "train.jsonl")
    assert rows[2:] == [{"sentence": t, "label": int(n)} for t, n in zip(fresh, names, strict=True)]
    assert report["dropped_known_or_repeated"] == 3 and report["teacher_labelled_rows"] == 3
    assert sum(report["teacher_labels"].values()) == 3


def test_string_labels_stay_strings_and_int_labels_refuse_names(tmp_path, teacher):
    unlabeled = _jsonl(tmp_path / "u.jsonl", [{"text": "great"}, {"text": "awful"}])
    train = _jsonl(tmp_path / "t.jsonl", [{"text": "ok", "label": "1"}])
    out = tmp_path / "o.jsonl"
    label_with_teacher(str(teacher), unlabeled, out, train_file=train)
    assert all(isinstance(r["label"], str) for r in _read(out))
    config = json.loads((teacher / "config.json").read_text())
    config["id2label"] = {"0": "negative", "1": "positive"}
    config["label2id"] = {"negative": 0, "positive": 1}
    (teacher / "config.json").write_text(json.dumps(config))
    train_int = _jsonl(tmp_path / "ti.jsonl", [{"text": "ok", "label": 1}])
    with pytest.raises(DataError, match="labels are integers but the teacher's label"):
        label_with_teacher(str(teacher), unlabeled, tmp_path / "o2.jsonl", train_file=train_int)
    assert not (tmp_path / "o2.jsonl").exists()
    # a GLUE task's integers are its label ids: the named teacher writes the ids
    says = _teacher_says(teacher, ["great", "awful"])
    out3 = tmp_path / "o3.jsonl"
    code = main(["data", "teacher-label", unlabeled, "--teacher", str(teacher), "--train_file",
                 train_int, "--output", str(out3), "--task_name", "sst2"])  # fmt: skip
    assert code == 0 and [r["label"] for r in _read(out3)] == [1, *map(int, says)]
    flipped = ["positive", "negative"]  # names in another order: the positions follow them
    label_with_teacher(str(teacher), unlabeled, tmp_path / "o4.jsonl", train_file=train_int,
                       label_names=flipped)  # fmt: skip
    assert [r["label"] for r in _read(tmp_path / "o4.jsonl")][1:] == [1 - int(i) for i in says]


def test_bad_input_fails_in_one_line_and_writes_nothing(tmp_path, teacher, capsys):
    unlabeled = _jsonl(tmp_path / "u.jsonl", [{"text": "fine"}, {"text": " "}])
    existing = tmp_path / "exists.jsonl"
    existing.write_text("keep me\n")
    cases = [
        (["--output", str(existing)], "exists; choose a new file"),
        (["--output", str(tmp_path / "x.csv")], "write a .jsonl file"),
        (["--output", str(tmp_path / "x.jsonl")], "row 2 has no text in column 'text'"),
        (["--output", str(tmp_path / "x.jsonl"), "--batch_size", "0"], "--batch_size must be >= 1"),
        (["--output", str(tmp_path / "x.jsonl"), "--task_name", "stsb"], "not a GLUE classif"),
    ]
    for extra, message in cases:
        code = main(["data", "teacher-label", unlabeled, "--teacher", str(teacher), *extra])
        errors = [x for x in capsys.readouterr().err.splitlines() if "error:" in x]
        assert code == 2 and len(errors) == 1 and message in errors[0]
    assert existing.read_text() == "keep me\n" and not (tmp_path / "x.jsonl").exists()


def test_a_regression_teacher_is_refused(tmp_path):
    teacher = make_tiny_bert(tmp_path / "reg", hidden_size=32, num_labels=1)
    unlabeled = _jsonl(tmp_path / "u.jsonl", [{"sentence": "fine"}])
    with pytest.raises(DataError, match="single-label classifier"):
        label_with_teacher(str(teacher), unlabeled, tmp_path / "o.jsonl")


def test_files_with_different_input_columns_are_refused(tmp_path, teacher):
    unlabeled = _jsonl(tmp_path / "u.jsonl", [{"text": "great"}])
    train = _jsonl(tmp_path / "t.jsonl", [{"sentence": "ok", "label": 1}])
    with pytest.raises(DataError, match="no input column 'text'.*same input columns"):
        label_with_teacher(str(teacher), unlabeled, tmp_path / "o.jsonl", train_file=train)
    assert not (tmp_path / "o.jsonl").exists()
