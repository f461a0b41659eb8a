"""The output folder of a training run: staged beside it, published by renames; JSON results."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np


def staging_dir(output_dir: Path) -> Path:
    return output_dir.parent / f".{output_dir.name}.partial"


def publish(staging: Path, final: Path) -> None:
    """Replaces `final` with `staging` by renames (same filesystem)."""
    if final.exists():
        backup = final.parent / f".{final.name}.old-{os.getpid()}"
        final.rename(backup)
        staging.rename(final)
        shutil.rmtree(backup, ignore_errors=True)
    else:
        staging.rename(final)


def write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=json_default) + "\n")
    tmp.replace(path)


def json_default(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
