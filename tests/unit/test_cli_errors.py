"""Bad input ends as one line, ``sparse-transfer: error: ...``, exit code 2; ``--debug`` adds the stack.

The model-file cases (truncated weights, truncated ONNX, missing config.json) are in
tests/integration/test_broken_inputs_cli.py; these need no model.
"""

from __future__ import annotations

import pytest

from sparse_transfer.cli import main


def one_error_line(err: str) -> str:
    """The single error line of stderr (log lines may precede it); never a traceback."""
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("sparse-transfer: error: ")]
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture
def good_config(tmp_path):
    path = tmp_path / "ok.yaml"
    path.write_text("pipeline: sparse_transfer\n")
    return path


def test_yaml_error_in_set_is_one_line_naming_the_override(good_config, capsys):
    assert main(["pipeline", "run", "--local", str(good_config), "--set", "max_seq_length=[1"]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert line.startswith(
        "sparse-transfer: error: --set max_seq_length: invalid YAML: line 1, column 3:"
    ), line


@pytest.mark.parametrize("value", [".nan", ".inf", "-.inf"])
def test_non_finite_set_value_is_refused(good_config, capsys, value):
    argv = ["pipeline", "run", "--local", str(good_config), "--set", f"min_metric={value}"]
    assert main(argv) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "overrides: parameter 'min_metric' is " in line and "only finite numbers" in line


def test_run_config_that_is_a_directory_is_one_line(tmp_path, capsys):
    assert main(["pipeline", "run", "--local", str(tmp_path)]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert line == f"sparse-transfer: error: run config {tmp_path} is a directory, not a YAML file"


@pytest.mark.parametrize(
    ("flag", "value", "shown"),
    [
        ("--learning_rate", "nan", "NaN"),
        ("--num_train_epochs", "inf", "infinity"),
        ("--max_grad_norm", "nan", "NaN"),
        ("--weight_decay", "-inf", "-infinity"),
    ],
)
def test_non_finite_training_flag_is_refused_before_anything_loads(
    tmp_path, capsys, flag, value, shown
):
    argv = ["train", "text-classification", "--model_name_or_path", str(tmp_path / "no-model"),
            "--output_dir", str(tmp_path / "out"), "--do_train", f"{flag}={value}"]  # fmt: skip
    assert main(argv) == 2
    line = one_error_line(capsys.readouterr().err)
    assert line == (
        f"sparse-transfer: error: {flag} is {shown}: only finite numbers are allowed "
        "(no NaN/infinity)"
    )
    assert not (tmp_path / "out").exists()


def test_debug_flag_and_environment_variable_print_the_stack(tmp_path, capsys, monkeypatch):
    bad = tmp_path / "bad.yaml"
    bad.write_text("num_epochs: .inf\n")
    message = (
        f"sparse-transfer: error: {bad}:1: variable 'num_epochs': value is infinity: only "
        "finite numbers are allowed (no NaN/infinity)\n"
    )
    monkeypatch.delenv("SPARSE_TRANSFER_DEBUG", raising=False)
    assert main(["recipe", "check", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err == message
    assert main(["--debug", "recipe", "check", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "RecipeProblems" in err
    assert err.endswith(message)
    monkeypatch.setenv("SPARSE_TRANSFER_DEBUG", "1")
    assert main(["recipe", "check", str(bad)]) == 2
    assert "Traceback (most recent call last)" in capsys.readouterr().err
