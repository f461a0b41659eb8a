"""Compiles the native kernels (``csrc/``) into the ONNX Runtime custom-op library.

Run by the project's install (Makefile, images/Dockerfile): ``python -m
sparse_transfer.kernels.build``. The library's file name carries a hash of the sources and
flags, so a stale build is never loaded. It goes into ``_lib/`` beside this file when that is
writable, else into the user cache (``$SPARSE_TRANSFER_CACHE``, default
``~/.cache/sparse-transfer``) under ``kernels/``. One system compiler (g++ or clang++) and no
build system: the sources are one library of a few files, built in well under a minute.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from sparse_transfer.errors import SparseTransferError

CSRC = Path(__file__).resolve().parent / "csrc"
PACKAGE_LIB_DIR = Path(__file__).resolve().parent / "_lib"
LIB_STEM = "libsparse_transfer_kernels"
# No -march: every instruction-set path carries its own target attribute and is chosen at run
# time. -ffp-contract=off keeps `acc * scale + bias` two roundings, as the spec's float32 steps.
FLAGS = (
    "-O3", "-std=c++17", "-shared", "-fPIC", "-fvisibility=hidden", "-ffp-contract=off",
    "-fno-math-errno", "-static-libstdc++", "-static-libgcc", "-Wall", "-Wno-maybe-uninitialized",
    "-Wno-uninitialized",
)  # fmt: skip
COMPILERS = ("g++", "c++", "clang++")


class KernelBuildError(SparseTransferError):
    """The native kernels cannot be built here (no compiler, or the compiler failed)."""


def sources() -> list[Path]:
    return sorted(p for p in CSRC.iterdir() if p.suffix in (".cc", ".h"))


def source_hash() -> str:
    digest = hashlib.sha256(" ".join(FLAGS).encode())
    for path in sources():
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def library_name() -> str:
    return f"{LIB_STEM}-{source_hash()}.so"


def cache_lib_dir() -> Path:
    root = os.environ.get("SPARSE_TRANSFER_CACHE") or Path.home() / ".cache" / "sparse-transfer"
    return Path(root) / "kernels"


def find_built() -> Path | None:
    """The library built from the current sources, where the loader looks; None if unbuilt."""
    name = library_name()
    for folder in (PACKAGE_LIB_DIR, cache_lib_dir()):
        if (folder / name).is_file():
            return folder / name
    return None


def find_compiler() -> str | None:
    for name in filter(None, (os.environ.get("CXX"), *COMPILERS)):
        found = shutil.which(name)
        if found:
            return found
    return None


def _writable_dir(folder: Path) -> bool:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    return os.access(folder, os.W_OK)


def build(dest: Path | None = None, force: bool = False) -> Path:
    """Builds the library (unless already built from these sources) and returns its path."""
    if not force and dest is None and (found := find_built()) is not None:
        return found
    compiler = find_compiler()
    if compiler is None:
        raise KernelBuildError("no C++ compiler found (g++, c++ or clang++; or set CXX)")
    folder = dest or (PACKAGE_LIB_DIR if _writable_dir(PACKAGE_LIB_DIR) else cache_lib_dir())
    if not _writable_dir(folder):
        raise KernelBuildError(f"cannot write the kernels library into {folder}")
    target = folder / library_name()
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        partial = Path(tmp) / target.name
        command = [compiler, *FLAGS, "-o", str(partial), *map(str, sources()), "-lm"]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            tail = done.stderr.strip().splitlines()[-1:] or ["(no message)"]
            raise KernelBuildError(f"{Path(compiler).name} failed: {tail[0]}")
        os.replace(partial, target)  # atomic: a reader never sees a half-written library
    for stale in folder.glob(f"{LIB_STEM}-*.so"):  # only our own builds of older sources
        if stale != target:
            stale.unlink(missing_ok=True)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sparse_transfer.kernels.build",
                                     description=__doc__.splitlines()[0])  # fmt: skip
    parser.add_argument("--dest", type=Path, help="folder for the library (default: see above)")
    parser.add_argument("--force", action="store_true", help="rebuild even if built")
    args = parser.parse_args(argv)
    try:
        path = build(args.dest, args.force)
    except KernelBuildError as exc:
        print(f"sparse-transfer kernels not built: {exc}", file=sys.stderr)
        return 1
    print(f"sparse-transfer kernels: {path}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
