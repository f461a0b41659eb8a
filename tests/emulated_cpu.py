"""Running the venv's interpreter under qemu-user's emulated CPUs (the cross-CPU tests)."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

QEMU = shutil.which("qemu-x86_64")


def venv_python() -> str:
    """The venv's interpreter by its own path (a resolved symlink would lose the venv)."""
    return str(Path(sys.prefix) / "bin" / "python")


def emulated(command: list[str], cpu: str | None, env: dict[str, str] | None = None):
    """`command` under `qemu-x86_64 -cpu CPU` (as is when `cpu` is None), and its environment.

    OpenBLAS (numpy's) is left to detect the emulated CPU itself: an OPENBLAS_CORETYPE the
    host sets for its own CPU (some of these machines set Haswell) would run AVX2 code on an
    emulated Nehalem, and `import numpy` dies with SIGILL before any of our code runs.
    """
    env = dict(os.environ if env is None else env)
    if cpu is None:
        return command, env
    env.pop("OPENBLAS_CORETYPE", None)
    return [QEMU, "-cpu", cpu, *command], env
