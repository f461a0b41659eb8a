"""The one way a finished directory takes the place of another: staged beside it, swapped in.

Every command that writes a folder (training's ``--output_dir``, ``export-onnx
--output``, a local zoo publish, a download) builds it in a marked staging
folder next to the target and hands it to `replace_directory`, which applies
the project's rule "a command replaces only what it recognisably made":

- an absent target or an empty folder is simply taken;
- a non-empty folder is replaced only when `recognise(target)` says we made it
  (a run summary, an ``export_report.json``, a manifest) and the caller passes
  ``overwrite=True`` (the user's explicit flag); a folder of user files is
  refused even then;
- never a file, a symbolic link, the working directory, one of its parents,
  or a protected path (the command's input) or one of its parents.

The swap itself is one ``renameat2(RENAME_EXCHANGE)`` on Linux, so readers
see the old or the new folder and never nothing; elsewhere two renames.
Staging folders carry a marker naming their owner process, so the leftovers
of a killed run (``.NAME.partial``, ``.NAME.tmp-*``, ``.NAME.old-*``) are
recognised as ours, removed once their owner is dead, and never published.
``mkdtemp``/``mkstemp`` create private 0700/0600 entries; staging folders and
atomically written files get the modes the umask asks for instead.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import logging
import os
import shutil
import socket
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

from sparse_transfer.errors import StorageError

log = logging.getLogger(__name__)

MARKER = ".sparse-transfer-staging"
_AT_FDCWD = -100
_RENAME_NOREPLACE = 1
_RENAME_EXCHANGE = 2


def is_staging_name(name: str) -> bool:
    """True for the names of staging and trash folders (ours and the older `.st-tmp-` ones)."""
    if name.startswith(".st-tmp-"):
        return True
    return name.startswith(".") and (
        ".tmp-" in name or ".old-" in name or name.endswith(".partial")
    )


# -- modes ----------------------------------------------------------------------------
def current_umask() -> int:
    """The process umask, read without changing it where Linux allows (/proc/self/status)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    old = os.umask(0o022)
    os.umask(old)
    return old


def chmod_as_umask(path: Path, *, directory: bool) -> None:
    """Gives `path` the mode a plain mkdir/open would have (mkdtemp/mkstemp make it private)."""
    base = 0o777 if directory else 0o666
    os.chmod(path, base & ~current_umask())


# -- staging --------------------------------------------------------------------------
def _owner_record(folder: Path) -> str:
    st = os.stat(folder)
    return json.dumps(
        {"pid": os.getpid(), "host": socket.gethostname(), "folder": [st.st_dev, st.st_ino]}
    )


def _owner_alive(folder: Path) -> bool | None:
    """True/False for a marked folder's owner process; None when the folder is not marked.

    A marker names the folder it was written in (device, inode): one copied into
    another folder (issue 26) does not make that folder ours. Markers written before
    that field existed name no folder and are still read.
    """
    try:
        owner = json.loads((folder / MARKER).read_text())
        pid, host = int(owner["pid"]), str(owner["host"])
        st = os.stat(folder)
        if owner.get("folder", [st.st_dev, st.st_ino]) != [st.st_dev, st.st_ino]:
            return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    if host != socket.gethostname():
        return True  # another machine's process: we cannot tell, so never touch it
    if pid == os.getpid():
        return False  # our own leftover from an earlier call in this process
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _mark(folder: Path) -> None:
    (folder / MARKER).write_text(_owner_record(folder))


def staging_dir(target: Path, *, fixed_suffix: str | None = None, reuse: bool = False) -> Path:
    """A new marked folder beside `target` to build its replacement in (same filesystem).

    Args:
        target: the folder the staged one will replace.
        fixed_suffix: a stable name ``.NAME<suffix>`` (training's ``.partial``, so that a
            resumed run finds its checkpoints) instead of a unique ``.NAME.tmp-XXXX``.
        reuse: keep the contents of a dead run's fixed staging folder (resume).

    Raises:
        StorageError: the fixed folder belongs to a live process or is not ours.
    """
    target = Path(target).absolute()
    target.parent.mkdir(parents=True, exist_ok=True)
    if fixed_suffix is None:
        folder = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    else:
        folder = target.parent / f".{target.name}{fixed_suffix}"
        if folder.exists() or folder.is_symlink():
            alive = _owner_alive(folder) if folder.is_dir() and not folder.is_symlink() else None
            if alive is None:
                raise StorageError(
                    f"{folder} exists but was not made by sparse-transfer as a staging folder; "
                    "move it away or remove it, then run again"
                )
            if alive:
                raise StorageError(
                    f"{folder} is being written by another running process (see {folder / MARKER}); "
                    "wait for it or choose another output folder"
                )
            if not reuse:
                log.info("removing %s: the staging folder of a run that did not finish", folder)
                shutil.rmtree(folder)
        folder.mkdir(exist_ok=True)
    chmod_as_umask(folder, directory=True)
    _mark(folder)
    return folder


def clean_leftovers(target: Path, *, keep_partial: bool = False) -> list[Path]:
    """Removes the marked staging/trash siblings of `target` whose owner process is dead.

    `keep_partial` spares ``.NAME.partial`` (a crashed training run that is being resumed).
    Returns the leftovers that were kept (a live owner, or not marked as ours), which
    callers report; nothing unmarked is ever removed.
    """
    target = Path(target).absolute()
    if not target.parent.is_dir():
        return []
    kept = []
    stem = f".{target.name}."
    for sibling in target.parent.iterdir():
        name = sibling.name
        if not name.startswith(stem) or sibling.is_symlink() or not sibling.is_dir():
            continue
        rest = name[len(stem) :]
        if not (rest == "partial" or rest.startswith(("tmp-", "old-"))):
            continue
        if keep_partial and rest == "partial":
            continue
        if _owner_alive(sibling) is False:
            log.info("removing %s: left behind by a run that did not finish", sibling)
            shutil.rmtree(sibling, ignore_errors=True)
        else:
            kept.append(sibling)
    for sibling in kept:
        log.warning("left untouched: %s (not ours, or its process still runs)", sibling)
    return kept


# -- the checks ------------------------------------------------------------------------
def _is_same_or_parent(path: Path, other: Path) -> bool:
    return path == other or path in other.parents


def _absolute(path: Path) -> Path:
    """`path` made absolute with its parents resolved, the last part kept (it may be a link)."""
    path = Path(path).absolute()
    return path.parent.resolve() / path.name if path.name else path.resolve()


def check_replaceable(
    target: Path,
    *,
    recognise: Callable[[Path], bool],
    what: str,
    overwrite: bool,
    flag: str = "overwrite=True",
    protect: Iterable[Path] = (),
) -> None:
    """Raises unless `replace_directory` may put a new folder at `target` (see the module doc).

    Call it before long work (training, export) so that a refusal comes first, not last.

    Args:
        target: the folder to be written.
        recognise: True when an existing non-empty `target` was made by us.
        what: what we make, for messages ("training output", "deployment", ...).
        overwrite: the user's explicit permission to replace a recognised `target`.
        flag: the flag that grants it, named in the refusal ("--overwrite_output_dir").
        protect: the command's inputs: neither they nor their parents may be replaced.

    Raises:
        StorageError: one line naming the folder, the reason and what to do instead.
    """
    raw = Path(target)
    target = _absolute(raw)
    if target.is_symlink():
        raise StorageError(
            f"{raw} is a symbolic link; give the real folder (or a new one) as the {what} folder"
        )
    if target.exists() and not target.is_dir():
        raise StorageError(
            f"{raw} is a file, not a folder: it is left as it is; choose a folder for the {what}"
        )
    try:
        cwd: Path | None = Path.cwd().resolve()
    except FileNotFoundError:  # the working directory was removed: nothing to protect there
        cwd = None
    real = target.resolve()
    if cwd is not None and _is_same_or_parent(real, cwd):
        raise StorageError(
            f"{raw} is the working directory or one of its parents; it is never replaced: "
            f"give a new folder for the {what} (e.g. ./{what.replace(' ', '-')})"
        )
    for inp in protect:
        inp_real = Path(inp).resolve()
        if _is_same_or_parent(real, inp_real):
            raise StorageError(
                f"{raw} is the input {inp} or a folder holding it; it is never replaced: "
                f"give another folder for the {what}"
            )
    if not target.exists() or not any(target.iterdir()):
        return
    if not recognise(target):
        raise StorageError(
            f"{raw} already holds files that are not a sparse-transfer {what}; they are left "
            f"untouched: choose a new or empty folder (not even {flag} replaces them)"
        )
    if not overwrite:
        raise StorageError(
            f"{raw} already holds a {what}; pass {flag} to replace it, or choose another folder"
        )


# -- the swap -------------------------------------------------------------------------
def _renameat2(src: Path, dst: Path, flags: int) -> bool:
    """Linux renameat2; False where the libc or the filesystem does not offer it."""
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if fn(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), flags) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EPERM):
        return False
    raise OSError(err, os.strerror(err), str(src), None, str(dst))


def replace_directory(
    staged: Path,
    target: Path,
    *,
    recognise: Callable[[Path], bool],
    what: str,
    overwrite: bool,
    flag: str = "overwrite=True",
    protect: Iterable[Path] = (),
) -> Path:
    """Puts the finished folder `staged` at `target` in one step, replacing it only if allowed.

    `staged` must be a sibling of `target` (from `staging_dir`); the arguments
    after it are those of `check_replaceable`, which runs again here. On a
    refusal `staged` is left for the caller to remove (or keep, for a resume).

    Returns:
        `target`.

    Raises:
        StorageError: the refusals of `check_replaceable`, or a concurrent writer
            that filled `target` in the meantime.
    """
    staged, target = Path(staged), Path(target)
    check_replaceable(
        target, recognise=recognise, what=what, overwrite=overwrite, flag=flag, protect=protect
    )
    if not staged.is_dir():
        raise StorageError(f"cannot publish {staged}: not a folder")
    (staged / MARKER).unlink(missing_ok=True)
    chmod_as_umask(staged, directory=True)
    if not target.exists():
        try:
            if not _renameat2(staged, target, _RENAME_NOREPLACE):
                os.rename(staged, target)
        except OSError as exc:
            if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):
                _mark(staged)
                raise StorageError(
                    f"{target} was created by someone else while the {what} was being written; "
                    "it is left as it is: run again to see what it holds"
                ) from None
            raise
        return target
    trash = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
    _mark(trash)
    if _renameat2(staged, target, _RENAME_EXCHANGE):
        os.rename(staged, trash / "old")  # `staged` now names the previous folder
    else:
        os.rename(target, trash / "old")
        try:
            os.rename(staged, target)
        except BaseException:
            os.rename(trash / "old", target)
            raise
    shutil.rmtree(trash, ignore_errors=True)
    return target


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Writes `data` to a temp file next to `path` and renames it into place (umask modes)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        chmod_as_umask(Path(tmp), directory=False)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
