"""`sparse-transfer recipe check`: resolved output, JSON form, and clear failures."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from sparse_transfer.cli import main
from sparse_transfer.recipe import builtin_recipe_path

pytestmark = pytest.mark.integration

SST2 = str(builtin_recipe_path("sst2_pruned90_quant"))


def test_check_json_via_subprocess():
    result = subprocess.run(
        [sys.executable, "-m", "sparse_transfer", "recipe", "check", SST2, "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["version"] == "1.1.0"
    assert data["variables"]["num_epochs"] == 13
    types = [m["type"] for m in data["modifiers"]]
    assert types == [
        "EpochRangeModifier",
        "LearningRateFunctionModifier",
        "QuantizationModifier",
        "DistillationModifier",
        "ConstantPruningModifier",
        "SetWeightDecayModifier",
    ]
    quant = data["modifiers"][2]
    assert quant["start_epoch"] == 8.0 and quant["disable_quantization_observer_epoch"] == 12.0
    assert quant["quantize_embeddings"] is True
    lr = data["modifiers"][1]
    assert (lr["init_lr"], lr["final_lr"], lr["end_epoch"], lr["lr_func"]) == (
        1.5e-4,
        0.0,
        13.0,
        "linear",
    )
    assert data["modifiers"][3]["hardness"] == 1.0 and data["modifiers"][3]["temperature"] == 2.0
    assert data["modifiers"][5]["weight_decay"] == 0.01


def test_check_json_with_recipe_args(capsys):
    args = json.dumps({"num_epochs": 1, "qat_start_epoch": 0.5, "observer_epoch": 0.9})
    assert main(["recipe", "check", SST2, "--recipe_args", args, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["modifiers"][0]["end_epoch"] == 1.0
    assert data["modifiers"][2]["start_epoch"] == 0.5
    assert data["modifiers"][2]["freeze_bn_stats_epoch"] == 0.9


def test_check_text_output_lists_every_field_and_variable(capsys):
    assert main(["recipe", "check", "dense_teacher"]) == 0
    out = capsys.readouterr().out
    assert "version 1.1.0" in out
    assert "  init_lr: 2e-05" in out  # a number, not the string "2e-5"
    assert "  - LearningRateFunctionModifier" in out
    for line in ("end_epoch: 2.0", 'lr_func: "linear"', "final_lr: 0.0", "update_frequency: -1.0"):
        assert line in out
    assert out.rstrip().endswith("OK")


def test_check_bad_recipe_exits_nonzero_with_location(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "num_epochs: 2\n"
        "modifiers:\n"
        "  - !EpochRangeModifier\n"
        "      end_epoch: eval(num_epoch)\n"
        "  - !QuantizationModifer\n"
        "      start_epoch: 1\n"
    )
    assert main(["recipe", "check", str(bad)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert f"{bad}:4: EpochRangeModifier (modifiers[0]) field 'end_epoch'" in captured.err
    assert "undefined variable 'num_epoch'" in captured.err
    assert f"{bad}:5: unknown modifier 'QuantizationModifer'" in captured.err
    assert "did you mean 'QuantizationModifier'" in captured.err
    assert "Traceback" not in captured.err


def test_check_unknown_recipe_arg_and_missing_file(capsys):
    assert main(["recipe", "check", SST2, "--recipe_args", '{"epochs": 1}']) == 2
    assert "'epochs' is not a variable" in capsys.readouterr().err
    assert main(["recipe", "check", "/nonexistent/recipe.yaml"]) == 2
    assert "recipe file not found" in capsys.readouterr().err


def test_check_markdown_recipe(tmp_path, capsys):
    md = tmp_path / "recipe.md"
    md.write_text(
        "---\nnum_epochs: 3\nmodifiers:\n  - !EpochRangeModifier\n"
        "      end_epoch: eval(num_epochs)\n---\n# Notes\n"
    )
    assert main(["recipe", "check", str(md), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data == {
        "version": None,
        "variables": {"num_epochs": 3},
        "modifiers": [{"type": "EpochRangeModifier", "start_epoch": 0.0, "end_epoch": 3.0}],
    }


def test_malicious_recipe_via_cli_creates_nothing(tmp_path, capsys):
    marker = tmp_path / "x"
    evil = tmp_path / "evil.yaml"
    evil.write_text(
        "modifiers:\n  - !EpochRangeModifier\n"
        f'      end_epoch: eval(__import__("os").system("touch {marker}"))\n'
    )
    assert main(["recipe", "check", str(evil)]) == 2
    assert "is not allowed" in capsys.readouterr().err
    assert not marker.exists()
    assert Path(evil).exists() and sorted(p.name for p in tmp_path.iterdir()) == ["evil.yaml"]
