"""Local-directory publishing and the manifest rules (no server needed)."""

from __future__ import annotations

import json
import os

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
    with pytest.raises(StorageError, match="already exists"):
        storage.download_dir(tmp_path / "pub", target)
    assert (target / "keep.txt").read_text() == "mine"
    storage.download_dir(tmp_path / "pub", target, overwrite=True)
    assert not (target / "keep.txt").exists() and (target / "a.txt").is_file()


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
