"""A local directory with the same small interface as `S3Store`."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from sparse_transfer.errors import StorageError

TMP_PREFIX = ".st-tmp-"


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
            dirs[:] = [d for d in dirs if not d.startswith(TMP_PREFIX)]
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


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Writes `data` to a temp file next to `path`, then renames it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def temp_dir_beside(dest: Path) -> Path:
    """A fresh temp directory in `dest`'s parent, so the final rename stays on one filesystem."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{dest.name}-", dir=dest.parent))


def swap_into_place(tmp: Path, dest: Path, overwrite: bool) -> None:
    """Renames the finished `tmp` dir to `dest`; an old `dest` is moved aside first.

    A reader sees either the old complete directory, nothing, or the new
    complete directory; never a mix.
    """
    if dest.exists() or dest.is_symlink():
        if not overwrite and not (dest.is_dir() and not any(dest.iterdir())):
            shutil.rmtree(tmp, ignore_errors=True)
            raise StorageError(f"{dest} already exists; pass overwrite/force to replace it")
        trash = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}old-{dest.name}-", dir=dest.parent))
        os.replace(dest, trash / "old") if dest.is_dir() else dest.unlink()
        os.replace(tmp, dest)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(tmp, dest)
