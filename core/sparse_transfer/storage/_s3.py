"""S3 (and S3-compatible: MinIO, SeaweedFS) access with retries and readable errors.

Endpoint, region and credentials come from the standard AWS environment
(`AWS_ENDPOINT_URL[_S3]`, `AWS_REGION`/`AWS_DEFAULT_REGION`,
`AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`, profiles). Path-style addressing
keeps MinIO and SeaweedFS happy. Two layers of retries: botocore's `standard`
mode retries each request on throttling and connection errors; `retrying()`
retries whole-file operations (a multipart upload, a download) with
exponential backoff, so a server restart in the middle of a transfer heals.
Secrets never reach a log line or an error message.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from sparse_transfer.errors import StorageError

log = logging.getLogger(__name__)
T = TypeVar("T")

_AUTH_CODES = {
    "AccessDenied",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "InvalidToken",
    "ExpiredToken",
    "AuthorizationHeaderMalformed",
    "403",
    "401",
}
_RETRY_CODES = {
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottled",
    "SlowDown",
    "TooManyRequests",
    "RequestTimeout",
    "RequestTimeoutException",
    "InternalError",
    "ServiceUnavailable",
    "500",
    "502",
    "503",
    "504",
}
_PRECONDITION_CODES = {"PreconditionFailed", "412", "ConditionalRequestConflict", "409"}
_UNSUPPORTED_CODES = {"NotImplemented", "501"}
_clients: dict[tuple, object] = {}
_clients_lock = threading.Lock()


class ConditionalWritesUnsupported(Exception):
    """The server refused `If-None-Match`/`If-Match` on PutObject."""


def _int_env(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError as exc:
        raise StorageError(f"{name}={os.environ[name]!r} is not an integer") from exc


def endpoint_url() -> str | None:
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None


def _where() -> str:
    endpoint = endpoint_url()
    return f" at {endpoint}" if endpoint else ""


def client():
    """A boto3 S3 client for the current environment (cached per environment)."""
    import boto3
    from botocore.config import Config

    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    # The cache key includes the credentials so that a changed environment
    # gets a fresh client; it is never printed.
    key = (
        endpoint_url(),
        region,
        os.environ.get("AWS_ACCESS_KEY_ID"),
        os.environ.get("AWS_SECRET_ACCESS_KEY"),
        os.environ.get("AWS_SESSION_TOKEN"),
        os.environ.get("AWS_PROFILE"),
    )
    with _clients_lock:
        cached = _clients.get(key)
        if cached is None:
            config = Config(
                s3={"addressing_style": "path"},
                retries={
                    "mode": "standard",
                    "max_attempts": _int_env("SPARSE_TRANSFER_S3_MAX_ATTEMPTS", 4),
                },
                connect_timeout=5,
                read_timeout=60,
            )
            session = boto3.session.Session()
            cached = session.client(
                "s3", endpoint_url=endpoint_url(), region_name=region, config=config
            )
            _clients[key] = cached
        return cached


def transfer_config():
    """Multipart above `SPARSE_TRANSFER_MULTIPART_THRESHOLD` bytes (default 64 MiB)."""
    from boto3.s3.transfer import TransferConfig

    threshold = _int_env("SPARSE_TRANSFER_MULTIPART_THRESHOLD", 64 * 1024 * 1024)
    chunk = _int_env("SPARSE_TRANSFER_MULTIPART_CHUNKSIZE", max(threshold, 5 * 1024 * 1024))
    return TransferConfig(
        multipart_threshold=threshold,
        multipart_chunksize=chunk,
        max_concurrency=4,
        use_threads=True,
    )


def _root_cause(exc: BaseException) -> BaseException:
    """Unwraps boto3's transfer wrappers to the botocore error underneath."""
    from boto3.exceptions import RetriesExceededError, S3UploadFailedError

    if isinstance(exc, RetriesExceededError) and exc.last_exception is not None:
        return _root_cause(exc.last_exception)
    if isinstance(exc, S3UploadFailedError) and exc.__context__ is not None:
        return _root_cause(exc.__context__)
    return exc


def error_code(exc: BaseException) -> str:
    from botocore.exceptions import ClientError

    exc = _root_cause(exc)
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", ""))
    return ""


def is_not_found(exc: BaseException) -> bool:
    return error_code(exc) in ("404", "NoSuchKey", "NotFound")


def _is_retryable(exc: BaseException) -> bool:
    from botocore.exceptions import ConnectionError as BotoConnectionError
    from botocore.exceptions import HTTPClientError

    root = _root_cause(exc)
    if isinstance(root, (BotoConnectionError, HTTPClientError)):
        return True
    return error_code(root) in _RETRY_CODES


def translate(exc: BaseException, bucket: str, what: str) -> StorageError:
    """A StorageError naming the bucket and what to do; never the secret."""
    from botocore.exceptions import NoCredentialsError, PartialCredentialsError

    root = _root_cause(exc)
    code = error_code(root)
    if isinstance(root, (NoCredentialsError, PartialCredentialsError)):
        return StorageError(
            f"no usable AWS credentials for bucket '{bucket}' ({what}): set AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY (or AWS_PROFILE)"
        )
    if code in _AUTH_CODES:
        return StorageError(
            f"access denied to bucket '{bucket}'{_where()} ({what}: {code}): check AWS_ACCESS_KEY_ID / "
            "AWS_SECRET_ACCESS_KEY and the bucket's permissions"
        )
    if code == "NoSuchBucket":
        return StorageError(
            f"bucket '{bucket}' does not exist{_where()} ({what}): create it or fix the URI"
        )
    if is_not_found(root):
        return StorageError(f"not found: {what}{_where()}")
    if _is_retryable(root):
        return StorageError(
            f"S3 endpoint{_where() or ' (AWS default)'} unreachable or failing for bucket '{bucket}' "
            f"({what}) after retries: {type(root).__name__}{f' {code}' if code else ''}; "
            "check AWS_ENDPOINT_URL and that the server is up"
        )
    detail = code or type(root).__name__
    return StorageError(f"S3 error for bucket '{bucket}'{_where()} ({what}): {detail}")


def retrying(fn: Callable[[], T], bucket: str, what: str, attempts: int | None = None) -> T:
    """Runs `fn`, retrying throttling/connection failures with exponential backoff + jitter.

    Non-retryable errors (auth, missing bucket, not found) fail at once,
    translated into a StorageError; so do retryable ones after the last try.
    """
    from boto3.exceptions import Boto3Error
    from botocore.exceptions import BotoCoreError, ClientError

    attempts = attempts or _int_env("SPARSE_TRANSFER_S3_RETRIES", 6)
    base = float(os.environ.get("SPARSE_TRANSFER_S3_BACKOFF", "0.5"))
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except (BotoCoreError, ClientError, Boto3Error) as exc:
            if attempt == attempts or not _is_retryable(exc):
                raise translate(exc, bucket, what) from None
            delay = min(base * 2 ** (attempt - 1), 10.0) * (0.5 + random.random() / 2)
            log.warning(
                "%s: %s, retry %d/%d in %.1fs",
                what,
                type(_root_cause(exc)).__name__,
                attempt,
                attempts - 1,
                delay,
            )
            time.sleep(delay)
    raise AssertionError("unreachable")


class S3Store:
    """Objects under one bucket + key prefix, addressed by relative slash paths."""

    def __init__(self, bucket: str, prefix: str):
        self.bucket = bucket
        self.prefix = prefix.strip("/")

    def key(self, rel: str) -> str:
        rel = rel.strip("/")
        if not self.prefix:
            return rel
        return f"{self.prefix}/{rel}" if rel else self.prefix

    def uri(self, rel: str = "") -> str:
        key = self.key(rel)
        return f"s3://{self.bucket}/{key}" if key else f"s3://{self.bucket}"

    def list_files(self, rel: str = "") -> dict[str, int]:
        """Relative path -> size for every object below `rel` (recursive)."""
        base = self.key(rel)
        prefix = f"{base}/" if base else ""

        def run() -> dict[str, int]:
            out: dict[str, int] = {}
            paginator = client().get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
                for obj in page.get("Contents", []):
                    out[obj["Key"][len(prefix) :]] = int(obj["Size"])
            return out

        return retrying(run, self.bucket, f"listing {self.uri(rel)}")

    def head(self, rel: str) -> dict | None:
        """Object metadata (`size`, `etag`) or None when it does not exist."""

        def run():
            try:
                meta = client().head_object(Bucket=self.bucket, Key=self.key(rel))
            except Exception as exc:
                if is_not_found(exc):
                    return None
                raise
            return {
                "size": int(meta["ContentLength"]),
                "etag": str(meta.get("ETag", "")).strip('"'),
            }

        return retrying(run, self.bucket, f"reading {self.uri(rel)}")

    def read_bytes(self, rel: str) -> bytes | None:
        def run():
            try:
                return client().get_object(Bucket=self.bucket, Key=self.key(rel))["Body"].read()
            except Exception as exc:
                if is_not_found(exc):
                    return None
                raise

        return retrying(run, self.bucket, f"reading {self.uri(rel)}")

    def read_head(self, rel: str, nbytes: int) -> tuple[bytes, int] | None:
        """The first `nbytes` bytes (one ranged GET) and the object's size, or None.

        A peek for checks that need only the start of a big object (a data file's
        first rows); an empty object has no byte range to ask for (416), so it is
        answered as ``(b"", 0)``.
        """

        def run():
            try:
                got = client().get_object(
                    Bucket=self.bucket, Key=self.key(rel), Range=f"bytes=0-{nbytes - 1}"
                )
            except Exception as exc:
                if is_not_found(exc):
                    return None
                if error_code(exc) == "InvalidRange":
                    return b"", 0
                raise
            data = got["Body"].read()
            total = str(got.get("ContentRange", "")).rpartition("/")[2]
            return data, int(total) if total.isdigit() else len(data)

        return retrying(run, self.bucket, f"reading {self.uri(rel)}")

    def read_with_etag(self, rel: str) -> tuple[bytes, str] | None:
        """The object's bytes and ETag (for a conditional overwrite), or None."""

        def run():
            try:
                got = client().get_object(Bucket=self.bucket, Key=self.key(rel))
            except Exception as exc:
                if is_not_found(exc):
                    return None
                raise
            return got["Body"].read(), str(got.get("ETag", ""))

        return retrying(run, self.bucket, f"reading {self.uri(rel)}")

    def put_if(self, rel: str, data: bytes, *, etag: str | None) -> bool:
        """Writes `rel` only if it is absent (`etag` None) or still has `etag`.

        S3 conditional writes (``If-None-Match: *`` / ``If-Match``, AWS since
        2024, SeaweedFS, MinIO). Returns False when the condition failed
        (another writer got there first).

        Raises:
            ConditionalWritesUnsupported: the server rejects the headers.
        """
        condition = {"IfNoneMatch": "*"} if etag is None else {"IfMatch": etag}

        def run() -> bool:
            try:
                client().put_object(Bucket=self.bucket, Key=self.key(rel), Body=data, **condition)
            except Exception as exc:
                code = error_code(exc)
                if code in _PRECONDITION_CODES:
                    return False
                if code in _UNSUPPORTED_CODES:
                    raise ConditionalWritesUnsupported(code) from None
                raise
            return True

        return retrying(run, self.bucket, f"writing {self.uri(rel)} (conditional)")

    def folders(self, rel: str = "") -> dict[str, float]:
        """Immediate sub-folders of `rel` -> newest LastModified (epoch seconds) below each."""
        base = self.key(rel)
        prefix = f"{base}/" if base else ""

        def run() -> dict[str, float]:
            out: dict[str, float] = {}
            paginator = client().get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
                for obj in page.get("Contents", []):
                    name, _, rest = obj["Key"][len(prefix) :].partition("/")
                    if rest:
                        stamp = obj["LastModified"].timestamp()
                        out[name] = max(out.get(name, 0.0), stamp)
            return out

        return retrying(run, self.bucket, f"listing {self.uri(rel)}")

    def abort_uploads(self, rel: str, older_than: float | None = None) -> int:
        """Aborts unfinished multipart uploads below `rel` (started before `older_than`)."""

        def run() -> int:
            prefix = self.key(rel)
            prefix = f"{prefix}/" if prefix else ""
            got = client().list_multipart_uploads(Bucket=self.bucket, Prefix=prefix)
            aborted = 0
            for upload in got.get("Uploads", []):
                started = upload["Initiated"].timestamp()
                if older_than is not None and started >= older_than:
                    continue
                client().abort_multipart_upload(
                    Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                )
                aborted += 1
            return aborted

        return retrying(run, self.bucket, f"aborting unfinished uploads under {self.uri(rel)}")

    def write_bytes(self, rel: str, data: bytes) -> None:
        retrying(
            lambda: client().put_object(Bucket=self.bucket, Key=self.key(rel), Body=data),
            self.bucket,
            f"writing {self.uri(rel)}",
        )

    def upload(self, src: Path, rel: str) -> None:
        retrying(
            lambda: client().upload_file(
                str(src), self.bucket, self.key(rel), Config=transfer_config()
            ),
            self.bucket,
            f"uploading {src} to {self.uri(rel)}",
        )

    def download(self, rel: str, dest: Path) -> None:
        def run() -> None:
            try:
                client().download_file(
                    self.bucket, self.key(rel), str(dest), Config=transfer_config()
                )
            except Exception as exc:
                if is_not_found(exc):
                    raise StorageError(
                        f"{self.uri(rel)} is listed in the manifest but missing in the bucket: "
                        "the publish is damaged; re-publish it"
                    ) from None
                raise

        retrying(run, self.bucket, f"downloading {self.uri(rel)}")

    def delete(self, rels: list[str]) -> None:
        keys = [self.key(r) for r in rels]
        for start in range(0, len(keys), 1000):
            chunk = keys[start : start + 1000]
            retrying(
                lambda chunk=chunk: client().delete_objects(
                    Bucket=self.bucket,
                    Delete={"Objects": [{"Key": k} for k in chunk], "Quiet": True},
                ),
                self.bucket,
                f"deleting under {self.uri()}",
            )
