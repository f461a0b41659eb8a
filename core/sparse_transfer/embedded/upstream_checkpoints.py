"""Where upstream pruning keeps its checkpoints, so an interrupted stage resumes.

`checkpoint_dir` is a local folder (the Trainer writes ``checkpoint-N`` there) or an
``s3://`` prefix: then the Trainer writes to a local scratch folder and every saved
checkpoint is published to ``PREFIX/checkpoint-N`` (manifest last, so a half-uploaded one is
never picked); on start the newest published one is downloaded and resumed from.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

from sparse_transfer import storage

_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


def _newest(names: list[str]) -> str | None:
    steps = [(int(m.group(1)), n) for n in names if (m := _CHECKPOINT.match(n))]
    return max(steps)[1] if steps else None


def _complete(folder: Path) -> bool:
    """A Trainer checkpoint is usable once its trainer state is written (the last file)."""
    return (folder / "trainer_state.json").is_file()


def prepare(work: str | Path) -> tuple[Path, str | None]:
    """(local folder for the Trainer's output_dir, checkpoint to resume from or None)."""
    if storage.is_remote(work):
        local = Path(tempfile.mkdtemp(prefix="upstream-ckpt-"))
        newest = _newest([p.rsplit("/", 1)[-1] for p in storage.list_published(str(work))])
        if newest is None:
            return local, None
        storage.download_dir(f"{str(work).rstrip('/')}/{newest}", local / newest)
        return local, str(local / newest)
    local = Path(work)
    local.mkdir(parents=True, exist_ok=True)
    done = [p.name for p in local.iterdir() if p.is_dir() and _complete(p)]
    newest = _newest(done)
    return local, str(local / newest) if newest else None


def mirror_callbacks(work: str | Path) -> list:
    """For an ``s3://`` `work`: a callback publishing each saved checkpoint there."""
    if not storage.is_remote(work):
        return []
    from transformers import TrainerCallback

    prefix = str(work).rstrip("/")

    class MirrorCheckpoints(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            if state.is_world_process_zero:
                name = f"checkpoint-{state.global_step}"
                storage.upload_dir(Path(args.output_dir) / name, f"{prefix}/{name}")

    return [MirrorCheckpoints()]
