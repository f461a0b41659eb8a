"""Parsing of the URIs the store understands: local paths, `file://` and `s3://`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

from sparse_transfer.errors import StorageError


@dataclass(frozen=True)
class Location:
    """Where an artifact lives: a local path or an S3 bucket + key prefix.

    `key` never starts or ends with a slash; "" means the bucket root.
    """

    scheme: str  # "file" or "s3"
    path: Path | None = None
    bucket: str = ""
    key: str = ""

    @property
    def is_s3(self) -> bool:
        return self.scheme == "s3"

    def child(self, relpath: str) -> Location:
        """The location of `relpath` (slash-separated) under this one."""
        relpath = relpath.strip("/")
        if not relpath:
            return self
        if self.is_s3:
            key = f"{self.key}/{relpath}" if self.key else relpath
            return Location("s3", bucket=self.bucket, key=key)
        assert self.path is not None
        return Location("file", path=self.path.joinpath(*relpath.split("/")))

    def __str__(self) -> str:
        if self.is_s3:
            return f"s3://{self.bucket}/{self.key}" if self.key else f"s3://{self.bucket}"
        return str(self.path)


def is_remote(uri: str | Path) -> bool:
    """True for URIs that need a download (s3://)."""
    return str(uri).startswith("s3://")


def is_uri(uri: str | Path) -> bool:
    """True for strings with an explicit scheme the store handles."""
    text = str(uri)
    return text.startswith(("s3://", "file://"))


def parse_uri(uri: str | Path) -> Location:
    """Parses a local path, `file://` URI or `s3://bucket/prefix` URI.

    Raises:
        StorageError: for an unsupported scheme or an s3 URI without a bucket.
    """
    if isinstance(uri, Path):
        return Location("file", path=uri.expanduser())
    text = str(uri)
    if text.startswith("s3://"):
        parsed = urlparse(text)
        bucket = parsed.netloc
        if not bucket:
            raise StorageError(f"'{text}' names no bucket: write s3://BUCKET/PREFIX")
        key = unquote(parsed.path).strip("/")
        if any(part in ("..", ".") for part in key.split("/")):
            raise StorageError(f"'{text}': '.' and '..' are not allowed in S3 keys")
        return Location("s3", bucket=bucket, key=key)
    if text.startswith("file://"):
        parsed = urlparse(text)
        if parsed.netloc not in ("", "localhost"):
            raise StorageError(f"'{text}': file:// URIs must be local (file:///abs/path)")
        return Location("file", path=Path(unquote(parsed.path)))
    if "://" in text:
        scheme = text.split("://", 1)[0]
        raise StorageError(
            f"unsupported URI scheme '{scheme}://' in '{text}': use a local path, file:// or s3://"
        )
    return Location("file", path=Path(text).expanduser())
