"""Property (issue 26): whatever folder tree a user has, no writing command loses or changes a
user file.

Hypothesis builds random trees around the folder a command is pointed at: user files
(with names we also write: ``eval_results.json``, ``config.json``, ``manifest.json``),
symbolic links into and out of the tree, markers and records copied from real outputs
(``export_report.json``, ``run_summary.json``, ``.sparse-transfer-files.json``,
``manifest.json``, staging markers), leftover-looking ``.NAME.old-*``/``.NAME.partial``
siblings holding user files, and outputs of ours with a user's folder nested inside.
Then one writing command runs against it (``train`` evaluation-only and training with
``--overwrite_output_dir``, ``evaluate --output_dir``, ``export-onnx --overwrite``,
``zoo pull --force``, ``zoo push`` from and into it) and every user file must still be
there, byte for byte, and every user link still point where it did; the command ends
with 0 or 2, never a traceback.

By design (the Hugging Face rule, tests/integration/test_outputs.py) a loose file put at
the top of an output of ours is replaced with it by ``--overwrite``; the trees here put
user files in outputs of ours only inside a folder of their own.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sparse_transfer import storage, zoo
from sparse_transfer.cli import main
from sparse_transfer.embedded import fixtures
from tests.integration.test_zoo import SST2, _trained_output

pytestmark = pytest.mark.integration

NAMES = ["notes.txt", "README.md", "eval_results.json", "config.json", "run_summary.json",
         "export_report.json", "manifest.json", "model.onnx", "vocab.txt"]  # fmt: skip
TARGETS = ["absent", "empty", "user", "user+markers", "link-to-user", "link-outside",
           "file", "ours+nested-user", "copy-of-ours"]  # fmt: skip
SETTINGS = {
    "deadline": None,
    "derandomize": True,  # the same trees every run: a failure is reproducible
    "suppress_health_check": [HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
}


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """Built once: a tiny model, data, a deployment, a training output, a zoo entry, and the
    markers a careless user could copy from them."""
    root = tmp_path_factory.mktemp("made")
    model = fixtures.make_tiny_bert(root / "model", hidden_size=32,
                                    id2label={0: "negative", 1: "positive"})  # fmt: skip
    rows = fixtures.sentiment_rows(12)
    data = (fixtures.write_jsonl(rows[:8], root / "train.jsonl"),
            fixtures.write_jsonl(rows[8:], root / "val.jsonl"))  # fmt: skip
    assert main(["export-onnx", "--model_path", str(model), "--task", "text-classification",
                 "--output", str(root / "deployment"), "--sequence_length", "16"]) == 0  # fmt: skip
    assert main(_eval_only(model, data, root / "evaluated")) == 0
    zoo_root = root / "zoo"
    zoo.push(_trained_output(root / "fake-run"), SST2, root=zoo_root)
    download = storage.download_dir(zoo.entry_uri(SST2, zoo_root), root / "download")
    staging = storage.staging_dir(root / "somewhere")
    markers = {
        "export_report.json": (root / "deployment" / "export_report.json").read_bytes(),
        storage.RECORD: (root / "evaluated" / storage.RECORD).read_bytes(),
        "run_summary.json": (root / "evaluated" / "run_summary.json").read_bytes(),
        "manifest.json": (download / "manifest.json").read_bytes(),
        ".sparse-transfer-staging": (staging / ".sparse-transfer-staging").read_bytes(),
    }
    return {"root": root, "model": model, "data": data, "deployment": root / "deployment",
            "zoo": zoo_root, "markers": markers}  # fmt: skip


def _eval_only(model, data, out) -> list[str]:
    return ["train", "text-classification", "--output_dir", str(out),
            "--model_name_or_path", str(model), "--validation_file", str(data[1]),
            "--max_seq_length", "16", "--do_eval", "--report_to", "none",
            "--per_device_eval_batch_size", "8"]  # fmt: skip


trees = st.fixed_dictionaries(
    {
        "target": st.sampled_from(TARGETS),
        "files": st.lists(
            st.tuples(st.sampled_from(NAMES), st.binary(min_size=1, max_size=40)),
            min_size=1,
            max_size=4,
            unique_by=lambda t: t[0],
        ),  # fmt: skip
        "markers": st.lists(
            st.sampled_from(
                ["export_report.json", storage.RECORD, "run_summary.json", "manifest.json"]
            ),
            max_size=4,
            unique=True,
        ),  # fmt: skip
        "old_sibling": st.booleans(),
        "partial_sibling": st.booleans(),
        "link_inside_out": st.booleans(),
    }
)


class Tree:
    """A sandbox with the user's files recorded, to compare after the command."""

    def __init__(self, made, spec) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="tree-", dir=made["root"]))
        self.user: dict[Path, bytes] = {}
        self.links: dict[Path, str] = {}
        self.made = made
        self.target = self.root / "target"
        outside = self.root / "outside"
        self._files(outside, spec["files"])
        self._build_target(spec)
        for flag, name in (
            ("old_sibling", ".target.old-ab12"),
            ("partial_sibling", ".target.partial"),
        ):
            if spec[flag]:
                self._files(self.root / name / "old", spec["files"][:1])
                self._write(self.root / name / ".sparse-transfer-staging",
                            made["markers"][".sparse-transfer-staging"])  # fmt: skip

    def _write(self, path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        self.user[path] = data

    def _files(self, folder: Path, files) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        for name, data in files:
            self._write(folder / name, data)

    def _link(self, link: Path, to: Path) -> None:
        link.symlink_to(to)
        self.links[link] = os.readlink(link)

    def _build_target(self, spec) -> None:
        kind, target = spec["target"], self.target
        if kind == "empty":
            target.mkdir()
        elif kind in ("user", "user+markers"):
            self._files(target, spec["files"])
            if kind == "user+markers":
                for name in spec["markers"]:
                    self._write(target / name, self.made["markers"][name])
            if spec["link_inside_out"]:
                self._link(target / "to-outside", self.root / "outside")
        elif kind == "link-to-user":
            self._files(self.root / "mine", spec["files"])
            self._link(target, self.root / "mine")
        elif kind == "link-outside":
            self._link(target, self.root / "outside")
        elif kind == "file":
            self._write(target, b"a user's file named like the output")
        elif kind == "ours+nested-user":  # an output of ours, then a user's folder put in it
            download = storage.download_dir(zoo.entry_uri(SST2, self.made["zoo"]), target)
            self._files(download / "my-notes", spec["files"])
        elif kind == "copy-of-ours":  # a copy is the user's: markers and records come along
            shutil.copytree(self.made["deployment"], target)
            for path in target.rglob("*"):
                if path.is_file():
                    self.user[path] = path.read_bytes()

    def check(self, code: int) -> None:
        assert code in (0, 2), code
        lost = [
            str(p) for p, data in self.user.items() if not p.is_file() or p.read_bytes() != data
        ]
        assert lost == [], f"user files lost or changed: {lost}"
        moved = [
            str(p) for p, to in self.links.items() if not p.is_symlink() or os.readlink(p) != to
        ]
        assert moved == [], f"user links lost or changed: {moved}"


def _run(argv: list[str], cwd: Path) -> int:
    here = os.getcwd()
    os.chdir(cwd)
    try:
        return main(argv)
    finally:
        os.chdir(here)


@settings(max_examples=12, **SETTINGS)
@given(spec=trees)
def test_zoo_pull_force_and_push(made, spec):
    tree = Tree(made, spec)
    code = _run(["zoo", "pull", SST2, str(tree.target), "--force", "--zoo", str(made["zoo"])],
                tree.root)  # fmt: skip
    tree.check(code)
    if tree.target.is_dir():  # pushing from it reads it; pushing into it as a zoo root writes
        code = _run(["zoo", "push", str(tree.target), SST2.replace("sst2", "mine"),
                     "--zoo", str(tree.root / "other-zoo")], tree.root)  # fmt: skip
        tree.check(code)
    code = _run(["zoo", "push", str(made["root"] / "fake-run"), SST2, "--force",
                 "--zoo", str(tree.target)], tree.root)  # fmt: skip
    tree.check(code)


@settings(max_examples=6, **SETTINGS)
@given(spec=trees)
def test_export_onnx_overwrite(made, spec):
    tree = Tree(made, spec)
    argv = ["export-onnx", "--model_path", str(made["model"]), "--task", "text-classification",
            "--output", str(tree.target), "--sequence_length", "16", "--overwrite"]  # fmt: skip
    tree.check(_run(argv, tree.root))


@settings(max_examples=6, **SETTINGS)
@given(spec=trees)
def test_train_eval_only_and_evaluate(made, spec):
    tree = Tree(made, spec)
    tree.check(_run(_eval_only(made["model"], made["data"], tree.target), tree.root))
    argv = ["evaluate", "--model_path", str(made["deployment"]), "--task", "text-classification",
            "--validation_file", str(made["data"][1]), "--max_seq_length", "16",
            "--output_dir", str(tree.target)]  # fmt: skip
    tree.check(_run(argv, tree.root))


@settings(max_examples=5, **SETTINGS)
@given(spec=trees)
def test_train_with_overwrite_output_dir(made, spec):
    tree = Tree(made, spec)
    argv = ["train", "text-classification", "--output_dir", str(tree.target),
            "--model_name_or_path", str(made["model"]), "--train_file", str(made["data"][0]),
            "--max_seq_length", "16", "--max_steps", "1", "--do_train", "--report_to", "none",
            "--per_device_train_batch_size", "8", "--overwrite_output_dir"]  # fmt: skip
    tree.check(_run(argv, tree.root))


def test_the_trees_are_what_they_claim(made):
    """The generator really makes the hostile shapes (a copied record is byte-identical)."""
    tree = Tree(made, {"target": "user+markers", "files": [("notes.txt", b"x")],
                       "markers": [storage.RECORD], "old_sibling": True,
                       "partial_sibling": False, "link_inside_out": True})  # fmt: skip
    assert (tree.target / storage.RECORD).read_bytes() == made["markers"][storage.RECORD]
    assert json.loads(made["markers"][storage.RECORD])["what"] == "training output"
    assert (tree.root / ".target.old-ab12" / ".sparse-transfer-staging").is_file()
    assert (tree.target / "to-outside").is_symlink()
