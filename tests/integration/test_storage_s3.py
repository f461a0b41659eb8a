"""Storage against a real loopback S3 server: round trip, multipart, cache, and faults."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import boto3
import pytest
from botocore.config import Config
from sparse_transfer import storage
from sparse_transfer.errors import StorageError

pytestmark = pytest.mark.integration


def _client(server):
    return boto3.client(
        "s3",
        endpoint_url=server.endpoint,
        aws_access_key_id=server.access_key,
        aws_secret_access_key=server.secret_key,
        region_name=server.region,
        config=Config(s3={"addressing_style": "path"}),
    )


def _make_dir(root: Path) -> Path:
    (root / "training").mkdir(parents=True)
    (root / "training" / "config.json").write_text(json.dumps({"hidden_size": 64}))
    (root / "training" / "weights.bin").write_bytes(os.urandom(300_000))
    (root / "recipe.yaml").write_text("version: 1.1.0\n")
    return root


def _tree(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != "manifest.json"
    }


def test_round_trip_with_manifest_last(s3_bucket, s3_server, tmp_path):
    src = _make_dir(tmp_path / "src")
    uri = f"s3://{s3_bucket}/models/a"
    manifest = storage.upload_dir(src, uri)
    assert [f.path for f in manifest.files] == [
        "recipe.yaml",
        "training/config.json",
        "training/weights.bin",
    ]

    keys = storage.list_prefix(uri)
    assert keys == ["manifest.json", "recipe.yaml", "training/config.json", "training/weights.bin"]
    remote = json.loads(storage.read_text(f"{uri}/manifest.json"))
    sizes = {f["path"]: f["size"] for f in remote["files"]}
    assert sizes["training/weights.bin"] == 300_000
    assert storage.exists(uri) and storage.exists(f"{uri}/recipe.yaml")
    assert not storage.exists(f"s3://{s3_bucket}/models/nothing")

    out = storage.download_dir(uri, tmp_path / "out")
    assert _tree(out) == _tree(src)
    sub = storage.download_dir(uri, tmp_path / "only-training", subdir="training")
    assert sorted(_tree(sub)) == ["config.json", "weights.bin"]
    assert storage.list_published(f"s3://{s3_bucket}") == ["models/a"]


def test_multipart_upload_above_threshold(s3_bucket, s3_server, tmp_path, monkeypatch):
    monkeypatch.setenv("SPARSE_TRANSFER_MULTIPART_THRESHOLD", str(5 * 1024 * 1024))
    monkeypatch.setenv("SPARSE_TRANSFER_MULTIPART_CHUNKSIZE", str(5 * 1024 * 1024))
    src = tmp_path / "big"
    src.mkdir()
    payload = os.urandom(11 * 1024 * 1024)
    (src / "model.safetensors").write_bytes(payload)
    uri = f"s3://{s3_bucket}/big"
    storage.upload_dir(src, uri)

    head = _client(s3_server).head_object(Bucket=s3_bucket, Key="big/model.safetensors")
    assert head["ContentLength"] == len(payload)
    assert head["ETag"].strip('"').endswith("-3")  # 5 + 5 + 1 MiB parts
    out = storage.download_dir(uri, tmp_path / "out")
    assert (out / "model.safetensors").read_bytes() == payload


def test_second_download_is_served_by_the_cache(s3_bucket, s3_server, tmp_path):
    src = _make_dir(tmp_path / "src")
    uri = f"s3://{s3_bucket}/cached"
    storage.upload_dir(src, uri)
    cache = storage.Cache()
    storage.download_dir(uri, tmp_path / "first", cache=cache)
    assert (cache.hits, cache.misses) == (0, 3)

    # Remove the data objects: only the manifest is left, so a second
    # download can succeed only from the content-addressed cache.
    s3 = _client(s3_server)
    for key in ("cached/recipe.yaml", "cached/training/config.json", "cached/training/weights.bin"):
        s3.delete_object(Bucket=s3_bucket, Key=key)
    cache2 = storage.Cache()
    second = storage.download_dir(uri, tmp_path / "second", cache=cache2)
    assert (cache2.hits, cache2.misses) == (3, 0)
    assert _tree(second) == _tree(src)

    # materialize() reuses one cache directory keyed by the content digest.
    first = storage.materialize(uri, subdir="training")
    again = storage.materialize(uri, subdir="training")
    assert first == again and (first / "config.json").is_file()
    blob = storage.cache_root() / "blobs" / "sha256"
    assert len(list(blob.rglob("*"))) > 0


def test_fetch_file_plain_object_cached_by_etag(s3_bucket, s3_server, tmp_path):
    s3 = _client(s3_server)
    s3.put_object(Bucket=s3_bucket, Key="loose/recipe.yaml", Body=b"version: 1\n")
    uri = f"s3://{s3_bucket}/loose/recipe.yaml"
    path = storage.fetch_file(uri)
    assert path.read_bytes() == b"version: 1\n" and path.name == "recipe.yaml"
    assert storage.fetch_file(uri) == path
    s3.put_object(Bucket=s3_bucket, Key="loose/recipe.yaml", Body=b"version: 2\n")
    assert storage.fetch_file(uri).read_bytes() == b"version: 2\n"
    with pytest.raises(StorageError, match="not found"):
        storage.fetch_file(f"s3://{s3_bucket}/loose/missing.yaml")


def test_files_without_manifest_are_refused(s3_bucket, s3_server, tmp_path):
    s3 = _client(s3_server)
    s3.put_object(Bucket=s3_bucket, Key="half/config.json", Body=b"{}")
    with pytest.raises(StorageError, match=r"no manifest\.json.*did not\s+finish"):
        storage.download_dir(f"s3://{s3_bucket}/half", tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert not storage.is_published(f"s3://{s3_bucket}/half")


_KILLED_UPLOAD = """
import sys, time
from sparse_transfer import storage
from sparse_transfer.storage import _s3

real_upload, done = _s3.S3Store.upload, []

def upload(self, src, rel):
    real_upload(self, src, rel)
    done.append(rel)
    if len(done) == 2:  # two real files are up: signal the parent and wait to be killed
        print("UPLOADED", flush=True)
        time.sleep(120)

_s3.S3Store.upload = upload
storage.upload_dir(sys.argv[1], sys.argv[2])
print("FINISHED", flush=True)
"""


def _upload_and_kill(src: Path, uri: str) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", _KILLED_UPLOAD, str(src), uri], stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "UPLOADED"
    finally:
        child.kill()
        child.wait(timeout=10)
    assert child.returncode == -9


def test_upload_killed_midway_leaves_nothing_a_reader_trusts(s3_bucket, s3_server, tmp_path):
    src = _make_dir(tmp_path / "src")
    uri = f"s3://{s3_bucket}/killed"
    _upload_and_kill(src, uri)
    assert len(storage.list_prefix(uri)) == 2  # objects are there ...
    with pytest.raises(StorageError, match="no manifest.json"):  # ... but not trusted
        storage.download_dir(uri, tmp_path / "out")

    # An overwrite killed midway must not leave the old manifest vouching for new files.
    storage.upload_dir(src, uri)
    (src / "recipe.yaml").write_text("version: 2.0.0\n")
    _upload_and_kill(src, uri)
    with pytest.raises(StorageError, match="no manifest.json"):
        storage.materialize(uri)


def test_corrupted_object_is_detected(s3_bucket, s3_server, tmp_path):
    src = _make_dir(tmp_path / "src")
    uri = f"s3://{s3_bucket}/corrupt"
    storage.upload_dir(src, uri)
    s3 = _client(s3_server)
    original = (src / "training" / "weights.bin").read_bytes()
    flipped = bytes([original[0] ^ 0xFF]) + original[1:]  # same size, one byte differs
    s3.put_object(Bucket=s3_bucket, Key="corrupt/training/weights.bin", Body=flipped)
    with pytest.raises(StorageError, match=r"weights\.bin: sha256 mismatch"):
        storage.download_dir(uri, tmp_path / "out")
    assert not (tmp_path / "out").exists()

    s3.put_object(Bucket=s3_bucket, Key="corrupt/training/weights.bin", Body=original[:1000])
    with pytest.raises(StorageError, match=r"weights\.bin: size mismatch"):
        storage.materialize(uri, subdir="training")
    # Nothing unverified entered the cache.
    blobs = storage.cache_root() / "blobs" / "sha256"
    stored = {p.name for p in blobs.rglob("*") if p.is_file()}
    assert storage.sha256_file(src / "training" / "weights.bin") not in stored


def test_server_restart_between_and_during_calls(
    s3_bucket, s3_server, tmp_path, caplog, monkeypatch
):
    if s3_server.kind != "weed":
        pytest.skip("restart test needs the on-disk SeaweedFS server")
    # Under a loaded test run SeaweedFS can take longer to come back than the default
    # retry window (~8-15 s); a wider one keeps the test about healing, not timing.
    monkeypatch.setenv("SPARSE_TRANSFER_S3_RETRIES", "10")
    src = _make_dir(tmp_path / "src")
    uri = f"s3://{s3_bucket}/restart"
    storage.upload_dir(src, uri)

    s3_server.restart()  # between calls: data survives, the next call just works
    assert _tree(storage.download_dir(uri, tmp_path / "a")) == _tree(src)

    # During a call: the server is down when the download starts and comes back
    # ~1 s later; the retries (botocore standard mode + whole-file backoff) heal it.
    s3_server.stop(hard=True)
    restarter = threading.Thread(target=lambda: (time.sleep(1.0), s3_server.start()))
    restarter.start()
    caplog.set_level("WARNING", logger="sparse_transfer.storage")
    try:
        out = storage.download_dir(
            uri, tmp_path / "b", cache=storage.Cache(tmp_path / "fresh-cache")
        )
    finally:
        restarter.join()
    assert _tree(out) == _tree(src)
    assert any("Error, retry 1/" in r.getMessage() for r in caplog.records)


def test_wrong_credentials_name_the_bucket_not_the_secret(
    s3_bucket, s3_server, tmp_path, monkeypatch
):
    if s3_server.kind != "weed":
        pytest.skip("moto's server accepts any credentials")
    src = _make_dir(tmp_path / "src")
    secret = "WRONG-secret-value-1234567890"
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    with pytest.raises(StorageError) as info:
        storage.upload_dir(src, f"s3://{s3_bucket}/denied")
    message = str(info.value)
    assert f"bucket '{s3_bucket}'" in message and "access denied" in message
    assert "AWS_SECRET_ACCESS_KEY" in message
    assert secret not in message and s3_server.secret_key not in message
    with pytest.raises(StorageError, match=f"access denied to bucket '{s3_bucket}'") as info:
        storage.download_dir(f"s3://{s3_bucket}/denied", tmp_path / "out")
    assert secret not in str(info.value)


def test_missing_bucket_and_bad_uris(s3_bucket, tmp_path):
    with pytest.raises(StorageError, match="bucket 'no-such-bucket-here' does not exist"):
        storage.download_dir("s3://no-such-bucket-here/x", tmp_path / "out")
    with pytest.raises(StorageError, match="unsupported URI scheme 'gs://'"):
        storage.exists("gs://bucket/x")
    with pytest.raises(StorageError, match="names no bucket"):
        storage.exists("s3:///x")
