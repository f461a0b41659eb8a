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


def _base(uri: str) -> str:
    """The version folder the manifest at `uri` points to."""
    base = storage.read_manifest(uri).base
    assert base.startswith("versions/")
    return base


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
    base = _base(uri)
    assert keys == ["manifest.json"] + [
        f"{base}/{rel}" for rel in ("recipe.yaml", "training/config.json", "training/weights.bin")
    ]
    remote = json.loads(storage.read_text(f"{uri}/manifest.json"))
    sizes = {f["path"]: f["size"] for f in remote["files"]}
    assert sizes["training/weights.bin"] == 300_000
    assert storage.exists(uri) and storage.exists(f"{uri}/{base}/recipe.yaml")
    assert storage.file_uris(uri)["training/config.json"] == f"{uri}/{base}/training/config.json"
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

    key = f"big/{_base(uri)}/model.safetensors"
    head = _client(s3_server).head_object(Bucket=s3_bucket, Key=key)
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
    base = _base(uri)
    for rel in ("recipe.yaml", "training/config.json", "training/weights.bin"):
        s3.delete_object(Bucket=s3_bucket, Key=f"cached/{base}/{rel}")
    assert storage.list_prefix(uri) == ["manifest.json"]
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
    if len(done) == 2:  # two real files are up, a third is half-way: signal, wait to be killed
        started = _s3.client().create_multipart_upload(Bucket=self.bucket, Key=self.key("big.bin"))
        _s3.client().upload_part(Bucket=self.bucket, Key=self.key("big.bin"), PartNumber=1,
                                 UploadId=started["UploadId"], Body=b"x" * 5 * 1024 * 1024)
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


def test_upload_killed_midway_leaves_the_previous_version_intact(
    s3_bucket, s3_server, tmp_path, monkeypatch
):
    src = _make_dir(tmp_path / "src")
    uri = f"s3://{s3_bucket}/killed"
    _upload_and_kill(src, uri)
    assert len(storage.list_prefix(uri)) == 2  # objects are there ...
    with pytest.raises(StorageError, match="no manifest.json"):  # ... but not trusted
        storage.download_dir(uri, tmp_path / "out")

    # An overwrite killed midway leaves the previous version published and whole.
    storage.upload_dir(src, uri)
    before = _tree(storage.download_dir(uri, tmp_path / "before"))
    (src / "recipe.yaml").write_text("version: 2.0.0\n")
    _upload_and_kill(src, uri)
    assert _tree(storage.download_dir(uri, tmp_path / "after")) == before
    s3 = _client(s3_server)
    assert len(s3.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", [])) == 2

    # The next publish collects the orphaned versions and aborts their multipart uploads.
    monkeypatch.setattr("sparse_transfer.storage._publish.ORPHAN_GRACE_S", 0.0)
    time.sleep(1.1)  # LastModified has a one-second resolution
    latest = storage.upload_dir(src, uri)
    assert s3.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", []) == []
    kept = {key.split("/")[1] for key in storage.list_prefix(uri) if key != "manifest.json"}
    assert kept == {b.split("/")[1] for b in [latest.base, *latest.history]}
    assert _tree(storage.download_dir(uri, tmp_path / "latest")) == _tree(src)


def test_corrupted_object_is_detected(s3_bucket, s3_server, tmp_path):
    src = _make_dir(tmp_path / "src")
    uri = f"s3://{s3_bucket}/corrupt"
    storage.upload_dir(src, uri)
    s3 = _client(s3_server)
    original = (src / "training" / "weights.bin").read_bytes()
    flipped = bytes([original[0] ^ 0xFF]) + original[1:]  # same size, one byte differs
    key = f"corrupt/{_base(uri)}/training/weights.bin"
    s3.put_object(Bucket=s3_bucket, Key=key, Body=flipped)
    with pytest.raises(StorageError, match=r"weights\.bin: sha256 mismatch"):
        storage.download_dir(uri, tmp_path / "out")
    assert not (tmp_path / "out").exists()

    s3.put_object(Bucket=s3_bucket, Key=key, Body=original[:1000])
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


# -- linearizable publishes (issue 13 items 4 and 5) ------------------------------------------
def _content(root: Path, who: str) -> Path:
    """A small directory whose every file says who wrote it."""
    (root / "training").mkdir(parents=True)
    (root / "training" / "config.json").write_text(json.dumps({"who": who}))
    (root / "training" / "weights.bin").write_bytes(who.encode() * 20_000)
    (root / "model.md").write_text(f"# {who}\n")
    return root


def _race(uri: str, sources: list[Path], overwrite: bool) -> list[object]:
    """Publishes every source at `uri` at the same moment; each result: a manifest or an error."""
    barrier = threading.Barrier(len(sources))
    results: list[object] = [None] * len(sources)

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = storage.upload_dir(sources[i], uri, overwrite=overwrite)
        except StorageError as exc:
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(sources))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    return results


def test_the_server_honours_conditional_writes(s3_bucket, s3_server):
    if s3_server.kind != "weed":
        pytest.skip("checked against SeaweedFS, the loopback server of this suite")
    from sparse_transfer.storage._publish import conditional_writes
    from sparse_transfer.storage._s3 import S3Store

    assert conditional_writes(S3Store(s3_bucket, "")) is True


def test_the_server_has_room_for_a_bucket_per_test_however_full_the_disk(s3_server):
    """`weed mini` sizes its volume cap from free disk, one volume per bucket: with 27 GB
    free a CI run ran out of buckets midway (InternalError on every first upload)."""
    if s3_server.kind != "weed":
        pytest.skip("a SeaweedFS setting")
    from tests.loopback_s3 import VOLUME_SLOTS

    s3 = _client(s3_server)
    before = s3_server.volume_slots()
    for i in range(3):
        name = f"slots-{os.getpid()}-{time.monotonic_ns()}-{i}"
        s3.create_bucket(Bucket=name)
        s3.put_object(Bucket=name, Key="model.md", Body=b"card")
    after = s3_server.volume_slots()
    assert before - after == 3  # one volume per bucket, as the cap assumes
    assert after > VOLUME_SLOTS - 400  # far more than any test run makes


def test_concurrent_publishes_of_one_prefix_are_linearizable(s3_bucket, s3_server, tmp_path):
    """20 rounds of two publishers: one complete readable version each time; the loser of a
    plain race fails clearly, a forced one lands on top as the newer version."""
    sources = [_content(tmp_path / who, who) for who in ("alice", "bob")]
    expected = {who: _tree(src) for who, src in zip(("alice", "bob"), sources, strict=True)}
    cas_losses = 0  # rounds decided by the conditional manifest write, not the early check
    for round_ in range(20):
        uri = f"s3://{s3_bucket}/race/{round_}"
        results = _race(uri, sources, overwrite=False)
        won = [r for r in results if isinstance(r, storage.Manifest)]
        lost = [r for r in results if isinstance(r, storage.PublishConflict)]
        assert len(won) == 1 and len(lost) == 1, results
        assert "published by someone else" in str(lost[0]) or "already published" in str(lost[0])
        cas_losses += "published by someone else" in str(lost[0])
        got = _tree(storage.download_dir(uri, tmp_path / f"plain{round_}"))
        winner = "alice" if results[0] is won[0] else "bob"
        assert got == expected[winner]
        assert {k.split("/")[1] for k in storage.list_prefix(uri) if "/" in k} == {
            won[0].base.split("/")[1]
        }  # the loser's files are gone

        forced = _race(uri, sources, overwrite=True)
        assert all(isinstance(r, storage.Manifest) for r in forced), forced
        final = storage.read_manifest(uri)
        first, second = sorted(forced, key=lambda m: final.base != m.base)  # type: ignore[union-attr]
        assert first.base == final.base and final.history[0] == second.base  # type: ignore[union-attr]
        assert final.history[1] == won[0].base  # one linear history, nothing lost
        last = "alice" if forced[0] is first else "bob"
        assert _tree(storage.download_dir(uri, tmp_path / f"forced{round_}")) == expected[last]
    print(f"plain races decided by the conditional write: {cas_losses}/20")
    assert cas_losses >= 5  # the race really happened, and If-None-Match decided it


def test_readers_never_see_never_published_during_overwrites(s3_bucket, s3_server, tmp_path):
    sources = [_content(tmp_path / who, who) for who in ("alice", "bob")]
    uri = f"s3://{s3_bucket}/busy"
    storage.upload_dir(sources[0], uri)
    stop, reads, errors = threading.Event(), [], []

    def read() -> None:
        while not stop.is_set():
            try:
                folder = storage.materialize(uri, subdir="training")
                reads.append(json.loads((folder / "config.json").read_text())["who"])
            except StorageError as exc:
                errors.append(str(exc))

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for i in range(12):
            storage.upload_dir(sources[i % 2], uri, overwrite=True)
    finally:
        stop.set()
        reader.join(timeout=60)
    assert errors == [] and len(reads) >= 5 and set(reads) <= {"alice", "bob"}
    assert len(storage.read_manifest(uri).history) == storage.KEEP_VERSIONS - 1
    versions = {k.split("/")[1] for k in storage.list_prefix(uri) if "/" in k}
    assert len(versions) == storage.KEEP_VERSIONS  # older versions are collected
