"""Local-directory publishing and the manifest rules (no server needed)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from sparse_transfer import storage
from sparse_transfer.errors import StorageError
from sparse_transfer.storage._manifest import parse_manifest


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SPARSE_TRANSFER_CACHE", str(tmp_path / "cache"))


def _src(tmp_path):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_text("alpha")
    (src / "sub" / "b.bin").write_bytes(b"\x00\x01" * 100)
    return src


def test_local_publish_is_complete_and_verified(tmp_path):
    src = _src(tmp_path)
    dest = tmp_path / "zoo" / "entry"
    manifest = storage.upload_dir(src, f"file://{dest}", overwrite=False)
    assert {f.path: f.size for f in manifest.files} == {"a.txt": 5, "sub/b.bin": 200}
    on_disk = json.loads((dest / "manifest.json").read_text())
    assert on_disk["files"][0]["sha256"] == storage.sha256_file(src / "a.txt")
    assert on_disk["total_size"] == 205
    # No temp dirs left next to the destination.
    assert sorted(p.name for p in dest.parent.iterdir()) == ["entry"]
    assert storage.materialize(dest) == dest
    assert storage.materialize(dest, subdir="sub") == dest / "sub"

    with pytest.raises(StorageError, match="already published"):
        storage.upload_dir(src, dest, overwrite=False)
    (src / "a.txt").write_text("beta!")
    storage.upload_dir(src, dest, overwrite=True)
    assert (dest / "a.txt").read_text() == "beta!"


def test_local_reader_refuses_unpublished_and_tampered(tmp_path):
    src = _src(tmp_path)
    with pytest.raises(StorageError, match="no manifest.json"):
        storage.download_dir(src, tmp_path / "out")
    copied = storage.download_dir(src, tmp_path / "plain", require_manifest=False)
    assert (copied / "sub" / "b.bin").read_bytes() == b"\x00\x01" * 100

    dest = tmp_path / "pub"
    storage.upload_dir(src, dest)
    (dest / "a.txt").write_text("alphx")  # same size, different content
    with pytest.raises(StorageError, match="corrupted or was changed"):
        storage.download_dir(dest, tmp_path / "out2")
    assert not (tmp_path / "out2").exists()
    (dest / "a.txt").unlink()
    with pytest.raises(StorageError, match="listed in the manifest but missing"):
        storage.materialize(dest)


def test_download_refuses_to_clobber_a_non_empty_destination(tmp_path):
    src = _src(tmp_path)
    storage.upload_dir(src, tmp_path / "pub")
    target = tmp_path / "target"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    for overwrite in (False, True):  # a folder of the user's files is never replaced
        with pytest.raises(StorageError, match="not a sparse-transfer download"):
            storage.download_dir(tmp_path / "pub", target, overwrite=overwrite)
    assert [p.name for p in target.iterdir()] == ["keep.txt"]
    earlier = storage.download_dir(tmp_path / "pub", tmp_path / "earlier")
    with pytest.raises(StorageError, match="already holds a download"):
        storage.download_dir(tmp_path / "pub", earlier)
    storage.download_dir(tmp_path / "pub", earlier, overwrite=True)
    assert (earlier / "a.txt").read_text() == "alpha"


@pytest.mark.parametrize("bad", ["../escape.txt", "/etc/passwd", "a/../../b", "a\\b", "./x"])
def test_manifest_paths_cannot_escape(bad):
    text = json.dumps(
        {
            "format": "sparse-transfer-manifest/1",
            "files": [{"path": bad, "size": 1, "sha256": "0" * 64}],
        }
    )
    with pytest.raises(StorageError, match="unsafe path"):
        parse_manifest(text, "m.json")


def test_manifest_must_be_ours():
    with pytest.raises(StorageError, match="not valid JSON"):
        parse_manifest("{", "m.json")
    with pytest.raises(StorageError, match="not a sparse-transfer manifest"):
        parse_manifest(json.dumps({"files": []}), "m.json")


def test_uri_parsing():
    loc = storage.parse_uri("s3://bucket/zoo/nlp/")
    assert (loc.bucket, loc.key, str(loc.child("x/y"))) == (
        "bucket",
        "zoo/nlp",
        "s3://bucket/zoo/nlp/x/y",
    )
    assert str(storage.parse_uri("file:///tmp/a b").path) == "/tmp/a b"
    assert storage.parse_uri("~/x").path == storage.parse_uri(os.path.expanduser("~/x")).path
    with pytest.raises(StorageError, match="'..' are not allowed"):
        storage.parse_uri("s3://bucket/a/../b")


# -- replace_directory: the one directory swap (issue 13 items 1, 2, 10, 12) --------------
def _ours(folder: Path) -> bool:
    return (folder / "made-by-us.json").is_file()


def _staged(target: Path, text: str) -> Path:
    staged = storage.staging_dir(target)
    (staged / "made-by-us.json").write_text(text)
    return staged


def _swap(target: Path, text: str = "new", overwrite: bool = False, protect=()) -> Path:
    staged = _staged(target, text)
    try:
        return storage.replace_directory(
            staged, target, recognise=_ours, what="thing", overwrite=overwrite,
            flag="--overwrite", protect=protect,
        )  # fmt: skip
    finally:
        if staged.exists():
            import shutil

            shutil.rmtree(staged)


def _tree(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()
    }


def test_replace_takes_absent_or_empty_and_replaces_ours_only_with_the_flag(tmp_path):
    target = tmp_path / "out"
    _swap(target, "one")
    assert _tree(target) == {"made-by-us.json": b"one"}  # the staging marker is not published
    with pytest.raises(StorageError, match="already holds a thing; pass --overwrite"):
        _swap(target, "two")
    assert _tree(target) == {"made-by-us.json": b"one"}
    _swap(target, "two", overwrite=True)
    assert _tree(target) == {"made-by-us.json": b"two"}
    empty = tmp_path / "empty"
    empty.mkdir()
    _swap(empty, "three")
    assert _tree(empty) == {"made-by-us.json": b"three"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "out"]  # no leftovers


def test_replace_never_touches_user_files_a_file_or_the_working_directory(tmp_path, monkeypatch):
    users = tmp_path / "project"
    (users / "src").mkdir(parents=True)
    (users / "src" / "main.py").write_text("print('mine')")
    before = _tree(users)
    for overwrite in (False, True):
        with pytest.raises(StorageError, match="not a sparse-transfer thing.*left untouched"):
            _swap(users, overwrite=overwrite)
    assert _tree(users) == before
    a_file = tmp_path / "notes.txt"
    a_file.write_text("keep")
    with pytest.raises(StorageError, match="is a file, not a folder"):
        _swap(a_file, overwrite=True)
    assert a_file.read_text() == "keep"
    (users / "made-by-us.json").write_text("looks ours")  # cwd/parents are refused even then
    monkeypatch.chdir(users / "src")
    for target in (Path("."), Path(".."), users):
        with pytest.raises(StorageError, match="working directory or one of its parents"):
            _swap(target, overwrite=True)
    assert (users / "src" / "main.py").read_text() == "print('mine')"
    link = tmp_path / "link"
    link.symlink_to(users)
    with pytest.raises(StorageError, match="symbolic link"):
        _swap(link, overwrite=True)


def test_replace_never_touches_the_input_or_a_parent_of_it(tmp_path):
    model = tmp_path / "runs" / "model"
    model.mkdir(parents=True)
    (model / "made-by-us.json").write_text("input")
    for target in (model, model.parent):
        with pytest.raises(StorageError, match="is the input .* or a folder holding it"):
            _swap(target, overwrite=True, protect=[model])
    assert (model / "made-by-us.json").read_text() == "input"
    _swap(model / "deployment", protect=[model])  # a new folder inside the input is fine


def test_crash_leftovers_are_cleaned_only_when_ours_and_dead(tmp_path):
    target = tmp_path / "out"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    marker = json.dumps({"pid": int(dead), "host": os.uname().nodename})
    for name in (".out.partial", ".out.tmp-abc", ".out.old-xyz"):
        (tmp_path / name).mkdir()
        (tmp_path / name / ".sparse-transfer-staging").write_text(marker)
        (tmp_path / name / "checkpoint-9").mkdir()
    (tmp_path / ".out.tmp-users").mkdir()  # not marked: never removed, only reported
    live = tmp_path / ".out.tmp-live"
    live.mkdir()
    (live / ".sparse-transfer-staging").write_text(
        json.dumps({"pid": os.getppid(), "host": os.uname().nodename})
    )
    kept = storage.clean_leftovers(target)
    assert sorted(p.name for p in kept) == [".out.tmp-live", ".out.tmp-users"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".out.tmp-live", ".out.tmp-users"]
    # a fixed staging folder is fresh (a crashed run's checkpoints are not reused) ...
    (tmp_path / ".out.partial").mkdir()
    (tmp_path / ".out.partial" / ".sparse-transfer-staging").write_text(marker)
    (tmp_path / ".out.partial" / "checkpoint-9").mkdir()
    fresh = storage.staging_dir(target, fixed_suffix=".partial")
    assert [p.name for p in fresh.iterdir()] == [".sparse-transfer-staging"]
    # ... unless resumed; and one that is not ours is refused, not emptied
    (fresh / "checkpoint-9").mkdir()
    (fresh / ".sparse-transfer-staging").write_text(marker)
    assert (
        storage.staging_dir(target, fixed_suffix=".partial", reuse=True) / "checkpoint-9"
    ).is_dir()
    (tmp_path / ".x.partial").mkdir()
    with pytest.raises(StorageError, match="not made by sparse-transfer"):
        storage.staging_dir(tmp_path / "x", fixed_suffix=".partial")


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_published_folders_and_files_follow_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        target = _swap(tmp_path / "out")
        storage.upload_dir(_src(tmp_path), tmp_path / "zoo" / "entry")
        storage.write_bytes_atomic(tmp_path / "one.json", b"{}")
    finally:
        os.umask(old)
    assert stat.S_IMODE(target.stat().st_mode) == 0o777 & ~umask
    entry = tmp_path / "zoo" / "entry"
    assert stat.S_IMODE(entry.stat().st_mode) == 0o777 & ~umask
    for path in (entry / "manifest.json", entry / "a.txt", tmp_path / "one.json"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask, path


def test_readers_never_see_the_folder_missing_during_replacements(tmp_path):
    target = tmp_path / "out"
    _swap(target, "0")
    missing = []
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            if not (target / "made-by-us.json").is_file():
                missing.append(1)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for i in range(1, 60):
            _swap(target, str(i), overwrite=True)
    finally:
        stop.set()
        reader.join()
    assert (target / "made-by-us.json").read_text() == "59"
    assert missing == []  # one renameat2(RENAME_EXCHANGE) per replacement


def test_local_publishes_of_one_entry_are_serialised(tmp_path):
    """Concurrent local publishes: one wins, the plain loser fails, force lands on top."""
    dest = tmp_path / "zoo" / "entry"
    code = (
        "import sys; from pathlib import Path; from sparse_transfer import storage\n"
        "src = Path(sys.argv[1]); src.mkdir(); (src / 'who.txt').write_text(sys.argv[1] * 2000)\n"
        "try:\n    storage.upload_dir(src, sys.argv[2], overwrite=sys.argv[3] == '1')\n"
        "except storage.PublishConflict:\n    sys.exit(3)\n"
    )
    for round_ in range(4):
        for force in ("0", "1"):
            if dest.exists():
                import shutil

                shutil.rmtree(dest)
            procs = [
                subprocess.Popen([sys.executable, "-c", code, str(tmp_path / f"s{round_}{force}{i}"), str(dest), force])
                for i in range(2)
            ]  # fmt: skip
            codes = sorted(p.wait(timeout=60) for p in procs)
            assert codes == ([0, 0] if force == "1" else [0, 3]), codes
            manifest = storage.read_manifest(dest)
            assert [f.path for f in manifest.files] == ["who.txt"]
            storage.materialize(dest)  # complete and verified


def test_a_failing_server_error_names_its_code_not_the_secret(monkeypatch):
    """A 500 after retries says which error the server gave (SeaweedFS out of volumes
    answers InternalError), so the log points at the server, not the network."""
    from botocore.exceptions import ClientError

    from sparse_transfer.storage._s3 import retrying

    monkeypatch.setenv("SPARSE_TRANSFER_S3_BACKOFF", "0")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s3cr3t-value")
    calls = []

    def put():
        calls.append(1)
        error = {"Error": {"Code": "InternalError", "Message": "No writable volumes"}}
        raise ClientError(error, "PutObject")

    with pytest.raises(StorageError) as info:
        retrying(put, "bkt", "uploading model.md", attempts=3)
    assert len(calls) == 3
    assert "after retries: ClientError InternalError;" in str(info.value)
    assert "bkt" in str(info.value) and "s3cr3t" not in str(info.value)
