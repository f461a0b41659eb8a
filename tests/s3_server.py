"""Pytest fixtures for a real S3 server on loopback (SeaweedFS, else moto's server).

`s3_server` is one server per test session (per xdist worker); `s3_bucket`
makes a fresh bucket per test, points the standard AWS environment at the
server and isolates the download cache, so tests never share state.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from tests.loopback_s3 import LoopbackS3


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory) -> Iterator[LoopbackS3]:
    """A started loopback S3 server with random credentials (session scoped)."""
    kind = os.environ.get("SPARSE_TRANSFER_TEST_S3", "auto")  # auto, weed or moto
    server = LoopbackS3(tmp_path_factory.mktemp("s3-server"), kind=kind)
    server.start()
    try:
        yield server
    finally:
        server.stop(hard=True)  # a test server: no need to wait for a graceful exit


@pytest.fixture
def s3_bucket(s3_server: LoopbackS3, monkeypatch, tmp_path) -> str:
    """A new empty bucket; AWS_* env vars point at the server and the cache is per test."""
    if s3_server.process is None or s3_server.process.poll() is not None:
        s3_server.process = None
        s3_server.start()  # a previous test stopped it
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.setenv("SPARSE_TRANSFER_CACHE", str(tmp_path / "st-cache"))
    monkeypatch.setenv("SPARSE_TRANSFER_S3_BACKOFF", "0.2")
    bucket = f"test-{uuid.uuid4().hex[:12]}"
    s3_server.create_bucket(bucket)
    return bucket
