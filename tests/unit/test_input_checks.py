"""Inputs checked, not guessed (issue 13): non-finite training, missing tokenizer files,
rows without an input value, null labels, one-class training sets.

Each case used to pass silently (exit 0, a NaN or all-[UNK] model) or crash with a
KeyError; now each is a one-line error naming what is wrong, and nothing is written.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from sparse_transfer.cli import main
from sparse_transfer.embedded import fixtures
from sparse_transfer.errors import DataError, NonFiniteError
from sparse_transfer.training.finite import check_weights, non_finite_weights
from tests.unit._train_utils import make_trainer, tiny_dataset, tiny_model


def _corrupt_weights(model_dir: Path) -> None:
    """Overwrites bytes in the middle of model.safetensors with 0xFF (a float32 NaN pattern).

    The file still parses (safetensors keeps no checksum), as after a bad copy.
    """
    path = model_dir / "model.safetensors"
    data = bytearray(path.read_bytes())
    header = 8 + int.from_bytes(data[:8], "little")
    middle = header + (len(data) - header) // 2
    data[middle : middle + 4096] = b"\xff" * 4096
    path.write_bytes(bytes(data))


def _train_argv(model: Path, train: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "text-classification", "--output_dir", str(out),
            "--model_name_or_path", str(model), "--train_file", str(train), "--do_train",
            "--max_steps", "2", "--per_device_train_batch_size", "4", "--report_to", "none",
            "--max_seq_length", "16", *extra]  # fmt: skip


# -- non-finite training -------------------------------------------------------------------


def test_infinite_learning_rate_stops_at_the_first_non_finite_loss(tmp_path):
    model, tokenizer = tiny_model(tmp_path)
    trainer = make_trainer(tmp_path, model, tiny_dataset(tokenizer, 16), learning_rate=float("inf"))
    with pytest.raises(NonFiniteError, match=r"training stopped at step 2: the loss is nan"):
        trainer.train()  # step 1's loss is finite; its update makes every weight NaN
    assert non_finite_weights(model)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_a_last_step_that_breaks_the_weights_is_caught_at_train_end(tmp_path):
    model, tokenizer = tiny_model(tmp_path)
    trainer = make_trainer(
        tmp_path, model, tiny_dataset(tokenizer, 8), learning_rate=float("inf"), max_steps=1
    )
    with pytest.raises(NonFiniteError, match=r"step 1: \d+ weight tensor\(s\) hold NaN"):
        trainer.train()
    with pytest.raises(NonFiniteError, match="saving the model"):
        trainer.save_model(str(tmp_path / "saved"))
    assert not (tmp_path / "saved" / "model.safetensors").exists()


def test_check_weights_names_the_parameter():
    layer = torch.nn.Linear(2, 2)
    check_weights(layer, "ok")
    with torch.no_grad():
        layer.bias[0] = float("inf")
    assert non_finite_weights(layer) == {"bias": 1}
    with pytest.raises(NonFiniteError, match=r"here: 1 weight tensor\(s\).*bias \(1 values\)"):
        check_weights(layer, "here")


def test_corrupted_weights_file_is_an_error_and_nothing_is_published(tmp_path, capsys):
    model = fixtures.make_tiny_bert(tmp_path / "m", hidden_size=32)
    _corrupt_weights(model)
    train = fixtures.write_jsonl(fixtures.sentiment_rows(8), tmp_path / "train.jsonl")
    out = tmp_path / "out"
    assert main(_train_argv(model, train, out)) == 2
    assert "the loss is nan" in capsys.readouterr().err
    assert not out.exists()
    assert not (tmp_path / ".out.partial" / "model.safetensors").exists()
    deployment = tmp_path / "deployment"
    argv = ["export-onnx", "--model_path", str(model), "--task", "text-classification",
            "--output", str(deployment)]  # fmt: skip
    assert main(argv) == 2
    assert "hold NaN or infinite values" in capsys.readouterr().err
    assert not (deployment / "model.onnx").exists()


# -- tokenizer files -------------------------------------------------------------------------


def test_model_folder_without_tokenizer_files_is_an_error(tmp_path, capsys):
    model = fixtures.make_tiny_bert(tmp_path / "m", hidden_size=32)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        (model / name).unlink(missing_ok=True)
    rows = fixtures.sentiment_rows(8)
    train = fixtures.write_jsonl(rows, tmp_path / "train.jsonl")
    out = tmp_path / "out"
    assert main(_train_argv(model, train, out)) == 2
    assert "has no tokenizer files" in capsys.readouterr().err
    assert not out.exists()
    argv = ["evaluate", "--model_path", str(model), "--task", "text-classification",
            "--validation_file", str(train), "--output_dir", str(tmp_path / "eval")]  # fmt: skip
    assert main(argv) == 2
    assert "has no tokenizer files" in capsys.readouterr().err


# -- data rows ----------------------------------------------------------------------------


def _rows_file(tmp_path: Path, rows: list[dict]) -> Path:
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _prepare(path: Path, **task_kwargs):
    from sparse_transfer.tasks.args import DataArguments
    from sparse_transfer.tasks.data import load_raw_datasets
    from sparse_transfer.tasks.registry import get_task

    spec = get_task("text-classification")
    data_args = DataArguments(train_file=str(path))
    raw, sources = load_raw_datasets(data_args)
    return spec.prepare(raw, sources, data_args, spec.args_class(**task_kwargs))


def test_row_without_the_input_column_names_file_row_and_column(tmp_path):
    rows = [{"sentence": "good film", "label": 1}, {"sentence": "bad film", "label": 0},
            {"label": 1}]  # fmt: skip
    path = _rows_file(tmp_path, rows)
    with pytest.raises(DataError, match=rf"{path}: row 3 has no value in column 'sentence'"):
        _prepare(path)


def test_null_label_names_file_row_and_column(tmp_path):
    rows = [{"sentence": "good film", "label": 1}, {"sentence": "bad", "label": None},
            {"sentence": "bad film", "label": 0}]  # fmt: skip
    path = _rows_file(tmp_path, rows)
    with pytest.raises(DataError, match=rf"{path}: row 2 has no value in column 'label'"):
        _prepare(path)


def test_single_class_training_set_needs_an_explicit_flag(tmp_path):
    rows = [{"sentence": f"film {i}", "label": "pos"} for i in range(4)]
    path = _rows_file(tmp_path, rows)
    with pytest.raises(DataError, match=r"'label' holds one class only \('pos'\).*--allow_single"):
        _prepare(path)
    prepared = _prepare(path, allow_single_class=True)
    assert prepared.label_list == ["pos"]


def test_null_tokens_in_token_classification_are_an_error(tmp_path):
    from sparse_transfer.tasks.args import DataArguments
    from sparse_transfer.tasks.data import load_raw_datasets
    from sparse_transfer.tasks.registry import get_task

    rows = fixtures.ner_rows(3)
    rows[1]["tokens"] = None
    path = _rows_file(tmp_path, rows)
    spec = get_task("token-classification")
    data_args = DataArguments(train_file=str(path))
    raw, sources = load_raw_datasets(data_args)
    with pytest.raises(DataError, match=r"row 2 has no value in column 'tokens'"):
        spec.prepare(raw, sources, data_args, spec.args_class())
