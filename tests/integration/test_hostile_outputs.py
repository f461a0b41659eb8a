"""Issue 26 items 3, 8, 9 and 12 (deployment hashes): what a command may write into or replace.

- 3: ``train --do_eval`` (no --do_train) wrote into any folder, which then counted as
  ours, so a later ``--overwrite_output_dir`` deleted the user's files;
- 8: markers were enough: a copied ``export_report.json`` got a user's folder replaced by
  ``export-onnx --overwrite``; a copied staging marker got a ``.NAME.old-*`` folder deleted;
- 9: inputs inside the old output (``--test_file``, ``--tokenizer_name``) were deleted;
- 12: a plain export folder had no hashes: a tampered classifier bias was served.
Tiny model (hidden 32), a few steps.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from sparse_transfer import storage
from sparse_transfer.cli import main
from sparse_transfer.embedded import fixtures
from tests.integration.test_outputs import _export, _train, _tree, _users_project
from tests.unit.test_cli_errors import one_error_line

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


@pytest.fixture(scope="module")
def deployment(model, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dep") / "deployment"
    assert main(_export(model, out)) == 0
    return out


def _eval_only(model: Path, data, out, *extra: str) -> list[str]:
    return ["train", "text-classification", "--output_dir", str(out),
            "--model_name_or_path", str(model), "--validation_file", str(data[1]),
            "--max_seq_length", "32", "--do_eval", "--report_to", "none", *extra]  # fmt: skip


# -- item 3 -------------------------------------------------------------------------------------
def test_eval_only_never_writes_into_a_users_folder(model, data, tmp_path, capsys):
    project = _users_project(tmp_path / "project")
    (project / "eval_results.json").write_text('{"mine": 1}')
    (project / ".ssh").mkdir()
    (project / ".ssh" / "id_ed25519").write_text("PRIVATE")
    before = _tree(project)
    assert main(_eval_only(model, data, project)) == 2
    line = one_error_line(capsys.readouterr().err)
    assert str(project) in line and "not a sparse-transfer training output" in line, line
    assert _tree(project) == before
    assert main(_train(model, data, project, "--overwrite_output_dir")) == 2
    capsys.readouterr()
    assert _tree(project) == before
    link = tmp_path / "link"
    link.symlink_to(project)
    assert main(_eval_only(model, data, link)) == 2
    assert main(_train(model, data, link, "--overwrite_output_dir")) == 2
    assert _tree(project) == before


def test_eval_only_into_a_new_folder_or_our_output_and_then_overwrite(model, data, tmp_path):
    fresh = tmp_path / "fresh"
    assert main(_eval_only(model, data, fresh)) == 0
    assert {"eval_results.json", "run_summary.json", storage.RECORD} <= set(os.listdir(fresh))
    out = tmp_path / "out"
    assert main(_train(model, data, out)) == 0
    assert main(_eval_only(model, data, out)) == 0  # adds results to our own output ...
    assert main(_train(model, data, out, "--overwrite_output_dir")) == 0  # ... which stays ours
    own = shutil.copytree(model, tmp_path / "own-model")  # results beside the evaluated model ...
    (own / "docs").mkdir()
    (own / "docs" / "notes.md").write_text("mine")
    assert main(_eval_only(own, data, own)) == 0
    assert (own / "eval_results.json").is_file() and not (own / storage.RECORD).exists()
    assert main(_train(model, data, own, "--overwrite_output_dir")) == 2  # ... do not make it ours
    assert (own / "docs" / "notes.md").read_text() == "mine"


# -- item 8 -------------------------------------------------------------------------------------
def test_copied_markers_do_not_make_a_folder_ours(model, data, deployment, tmp_path, capsys):
    project = _users_project(tmp_path / "project")
    shutil.copy2(deployment / "export_report.json", project / "export_report.json")
    shutil.copy2(deployment / storage.RECORD, project / storage.RECORD)
    before = _tree(project)
    assert main(_export(model, project, "--overwrite")) == 2
    assert "not a sparse-transfer deployment" in one_error_line(capsys.readouterr().err)
    assert _tree(project) == before
    copy = shutil.copytree(deployment, tmp_path / "copy")  # a whole copy is not ours either
    (copy / "NOTES.md").write_text("my notes on this model")
    assert main(_export(model, copy, "--overwrite")) == 2
    assert (copy / "NOTES.md").read_text() == "my notes on this model"
    out = tmp_path / "out"
    assert main(_train(model, data, out)) == 0
    mine = _users_project(tmp_path / "mine")
    for name in ("run_summary.json", storage.RECORD):
        shutil.copy2(out / name, mine / name)
    before = _tree(mine)
    assert main(_train(model, data, mine, "--overwrite_output_dir")) == 2
    assert _tree(mine) == before


def test_a_copied_staging_marker_does_not_get_a_folder_deleted(model, tmp_path, capsys):
    dest = tmp_path / "dep"
    work = storage.staging_dir(dest)  # a real marker; its owner (this process) counts as gone
    trash = tmp_path / ".dep.old-mine"
    (trash / "old").mkdir(parents=True)
    (trash / "old" / "thesis.tex").write_text("chapter 1")
    shutil.copy2(work / storage._swap.MARKER, trash / storage._swap.MARKER)
    assert main(_export(model, dest)) == 0
    assert not work.exists()  # the real leftover is cleaned ...
    assert (trash / "old" / "thesis.tex").read_text() == "chapter 1"  # ... the copy is not


# -- item 9 -------------------------------------------------------------------------------------
def test_inputs_inside_the_old_output_are_protected(model, data, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(_train(model, data, out)) == 0
    test_file = out / "my-test.jsonl"
    shutil.copy2(data[1], test_file)
    assert main(_train(model, data, out, "--overwrite_output_dir", "--do_predict",
                       "--test_file", str(test_file))) == 2  # fmt: skip
    line = one_error_line(capsys.readouterr().err)
    assert "is the input" in line and str(test_file) in line, line
    assert test_file.is_file()
    tokenizer = tmp_path / "tok"
    shutil.copytree(model, tokenizer)
    other = tmp_path / "other"
    assert main(_train(model, data, other)) == 0
    shutil.move(str(tokenizer), other / "tok")
    assert main(_train(model, data, other, "--overwrite_output_dir",
                       "--tokenizer_name", str(other / "tok"))) == 2  # fmt: skip
    assert "is the input" in one_error_line(capsys.readouterr().err)
    assert (other / "tok" / "vocab.txt").is_file()


def test_export_protects_its_verify_dataset(model, data, tmp_path, capsys):
    dest = tmp_path / "dep"
    assert main(_export(model, dest)) == 0
    shutil.copy2(data[1], dest / "verify.jsonl")
    argv = _export(model, dest, "--overwrite", "--verify_dataset", str(dest / "verify.jsonl"))
    assert main(argv) == 2
    assert "is the input" in one_error_line(capsys.readouterr().err)
    assert (dest / "verify.jsonl").is_file()


# -- item 12: every deployment carries hashes, checked before use ---------------------------------
def _tamper_bias(deployment: Path, where: Path) -> Path:
    import onnx
    from onnx import numpy_helper

    copy = shutil.copytree(deployment, where)
    graph = onnx.load(str(copy / "model.onnx"))
    for init in graph.graph.initializer:
        if "classifier" in init.name and "bias" in init.name:
            bias = numpy_helper.to_array(init).copy()
            bias[0] += 5.0
            init.CopyFrom(numpy_helper.from_array(bias, init.name))
            break
    else:
        raise AssertionError("no classifier bias in the graph")
    onnx.save(graph, str(copy / "model.onnx"))
    return copy


def test_a_tampered_deployment_is_refused(deployment, data, tmp_path, capsys):
    assert (deployment / storage.RECORD).is_file()
    bad = _tamper_bias(deployment, tmp_path / "tampered")
    expected = f"sparse-transfer: error: {bad / 'model.onnx'}: sha256 differs from"
    argv = ["evaluate", "--model_path", str(bad), "--task", "text-classification",
            "--validation_file", str(data[1]), "--max_seq_length", "32"]  # fmt: skip
    assert main(argv) == 2
    assert one_error_line(capsys.readouterr().err).startswith(expected)
    assert main(["benchmark", "--model_path", str(bad), "--iterations", "2", "--warmup", "1"]) == 2
    assert one_error_line(capsys.readouterr().err).startswith(expected)
    assert main(["serve", str(bad), "--http_port", "0"]) == 2
    assert one_error_line(capsys.readouterr().err).startswith(expected)
    added = shutil.copytree(deployment, tmp_path / "added")
    (added / "added_tokens.json").write_text('{"[NEW]": 9999}')
    assert main(["serve", str(added), "--http_port", "0"]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "added_tokens.json" in line and "not part of the exported deployment" in line, line


# -- item 11 on real file systems: read-only, full ------------------------------------------------
@pytest.fixture
def mount(tmp_path):
    """mount(options) -> a fresh tmpfs folder mounted with them, where this user may mount."""
    import subprocess

    mounted = []

    def make(options: str) -> Path:
        folder = tmp_path / f"mnt{len(mounted)}"
        folder.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "none", str(folder)],
                              capture_output=True)  # fmt: skip
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
        mounted.append(folder)
        return folder

    yield make
    for folder in mounted:
        subprocess.run(["umount", str(folder)], check=True)


def test_read_only_and_full_disks_are_one_line(model, data, mount, capsys):
    read_only = mount("size=64k,ro")
    for argv in (_train(model, data, read_only / "out"), _export(model, read_only / "dep")):
        assert main(argv) == 2
        line = one_error_line(capsys.readouterr().err)
        assert str(read_only) in line and "EROFS" in line, line
    full = mount("size=48k")
    assert main(_train(model, data, full / "out")) == 2
    line = one_error_line(capsys.readouterr().err)
    assert str(full) in line and "ENOSPC" in line, line
    # no output appears; only the marked staging folder stays, for --resume_from_checkpoint
    assert [p.name for p in full.iterdir()] == [".out.partial"]


# -- beyond the issue: own attempts that failed before -----------------------------------------------
def test_export_never_replaces_a_published_entrys_deployment(
    model, deployment, tmp_path, monkeypatch, capsys
):
    from sparse_transfer import zoo

    monkeypatch.setenv("SPARSE_TRANSFER_ZOO", str(tmp_path / "zoo"))
    monkeypatch.setenv("SPARSE_TRANSFER_CACHE", str(tmp_path / "cache"))
    run = shutil.copytree(model, tmp_path / "run")
    shutil.copytree(deployment, run / "deployment")
    entry = Path(
        zoo.push(run, "zoo:nlp/sentiment_analysis/tiny/pytorch/huggingface/sst2/base-none")
    )
    before = _tree(entry)
    assert main(_export(model, entry / "deployment", "--overwrite")) == 2
    assert "not a sparse-transfer deployment" in one_error_line(capsys.readouterr().err)
    assert _tree(entry) == before


def test_a_deeply_nested_export_report_is_one_line(deployment, tmp_path, capsys):
    copy = shutil.copytree(deployment, tmp_path / "deep")
    (copy / "export_report.json").write_text("[" * 100_000 + "]" * 100_000)
    assert main(["serve", str(copy), "--http_port", "0"]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert str(copy / "export_report.json") in line and "nested too deeply" in line, line
