"""Outputs are never destructive, reading never writes (issue 13 items 1, 2, 3, 10, 12).

`train --output_dir` and `export-onnx --output` replace only what they made
(with `--overwrite_output_dir` / `--overwrite`), never a folder of user files,
a file, the working directory, the input or a parent of it; a crashed run's
staging folder is not published by the next run; `evaluate` and `pull` of a
zoo entry leave its files and manifest byte-identical.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from sparse_transfer import storage, zoo
from sparse_transfer.cli import main
from sparse_transfer.embedded import fixtures

pytestmark = pytest.mark.integration

LABELS = {0: "negative", 1: "positive"}


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return fixtures.make_tiny_bert(
        tmp_path_factory.mktemp("m") / "model", hidden_size=32, id2label=LABELS
    )


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("data")
    rows = fixtures.sentiment_rows(24)
    return (
        fixtures.write_jsonl(rows[:16], root / "train.jsonl"),
        fixtures.write_jsonl(rows[16:], root / "validation.jsonl"),
    )


def _train(model: Path, data, out, *extra: str) -> list[str]:
    return ["train", "text-classification", "--output_dir", str(out),
            "--model_name_or_path", str(model), "--train_file", str(data[0]),
            "--validation_file", str(data[1]), "--max_seq_length", "32", "--max_steps", "2",
            "--do_train", "--report_to", "none", *extra]  # fmt: skip


def _tree(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()
    }


def _users_project(root: Path) -> Path:
    (root / "src").mkdir(parents=True)
    (root / "src" / "main.py").write_text("print('my work')\n")
    (root / "README.md").write_text("# mine\n")
    return root


def _dead_pid() -> int:
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    return int(done.stdout)


# -- train --------------------------------------------------------------------------------
def test_train_refuses_folders_it_did_not_make(model, data, tmp_path, monkeypatch, capsys):
    project = _users_project(tmp_path / "project")
    before = _tree(project)
    for extra in ((), ("--overwrite_output_dir",)):
        assert main(_train(model, data, project, *extra)) == 2
        assert "not a sparse-transfer training output" in capsys.readouterr().err
    monkeypatch.chdir(project)
    assert main(_train(model, data, ".", "--overwrite_output_dir")) == 2
    assert "working directory" in capsys.readouterr().err
    assert main(_train(model, data, model, "--overwrite_output_dir")) == 2  # the input itself
    assert "is the input" in capsys.readouterr().err
    assert _tree(project) == before and sorted(p.name for p in tmp_path.iterdir()) == ["project"]
    notes = tmp_path / "notes.txt"
    notes.write_text("keep")
    assert main(_train(model, data, notes)) == 2
    assert notes.read_text() == "keep"


def test_train_replaces_its_own_output_only_with_the_flag(model, data, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(_train(model, data, out)) == 0
    first = json.loads((out / "run_summary.json").read_text())
    assert first["output_dir"] == str(out)
    assert not (out / ".sparse-transfer-staging").exists()
    assert main(_train(model, data, out)) == 2
    assert "pass --overwrite_output_dir" in capsys.readouterr().err
    (out / "note.txt").write_text("stale")
    assert main(_train(model, data, out, "--overwrite_output_dir", "true")) == 0
    assert not (out / "note.txt").exists() and (out / "config.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no staging or trash left


def test_a_crashed_runs_leftovers_are_not_published(model, data, tmp_path, capsys):
    out = tmp_path / "out"
    crashed = tmp_path / ".out.partial"
    (crashed / "checkpoint-99").mkdir(parents=True)
    (crashed / "checkpoint-99" / "trainer_state.json").write_text("{}")
    (crashed / "stale.bin").write_bytes(b"x")
    (crashed / ".sparse-transfer-staging").write_text(
        json.dumps({"pid": _dead_pid(), "host": os.uname().nodename})
    )
    assert main(_train(model, data, out, "--save_strategy", "no")) == 0
    assert not (out / "checkpoint-99").exists() and not (out / "stale.bin").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    # --resume_from_checkpoint true: a clear error without a checkpoint ...
    again = tmp_path / "again"
    assert main(_train(model, data, again, "--resume_from_checkpoint", "true")) == 2
    assert "no checkpoint-* folder" in capsys.readouterr().err
    # ... and it continues from the last checkpoint of the published run
    argv = _train(model, data, out, "--save_steps", "1", "--overwrite_output_dir")
    assert main(argv) == 0 and (out / "checkpoint-2").is_dir()
    argv = _train(model, data, out, "--overwrite_output_dir", "--resume_from_checkpoint", "true")
    argv[argv.index("--max_steps") + 1] = "3"
    assert main(argv) == 0
    state = json.loads((out / "checkpoint-3" / "trainer_state.json").read_text())
    assert state["global_step"] == 3


# -- export -------------------------------------------------------------------------------
def _export(model: Path, out, *extra: str) -> list[str]:
    return ["export-onnx", "--model_path", str(model), "--task", "text-classification",
            "--output", str(out), "--sequence_length", "16", *extra]  # fmt: skip


def test_export_refuses_what_it_did_not_make(model, tmp_path, monkeypatch, capsys):
    project = _users_project(tmp_path / "project")
    before, model_before = _tree(project), _tree(model)
    for extra in ((), ("--overwrite",)):
        assert main(_export(model, project, *extra)) == 2
        assert "not a sparse-transfer deployment" in capsys.readouterr().err
    for target in (model, model.parent):
        assert main(_export(model, target, "--overwrite")) == 2
        assert "is the input" in capsys.readouterr().err
    notes = tmp_path / "notes.txt"
    notes.write_text("keep")
    assert main(_export(model, notes, "--overwrite")) == 2
    assert "is a file" in capsys.readouterr().err and notes.read_text() == "keep"
    monkeypatch.chdir(project)
    assert main(_export(model, ".", "--overwrite")) == 2
    assert "working directory" in capsys.readouterr().err
    assert _tree(project) == before and _tree(model) == model_before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "project"]


def test_re_export_needs_the_flag_and_follows_the_umask(model, tmp_path, capsys):
    dest = tmp_path / "dep"
    old = os.umask(0o022)
    try:
        assert main(_export(model, dest)) == 0
        capsys.readouterr()
        assert main(_export(model, dest)) == 2
        assert "already holds a deployment; pass --overwrite" in capsys.readouterr().err
        (dest / "extra.txt").write_text("from the last export")
        assert main(_export(model, dest, "--overwrite")) == 0
    finally:
        os.umask(old)
    assert not (dest / "extra.txt").exists() and (dest / "export_report.json").is_file()
    assert stat.S_IMODE(dest.stat().st_mode) == 0o755
    assert stat.S_IMODE((dest / "model.onnx").stat().st_mode) == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dep"]


# -- reading never writes -------------------------------------------------------------------
STUB = "zoo:nlp/sentiment_analysis/tiny-bert/pytorch/huggingface/sst2/base-none"


def test_evaluate_and_pull_leave_a_zoo_entry_byte_identical(model, data, tmp_path, monkeypatch):
    root = tmp_path / "zoo"
    monkeypatch.setenv("SPARSE_TRANSFER_ZOO", str(root))
    monkeypatch.setenv("SPARSE_TRANSFER_CACHE", str(tmp_path / "cache"))
    run = tmp_path / "run"
    storage.download_dir(model, run, require_manifest=False)
    assert main(_export(run, run / "deployment")) == 0  # evaluate reads the entry's deployment/
    entry = Path(zoo.push(run, STUB))
    before = _tree(entry)
    argv = ["evaluate", "--model_path", STUB, "--task", "text-classification",
            "--validation_file", str(data[1]), "--max_seq_length", "32"]  # fmt: skip
    for _ in range(2):
        assert main(argv) == 0
    assert main(["zoo", "pull", STUB, str(tmp_path / "pulled")]) == 0
    assert _tree(entry) == before  # no eval_results.json, manifest unchanged
    assert main([*argv, "--output_dir", str(tmp_path / "results")]) == 0
    assert json.loads((tmp_path / "results" / "eval_results.json").read_text())["eval_samples"] == 8
    assert _tree(entry) == before
    storage.materialize(entry)  # still verifies
