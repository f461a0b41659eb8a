"""The configure step's data check (issue 24, "Done means": a run whose data does not fit its
task fails at configure time, in one line naming the flag).

`pipeline.data_check.check_data_head` runs the task's own checks (`TaskSpec.prepare`, sample
mode) on the first 256 rows of each data file; these tests pin the exact one-line messages,
show that every task's good data passes, that only the head is read, and that the head of a
sorted file does not trip the checks that need every row.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sparse_transfer.embedded import fixtures
from sparse_transfer.errors import PipelineError
from sparse_transfer.pipeline.data_check import check_data_head
from sparse_transfer.pipeline.options import configure_run
from sparse_transfer.tasks.data import HEAD_BYTES, HEAD_ROWS, load_head

TEXT = "text-classification"


def _jsonl(directory: Path, name: str, rows: list[dict]) -> str:
    return str(fixtures.write_jsonl(rows, directory / name))


def _fails(task: str, **data) -> str:
    with pytest.raises(PipelineError) as info:
        check_data_head(task, **data)
    message = str(info.value)
    assert "\n" not in message
    return message


def _mlm_rows(n: int, seed: int = 0) -> list[dict]:
    return [{"text": r["sentence"]} for r in fixtures.sentiment_rows(n, seed)]


# task, rows, data flags (besides the files): what each task's good data looks like
GOOD = {
    "sst2": (TEXT, fixtures.sentiment_rows, {"task_name": "sst2"}),
    "multi_label": (TEXT, fixtures.multilabel_rows, {"task_name": "", "input_column_names": "text",
                    "label_column_name": "labels"}),
    "stsb": (TEXT, lambda n, seed=0: fixtures.pair_rows(n, seed, num_labels=1),
             {"task_name": "stsb"}),
    "custom_3_class": (TEXT, lambda n, seed=0: fixtures.pair_rows(n, seed, num_labels=3),
                       {"task_name": ""}),
    "ner": ("token-classification", fixtures.ner_rows, {"task_name": "sst2"}),
    "qa": ("question-answering", fixtures.squad_rows, {"task_name": "sst2"}),
    "mlm": ("masked-language-modeling", _mlm_rows, {"task_name": "sst2"}),
}  # fmt: skip


@pytest.mark.parametrize("case", list(GOOD))
def test_each_tasks_good_data_passes(tmp_path, case):
    task, rows, flags = GOOD[case]
    train = _jsonl(tmp_path, "train.jsonl", rows(32))
    validation = _jsonl(tmp_path, "validation.jsonl", rows(12, seed=1))
    assert check_data_head(task, train_file=train, validation_file=validation, **flags) is True


def test_multi_label_data_with_the_default_task_name_names_task_name(tmp_path):
    train = _jsonl(tmp_path, "train.jsonl", fixtures.multilabel_rows(32))
    validation = _jsonl(tmp_path, "validation.jsonl", fixtures.multilabel_rows(12, seed=1))
    assert _fails(TEXT, task_name="sst2", train_file=train, validation_file=validation) == (
        "task_name 'sst2' expects column 'sentence' with labels negative/positive; "
        f"train_file {train} has columns text, labels (set task_name '' for your own labels)"
    )
    # The columns named, the labels still sst2's: the labels are the complaint.
    message = _fails(TEXT, task_name="sst2", train_file=train, validation_file=validation,
                     input_column_names="text", label_column_name="labels")  # fmt: skip
    assert message == (
        "task_name 'sst2' expects column 'text' with labels negative/positive in column "
        f"'labels'; train_file {train} has label(s) 'complaint', 'person', 'place', 'praise' "
        "in column 'labels' (set task_name '' for your own labels)"
    )


def test_an_unknown_label_in_the_validation_file_names_that_file(tmp_path):
    train = _jsonl(tmp_path, "train.jsonl", fixtures.sentiment_rows(32))
    rows = fixtures.sentiment_rows(12, seed=1)
    rows = [{**r, "label": ["negative", "positive"][r["label"]]} for r in rows]
    rows[5]["label"] = "neutral"
    validation = _jsonl(tmp_path, "validation.jsonl", rows)
    assert _fails(TEXT, task_name="sst2", train_file=train, validation_file=validation) == (
        "task_name 'sst2' expects column 'sentence' with labels negative/positive; "
        f"validation_file {validation} has label(s) 'neutral' in column 'label' "
        "(set task_name '' for your own labels)"
    )


def test_a_missing_column_without_task_name_names_the_column_flags(tmp_path):
    train = _jsonl(tmp_path, "train.jsonl", fixtures.multilabel_rows(32))
    assert _fails(TEXT, task_name="", train_file=train) == (
        f"train_file {train}: missing column(s) 'label'; available columns: text, labels. "
        "Pass input_column_names / label_column_name to choose others."
    )
    assert _fails(TEXT, task_name="", train_file=train, label_column_name="topics") == (
        f"train_file {train}: missing column(s) 'topics'; available columns: text, labels. "
        "Pass input_column_names / label_column_name to choose others."
    )


def test_other_tasks_name_their_missing_columns(tmp_path):
    train = _jsonl(tmp_path, "train.jsonl", fixtures.sentiment_rows(16))
    assert _fails("question-answering", task_name="sst2", train_file=train) == (
        f"train_file {train}: missing column(s) 'question', 'context'; available columns: "
        "sentence, label. Pass input_column_names / label_column_name to choose others."
    )
    assert _fails("token-classification", train_file=train, label_column_name="tags") == (
        f"train_file {train}: missing column(s) 'tags'; available columns: sentence, label. "
        "Pass input_column_names / label_column_name to choose others."
    )
    mlm = _jsonl(tmp_path, "mlm.jsonl", _mlm_rows(16))
    assert _fails("masked-language-modeling", train_file=mlm, input_column_names="body") == (
        f"train_file {mlm}: missing column(s) 'body'; available columns: text. "
        "Pass input_column_names / label_column_name to choose others."
    )


def test_a_class_name_as_a_regression_score_is_refused(tmp_path):
    rows = fixtures.pair_rows(16, num_labels=1)
    rows[3]["label"] = "high"
    train = _jsonl(tmp_path, "train.jsonl", rows)
    assert _fails(TEXT, task_name="stsb", train_file=train) == (
        f"train_file {train}: row 4 of column 'label' holds 'high', but a regression label is "
        "a finite number"
    )


def test_a_qa_answer_not_in_its_context_is_refused(tmp_path):
    rows = fixtures.squad_rows(8)
    rows[2]["answers"] = {"text": ["nowhere"], "answer_start": [0]}
    train = _jsonl(tmp_path, "train.jsonl", rows)
    message = _fails("question-answering", train_file=train)
    assert message.startswith(f"train_file {train}: question ")
    assert message.endswith(": answer 'nowhere' is not at character 0 of column 'context'")


def test_a_null_value_names_the_row(tmp_path):
    rows = fixtures.sentiment_rows(16)
    rows[2]["sentence"] = None
    train = _jsonl(tmp_path, "train.jsonl", rows)
    assert _fails(TEXT, task_name="sst2", train_file=train) == (
        f"train_file {train}: row 3 has no value in column 'sentence' (missing or null); "
        "fix or drop that row"
    )


def test_missing_empty_and_unsupported_files(tmp_path):
    missing = str(tmp_path / "no-such.jsonl")
    assert _fails(TEXT, task_name="sst2", train_file=missing) == (
        f"train_file {missing} does not exist"
    )
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    assert _fails(TEXT, validation_file=str(empty)) == f"validation_file {empty} is empty (0 rows)"
    text = tmp_path / "train.txt"
    text.write_text("a sentence\n")
    assert _fails(TEXT, train_file=str(text)) == (
        f"train_file {text}: unsupported extension .txt; use one of .csv, .json, .jsonl, "
        ".parquet, .tsv"
    )


def test_an_unknown_task_name_is_named(tmp_path):
    train = _jsonl(tmp_path, "train.jsonl", fixtures.sentiment_rows(8))
    assert _fails(TEXT, task_name="sst3", train_file=train).startswith(
        "task_name 'sst3' is not a GLUE task; known: cola, mnli, mrpc, qnli, qqp, rte, sst2, "
        "stsb, wnli."
    )


def test_hub_glue_and_snapshot_data_are_not_looked_at_here(tmp_path):
    # No files: nothing to read without the network (checked when the data step loads it).
    assert check_data_head(TEXT, task_name="sst2") is False
    assert check_data_head("question-answering", dataset_name="squad") is False
    broken = str(tmp_path / "no-such.jsonl")
    assert check_data_head(TEXT, train_file=broken, dataset_snapshot_prefix="s3://b/p") is False


def test_the_head_of_a_sorted_file_does_not_trip_whole_data_checks(tmp_path):
    # 300 rows of one class, then the other: the head holds one class only, and the
    # validation file's first label never occurs in it. Both are fine for the whole file.
    rows = [{"text": f"bad {i}", "label": "neg"} for i in range(300)]
    rows += [{"text": f"good {i}", "label": "pos"} for i in range(300)]
    train = _jsonl(tmp_path, "train.jsonl", rows)
    validation = _jsonl(tmp_path, "validation.jsonl", rows[::-1][:20])
    assert check_data_head(TEXT, train_file=train, validation_file=validation) is True
    tags = [{"tokens": ["x"], "ner_tags": ["O"]}] * 300 + [{"tokens": ["y"], "ner_tags": ["B-PER"]}]
    ner_train = _jsonl(tmp_path, "ner_train.jsonl", tags)
    ner_validation = _jsonl(tmp_path, "ner_validation.jsonl", tags[::-1])
    assert check_data_head("token-classification", train_file=ner_train,
                           validation_file=ner_validation) is True  # fmt: skip


def test_only_the_first_rows_are_read(tmp_path):
    rows = fixtures.sentiment_rows(HEAD_ROWS + 10)
    lines = "".join(json.dumps(r) + "\n" for r in rows)
    path = tmp_path / "train.jsonl"
    with path.open("w") as handle:
        for _ in range(HEAD_BYTES // len(lines) + 1):  # more than a peek reads
            handle.write(lines)
        handle.write('{"sentence": "a truncated line", "lab')  # past HEAD_BYTES: never read
    assert path.stat().st_size > HEAD_BYTES
    head = load_head(str(path))
    assert head.to_list() == rows[:HEAD_ROWS]
    assert check_data_head(TEXT, task_name="sst2", train_file=str(path)) is True


def test_csv_tsv_parquet_and_json_arrays_are_read_as_the_data_step_reads_them(tmp_path):
    import pandas as pd

    rows = fixtures.multilabel_rows(20)
    frame = pd.DataFrame(fixtures.sentiment_rows(20))
    frame.to_csv(tmp_path / "train.csv", index=False)
    frame.to_csv(tmp_path / "train.tsv", index=False, sep="\t")
    frame.to_parquet(tmp_path / "train.parquet")
    (tmp_path / "array.json").write_text(json.dumps(rows))
    for name in ("train.csv", "train.tsv", "train.parquet"):
        head = load_head(str(tmp_path / name), rows=5)
        assert head.to_list() == fixtures.sentiment_rows(5), name
        assert check_data_head(TEXT, task_name="sst2", train_file=str(tmp_path / name))
    assert load_head(str(tmp_path / "array.json"), rows=3).to_list() == rows[:3]
    assert _fails(TEXT, task_name="sst2", train_file=str(tmp_path / "array.json")) == (
        "task_name 'sst2' expects column 'sentence' with labels negative/positive; "
        f"train_file {tmp_path / 'array.json'} has columns text, labels "
        "(set task_name '' for your own labels)"
    )


def test_configure_run_checks_the_data_after_the_flags(tmp_path):
    train = _jsonl(tmp_path, "train.jsonl", fixtures.multilabel_rows(16))
    data = {"task_name": "sst2", "train_file": train}
    with pytest.raises(PipelineError, match=r"^task_name 'sst2' expects column 'sentence'"):
        configure_run(TEXT, data=data)
    with pytest.raises(PipelineError, match="^bad training options:"):  # flags first
        configure_run(TEXT, data=data, save_strategy="hourly")
    assert configure_run(TEXT, data={**data, "task_name": "", "label_column_name": "labels"}) == {}


def test_the_component_hands_the_data_flags_to_the_check(tmp_path):
    pytest.importorskip("kfp")
    from components import configure_training

    train = _jsonl(tmp_path, "train.jsonl", fixtures.multilabel_rows(16))
    with pytest.raises(PipelineError, match=r"^task_name 'sst2' expects column 'sentence'"):
        configure_training.python_func(task=TEXT, task_name="sst2", train_file=train)
    options = configure_training.python_func(
        task=TEXT, task_name="", train_file=train, label_column_name="labels"
    )
    assert options["per_device_train_batch_size"] == 32


def test_the_run_forms_trainer_flags_reach_the_data_check(tmp_path):
    """Column flags usually arrive inside the run form's `trainer_flags` object: they win
    over the flat ones for the data check too, as they do for the data step."""
    train = _jsonl(tmp_path, "train.jsonl", fixtures.multilabel_rows(16))
    data = {"task_name": "", "train_file": train, "label_column_name": "label"}
    with pytest.raises(
        PipelineError,
        match=r"train_file .*: missing column\(s\) 'label'; available columns: text, labels\.",
    ):
        configure_run(TEXT, data=data)
    assert configure_run(TEXT, data=data, trainer_flags={"label_column_name": "labels"}) == {}


@pytest.mark.integration
def test_s3_data_is_peeked_with_one_ranged_read(s3_bucket, tmp_path):
    """Against the loopback S3 server (tests/s3_server.py): the same line, with the s3:// URI."""
    import boto3

    from sparse_transfer import storage

    s3 = boto3.client("s3")
    body = "".join(json.dumps(r) + "\n" for r in fixtures.multilabel_rows(2000))
    s3.put_object(Bucket=s3_bucket, Key="data/train.jsonl", Body=body.encode())
    s3.put_object(Bucket=s3_bucket, Key="data/empty.jsonl", Body=b"")
    uri = f"s3://{s3_bucket}/data/train.jsonl"
    data, complete = storage.read_head(uri, 1000)
    assert (data, complete) == (body.encode()[:1000], False)
    assert storage.read_head(uri, len(body) + 10) == (body.encode(), True)
    assert storage.read_head(f"s3://{s3_bucket}/data/empty.jsonl", 1000) == (b"", True)
    assert len(load_head(uri)) == HEAD_ROWS
    assert _fails(TEXT, task_name="sst2", train_file=uri) == (
        "task_name 'sst2' expects column 'sentence' with labels negative/positive; "
        f"train_file {uri} has columns text, labels (set task_name '' for your own labels)"
    )
    assert check_data_head(TEXT, train_file=uri, label_column_name="labels") is True
    missing = f"s3://{s3_bucket}/data/no-such.jsonl"
    assert _fails(TEXT, train_file=missing) == (
        f"train_file {missing} cannot be read: not found: {missing}"
    )


def test_a_csv_head_cut_inside_a_quoted_field_falls_back_to_the_whole_file(tmp_path):
    import pandas as pd

    rows = [{"sentence": f"line one {i}\nline two", "label": i % 2} for i in range(HEAD_ROWS + 44)]
    path = tmp_path / "train.csv"
    pd.DataFrame(rows).to_csv(path, index=False)  # two lines per record: the line cut splits one
    head = load_head(str(path))
    assert head.to_list() == rows[:HEAD_ROWS]
    assert check_data_head(TEXT, task_name="sst2", train_file=str(path)) is True


def test_rows_the_run_never_reads_are_never_refused(tmp_path):
    rows = fixtures.sentiment_rows(40)
    rows = [{**r, "label": ["negative", "positive"][r["label"]]} for r in rows]
    rows[20]["label"] = "neutral"  # row 21: past max_train_samples 10
    train = _jsonl(tmp_path, "train.jsonl", rows)
    data = {"task_name": "sst2", "train_file": train}
    assert configure_run(TEXT, data=data, max_train_samples=10) == {"max_train_samples": 10}
    with pytest.raises(PipelineError, match=r"has label\(s\) 'neutral' in column 'label'"):
        configure_run(TEXT, data=data)


def test_cli_train_checks_the_files_first_rows_before_fetching_any_model(tmp_path, capsys):
    from sparse_transfer.cli import main

    train = _jsonl(tmp_path, "train.jsonl", fixtures.multilabel_rows(16))
    argv = ["train", "text-classification", "--model_name_or_path", str(tmp_path / "no-model"),
            "--distill_teacher", "zoo:no/such/teacher", "--task_name", "sst2",
            "--train_file", train, "--output_dir", str(tmp_path / "out"), "--do_train"]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    (line,) = [x for x in err.splitlines() if x.startswith("sparse-transfer: error: ")]
    assert line == (
        f"sparse-transfer: error: {train}: missing column(s) 'sentence'; available columns: "
        "text, labels. Pass --input_column_names / --label_column_name to choose others."
    )
    assert not (tmp_path / "out").exists()
