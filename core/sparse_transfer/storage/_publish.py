"""Publishing a directory at a URI so that readers see one whole version, and never nothing.

S3: each publish uploads its files under a new version folder next to the
manifest (``versions/<UTC time>-<random>/...``) and only then switches the one
``manifest.json`` to it with a conditional PUT: ``If-None-Match: *`` when the
prefix was never published, ``If-Match: <ETag read at the start>`` for an
overwrite. So concurrent publishers of one prefix are linearizable: a plain
publish that finds it lost fails with a clear message (its version is
deleted); an overwrite re-reads the manifest and switches again, so it
becomes the newer version of a linear history. Until the switch the previous
version stays fully readable; a publish killed before it leaves the previous
version intact (its version folder and unfinished multipart uploads are
removed by a later publish once older than `ORPHAN_GRACE_S`). The last
`KEEP_VERSIONS` versions are kept, so a reader that read the previous manifest
a moment ago can still fetch its files.

Servers that ignore the conditions (answer NotImplemented, or let the second
``If-None-Match: *`` through; probed once per bucket) get a verifying re-read
after the switch instead: a publisher that sees another manifest than its own
fails, and no entry is ever corrupted (files are never overwritten in place),
but two publishes within one round trip can both report success, the later
winning. AWS S3 (since Aug/Nov 2024), SeaweedFS and MinIO honour both
conditions; see https://docs.aws.amazon.com/AmazonS3/latest/userguide/conditional-writes.html

Locally the directory is built beside the destination and swapped in with
`replace_directory` under an ``O_EXCL`` lock file, which gives the same
semantics (one winner; the previous version intact until the swap).
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import socket
import threading
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from sparse_transfer.errors import StorageError
from sparse_transfer.storage._manifest import (
    MANIFEST_NAME,
    FileEntry,
    Manifest,
    build_manifest,
    local_files,
    now_iso,
    parse_manifest,
    sha256_file,
)
from sparse_transfer.storage._s3 import ConditionalWritesUnsupported, S3Store
from sparse_transfer.storage._swap import (
    clean_leftovers,
    replace_directory,
    staging_dir,
    write_bytes_atomic,
)
from sparse_transfer.storage._uri import parse_uri

log = logging.getLogger(__name__)

VERSIONS = "versions"
KEEP_VERSIONS = 3
ORPHAN_GRACE_S = float(os.environ.get("SPARSE_TRANSFER_ORPHAN_GRACE_S", 3600))
_SWITCH_ATTEMPTS = 8
_conditional_support: dict[tuple[str | None, str], bool] = {}
_probe_lock = threading.Lock()


class PublishConflict(StorageError):
    """The destination is already published (or became so while this publish was uploading)."""


def upload_dir(local_dir: str | Path, uri: str | Path, *, overwrite: bool = True) -> Manifest:
    """Publishes a local directory at `uri`: a whole new version, switched to in one step.

    Args:
        local_dir: the directory to publish (an existing manifest.json in it is regenerated).
        uri: destination: a local path, file:// or s3://bucket/prefix.
        overwrite: replace an existing publish at `uri`; False raises instead, also
            when another publisher gets there first.

    Returns:
        The manifest written.

    Raises:
        StorageError: missing source, existing destination (overwrite=False), a lost
            race, S3 failures.
    """
    src = Path(local_dir)
    if not src.is_dir():
        raise StorageError(f"cannot publish {src}: not a directory")
    loc = parse_uri(uri)
    relpaths = local_files(src)
    if not relpaths:
        raise StorageError(f"cannot publish {src}: it holds no files")
    if loc.is_s3:
        return _publish_s3(src, relpaths, S3Store(loc.bucket, loc.key), overwrite)
    assert loc.path is not None
    return _publish_local(src, relpaths, loc.path, overwrite)


# -- S3 ---------------------------------------------------------------------------------
def _new_version() -> str:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    return f"{VERSIONS}/{stamp}-{secrets.token_hex(4)}"


def conditional_writes(store: S3Store) -> bool:
    """Whether the server honours ``If-None-Match: *`` on PutObject (probed once per bucket)."""
    from sparse_transfer.storage._s3 import endpoint_url

    key = (endpoint_url(), store.bucket)
    with _probe_lock:
        if key in _conditional_support:
            return _conditional_support[key]
        probe = store  # inside the publish's own prefix: the one place it may surely write
        name = f".sparse-transfer-probe-{secrets.token_hex(6)}"
        try:
            first = probe.put_if(name, b"1", etag=None)
            second = probe.put_if(name, b"2", etag=None)
            supported = first and not second
        except ConditionalWritesUnsupported:
            supported = False
        finally:
            probe.delete([name])
        if not supported:
            log.warning(
                "the S3 server%s ignores conditional writes: publishes are verified by a re-read "
                "instead (two publishes within one round trip may both succeed)",
                f" at {endpoint_url()}" if endpoint_url() else "",
            )
        _conditional_support[key] = supported
        return supported


def _publish_s3(src: Path, relpaths: list[str], store: S3Store, overwrite: bool) -> Manifest:
    current = store.read_with_etag(MANIFEST_NAME)
    if current is not None and not overwrite:
        raise PublishConflict(
            f"{store.uri()} is already published; pass overwrite/force to replace it"
        )
    version = _new_version()
    content = S3Store(store.bucket, store.key(version))
    entries = []
    try:
        for rel in relpaths:
            path = src / rel
            entries.append(FileEntry(rel, path.stat().st_size, sha256_file(path)))
            content.upload(path, rel)
        manifest, old = _switch(store, current, entries, version, overwrite)
    except BaseException:
        _remove_version(content)
        raise
    _collect_garbage(store, manifest, old)
    log.info(
        "published %d files (%.1f MB) to %s (%s)",
        len(entries),
        sum(e.size for e in entries) / 1e6,
        store.uri(),
        version,
    )
    return manifest


def _switch(
    store: S3Store,
    current: tuple[bytes, str] | None,
    entries: list[FileEntry],
    version: str,
    overwrite: bool,
) -> tuple[Manifest, Manifest | None]:
    """Points the manifest at `version` if nobody else switched it since `current` was read."""
    conditional = conditional_writes(store)
    for _ in range(_SWITCH_ATTEMPTS):
        old = _parse_or_none(current, store)
        history = ([old.base] if old and old.base else []) + (old.history if old else [])
        manifest = Manifest(
            files=entries, created=now_iso(), base=version, history=history[: KEEP_VERSIONS - 1]
        )
        body = manifest.to_json().encode()
        if conditional:
            won = store.put_if(MANIFEST_NAME, body, etag=current[1] if current else None)
            if not won:  # a retried request whose first attempt had landed also "fails"
                latest = store.read_with_etag(MANIFEST_NAME)
                won = latest is not None and latest[0] == body
        else:
            store.write_bytes(MANIFEST_NAME, body)
            won = store.read_bytes(MANIFEST_NAME) == body
            if not won and overwrite:
                # on such servers a later writer may have replaced us: we are the older version
                return manifest, old
        if won:
            return manifest, old
        if not overwrite:
            raise PublishConflict(
                f"{store.uri()} was published by someone else while this publish was uploading; "
                "nothing of this publish was kept: look at the new entry, then pass "
                "overwrite/force to replace it"
            )
        current = latest if conditional else store.read_with_etag(MANIFEST_NAME)
        log.info("%s changed while publishing; switching again on top of it", store.uri())
    raise StorageError(
        f"{store.uri()} kept changing under {_SWITCH_ATTEMPTS} publish attempts; try again later"
    )


def _parse_or_none(current: tuple[bytes, str] | None, store: S3Store) -> Manifest | None:
    if current is None:
        return None
    try:
        return parse_manifest(current[0], store.uri(MANIFEST_NAME))
    except StorageError:
        return None  # a damaged manifest is replaced, its files are collected as orphans


def _remove_version(content: S3Store) -> None:
    """Best-effort removal of a publish that did not become the manifest."""
    try:
        content.abort_uploads("")
        keys = list(content.list_files())
        if keys:
            content.delete(keys)
    except StorageError as exc:
        log.warning("could not remove the unfinished version %s: %s", content.uri(), exc)


def _collect_garbage(store: S3Store, manifest: Manifest, old: Manifest | None) -> None:
    """Deletes versions that left the kept history, orphans and the old flat layout."""
    try:
        kept = {manifest.base, *manifest.history}
        if old is not None and not old.base:
            stale = [e.path for e in old.files if not e.path.startswith(f"{VERSIONS}/")]
            if stale:
                store.delete(stale)
        dropped = [] if old is None else [b for b in [old.base, *old.history] if b not in kept]
        cutoff = time.time() - ORPHAN_GRACE_S
        for name, newest in store.folders(VERSIONS).items():
            base = f"{VERSIONS}/{name}"
            if base in kept:
                continue
            if base in dropped or newest < cutoff:
                victim = S3Store(store.bucket, store.key(base))
                keys = list(victim.list_files())
                if keys:
                    victim.delete(keys)
        store.abort_uploads(VERSIONS, older_than=cutoff)
    except StorageError as exc:
        log.warning("published, but could not remove old versions under %s: %s", store.uri(), exc)


# -- local ------------------------------------------------------------------------------
def _is_local_publish(path: Path) -> bool:
    """A zoo entry we published here: its manifest matches it (a copied one does not)."""
    from sparse_transfer.storage._owned import publish_problem

    return publish_problem(path) is None


@contextmanager
def publish_lock(dest: Path, timeout: float = 120.0):
    """An ``O_EXCL`` lock file beside `dest`, waited for up to `timeout` seconds.

    A lock whose owner process is dead (same host) is taken over.
    """
    lock = dest.parent / f".{dest.name}.lock"
    dest.parent.mkdir(parents=True, exist_ok=True)
    record = json.dumps({"pid": os.getpid(), "host": socket.gethostname()}).encode()
    deadline = time.monotonic() + timeout
    while True:
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            if _lock_owner_dead(lock):
                lock.unlink(missing_ok=True)
                continue
            if time.monotonic() > deadline:
                raise StorageError(
                    f"{dest} is being published by another process (lock {lock}) for over "
                    f"{timeout:.0f}s; wait for it, or remove the lock file if no publish runs"
                ) from None
            time.sleep(0.05)
            continue
        with os.fdopen(fd, "wb") as handle:
            handle.write(record)
        break
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)


def _lock_owner_dead(lock: Path) -> bool:
    try:
        owner = json.loads(lock.read_text())
        pid, host = int(owner["pid"]), str(owner["host"])
    except (OSError, ValueError, KeyError, TypeError):
        return False
    if host != socket.gethostname():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def _publish_local(src: Path, relpaths: list[str], dest: Path, overwrite: bool) -> Manifest:
    if src.resolve() == dest.resolve():
        raise StorageError(f"cannot publish {src} onto itself")
    with publish_lock(dest):
        clean_leftovers(dest)
        if _is_local_publish(dest) and not overwrite:
            raise PublishConflict(
                f"{dest} is already published; pass overwrite/force to replace it"
            )
        tmp = staging_dir(dest)
        try:
            for rel in relpaths:
                target = tmp / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src / rel, target)
            manifest = build_manifest(tmp, relpaths)
            write_bytes_atomic(tmp / MANIFEST_NAME, manifest.to_json().encode())
            replace_directory(
                tmp,
                dest,
                recognise=_is_local_publish,
                what="published directory (manifest.json)",
                overwrite=overwrite,
                flag="overwrite/force",
                protect=[src],
            )
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return manifest
