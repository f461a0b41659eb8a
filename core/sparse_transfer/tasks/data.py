"""Loading raw datasets: hub names, GLUE, local or s3:// files; checking columns.

Every split remembers where it came from (`sources`), so a missing column or an
unseen label is reported with the file and the column, not a KeyError deep in
`datasets`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from sparse_transfer.errors import DataError

logger = logging.getLogger(__name__)

FILE_BUILDERS = {
    ".csv": "csv",
    ".tsv": "csv",
    ".json": "json",
    ".jsonl": "json",
    ".parquet": "parquet",
}


def _local_path(uri: str) -> Path:
    """A local path for `uri`; s3:// (and other store URIs) go through the storage cache."""
    if "://" in uri and not uri.startswith("file://"):
        from sparse_transfer.storage import fetch_file

        return Path(fetch_file(uri))
    path = Path(uri.removeprefix("file://"))
    if not path.exists():
        raise DataError(f"data file {uri} does not exist")
    return path


def _builder(uri: str, suffix: str) -> str:
    """The `datasets` builder for a file's extension; other extensions are refused."""
    if suffix not in FILE_BUILDERS:
        raise DataError(
            f"data file {uri}: unsupported extension {suffix or '(none)'}; "
            f"use one of {', '.join(sorted(FILE_BUILDERS))}"
        )
    return FILE_BUILDERS[suffix]


def load_file(uri: str, split: str):
    """Loads one CSV / JSON lines / Parquet file as a `datasets.Dataset`."""
    path = _local_path(uri)
    suffix = path.suffix.lower()
    builder = _builder(uri, suffix)
    if path.stat().st_size == 0:
        raise DataError(f"data file {uri} is empty (0 rows)")
    return _read(path, uri, builder, split)


def _read(path: Path, uri: str, builder: str, split: str, **options: Any):
    """`datasets.load_dataset` of one local file; its failures and 0 rows as a DataError."""
    import datasets

    kwargs: dict[str, Any] = {"delimiter": "\t"} if path.suffix.lower() == ".tsv" else {}
    try:
        dataset = datasets.load_dataset(
            builder, data_files={split: str(path)}, split=split, **kwargs, **options
        )
    except Exception as exc:  # datasets raises many types for unreadable files
        raise DataError(f"data file {uri} could not be read as {builder}: {exc}") from exc
    if len(dataset) == 0:
        raise DataError(f"data file {uri} is empty (0 rows)")
    return dataset


#: What a peek at a data file reads: rows, and at most this many bytes of a text file
#: (256 SQuAD rows of a few KiB each fit).
HEAD_ROWS = 256
HEAD_BYTES = 4 << 20


def load_head(uri: str, rows: int = HEAD_ROWS, split: str = "train"):
    """The first `rows` rows of one data file, read by the same `datasets` builder as
    `load_file` (so typed as the whole file would be, mixed-type fallbacks included).

    Only the start of the file is read (one ranged GET for s3://), so a configure-time check
    costs the same for a 10 GB file as for a small one. A JSON array (not lines) is read
    whole, a Parquet file up to its first row batch, and a CSV head that cannot be parsed
    (cut inside a quoted field) falls back to the whole file.

    Raises:
        DataError: missing, empty or unreadable file, or an unsupported extension.
    """
    import tempfile

    suffix = Path(uri).suffix.lower()
    builder = _builder(uri, suffix)
    with tempfile.TemporaryDirectory(prefix="data-head-") as tmp:
        head = Path(tmp) / f"head{suffix}"
        cut = _write_head(uri, builder, rows, head)
        options = {"cache_dir": str(Path(tmp) / "cache"), "keep_in_memory": True}
        try:
            dataset = _read(head, uri, builder, split, **options)
        except DataError:
            if not cut:
                raise
            dataset = _read(_local_path(uri), uri, builder, split, **options)
    return dataset.select(range(min(rows, len(dataset))))


def _write_head(uri: str, builder: str, rows: int, dest: Path) -> bool:
    """Writes the start of `uri` to `dest` in its own format (at least `rows` rows where they fit
    in `HEAD_BYTES`); True when the file was cut (a CSV record may be cut inside a quoted
    field)."""
    if builder == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        first = next(pq.ParquetFile(_local_path(uri)).iter_batches(batch_size=rows), None)
        if first is None:
            raise DataError(f"data file {uri} is empty (0 rows)")
        pq.write_table(pa.Table.from_batches([first]), dest)
        return False
    data, complete = _head_bytes(uri, HEAD_BYTES)
    if not data.strip():
        raise DataError(f"data file {uri} is empty (0 rows)")
    if builder == "json" and data.lstrip()[:1] == b"[":  # a JSON array: only whole it parses
        dest.write_bytes(data if complete else _local_path(uri).read_bytes())
        return False
    if not complete:
        data = data[: data.rfind(b"\n") + 1]  # whole lines only (`select` keeps `rows`)
    dest.write_bytes(data)
    return not complete


def _head_bytes(uri: str, nbytes: int) -> tuple[bytes, bool]:
    """The first bytes of a local or store file, and whether they are the whole file."""
    from sparse_transfer import storage

    if "://" in uri and not uri.startswith("file://"):
        return storage.read_head(uri, nbytes)
    path = Path(uri.removeprefix("file://"))
    if not path.is_file():
        raise DataError(f"data file {uri} does not exist")
    return storage.read_head(path, nbytes)


def load_raw_datasets(data_args, seed: int = 42, glue_task: str | None = None):
    """Returns ``(DatasetDict, sources)``; sources maps split -> file or hub name.

    Splits are named ``train``, ``validation`` (for MNLI: the matched set),
    ``validation_mismatched`` (MNLI) and ``test``.
    """
    import datasets

    files = data_files(data_args)
    sources: dict[str, str] = {}
    if files:
        raw = datasets.DatasetDict({split: load_file(uri, split) for split, uri in files.items()})
        sources.update(files)
    elif glue_task is not None:
        raw = _load_hub("nyu-mll/glue", glue_task)
        if glue_task == "mnli":
            raw["validation"] = raw.pop("validation_matched")
            raw["validation_mismatched"] = raw.pop("validation_mismatched")
            raw["test"] = raw.pop("test_matched")
            raw.pop("test_mismatched", None)
        sources.update({split: f"glue/{glue_task}[{split}]" for split in raw})
    elif data_args.dataset_name is not None:
        raw = _load_hub(data_args.dataset_name, data_args.dataset_config_name)
        if not isinstance(raw, datasets.DatasetDict):
            raw = datasets.DatasetDict({"train": raw})
        name = data_args.dataset_name + (
            f"/{data_args.dataset_config_name}" if data_args.dataset_config_name else ""
        )
        sources.update({split: f"{name}[{split}]" for split in raw})
    else:
        raise DataError(
            "no data given: pass --train_file/--validation_file, --dataset_name or --task_name"
        )
    if "validation" not in raw and data_args.validation_ratio:
        if "train" not in raw:
            raise DataError("--validation_ratio needs a training split to split off")
        split = raw["train"].train_test_split(test_size=data_args.validation_ratio, seed=seed)
        raw["train"], raw["validation"] = split["train"], split["test"]
        sources["validation"] = (
            f"{sources['train']} ({data_args.validation_ratio:g} split off with seed {seed})"
        )
        logger.info(
            "split %d validation rows off %s (ratio %g, seed %d)",
            len(raw["validation"]),
            sources["train"],
            data_args.validation_ratio,
            seed,
        )
    for split, limit in split_limits(data_args).items():
        if limit is not None and split in raw:
            raw[split] = raw[split].select(range(min(limit, len(raw[split]))))
    for split, dataset in raw.items():
        if len(dataset) == 0:
            raise DataError(f"{sources.get(split, split)} has no rows")
    return raw, sources


def data_files(data_args) -> dict[str, str]:
    """split -> the data file its flag names (unset flags left out)."""
    files = {
        "train": data_args.train_file,
        "validation": data_args.validation_file,
        "validation_mismatched": data_args.validation_mismatched_file,
        "test": data_args.test_file,
    }
    return {split: uri for split, uri in files.items() if uri}


def split_limits(data_args) -> dict[str, int | None]:
    """split -> the rows ``--max_*_samples`` keeps of it (None: all)."""
    return {
        "train": data_args.max_train_samples,
        "validation": data_args.max_eval_samples,
        "validation_mismatched": data_args.max_eval_samples,
        "test": data_args.max_predict_samples,
    }


def check_heads(spec, data_args, task_args, rows: int = HEAD_ROWS) -> bool:
    """The task's own data checks (`TaskSpec.prepare` in sample mode) on the first `rows` rows
    of each data file (fewer where ``--max_*_samples`` keeps fewer), before a model or
    teacher is fetched: a run whose files do not fit the task fails in seconds, with the
    message the full load would give. Hub datasets are left to the full load.

    Returns:
        True when files were checked.
    """
    import datasets

    files = data_files(data_args)
    if not files:
        return False
    limits = split_limits(data_args)
    heads = {
        split: load_head(uri, min(rows, limits[split] or rows)) for split, uri in files.items()
    }
    spec.prepare(datasets.DatasetDict(heads), dict(files), data_args, task_args, sample=True)
    return True


def _load_hub(name: str, config: str | None):
    """`datasets.load_dataset` for a hub dataset, its failures as a DataError."""
    import datasets

    try:
        return datasets.load_dataset(name, config)
    except Exception as exc:  # offline, unknown name, script datasets, ...
        label = name + (f"/{config}" if config else "")
        raise DataError(
            f"cannot load hub dataset {label}: {exc}. Offline, pass local files with "
            "--train_file/--validation_file (CSV, JSON lines or Parquet)."
        ) from exc


class MissingColumnsError(DataError):
    """A file lacks columns the task reads; the parts are kept for one-line configure errors."""

    def __init__(self, source: str, missing: list[str], available: list[str]) -> None:
        self.source, self.missing, self.available = source, missing, available
        super().__init__(
            f"{source}: missing column(s) {', '.join(map(repr, missing))}; "
            f"available columns: {', '.join(available)}. "
            "Pass --input_column_names / --label_column_name to choose others."
        )


def require_columns(raw, sources: dict[str, str], columns: Iterable[str], splits=None) -> None:
    """Raises a `MissingColumnsError` naming the file and column if a split lacks a column."""
    for split, dataset in raw.items():
        if splits is not None and split not in splits:
            continue
        missing = [c for c in columns if c not in dataset.column_names]
        if missing:
            raise MissingColumnsError(sources.get(split, split), missing, dataset.column_names)


def require_values(raw, sources: dict[str, str], columns: Iterable[str], splits=None) -> None:
    """Raises a DataError naming the file, row and column of the first missing (null) value.

    A JSON lines row without the key (or with ``null``) loads as None; left in,
    it would train as an empty string or crash later with a KeyError.
    """
    for split, dataset in raw.items():
        if splits is not None and split not in splits:
            continue
        for column in columns:
            if column not in dataset.column_names:
                continue
            values = dataset.with_format("arrow")[column]
            if values.null_count == 0:
                continue
            row = next(i for i, missing in enumerate(values.is_null().to_pylist()) if missing)
            raise DataError(
                f"{sources.get(split, split)}: row {row + 1} has no value in column "
                f"{column!r} (missing or null); fix or drop that row"
            )
