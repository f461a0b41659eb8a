"""JSON result files of a run, written atomically (`storage.write_bytes_atomic`)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from sparse_transfer import storage


def write_json(path: Path, data: dict) -> None:
    """Writes `data` as sorted, indented JSON; NaN/inf are refused (`allow_nan=False`)."""
    text = json.dumps(data, indent=2, sort_keys=True, default=json_default, allow_nan=False)
    storage.write_bytes_atomic(path, (text + "\n").encode())


def json_default(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
