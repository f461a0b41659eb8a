"""Dataset snapshots for scheduled retraining: pick the newest one under a prefix.

A data team drops each refresh of the training data as a folder under one
prefix, named so that names sort in time (ISO dates/timestamps)::

    s3://data/sst2/2024-06-03/{train.jsonl, validation.jsonl}
    s3://data/sst2/2024-06-10/{...}

The scheduled run reads `newest_snapshot(prefix)`: the greatest name wins, which
is deterministic and does not depend on object modification times.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

from sparse_transfer.errors import DataError


def _s3_children(uri: str) -> list[str]:
    import boto3  # reads AWS_* credentials and AWS_ENDPOINT_URL from the environment

    parsed = urlparse(uri)
    bucket, prefix = parsed.netloc, parsed.path.lstrip("/")
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    paginator = boto3.client("s3").get_paginator("list_objects_v2")
    children = []
    for page in paginator.paginate(Bucket=bucket, Prefix=prefix, Delimiter="/"):
        for entry in page.get("CommonPrefixes", []):
            children.append(entry["Prefix"][len(prefix) :].rstrip("/"))
    return children


def list_snapshots(prefix: str) -> list[str]:
    """Snapshot names (child folders) under `prefix` (s3://, file:// or a local path), sorted."""
    if prefix.startswith("s3://"):
        try:
            names = _s3_children(prefix)
        except Exception as exc:  # botocore raises many types; the user needs the prefix
            raise DataError(f"cannot list dataset snapshots under {prefix}: {exc}") from exc
    else:
        root = Path(prefix.removeprefix("file://"))
        if not root.is_dir():
            raise DataError(f"dataset snapshot prefix {prefix} is not a folder")
        names = [p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
    return sorted(names)


def newest_snapshot(prefix: str) -> str:
    """The URI of the newest snapshot under `prefix`.

    Raises:
        DataError: when the prefix cannot be listed or holds no snapshot.
    """
    names = list_snapshots(prefix)
    if not names:
        raise DataError(
            f"no dataset snapshot under {prefix}: expected folders such as "
            f"{prefix.rstrip('/')}/2024-06-03/ holding train/validation files"
        )
    return f"{prefix.rstrip('/')}/{names[-1]}"
