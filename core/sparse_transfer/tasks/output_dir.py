"""Training's ``--output_dir``: staged in ``.NAME.partial``, published by `storage.replace_directory`.

The HF Trainer's rule, kept although transformers 5 dropped the flag: an
existing non-empty output folder is replaced only with
``--overwrite_output_dir``, and then only when it is a training output we made:
its record of what we wrote (`storage.RECORD`, in the folder it was written in)
still matches what is there; a marker such as ``run_summary.json`` can be copied
anywhere and proves nothing. A folder of other files is refused even with the
flag, as are the working directory, every input (each path flag) and their
parents. Evaluation- and prediction-only runs write only into a new or empty
folder or a training output of ours, and record what they added. A fresh run removes a crashed run's ``.partial``
(never publishing its stale checkpoints); ``--resume_from_checkpoint true``
continues from the last checkpoint of the crashed run (or of the published
output folder).
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path
from typing import Any

from sparse_transfer import storage
from sparse_transfer.errors import DataError

STAGING_SUFFIX = ".partial"
_TRUE = {"true", "1", "yes"}
_BOOLS = _TRUE | {"false", "0", "no"}


WHAT = "training output"


def is_training_output(folder: Path) -> bool:
    """A folder `train` made whose record of what it wrote still matches it."""
    return storage.ownership_problem(folder, WHAT) is None


def path_inputs(*arg_objects: Any) -> list[str]:
    """Every string (or list of strings) field of the argument dataclasses that names an
    existing path: the run's inputs, none of which an output may replace."""
    import dataclasses

    found: list[str] = []
    for obj in arg_objects:
        if obj is None or not dataclasses.is_dataclass(obj):
            continue
        for item in dataclasses.fields(obj):
            value = getattr(obj, item.name, None)
            for v in value if isinstance(value, (list, tuple)) else [value]:
                if isinstance(v, (str, Path)) and str(v) and _exists(str(v)):
                    found.append(str(v))
    return found


def _exists(value: str) -> bool:
    try:
        return len(value) < 4096 and Path(value).expanduser().exists()
    except (OSError, ValueError):
        return False


def check_results_folder(output_dir: Path, model_path: str | Path | None = None) -> bool:
    """Evaluation/prediction-only runs: a new or empty folder, a training output of ours, or
    the model folder being evaluated (``--output_dir`` = ``--model_name_or_path``, the
    reference's way to add results beside a model).

    Returns:
        True when the folder is (or will be) ours, so that what is written gets recorded;
        False for the evaluated model's own folder: results are added to it, but it does
        not become ours (``--overwrite_output_dir`` will not replace it later).

    Raises:
        StorageError: any other non-empty folder (nothing is written into it).
    """
    from sparse_transfer.errors import StorageError

    output_dir = Path(output_dir)
    if output_dir.is_symlink() or (output_dir.exists() and not output_dir.is_dir()):
        raise StorageError(f"{output_dir} is a file or a symbolic link: give a folder for results")
    if not output_dir.exists() or not any(output_dir.iterdir()):
        return True
    problem = storage.ownership_problem(output_dir, WHAT)
    if problem is None:
        return True
    if model_path is not None and _exists(str(model_path)):
        if Path(model_path).resolve() == output_dir.resolve():
            return False
    raise StorageError(
        f"{output_dir} already holds files that are not a sparse-transfer {WHAT} ({problem}); "
        "results are written only into a new or empty folder, a training output, or the "
        "evaluated model's own folder: choose one"
    )


def record_results(output_dir: Path) -> None:
    """Records what the folder now holds (our results added), keeping it ours."""
    storage.record_files(Path(output_dir), WHAT)


@contextlib.contextmanager
def os_errors_in(folder: Path):
    """Errors that Rust-backed writers (safetensors, tokenizers) report as text ending in
    ``(os error N)`` become the OSError they are, naming the folder being written: the CLI
    then says "no space left" in one line instead of a traceback."""
    try:
        yield
    except OSError:
        raise
    except Exception as exc:
        found = re.search(r"\(os error (\d+)\)", str(exc))
        if not found:
            raise
        code = int(found.group(1))
        raise OSError(code, os.strerror(code), str(folder)) from exc


def replace_rules(overwrite: bool, inputs: list[Any]) -> dict[str, Any]:
    """The `storage.replace_directory` keywords for a training output folder."""
    protect = [Path(p) for p in inputs if p and _exists(str(p))]
    return {
        "recognise": is_training_output,
        "what": WHAT,
        "overwrite": overwrite,
        "flag": "--overwrite_output_dir",
        "protect": protect,
    }


def prepare_staging(
    output_dir: Path, resume: str | None, *, owner: bool = True
) -> tuple[Path, str | bool | None]:
    """The staging folder for a training run, and the checkpoint to resume from.

    Args:
        output_dir: the final ``--output_dir``.
        resume: ``--resume_from_checkpoint`` as given (None, a path, or true/false).
        owner: this process makes (and cleans) the folder; under torchrun only rank 0
            does, after which the other ranks take the same path and checkpoint.

    Returns:
        ``(staging, checkpoint)``: checkpoint is None, or a checkpoint folder.

    Raises:
        DataError: ``true`` but no checkpoint exists to resume from.
    """
    from transformers.trainer_utils import get_last_checkpoint

    wants_last = isinstance(resume, str) and resume.lower() in _BOOLS
    resume_last = wants_last and resume.lower() in _TRUE  # type: ignore[union-attr]
    resuming = resume_last or (bool(resume) and not wants_last)
    if owner:
        storage.clean_leftovers(output_dir, keep_partial=resuming)
        staging = storage.staging_dir(output_dir, fixed_suffix=STAGING_SUFFIX, reuse=resuming)
    else:
        staging = Path(output_dir).absolute().parent / f".{Path(output_dir).name}{STAGING_SUFFIX}"
    if wants_last and not resume_last:
        return staging, None
    if not resume_last:
        return staging, resume
    for folder in (staging, output_dir):
        last = get_last_checkpoint(str(folder)) if folder.is_dir() else None
        if last:
            return staging, last
    raise DataError(
        f"--resume_from_checkpoint true: no checkpoint-* folder in {staging} (an unfinished run) "
        f"or in {output_dir}; pass a checkpoint folder, or drop the flag to start afresh"
    )
