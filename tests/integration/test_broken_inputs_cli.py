"""Broken model files and non-finite recipes end as one named error line, exit code 2.

Each case used to end in a traceback (SafetensorError, onnxruntime's InvalidProtobuf,
an out-of-range Gather when benchmark guessed a vocabulary without config.json) or,
for an infinite epoch count, in training that never made sense. Tiny model (hidden 32).
"""

from __future__ import annotations

import shutil

import pytest

from sparse_transfer.cli import main
from sparse_transfer.embedded import fixtures
from tests.unit.test_cli_errors import one_error_line

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    from sparse_transfer.export import export_onnx

    root = tmp_path_factory.mktemp("broken")
    model = fixtures.make_tiny_bert(root / "model", hidden_size=32)
    data = fixtures.write_jsonl(fixtures.sentiment_rows(12, seed=3), root / "data.jsonl")
    deployment = export_onnx(model, "text-classification", output=root / "deployment")

    truncated_model = root / "truncated-model"
    shutil.copytree(model, truncated_model)
    weights = truncated_model / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])

    truncated_onnx = root / "truncated-deployment"
    shutil.copytree(deployment, truncated_onnx)
    onnx = truncated_onnx / "model.onnx"
    onnx.write_bytes(onnx.read_bytes()[: onnx.stat().st_size // 2])

    no_config = root / "no-config-deployment"
    shutil.copytree(deployment, no_config)
    (no_config / "config.json").unlink()
    return {
        "root": root,
        "model": model,
        "data": data,
        "truncated_model": truncated_model,
        "truncated_onnx": truncated_onnx,
        "no_config": no_config,
    }


def evaluate_argv(files, model_path, out):
    return ["evaluate", "--model_path", str(model_path), "--output_dir", str(out),
            "--task", "text-classification", "--task_name", "sst2",
            "--validation_file", str(files["data"])]  # fmt: skip


def train_argv(files, model_path, out, *extra):
    return ["train", "text-classification", "--model_name_or_path", str(model_path),
            "--output_dir", str(out), "--task_name", "sst2", "--do_train",
            "--train_file", str(files["data"]), "--validation_file", str(files["data"]),
            "--max_steps", "1", "--per_device_train_batch_size", "4", *extra]  # fmt: skip


def test_truncated_safetensors_in_evaluate_and_train(files, tmp_path, capsys):
    bad = files["truncated_model"]
    expected = f"sparse-transfer: error: {bad}: cannot read model.safetensors ("
    assert main(evaluate_argv(files, bad, tmp_path / "eval")) == 2
    line = one_error_line(capsys.readouterr().err)
    assert line.startswith(expected) and "truncated or corrupted" in line, line
    assert main(train_argv(files, bad, tmp_path / "train")) == 2
    line = one_error_line(capsys.readouterr().err)
    assert line.startswith(expected) and "truncated or corrupted" in line, line


def test_truncated_onnx_in_evaluate_and_benchmark(files, tmp_path, capsys):
    bad = files["truncated_onnx"]
    expected = f"sparse-transfer: error: {bad / 'model.onnx'}: not a loadable ONNX model ("
    assert main(evaluate_argv(files, bad, tmp_path / "eval")) == 2
    line = one_error_line(capsys.readouterr().err)
    assert line.startswith(expected) and "export the deployment again" in line, line
    argv = ["benchmark", "--model_path", str(bad), "--iterations", "2", "--warmup", "1"]
    assert main(argv) == 2
    line = one_error_line(capsys.readouterr().err)
    assert line.startswith(expected), line


def test_benchmark_of_a_deployment_without_config_json(files, capsys):
    bad = files["no_config"]
    argv = ["benchmark", "--model_path", str(bad), "--iterations", "2", "--warmup", "1"]
    assert main(argv) == 2
    line = one_error_line(capsys.readouterr().err)
    assert line == (
        f"sparse-transfer: error: {bad}: no config.json; a deployment written by export-onnx "
        "has one (the benchmark needs its vocab_size)"
    )


@pytest.mark.parametrize("spelling", [".inf", ".Inf", "1e999"])
def test_infinite_num_epochs_in_a_recipe_stops_training_before_it_starts(
    files, tmp_path, capsys, spelling
):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        f"num_epochs: {spelling}\nmodifiers:\n  - !EpochRangeModifier\n"
        "      start_epoch: 0.0\n      end_epoch: eval(num_epochs)\n"
    )
    out = tmp_path / "out"
    assert main(train_argv(files, files["model"], out, "--recipe", str(recipe))) == 2
    err = capsys.readouterr().err
    assert one_error_line(err) == f"sparse-transfer: error: 2 problem(s) in recipe {recipe}:"
    assert f"  - {recipe}:1: variable 'num_epochs': value is infinity: only finite" in err
    assert f"  - {recipe}:5: EpochRangeModifier (modifiers[0]) field 'end_epoch'" in err
    assert not out.exists()


def test_infinity_in_recipe_args_stops_training_before_it_starts(files, tmp_path, capsys):
    from sparse_transfer.recipe import builtin_recipe_path

    out = tmp_path / "out"
    argv = train_argv(files, files["model"], out,
                      "--recipe", str(builtin_recipe_path("dense_teacher")),
                      "--recipe_args", '{"num_epochs": Infinity}')  # fmt: skip
    assert main(argv) == 2
    line = one_error_line(capsys.readouterr().err)
    assert line == (
        "sparse-transfer: error: recipe_args: Infinity is not a number JSON allows; only "
        "finite numbers are accepted"
    )
    assert not out.exists()
