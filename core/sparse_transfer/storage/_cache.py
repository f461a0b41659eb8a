"""The local download cache, keyed by content hash.

Layout under `$SPARSE_TRANSFER_CACHE` (default `~/.cache/sparse-transfer`):

    blobs/sha256/ab/abcdef...   one verified file per content hash (read-only)
    files/<sha256>/<name>       a blob under its file name (hard link), for `fetch_file`
    dirs/<digest>/              a materialised published directory (hard links to blobs)
    index/<key>.json            remote object (uri, etag, size) -> sha256, for un-manifested fetches

A blob enters the cache only after its size and sha256 matched, and by an
atomic rename, so a cache hit never needs the network and never returns a
partial file. Every verified file is stamped with a fixed modification time
(`STAMP_NS`); a hit is re-checked cheaply (size and that stamp: anything that
wrote into the file changed its mtime) and hashed again only on a mismatch, so a
cached file changed in place (a hard link shares it) is never reused unverified.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from sparse_transfer.errors import StorageError
from sparse_transfer.storage._manifest import sha256_file

#: The mtime every verified cache file carries (2000-01-01T00:00:00Z): writes change it.
STAMP_NS = 946_684_800 * 10**9


def stamp(path: Path) -> None:
    os.utime(path, ns=(STAMP_NS, STAMP_NS), follow_symlinks=False)


def still_verified(path: Path, sha256: str, size: int) -> bool:
    """Size and stamp match (cheap), else the full hash does (then re-stamped)."""
    try:
        st = path.lstat()
    except OSError:
        return False
    if not path.is_file() or path.is_symlink() or st.st_size != size:
        return False
    if st.st_mtime_ns == STAMP_NS:
        return True
    if sha256_file(path) != sha256:
        return False
    with contextlib.suppress(OSError):  # a cache we may read but not write: hash next time too
        stamp(path)
    return True


def cache_root() -> Path:
    root = os.environ.get("SPARSE_TRANSFER_CACHE")
    return Path(root).expanduser() if root else Path.home() / ".cache" / "sparse-transfer"


class Cache:
    def __init__(self, root: Path | None = None):
        self.root = Path(root) if root else cache_root()
        self.hits = 0
        self.misses = 0

    def blob_path(self, sha256: str) -> Path:
        return self.root / "blobs" / "sha256" / sha256[:2] / sha256

    def lookup(self, sha256: str, size: int) -> Path | None:
        path = self.blob_path(sha256)
        if still_verified(path, sha256, size):
            self.hits += 1
            return path
        if path.exists() or path.is_symlink():  # changed in place: never served again
            with contextlib.suppress(OSError):
                path.unlink()
        return None

    def tmp_file(self) -> Path:
        tmp_dir = self.root / "tmp"
        tmp_dir.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=tmp_dir)
        os.close(fd)
        return Path(name)

    def admit(self, tmp: Path, sha256: str, size: int, what: str) -> Path:
        """Verifies a downloaded temp file against (size, sha256) and moves it into the cache.

        Raises:
            StorageError: on a size or hash mismatch (the temp file is removed).
        """
        actual_size = tmp.stat().st_size
        if actual_size != size:
            tmp.unlink(missing_ok=True)
            raise StorageError(
                f"{what}: size mismatch (manifest says {size} bytes, got {actual_size}): the object is "
                "partial or was changed after publishing; re-publish it"
            )
        actual = sha256_file(tmp)
        if actual != sha256:
            tmp.unlink(missing_ok=True)
            raise StorageError(
                f"{what}: sha256 mismatch (manifest {sha256[:16]}..., got {actual[:16]}...): the object "
                "is corrupted or was changed after publishing; re-publish it"
            )
        return self._insert(tmp, sha256)

    def admit_unverified(self, tmp: Path) -> tuple[Path, str]:
        """Hashes a downloaded file (no expected hash known) and moves it into the cache."""
        sha = sha256_file(tmp)
        return self._insert(tmp, sha), sha

    def _insert(self, tmp: Path, sha256: str) -> Path:
        dest = self.blob_path(sha256)
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(tmp, 0o444)
        stamp(tmp)
        os.replace(tmp, dest)
        self.misses += 1
        return dest

    # -- remote object index (for fetches without a manifest) ----------------
    def _index_path(self, uri: str, etag: str, size: int) -> Path:
        key = hashlib.sha256(f"{uri}\0{etag}\0{size}".encode()).hexdigest()
        return self.root / "index" / f"{key}.json"

    def index_get(self, uri: str, etag: str, size: int) -> Path | None:
        path = self._index_path(uri, etag, size)
        try:
            sha = json.loads(path.read_text())["sha256"]
        except (OSError, ValueError, KeyError):
            return None
        return self.lookup(sha, size)

    def index_put(self, uri: str, etag: str, size: int, sha256: str) -> None:
        path = self._index_path(uri, etag, size)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"uri": uri, "etag": etag, "size": size, "sha256": sha256}))
        os.replace(tmp, path)

    # -- materialised directories and named files --------------------------------
    def dir_path(self, digest: str) -> Path:
        return self.root / "dirs" / digest

    def named(self, blob: Path, sha256: str, name: str) -> Path:
        """`files/<sha256>/<name>`: the blob under its own file name (suffixes matter to loaders)."""
        target = self.root / "files" / sha256 / name
        if not still_verified(target, sha256, blob.stat().st_size):
            tmp = target.parent / f".{name}.{os.getpid()}.tmp"
            tmp.unlink(missing_ok=True)
            link_or_copy(blob, tmp)
            os.replace(tmp, target)
        return target


def link_or_copy(src: Path, dest: Path) -> None:
    """Hard-links a cache blob into a cache directory (copies across filesystems)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dest)
    except OSError:
        shutil.copyfile(src, dest)
        stamp(dest)
