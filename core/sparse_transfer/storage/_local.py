"""A local directory with the same small interface as `S3Store`."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from sparse_transfer.errors import StorageError
from sparse_transfer.storage._swap import is_staging_name, write_bytes_atomic


class LocalStore:
    def __init__(self, root: Path):
        self.root = Path(root)

    def path(self, rel: str) -> Path:
        rel = rel.strip("/")
        return self.root.joinpath(*rel.split("/")) if rel else self.root

    def uri(self, rel: str = "") -> str:
        return str(self.path(rel))

    def list_files(self, rel: str = "") -> dict[str, int]:
        base = self.path(rel)
        out: dict[str, int] = {}
        if not base.is_dir():
            return out
        for root, dirs, files in os.walk(base):
            dirs[:] = [d for d in dirs if not is_staging_name(d)]
            for name in files:
                full = Path(root) / name
                if full.is_file():
                    out[full.relative_to(base).as_posix()] = full.stat().st_size
        return out

    def head(self, rel: str) -> dict | None:
        path = self.path(rel)
        if not path.is_file():
            return None
        stat = path.stat()
        return {"size": stat.st_size, "etag": f"{stat.st_mtime_ns}-{stat.st_size}"}

    def read_bytes(self, rel: str) -> bytes | None:
        path = self.path(rel)
        return path.read_bytes() if path.is_file() else None

    def write_bytes(self, rel: str, data: bytes) -> None:
        write_bytes_atomic(self.path(rel), data)

    def download(self, rel: str, dest: Path) -> None:
        src = self.path(rel)
        if not src.is_file():
            raise StorageError(
                f"{src} is listed in the manifest but missing: the directory is damaged; re-publish it"
            )
        shutil.copyfile(src, dest)
