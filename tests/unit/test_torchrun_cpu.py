"""Under torchrun, ranks come from the environment torchrun sets (WORLD_SIZE), not from what
the Trainer concluded: on a machine without CUDA the CLI asks for the CPU so the Trainer enters
multi-process mode, and a Trainer that still disagrees with torchrun is refused."""

from __future__ import annotations

import pytest

from sparse_transfer.cli.task_args import cpu_under_torchrun, launched_world_size, parse_train_args
from sparse_transfer.errors import DataError
from sparse_transfer.tasks.registry import get_task


def test_cpu_is_asked_for_only_under_torchrun_without_cuda(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert cpu_under_torchrun(["--output_dir", "o"], 2) == [
        "--output_dir",
        "o",
        "--use_cpu",
        "true",
    ]
    assert cpu_under_torchrun(["--output_dir", "o"], 1) == ["--output_dir", "o"]
    assert cpu_under_torchrun(["--use_cpu=false"], 2) == ["--use_cpu=false"]  # the user's choice
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert cpu_under_torchrun(["--output_dir", "o"], 2) == ["--output_dir", "o"]


def test_world_size_comes_from_torchrun(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert launched_world_size() == 4
    monkeypatch.delenv("WORLD_SIZE")
    assert launched_world_size() == 1
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(DataError, match="WORLD_SIZE='two' is not a number"):
        launched_world_size()


def test_a_trainer_that_disagrees_with_torchrun_is_refused(monkeypatch, tmp_path):
    """WORLD_SIZE=2 but no process group (and --use_cpu false): the Trainer would run alone."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("WORLD_SIZE", "2")
    for name in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    argv = ["--model_name_or_path", "m", "--output_dir", str(tmp_path), "--use_cpu", "false"]
    with pytest.raises(DataError, match=r"torchrun started 2 processes \(WORLD_SIZE\) but the "
                       r"Trainer runs 1"):  # fmt: skip
        parse_train_args(get_task("text-classification"), argv)
