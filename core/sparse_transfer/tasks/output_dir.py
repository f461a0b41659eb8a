"""Training's ``--output_dir``: staged in ``.NAME.partial``, published by `storage.replace_directory`.

The HF Trainer's rule, kept although transformers 5 dropped the flag: an
existing non-empty output folder is replaced only with
``--overwrite_output_dir``, and then only when it is a model folder (our run
summary, or the Trainer's ``trainer_state.json`` + ``config.json``); a folder
of other files is refused even with it, as are the working directory, the
inputs and their parents. A fresh run removes a crashed run's ``.partial``
(never publishing its stale checkpoints); ``--resume_from_checkpoint true``
continues from the last checkpoint of the crashed run (or of the published
output folder).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sparse_transfer import storage
from sparse_transfer.errors import DataError

STAGING_SUFFIX = ".partial"
_TRUE = {"true", "1", "yes"}
_BOOLS = _TRUE | {"false", "0", "no"}


def is_training_output(folder: Path) -> bool:
    """A folder made by `train` (run_summary.json) or by an HF Trainer run."""
    if (folder / "run_summary.json").is_file():
        return True
    return (folder / "trainer_state.json").is_file() and (folder / "config.json").is_file()


def replace_rules(overwrite: bool, inputs: list[Any]) -> dict[str, Any]:
    """The `storage.replace_directory` keywords for a training output folder."""
    protect = [Path(p) for p in inputs if p and Path(str(p)).exists()]
    return {
        "recognise": is_training_output,
        "what": "training output",
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
