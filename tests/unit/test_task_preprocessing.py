"""Task preprocessing: label alignment, QA windows and post-processing, label
mapping, bad input errors (file + column), truncation counting, argument handling."""

from __future__ import annotations

import json

import datasets
import numpy as np
import pytest

from sparse_transfer.cli.task_args import normalize_argv, parse_train_args
from sparse_transfer.embedded import fixtures
from sparse_transfer.errors import DataError
from sparse_transfer.tasks.args import DataArguments
from sparse_transfer.tasks.base import check_teacher_labels
from sparse_transfer.tasks.data import load_raw_datasets
from sparse_transfer.tasks.question_answering import (
    QuestionAnsweringArguments,
    postprocess_predictions,
)
from sparse_transfer.tasks.registry import get_task
from sparse_transfer.tasks.text_classification import TextClassificationArguments
from sparse_transfer.tasks.token_classification import (
    TokenClassificationArguments,
    align_labels,
    b_to_i_map,
)


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    from transformers import AutoTokenizer

    path = tmp_path_factory.mktemp("tok")
    fixtures.write_tokenizer(path)
    return AutoTokenizer.from_pretrained(str(path))


def _prepare(task: str, splits: dict[str, list[dict]], task_args=None, **data_kwargs):
    raw = datasets.DatasetDict({k: datasets.Dataset.from_list(v) for k, v in splits.items()})
    sources = {k: f"{k}.jsonl" for k in splits}
    spec = get_task(task)
    return spec.prepare(raw, sources, DataArguments(**data_kwargs), task_args or spec.args_class())


# -- token classification ----------------------------------------------------------------
def test_subword_label_alignment_first_subword_and_all_subwords():
    labels = ["O", "B-PER", "I-PER"]
    b_to_i = b_to_i_map(labels)
    assert b_to_i == [0, 2, 2]
    word_ids = [None, 0, 0, 1, None]
    assert align_labels(word_ids, [1, 0], False, b_to_i) == [-100, 1, -100, 0, -100]
    assert align_labels(word_ids, [1, 0], True, b_to_i) == [-100, 1, 2, 0, -100]


def test_token_task_aligns_real_subwords(tokenizer):
    rows = [{"tokens": ["actors", "paris"], "ner_tags": ["B-PER", "B-LOC"]}]
    for label_all, expected in (
        (False, ["B-PER", None, "B-LOC"]),
        (True, ["B-PER", "I-PER", "B-LOC"]),
    ):
        task = _prepare(
            "token-classification",
            {"train": rows + [{"tokens": ["alice"], "ner_tags": ["I-PER"]}]},
            TokenClassificationArguments(label_all_tokens=label_all),
        )
        feats = task.preprocess("train", tokenizer, train=True)
        assert tokenizer.convert_ids_to_tokens(feats[0]["input_ids"]) == [
            "[CLS]", "actor", "##s", "paris", "[SEP]",
        ]  # fmt: skip
        got = [None if i == -100 else task.label_list[i] for i in feats[0]["labels"][1:-1]]
        assert got == expected


def test_token_task_rejects_unseen_validation_tags():
    rows = fixtures.ner_rows(4)
    bad = [{"tokens": ["alice"], "ner_tags": ["B-MISC"]}]
    with pytest.raises(DataError, match=r"validation\.jsonl: column 'ner_tags'.*'B-MISC'"):
        _prepare("token-classification", {"train": rows, "validation": bad})


# -- question answering -------------------------------------------------------------------
def _qa_row(context: str, question: str, answer: str | None, qid="q0") -> dict:
    if answer is None:
        answers = {"text": [], "answer_start": []}
    else:
        answers = {"text": [answer], "answer_start": [context.index(answer)]}
    return {"id": qid, "context": context, "question": question, "answers": answers}


def test_qa_windows_offsets_and_answer_positions(tokenizer):
    context = " ".join(["the movie was good ."] * 6) + " alice works at acme in tokyo ."
    row = _qa_row(context, "where alice works ?", "tokyo")
    task = _prepare(
        "question-answering",
        {"validation": [row]},
        QuestionAnsweringArguments(doc_stride=6),
        max_seq_length=24,
    )
    feats = task.preprocess("validation", tokenizer, train=False)
    assert len(feats) > 1  # the context overflows into several windows
    assert set(feats["example_id"]) == {"q0"}
    found = 0
    for f in feats:
        s, e = f["start_positions"], f["end_positions"]
        if s == 0:
            assert e == 0  # answer not in this window -> [CLS]
            continue
        found += 1
        start_char, end_char = f["offset_mapping"][s][0], f["offset_mapping"][e][1]
        assert context[start_char:end_char] == "tokyo"
        assert tokenizer.decode(f["input_ids"][s : e + 1]) == "tokyo"
    assert found >= 1
    # Question tokens carry no offsets.
    question_len = len(tokenizer("where alice works ?")["input_ids"])
    assert all(o is None for o in feats[0]["offset_mapping"][:question_len])


def test_qa_postprocessing_picks_the_best_valid_span():
    context = "alice works at acme in tokyo ."
    example = {"id": "q", "context": context}
    # tokens: [CLS] q q [SEP] alice works at acme in tokyo . [SEP]
    offsets = [
        None,
        None,
        None,
        None,
        (0, 5),
        (6, 11),
        (12, 14),
        (15, 19),
        (20, 22),
        (23, 28),
        (29, 30),
        None,
    ]
    feature = {"example_id": "q", "offset_mapping": offsets}
    start = np.full(12, -5.0)
    end = np.full(12, -5.0)
    start[1] = end[2] = 9.0  # best raw scores fall on the question: not a valid span
    start[9] = end[9] = 4.0  # "tokyo"
    start[4] = 6.0  # "alice ... tokyo" scores 10 but is 6 tokens > max_answer_length 3
    answers = postprocess_predictions(
        [example], [feature], start[None], end[None], max_answer_length=3
    )
    assert answers == {"q": "tokyo"}
    # v2: a [CLS] score above the best span answers "no answer" ...
    start[0] = end[0] = 6.0
    v2 = postprocess_predictions(
        [example], [feature], start[None], end[None], version_2=True, max_answer_length=3
    )
    assert v2 == {"q": ""}
    # ... unless the threshold favours spans.
    v2 = postprocess_predictions(
        [example], [feature], start[None], end[None], version_2=True, max_answer_length=3,
        null_score_diff_threshold=5.0,
    )  # fmt: skip
    assert v2 == {"q": "tokyo"}


def test_qa_without_answers_needs_version_2_flag():
    rows = [_qa_row("alice works at acme .", "where bob works ?", None)]
    with pytest.raises(DataError, match=r"train\.jsonl: question 'q0' has no answer.*--version_2"):
        _prepare("question-answering", {"train": rows})
    task = _prepare(
        "question-answering",
        {"train": rows},
        QuestionAnsweringArguments(version_2_with_negative=True),
    )
    assert task.raw["train"][0]["answers"]["text"] == []


def test_qa_answer_start_must_match_context():
    row = _qa_row("alice works at acme .", "who works ?", "alice")
    row["answers"]["answer_start"] = [3]
    with pytest.raises(DataError, match=r"train\.jsonl.*'alice' is not at character 3"):
        _prepare("question-answering", {"train": [row]})


# -- text classification labels -----------------------------------------------------------
def test_custom_labels_are_sorted_from_train_and_mapped_identically(tokenizer):
    train = [{"text": "good", "label": lab} for lab in ["pos", "neg", "neutral", "pos"]]
    val = [{"text": "bad", "label": lab} for lab in ["neutral", "neg"]]
    task = _prepare("text-classification", {"train": train, "validation": val})
    assert task.label_list == ["neg", "neutral", "pos"]
    assert task.config_overrides()["id2label"] == {0: "neg", 1: "neutral", 2: "pos"}
    assert task.preprocess("train", tokenizer, True)["labels"] == [2, 0, 1, 2]
    assert task.preprocess("validation", tokenizer, False)["labels"] == [1, 0]


def test_glue_task_with_local_files_uses_glue_columns_and_label_names(tokenizer):
    rows = fixtures.pair_rows(6, first="premise", second="hypothesis", num_labels=3)
    task = _prepare("text-classification", {"train": rows}, task_name="mnli")
    assert task.input_columns == ["premise", "hypothesis"]
    assert task.label_list == ["entailment", "neutral", "contradiction"]
    feats = task.preprocess("train", tokenizer, True)
    assert feats["labels"] == [r["label"] for r in rows]
    assert set(feats[0]["token_type_ids"]) == {0, 1}  # a sentence pair


def test_unseen_validation_label_names_file_and_column():
    train = [{"text": "a", "label": "x"}, {"text": "b", "label": "y"}]
    val = [{"text": "c", "label": "z"}]
    with pytest.raises(DataError, match=r"validation\.jsonl: column 'label' has label\(s\) 'z'"):
        _prepare("text-classification", {"train": train, "validation": val})


def test_multi_label_lists_become_multi_hot(tokenizer):
    rows = [{"text": "good", "labels": ["b", "a"]}, {"text": "bad", "labels": ["c"]}]
    task = _prepare(
        "text-classification",
        {"train": rows},
        label_column_name="labels",
        input_column_names="text",
    )
    assert task.problem_type == "multi_label_classification"
    assert task.label_list == ["a", "b", "c"]
    assert task.preprocess("train", tokenizer, True)["labels"] == [[1.0, 1.0, 0.0], [0.0, 0.0, 1.0]]


def test_float_labels_are_regression(tokenizer):
    rows = fixtures.pair_rows(4, num_labels=1)
    task = _prepare("text-classification", {"train": rows}, task_name="stsb")
    assert task.config_overrides() == {"num_labels": 1, "problem_type": "regression"}
    assert task.preprocess("train", tokenizer, True)["labels"] == pytest.approx(
        [r["label"] for r in rows]
    )


def test_missing_column_names_file_and_column(tmp_path):
    path = fixtures.write_jsonl([{"sentence": "good", "label": 1}], tmp_path / "train.jsonl")
    raw, sources = load_raw_datasets(DataArguments(train_file=str(path)))
    spec = get_task("text-classification")
    with pytest.raises(
        DataError, match=r"train\.jsonl: missing column\(s\) 'question1'.*available"
    ):
        spec.prepare(raw, sources, DataArguments(task_name="qqp"), TextClassificationArguments())
    with pytest.raises(DataError, match=r"train\.jsonl: missing column\(s\) 'stars'"):
        spec.prepare(
            raw, sources, DataArguments(label_column_name="stars"), TextClassificationArguments()
        )


def test_empty_and_unsupported_files_are_rejected(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(DataError, match=r"empty\.jsonl is empty"):
        load_raw_datasets(DataArguments(train_file=str(empty)))
    header_only = tmp_path / "header.csv"
    header_only.write_text("sentence,label\n")
    with pytest.raises(DataError, match=r"header\.csv"):
        load_raw_datasets(DataArguments(train_file=str(header_only)))
    with pytest.raises(DataError, match=r"unsupported extension \.txt"):
        (tmp_path / "x.txt").write_text("a")
        load_raw_datasets(DataArguments(train_file=str(tmp_path / "x.txt")))


def test_csv_and_parquet_files_load(tmp_path):
    import pandas as pd

    rows = fixtures.sentiment_rows(10)
    pd.DataFrame(rows).to_csv(tmp_path / "t.csv", index=False)
    pd.DataFrame(rows).to_parquet(tmp_path / "t.parquet")
    for name in ("t.csv", "t.parquet"):
        raw, _ = load_raw_datasets(
            DataArguments(train_file=str(tmp_path / name), validation_ratio=0.2), seed=1
        )
        assert len(raw["train"]) == 8 and len(raw["validation"]) == 2


def test_validation_ratio_split_is_seeded(tmp_path):
    path = fixtures.write_jsonl(fixtures.sentiment_rows(20), tmp_path / "t.jsonl")
    args = DataArguments(train_file=str(path), validation_ratio=0.25)
    a, _ = load_raw_datasets(args, seed=3)
    b, _ = load_raw_datasets(args, seed=3)
    assert a["validation"]["sentence"] == b["validation"]["sentence"] and len(a["validation"]) == 5


def test_head_size_mismatch_is_an_error():
    from transformers import BertConfig

    rows = [{"text": "a", "label": lab} for lab in "xyz"]
    task = _prepare("text-classification", {"train": rows})
    config = BertConfig(num_labels=2, architectures=["BertForSequenceClassification"])
    with pytest.raises(DataError, match=r"head for 2 labels but train\.jsonl column 'label' has 3"):
        task.adopt_model_config(config, "model-dir")


def test_model_label_order_is_kept_when_names_match():
    from transformers import BertConfig

    rows = [{"text": "a", "label": lab} for lab in ("neg", "pos")]
    task = _prepare("text-classification", {"train": rows})
    config = BertConfig(
        num_labels=2,
        architectures=["BertForSequenceClassification"],
        id2label={0: "POS", 1: "NEG"},
        label2id={"POS": 0, "NEG": 1},
    )
    task.adopt_model_config(config, "model-dir")
    assert task.label_list == ["pos", "neg"]


def test_teacher_with_a_different_label_order_is_an_error():
    from transformers import BertConfig

    student = BertConfig(num_labels=2, id2label={0: "neg", 1: "pos"})
    teacher = BertConfig(num_labels=2, id2label={0: "pos", 1: "neg"})
    with pytest.raises(DataError, match="orders its labels"):
        check_teacher_labels(student, teacher, "teacher-dir")
    check_teacher_labels(student, BertConfig(num_labels=2, id2label={0: "neg", 1: "pos"}), "t")
    with pytest.raises(DataError, match="3 labels but the student has 2"):
        check_teacher_labels(student, BertConfig(num_labels=3), "t")


def test_texts_longer_than_max_seq_length_are_truncated_and_counted(tokenizer):
    rows = [{"sentence": "good " * n, "label": n % 2} for n in (2, 20, 30, 3)]
    task = _prepare("text-classification", {"train": rows}, max_seq_length=10)
    feats = task.preprocess("train", tokenizer, True)
    assert task.truncated == {"train": 2}
    assert max(len(ids) for ids in feats["input_ids"]) == 10


# -- arguments ---------------------------------------------------------------------------
def test_legacy_flags_are_translated():
    argv = ["--evaluation_strategy", "epoch", "--overwrite_output_dir", "--no_cuda", "--seed", "1"]
    assert normalize_argv(argv) == ["--eval_strategy", "epoch", "--use_cpu", "--seed", "1"]
    assert normalize_argv(["--evaluation_strategy=steps"]) == ["--eval_strategy=steps"]


def test_fp16_on_cpu_is_disabled_not_fatal():
    import torch

    from sparse_transfer.tasks.device import fit_to_device

    spec = get_task("text-classification")
    argv = [
        "--output_dir",
        "o",
        "--model_name_or_path",
        "m",
        "--fp16",
        "--evaluation_strategy",
        "epoch",
    ]
    _, _, _, training = parse_train_args(spec, argv)
    assert training.eval_strategy == "epoch"
    assert fit_to_device(training).fp16 is torch.cuda.is_available()


def test_unknown_flags_and_task_flags_of_other_tasks_are_rejected():
    spec = get_task("text-classification")
    with pytest.raises(DataError, match="--doc_stride"):
        parse_train_args(
            spec, ["--output_dir", "o", "--model_name_or_path", "m", "--doc_stride", "3"]
        )


def test_bad_data_cli_error_exits_2_and_leaves_no_output(tmp_path, capsys):
    from sparse_transfer.cli import main

    model = fixtures.make_tiny_bert(tmp_path / "m", hidden_size=32)
    train = fixtures.write_jsonl([{"text": "a", "label": "x"}], tmp_path / "train.jsonl")
    out = tmp_path / "out"
    argv = ["train", "text-classification", "--output_dir", str(out), "--model_name_or_path", str(model),
            "--train_file", str(train), "--input_column_names", "sentence", "--do_train"]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "train.jsonl: missing column(s) 'sentence'" in err and "Traceback" not in err
    assert not out.exists()
    json.dumps(err)
