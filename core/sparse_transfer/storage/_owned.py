"""What we wrote into a folder, recorded there: the one proof that a folder is ours.

A marker file can be copied into anyone's folder (issue 26: a copied
``export_report.json`` got a user's folder replaced). So every folder a command
makes (training output, deployment, download) gets `RECORD`, which lists each
file we wrote with its size and sha256, what the folder is, and the identity
(device, inode) of the folder it was written in. A rename keeps that identity,
a copy does not. A folder is ours (`ownership_problem` is None) only when

- its record names the same kind of folder and the folder's own identity, and
- every listed file is there with its size; unlisted files are tolerated
  (``--overwrite`` is asked to replace what the command made, and a stale
  ``note.txt`` beside it goes with it, as the Hugging Face rule has it), but an
  unlisted folder must be ours itself (a deployment inside a training output),
  so that a user's ``docs/`` or ``.ssh/`` in it is never removed.

`verify_recorded` is the reader's side: every listed file hashes as recorded and
nothing unlisted sits beside them (an added ``added_tokens.json`` changes what a
tokenizer loads), checked by `evaluate`, `benchmark` and `serve` before use.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from sparse_transfer.errors import StorageError
from sparse_transfer.storage._manifest import (
    MANIFEST_NAME,
    check_relpath,
    parse_manifest,
    sha256_file,
)
from sparse_transfer.storage._swap import MARKER, is_staging_name

RECORD = ".sparse-transfer-files.json"
RECORD_FORMAT = "sparse-transfer-files/1"


def _identity(folder: Path) -> list[int]:
    st = os.stat(folder)
    return [st.st_dev, st.st_ino]


def _walk(folder: Path) -> tuple[list[str], list[str]]:
    """(files, folders) under `folder` as slash paths, links not followed, our own
    bookkeeping (the record, staging markers and folders) left out."""
    files, dirs = [], []
    for root, subdirs, names in os.walk(folder):
        subdirs[:] = sorted(d for d in subdirs if not is_staging_name(d))
        base = Path(root)
        dirs += [(base / d).relative_to(folder).as_posix() for d in subdirs]
        files += [
            (base / n).relative_to(folder).as_posix()
            for n in names
            if n not in (RECORD, MARKER) or base != folder
        ]
    return sorted(files), sorted(dirs)


def record_files(folder: Path, what: str) -> dict[str, Any]:
    """Writes `RECORD` listing every file under `folder` (call it last, before publishing)."""
    folder = Path(folder)
    files, _ = _walk(folder)
    listed = {}
    for rel in files:
        path = folder / rel
        if path.is_symlink() or not path.is_file():
            continue
        listed[rel] = {"size": path.stat().st_size, "sha256": sha256_file(path)}
    record = {"format": RECORD_FORMAT, "what": what, "folder": _identity(folder), "files": listed}
    tmp = folder / f".{RECORD}.tmp-{os.getpid()}"
    tmp.write_text(json.dumps(record, indent=1))
    os.replace(tmp, folder / RECORD)
    return record


def read_record(folder: Path) -> dict[str, Any] | None:
    """The folder's record, or None when it has none or it is not one of ours."""
    try:
        record = json.loads((Path(folder) / RECORD).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("format") != RECORD_FORMAT:
        return None
    if not isinstance(record.get("files"), dict):
        return None
    try:  # a record naming ../ paths would reach outside the folder it speaks for
        for rel in record["files"]:
            check_relpath(str(rel), str(Path(folder) / RECORD))
    except StorageError:
        return None
    return record


def ownership_problem(folder: Path, what: str) -> str | None:
    """None when `folder` is a `what` we made and still holds what we wrote; else why not."""
    folder = Path(folder)
    record = read_record(folder)
    if record is None:
        return f"it has no {RECORD} (the record of what sparse-transfer wrote)"
    if record.get("what") != what:
        return f"its {RECORD} records a {record.get('what')}, not a {what}"
    sizes = {rel: entry.get("size") for rel, entry in record["files"].items()}
    return listing_problem(folder, record.get("folder"), sizes, RECORD)


def download_problem(folder: Path) -> str | None:
    """None when `folder` is a download of ours (`download_dir`), unchanged; else why not.

    A published zoo entry also has a manifest.json, but no ``origin: download``:
    ``zoo pull --force`` must never replace one.
    """
    try:
        manifest = parse_manifest((Path(folder) / MANIFEST_NAME).read_bytes(), str(folder))
    except (OSError, StorageError):
        return f"it has no readable {MANIFEST_NAME}"
    if manifest.origin != "download":
        return f"its {MANIFEST_NAME} is a publish (a zoo entry), not a download"
    sizes = {f.path: f.size for f in manifest.files}
    return listing_problem(Path(folder), manifest.folder, sizes, MANIFEST_NAME)


def publish_problem(folder: Path) -> str | None:
    """None when `folder` is a local publish (a zoo entry) whose manifest matches it.

    Publishes carry no folder identity (a zoo root may be copied or restored whole), so
    here the listing alone decides: a manifest.json copied into a user's folder lists
    files that are not there, or leaves the user's folders unlisted.
    """
    try:
        manifest = parse_manifest((Path(folder) / MANIFEST_NAME).read_bytes(), str(folder))
    except (OSError, StorageError):
        return f"it has no readable {MANIFEST_NAME}"
    if manifest.origin == "download" or manifest.base:
        return f"its {MANIFEST_NAME} is not a local publish"
    sizes = {f.path: f.size for f in manifest.files}
    return listing_problem(Path(folder), None, sizes, MANIFEST_NAME)


def listing_problem(folder: Path, identity: Any, sizes: dict[str, Any], name: str) -> str | None:
    """The shared rule: written for this very folder (unless `identity` is None), every
    listed file there with its size, no unlisted folder of someone else's files."""
    if identity is not None and identity != _identity(folder):
        return f"its {name} was written for another folder (a copy is not ours to replace)"
    for rel, size in sizes.items():
        path = folder / rel
        if not path.is_file() or path.stat().st_size != size:
            return f"{rel}, which it wrote, is missing or changed"
    files, dirs = _walk(folder)
    holding = {rel.rsplit("/", 1)[0] for rel in sizes if "/" in rel}
    holding |= {p for rel in holding for p in _parents(rel)}
    owned = _owned_dirs(folder, [d for d in dirs if d not in holding])
    for rel in dirs:
        if rel in holding or any(rel == o or rel.startswith(f"{o}/") for o in owned):
            continue
        if not any(f.startswith(f"{rel}/") for f in files):
            continue  # an empty folder holds nothing to lose
        return f"{rel}/ holds files sparse-transfer did not write"
    return None


def _parents(rel: str) -> list[str]:
    parts = rel.split("/")
    return ["/".join(parts[:i]) for i in range(1, len(parts))]


def _owned_dirs(folder: Path, dirs: list[str]) -> list[str]:
    """Sub-folders that are outputs of ours in their own right (a deployment/)."""
    out = []
    for rel in dirs:
        record = read_record(folder / rel)
        if record is not None and ownership_problem(folder / rel, str(record.get("what"))) is None:
            out.append(rel)
    return out


def verify_recorded(folder: Path, what: str = "deployment") -> None:
    """Every recorded file hashes as recorded and no other file sits beside them.

    Raises:
        StorageError: one line naming the folder and the first difference.
    """
    folder = Path(folder)
    record = read_record(folder)
    if record is None:
        raise StorageError(
            f"{folder}: no {RECORD} (the sha256 of every file, written at export): it was not "
            f"written by this version of sparse-transfer or was changed; export the {what} again"
        )
    listed: dict[str, Any] = record["files"]
    for rel, entry in sorted(listed.items()):
        path = folder / rel
        if not path.is_file():
            raise StorageError(f"{path}: listed in {folder / RECORD} but missing; export again")
        if path.stat().st_size != entry.get("size") or sha256_file(path) != entry.get("sha256"):
            raise StorageError(
                f"{path}: sha256 differs from {folder / RECORD}: the file was changed after "
                f"export; refusing to use it: export the {what} again"
            )
    extra = [rel for rel in _walk(folder)[0] if rel not in listed]
    if extra:
        raise StorageError(
            f"{folder / extra[0]}: not part of the exported {what} ({len(extra)} unlisted "
            "file(s)); loaders would read it: remove it or export again"
        )
