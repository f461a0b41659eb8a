"""Reading published directories: every file checked against the manifest, remote ones cached.

Readers trust only what a manifest lists and check every file's size and
sha256; remote files pass through the content-addressed cache (`_cache.py`),
so a second read needs no network. Reading never writes into what it reads.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from sparse_transfer.errors import StorageError
from sparse_transfer.storage._cache import Cache, link_or_copy, stamp, still_verified
from sparse_transfer.storage._local import LocalStore
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
from sparse_transfer.storage._owned import RECORD, download_problem
from sparse_transfer.storage._s3 import S3Store
from sparse_transfer.storage._swap import (
    replace_directory,
    staging_dir,
    write_bytes_atomic,
)
from sparse_transfer.storage._uri import Location, parse_uri

log = logging.getLogger(__name__)
Store = LocalStore | S3Store


def _store(loc: Location) -> Store:
    if loc.is_s3:
        return S3Store(loc.bucket, loc.key)
    assert loc.path is not None
    return LocalStore(loc.path)


def content_store(store: Store, manifest: Manifest) -> Store:
    """Where the manifest's files lie: beside it, or in its version folder (`base`)."""
    if not manifest.base:
        return store
    if isinstance(store, S3Store):
        return S3Store(store.bucket, store.key(manifest.base))
    return LocalStore(store.path(manifest.base))


def content_uri(uri: str | Path, manifest: Manifest) -> str:
    """The URI of the folder holding the files of the publish at `uri` (see `content_store`)."""
    return content_store(_store(parse_uri(uri)), manifest).uri()


def _subtree(manifest: Manifest, subdir: str | None, where: str) -> list[FileEntry]:
    """Entries under `subdir`, with paths made relative to it."""
    entries = manifest.under(subdir)
    if subdir and not entries:
        raise StorageError(f"{where} holds no files under '{subdir}/' (see its manifest.json)")
    if not subdir:
        return entries
    cut = len(subdir.strip("/")) + 1
    return [FileEntry(e.path[cut:], e.size, e.sha256) for e in entries]


# -- reading --------------------------------------------------------------------
def read_manifest(uri: str | Path) -> Manifest:
    """The manifest of a published directory.

    Raises:
        StorageError: when there is none (never published, or an upload that did not finish).
    """
    store = _store(parse_uri(uri))
    text = store.read_bytes(MANIFEST_NAME)
    if text is None:
        raise StorageError(
            f"{store.uri()} has no {MANIFEST_NAME}: it was never published or its upload did not "
            "finish, so its files are not trusted; (re)publish it with upload_dir / `zoo push`"
        )
    return parse_manifest(text, store.uri(MANIFEST_NAME))


def is_published(uri: str | Path) -> bool:
    """True when `uri` holds a manifest (a complete publish)."""
    store = _store(parse_uri(uri))
    return store.head(MANIFEST_NAME) is not None


def _fetch_entry(store: Store, entry: FileEntry, cache: Cache, rel_prefix: str = "") -> Path:
    """A verified local copy of one manifest entry: the cache blob (remote) or the file (local)."""
    rel = f"{rel_prefix}{entry.path}"
    if isinstance(store, LocalStore):
        path = store.path(rel)
        what = str(path)
        if not path.is_file():
            raise StorageError(
                f"{what} is listed in the manifest but missing; re-publish the directory"
            )
        if path.stat().st_size != entry.size or sha256_file(path) != entry.sha256:
            raise StorageError(
                f"{what}: size/sha256 differ from the manifest: the file is corrupted or was "
                "changed after publishing; re-publish it"
            )
        return path
    hit = cache.lookup(entry.sha256, entry.size)
    if hit is not None:
        return hit
    tmp = cache.tmp_file()
    try:
        store.download(rel, tmp)
        return cache.admit(tmp, entry.sha256, entry.size, store.uri(rel))
    finally:
        tmp.unlink(missing_ok=True)


def download_dir(
    uri: str | Path,
    local_dir: str | Path,
    *,
    subdir: str | None = None,
    overwrite: bool = False,
    require_manifest: bool = True,
    cache: Cache | None = None,
) -> Path:
    """Downloads a published directory (or its `subdir`) to `local_dir`, verified.

    The destination appears complete or not at all (temp dir + rename) and
    holds a manifest of what it received.

    Args:
        uri: published directory (local path, file://, s3://).
        local_dir: destination directory (must not exist or be empty unless overwrite).
        subdir: only the files below this relative folder (e.g. "training").
        overwrite: replace an existing destination.
        require_manifest: False copies a plain local directory that was never published.
        cache: the blob cache to use (default: `$SPARSE_TRANSFER_CACHE`).

    Raises:
        StorageError: no manifest, a missing/partial/corrupted file, S3 failures.
    """
    loc = parse_uri(uri)
    store = _store(loc)
    dest = Path(local_dir)
    if not require_manifest and not loc.is_s3 and not is_published(uri):
        assert loc.path is not None
        source = loc.path / subdir if subdir else loc.path
        manifest = build_manifest(source)
        return _materialize_entries(
            _store(parse_uri(source)), "", manifest.files, dest, overwrite, cache
        )
    manifest = read_manifest(uri)
    entries = _subtree(manifest, subdir, store.uri())
    prefix = f"{subdir.strip('/')}/" if subdir else ""
    return _materialize_entries(
        content_store(store, manifest), prefix, entries, dest, overwrite, cache, link=False
    )


def _materialize_entries(
    store: Store,
    rel_prefix: str,
    entries: list[FileEntry],
    dest: Path,
    overwrite: bool,
    cache: Cache | None,
    link: bool = False,
) -> Path:
    cache = cache or Cache()
    tmp = staging_dir(dest)
    try:
        for entry in entries:
            source = _fetch_entry(store, entry, cache, rel_prefix)
            target = tmp.joinpath(*entry.path.split("/"))
            target.parent.mkdir(parents=True, exist_ok=True)
            if link and not isinstance(store, LocalStore):
                link_or_copy(source, target)  # a cache blob
            else:  # never a hard link to a published file: a write there would reach the copy
                shutil.copyfile(source, target)
                if link:
                    stamp(target)
        st = tmp.stat()  # a rename keeps it: what makes the download ours (see _owned)
        manifest = Manifest(
            files=list(entries), created=now_iso(), origin="download", folder=[st.st_dev, st.st_ino]
        )
        write_bytes_atomic(tmp / MANIFEST_NAME, manifest.to_json().encode())
        replace_directory(
            tmp,
            dest,
            recognise=lambda path: download_problem(path) is None,
            what="download (manifest.json)",
            overwrite=overwrite,
            flag="overwrite (`zoo pull --force`)",
        )
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("fetched %d files from %s into %s", len(entries), store.uri(rel_prefix), dest)
    return dest


def materialize(uri: str | Path, subdir: str | None = None, *, cache: Cache | None = None) -> Path:
    """A verified local directory for a published `uri` (or its `subdir`), for reading.

    Local publishes are verified in place and their own path is returned;
    remote ones are assembled once in the cache (`dirs/<content digest>/`) and
    reused while the content is unchanged. Do not write into the result.
    """
    loc = parse_uri(uri)
    store = _store(loc)
    manifest = read_manifest(uri)
    entries = _subtree(manifest, subdir, store.uri())
    prefix = f"{subdir.strip('/')}/" if subdir else ""
    cache = cache or Cache()
    store = content_store(store, manifest)
    if isinstance(store, LocalStore):
        for entry in entries:
            _fetch_entry(store, entry, cache, prefix)
        unlisted = _unlisted(store.path(prefix), entries)
        if not unlisted:
            return store.path(prefix)
        # loaders read whole folders: they get a copy of the listed files only
        log.warning("%s holds files its manifest does not list (%s); reading a clean copy",
                    store.path(prefix), ", ".join(unlisted[:3]))  # fmt: skip
    target = cache.dir_path(Manifest(files=entries).digest)
    if target.is_dir():
        if _cached_dir_intact(target, entries):
            cache.hits += len(entries)
            return target
        log.warning("%s was changed since it was verified; rebuilding it", target)
        shutil.rmtree(target)
    try:
        _materialize_entries(
            store, prefix, entries, target, overwrite=False, cache=cache, link=True
        )
    except StorageError:
        if target.is_dir():  # another process finished it first
            return target
        raise
    return target


def _unlisted(folder: Path, entries: list[FileEntry]) -> list[str]:
    """Files under `folder` that `entries` do not list (our manifest and markers aside)."""
    listed = {e.path for e in entries}
    return [rel for rel in local_files(folder) if rel not in listed and rel != RECORD]


def _cached_dir_intact(target: Path, entries: list[FileEntry]) -> bool:
    """A materialised cache folder still holds exactly the verified files (size + stamp,
    the hash only where those differ)."""
    if _unlisted(target, entries):
        return False
    return all(
        still_verified(target.joinpath(*e.path.split("/")), e.sha256, e.size) for e in entries
    )


def fetch_file(uri: str | Path, *, sha256: str | None = None, size: int | None = None) -> Path:
    """A local path for one file: a local file as is, an s3:// object via the cache.

    With `sha256` (and `size`) the file is verified against them; without, a
    remote object is cached under its content hash, remembered by ETag. The
    returned cache path keeps the object's file name (`files/<sha256>/<name>`).

    Raises:
        StorageError: missing object, hash mismatch, S3 failures.
    """
    loc = parse_uri(uri)
    if not loc.is_s3:
        assert loc.path is not None
        if not loc.path.is_file():
            raise StorageError(f"file not found: {loc.path}")
        if sha256 is not None and sha256_file(loc.path) != sha256:
            raise StorageError(
                f"{loc.path}: sha256 differs from the manifest: the file is corrupted"
            )
        return loc.path
    parent, _, name = loc.key.rpartition("/")
    store = S3Store(loc.bucket, parent)
    cache = Cache()
    if sha256 is not None:
        if size is None:
            head = store.head(name)
            if head is None:
                raise StorageError(f"not found: {uri}")
            size = head["size"]
        blob = _fetch_entry(store, FileEntry(name, size, sha256), cache)
        return cache.named(blob, sha256, name)
    head = store.head(name)
    if head is None:
        raise StorageError(f"not found: {uri}")
    hit = cache.index_get(str(uri), head["etag"], head["size"])
    if hit is not None:
        return cache.named(hit, hit.name, name)
    tmp = cache.tmp_file()
    try:
        store.download(name, tmp)
        if tmp.stat().st_size != head["size"]:
            raise StorageError(
                f"{uri}: got {tmp.stat().st_size} bytes, expected {head['size']}: partial download"
            )
        path, sha = cache.admit_unverified(tmp)
    finally:
        tmp.unlink(missing_ok=True)
    cache.index_put(str(uri), head["etag"], head["size"], sha)
    return cache.named(path, sha, name)


def exists(uri: str | Path) -> bool:
    """True when a file, a directory or an object (or a published prefix) exists at `uri`."""
    loc = parse_uri(uri)
    if not loc.is_s3:
        assert loc.path is not None
        return loc.path.exists()
    store = S3Store(loc.bucket, loc.key)
    if loc.key and store.head("") is not None:
        return True
    return store.head(MANIFEST_NAME) is not None


def list_prefix(uri: str | Path) -> list[str]:
    """Relative paths of every file/object below `uri` (recursive, sorted)."""
    return sorted(_store(parse_uri(uri)).list_files())


def file_uris(uri: str | Path) -> dict[str, str]:
    """Relative path -> URI of its bytes, for every file of the folder at `uri`.

    A published folder is seen through its manifest (its files may lie in a
    version folder); anything else as the plain listing of its objects/files.
    """
    store = _store(parse_uri(uri))
    if store.head(MANIFEST_NAME) is not None:
        manifest = read_manifest(uri)
        content = content_store(store, manifest)
        return {e.path: content.uri(e.path) for e in manifest.files}
    return {rel: store.uri(rel) for rel in sorted(store.list_files())}


def list_published(uri: str | Path) -> list[str]:
    """Relative paths of the published directories below `uri` ("" for `uri` itself)."""
    out = []
    for rel in list_prefix(uri):
        if rel == MANIFEST_NAME:
            out.append("")
        elif rel.endswith("/" + MANIFEST_NAME):
            out.append(rel[: -len(MANIFEST_NAME) - 1])
    return sorted(out)


def read_text(uri: str | Path) -> str:
    """The text of one file/object.

    Raises:
        StorageError: when it does not exist.
    """
    loc = parse_uri(uri)
    parent, name = _split(loc)
    data = _store(parent).read_bytes(name)
    if data is None:
        raise StorageError(f"not found: {uri}")
    return data.decode("utf-8")


def read_head(uri: str | Path, nbytes: int) -> tuple[bytes, bool]:
    """At most the first `nbytes` bytes of one file/object, and whether that is all of it.

    Checks that need a file's first rows (the pipeline's configure step) read only
    those, never a multi-gigabyte training file; an s3:// object is one ranged GET.

    Raises:
        StorageError: when it does not exist.
    """
    loc = parse_uri(uri)
    if not loc.is_s3:
        assert loc.path is not None
        if not loc.path.is_file():
            raise StorageError(f"file not found: {loc.path}")
        with loc.path.open("rb") as handle:
            data = handle.read(nbytes)
        return data, len(data) >= loc.path.stat().st_size
    parent, name = _split(loc)
    got = S3Store(parent.bucket, parent.key).read_head(name, nbytes)
    if got is None:
        raise StorageError(f"not found: {uri}")
    data, size = got
    return data, len(data) >= size


def write_text_atomic(uri: str | Path, text: str) -> None:
    """Writes one file/object so that readers see the old or the new text, never half."""
    loc = parse_uri(uri)
    parent, name = _split(loc)
    _store(parent).write_bytes(name, text.encode("utf-8"))


def delete_dir(uri: str | Path) -> None:
    """Unpublishes (manifest first) and removes everything below `uri`."""
    loc = parse_uri(uri)
    store = _store(loc)
    if isinstance(store, S3Store):
        store.delete([MANIFEST_NAME])
        rest = list(store.list_files())
        if rest:
            store.delete(rest)
        return
    if store.root.is_dir():
        (store.root / MANIFEST_NAME).unlink(missing_ok=True)
        shutil.rmtree(store.root)


def _split(loc: Location) -> tuple[Location, str]:
    if loc.is_s3:
        parent, _, name = loc.key.rpartition("/")
        if not name:
            raise StorageError(f"{loc} names no object")
        return Location("s3", bucket=loc.bucket, key=parent), name
    assert loc.path is not None
    return Location("file", path=loc.path.parent), loc.path.name
