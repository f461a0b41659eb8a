"""`sparse-transfer pipeline ...`: checked-in run configs are valid; bad ones fail before anything runs."""

from pathlib import Path

import pytest

from pipelines.client import known_parameters, read_config
from sparse_transfer.cli import main

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "pipelines" / "configs").glob("*.yaml"))


def test_there_are_run_configs():
    assert {p.name for p in CONFIGS} >= {"embedded-default.yaml", "scheduled-retraining.yaml"}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_checked_in_config_is_valid(path):
    config = read_config(path)
    assert path.read_text().startswith("# sparse-transfer pipeline ")  # says how to run it
    assert set(config.parameters) <= set(known_parameters()[config.pipeline])


def test_run_local_with_unknown_key_exits_2_naming_it(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("pipeline: sparse_transfer\nparameters:\n  distill_teachr: disable\n")
    assert main(["pipeline", "run", "--local", str(bad)]) == 2
    err = capsys.readouterr().err
    assert (
        f"{bad}: unknown parameter 'distill_teachr'" in err
        and "did you mean 'distill_teacher'" in err
    )
    assert "Traceback" not in err


def test_set_override_is_validated_too(tmp_path, capsys):
    good = tmp_path / "ok.yaml"
    good.write_text("pipeline: sparse_transfer\n")
    assert main(["pipeline", "run", "--local", str(good), "--set", "max_seq_length=abc"]) == 2
    assert "'max_seq_length' must be int" in capsys.readouterr().err


def test_run_needs_local_or_host(tmp_path, capsys):
    good = tmp_path / "ok.yaml"
    good.write_text("pipeline: sparse_transfer\n")
    assert main(["pipeline", "run", str(good)]) == 2
    assert "--local" in capsys.readouterr().err


def test_compile_writes_every_spec(tmp_path, capsys):
    assert main(["pipeline", "compile", "--output-dir", str(tmp_path), "--no-chart-copy"]) == 0
    assert sorted(p.name for p in tmp_path.glob("*.yaml")) == [
        "dense_teacher_pipeline.yaml",
        "frontier_pipeline.yaml",
        "sparse_transfer_pipeline.yaml",
        "sparse_upstream_pipeline.yaml",
    ]
    assert "wrote" in capsys.readouterr().out
