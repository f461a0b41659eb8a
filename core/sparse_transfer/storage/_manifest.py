"""The publish manifest: which files a directory holds, with sizes and sha256.

A directory counts as published only once its `manifest.json` exists; readers
trust only the files it lists and check each one against its size and hash.
An S3 publish keeps its files under a version-unique folder next to the
manifest (`base`, e.g. ``versions/20260101T000000Z-ab12cd34``), lists the
bases of the versions it keeps (`history`) and is format 2; a manifest without
`base` (format 1, every local publish) has its files beside it.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath

from sparse_transfer.errors import StorageError
from sparse_transfer.storage._swap import MARKER as STAGING_MARKER
from sparse_transfer.storage._swap import is_staging_name

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = "sparse-transfer-manifest/1"
MANIFEST_FORMAT_VERSIONED = "sparse-transfer-manifest/2"
_CHUNK = 1 << 20


@dataclass(frozen=True)
class FileEntry:
    path: str  # slash-separated, relative
    size: int
    sha256: str


@dataclass
class Manifest:
    files: list[FileEntry] = field(default_factory=list)
    created: str = ""
    base: str = ""  # folder of the files, relative to the manifest ("" = beside it)
    history: list[str] = field(default_factory=list)  # bases of older versions kept
    #: "download" for what `download_dir` wrote (a copy, replaceable by another download);
    #: "" for a publish. `folder` is the (device, inode) the download was written in.
    origin: str = ""
    folder: list[int] = field(default_factory=list)

    def to_json(self) -> str:
        data: dict = {
            "format": MANIFEST_FORMAT_VERSIONED if self.base else MANIFEST_FORMAT,
            "created": self.created,
        }
        if self.base:
            data["base"] = self.base
            data["history"] = list(self.history)
        if self.origin:
            data["origin"] = self.origin
            data["folder"] = list(self.folder)
        data["total_size"] = sum(f.size for f in self.files)
        data["files"] = [{"path": f.path, "size": f.size, "sha256": f.sha256} for f in self.files]
        return json.dumps(data, indent=2, sort_keys=False)

    def get(self, relpath: str) -> FileEntry | None:
        for entry in self.files:
            if entry.path == relpath:
                return entry
        return None

    def under(self, subdir: str | None) -> list[FileEntry]:
        """Entries below `subdir` (all entries for None or "")."""
        if not subdir:
            return list(self.files)
        prefix = subdir.strip("/") + "/"
        return [f for f in self.files if f.path.startswith(prefix)]

    @property
    def digest(self) -> str:
        """A content hash of the file list: equal digests mean equal directories."""
        text = "\n".join(
            f"{f.path}\0{f.size}\0{f.sha256}" for f in sorted(self.files, key=lambda f: f.path)
        )
        return hashlib.sha256(text.encode()).hexdigest()


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def check_relpath(relpath: str, where: str) -> str:
    """Refuses absolute paths, `..` and backslashes: a manifest must not escape its directory."""
    pure = PurePosixPath(relpath)
    if (
        not relpath
        or "\\" in relpath
        or pure.is_absolute()
        or any(part in ("..", ".", "") for part in relpath.split("/"))
    ):
        raise StorageError(
            f"unsafe path '{relpath}' in {where}: manifest paths must be relative, without '..'"
        )
    return relpath


def parse_manifest(text: str | bytes, where: str) -> Manifest:
    """Parses and validates a manifest; `where` names it in error messages."""
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise StorageError(
            f"{where} is not valid JSON ({exc}): the publish is corrupted; re-publish it"
        ) from exc
    if not isinstance(data, dict) or data.get("format") not in (
        MANIFEST_FORMAT,
        MANIFEST_FORMAT_VERSIONED,
    ):
        raise StorageError(
            f"{where} is not a sparse-transfer manifest (expected format '{MANIFEST_FORMAT}' "
            f"or '{MANIFEST_FORMAT_VERSIONED}')"
        )
    base = data.get("base") or ""
    history = data.get("history") or []
    if not isinstance(base, str) or not isinstance(history, list):
        raise StorageError(f"{where}: 'base' must be a folder name and 'history' a list of them")
    for folder in ([base] if base else []) + history:
        check_relpath(str(folder), where)
    entries = []
    seen = set()
    for i, item in enumerate(data.get("files") or []):
        try:
            path, size, sha = item["path"], int(item["size"]), str(item["sha256"])
        except (KeyError, TypeError, ValueError) as exc:
            raise StorageError(f"{where}: files[{i}] needs path, size and sha256") from exc
        check_relpath(path, where)
        if path in seen:
            raise StorageError(f"{where}: '{path}' is listed twice")
        if len(sha) != 64 or size < 0:
            raise StorageError(f"{where}: files[{i}] ('{path}') has a bad size or sha256")
        seen.add(path)
        entries.append(FileEntry(path, size, sha))
    return Manifest(
        files=entries,
        created=str(data.get("created", "")),
        base=base,
        history=[str(h) for h in history],
        origin=str(data.get("origin") or ""),
        folder=[x for x in _list(data.get("folder")) if isinstance(x, int)],
    )


def _list(value: object) -> list:
    return value if isinstance(value, list) else []


def local_files(directory: Path) -> list[str]:
    """Relative slash paths of the regular files under `directory`, sorted.

    Skips an existing manifest (it is regenerated) and our own temp files.
    Symlinks to files are followed; other special files are skipped.
    """
    out = []
    for root, dirs, files in os.walk(directory):
        dirs[:] = sorted(d for d in dirs if not is_staging_name(d))
        for name in files:
            full = Path(root) / name
            rel = full.relative_to(directory).as_posix()
            if rel == MANIFEST_NAME or name == STAGING_MARKER or not full.is_file():
                continue
            out.append(rel)
    return sorted(out)


def build_manifest(directory: Path, relpaths: list[str] | None = None) -> Manifest:
    relpaths = local_files(directory) if relpaths is None else relpaths
    entries = [
        FileEntry(rel, (directory / rel).stat().st_size, sha256_file(directory / rel))
        for rel in relpaths
    ]
    return Manifest(files=entries, created=now_iso())


def now_iso() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
