"""Dataset snapshots for scheduled retraining: pick the newest one under a prefix.

A data team drops each refresh of the training data as a folder under one
prefix, named so that names sort in time (ISO dates/timestamps)::

    s3://data/sst2/2024-06-03/{train.jsonl, validation.jsonl}
    s3://data/sst2/2024-06-10/{...}

The scheduled run reads `newest_snapshot(prefix)`: the greatest name wins, which
is deterministic and does not depend on object modification times.
"""

from __future__ import annotations

from sparse_transfer.errors import DataError


def list_snapshots(prefix: str) -> list[str]:
    """Snapshot names (child folders holding files) under `prefix` (s3://, file:// or a path), sorted."""
    from sparse_transfer import storage

    try:
        files = storage.list_prefix(prefix)
    except Exception as exc:  # storage raises StorageError, botocore many types: name the prefix
        raise DataError(f"cannot list dataset snapshots under {prefix}: {exc}") from exc
    names = {rel.split("/", 1)[0] for rel in files if "/" in rel}
    return sorted(name for name in names if not name.startswith("."))


def snapshot_files(snapshot: str) -> dict[str, str]:
    """URIs of a snapshot's ``train.*`` and ``validation.*`` files (the first of each, by name).

    Raises:
        DataError: a snapshot without a train file.
    """
    from sparse_transfer import storage

    uris = storage.file_uris(snapshot)  # a published snapshot keeps its files in a version
    files = sorted(rel for rel in uris if "/" not in rel)
    found: dict[str, str] = {}
    for flag, stem in (("train_file", "train"), ("validation_file", "validation")):
        matches = [rel for rel in files if rel.split(".")[0] == stem]
        if matches:
            found[flag] = uris[matches[0]]
    if "train_file" not in found:
        raise DataError(f"snapshot {snapshot} has no train.* file (found: {files})")
    return found


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
