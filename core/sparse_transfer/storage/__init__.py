"""One small interface over artifact URIs: local paths, `file://` and `s3://bucket/prefix`.

Publishing is atomic and never destructive (`_publish.py`): a publish
becomes visible in one step (an S3 manifest switched by a conditional write
to a new version folder; a local folder swapped in by one rename), and a
local folder is replaced only when it is recognisably ours (`_swap.py`, the
one directory swap of the project, also used by training and export).
Readers (`_read.py`) trust only what the manifest lists and check every
file's size and hash; remote files pass through a content-addressed cache
(`_cache.py`) so a second read needs no network.

Environment: the standard AWS variables (`AWS_ENDPOINT_URL`, `AWS_REGION`,
`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, ...), `SPARSE_TRANSFER_CACHE`,
`SPARSE_TRANSFER_MULTIPART_THRESHOLD` / `_CHUNKSIZE` (bytes),
`SPARSE_TRANSFER_S3_RETRIES` (whole-file attempts), `SPARSE_TRANSFER_S3_MAX_ATTEMPTS`
(per request, botocore standard mode), `SPARSE_TRANSFER_ORPHAN_GRACE_S` (age after
which an unfinished S3 publish is collected).
"""

from __future__ import annotations

from sparse_transfer.storage._cache import Cache, cache_root
from sparse_transfer.storage._manifest import (
    MANIFEST_NAME,
    FileEntry,
    Manifest,
    build_manifest,
    now_iso,
    sha256_file,
)
from sparse_transfer.storage._owned import (
    RECORD,
    ownership_problem,
    read_record,
    record_files,
    verify_recorded,
)
from sparse_transfer.storage._publish import (
    KEEP_VERSIONS,
    PublishConflict,
    publish_lock,
    upload_dir,
)
from sparse_transfer.storage._read import (
    content_uri,
    delete_dir,
    download_dir,
    exists,
    fetch_file,
    file_uris,
    is_published,
    list_prefix,
    list_published,
    materialize,
    read_head,
    read_manifest,
    read_text,
    write_text_atomic,
)
from sparse_transfer.storage._swap import (
    check_replaceable,
    clean_leftovers,
    replace_directory,
    staging_dir,
    write_bytes_atomic,
)
from sparse_transfer.storage._uri import Location, is_remote, is_uri, parse_uri

__all__ = [
    "KEEP_VERSIONS",
    "MANIFEST_NAME",
    "Cache",
    "FileEntry",
    "Location",
    "Manifest",
    "PublishConflict",
    "RECORD",
    "build_manifest",
    "cache_root",
    "check_replaceable",
    "clean_leftovers",
    "content_uri",
    "delete_dir",
    "download_dir",
    "exists",
    "fetch_file",
    "file_uris",
    "is_published",
    "is_remote",
    "is_uri",
    "list_prefix",
    "list_published",
    "materialize",
    "now_iso",
    "ownership_problem",
    "parse_uri",
    "publish_lock",
    "read_head",
    "read_manifest",
    "read_record",
    "record_files",
    "read_text",
    "replace_directory",
    "sha256_file",
    "staging_dir",
    "upload_dir",
    "verify_recorded",
    "write_bytes_atomic",
    "write_text_atomic",
]
