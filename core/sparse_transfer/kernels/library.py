"""Finds the native kernels library, says whether it can run here, and registers it with ORT.

Never raises for a missing or broken library: ``kernel_status()`` says why it is unavailable
(not built / no compiler, an ONNX Runtime older than the C API the library targets, a CPU
path forced by ``SPARSE_TRANSFER_KERNELS_ISA`` that this CPU lacks, a load failure) and callers
fall back to the standard graph. ``SPARSE_TRANSFER_KERNELS_LIB`` points at a library file
instead of the one built from the package's sources.
"""

from __future__ import annotations

import ctypes
import os
from dataclasses import dataclass
from pathlib import Path

LIB_ENV = "SPARSE_TRANSFER_KERNELS_LIB"
ISA_ENV = "SPARSE_TRANSFER_KERNELS_ISA"
# The library asks ORT for C API 17 (ort_abi.h): ONNX Runtime 1.17 and newer.
MIN_ORT = (1, 17)


@dataclass(frozen=True)
class KernelStatus:
    available: bool
    library: str | None  # path of the library file
    isa: str | None  # the path it dispatches to on this CPU
    onnxruntime: str  # ONNX Runtime's version
    reason: str | None  # why unavailable

    def as_dict(self) -> dict:
        keys = ("library", "isa", "onnxruntime", "available", "reason")
        return {k: getattr(self, k) for k in keys}


def _ort_version() -> str:
    try:
        import onnxruntime
    except ImportError:
        return "not installed"
    return onnxruntime.__version__


def _version_tuple(version: str) -> tuple[int, ...]:
    parts = []
    for piece in version.split(".")[:2]:
        digits = "".join(c for c in piece if c.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


def _library_path() -> tuple[Path | None, str | None]:
    from sparse_transfer.kernels import build  # lazily: `python -m ...build` imports us first

    forced = os.environ.get(LIB_ENV)
    if forced:
        path = Path(forced)
        return (path, None) if path.is_file() else (None, f"{LIB_ENV}={forced}: no such file")
    path = build.find_built()
    if path is not None:
        return path, None
    if build.find_compiler() is None:
        return None, "not built: no C++ compiler found (install g++ and run " \
                     "`python -m sparse_transfer.kernels.build`)"  # fmt: skip
    return None, "not built for these sources: run `python -m sparse_transfer.kernels.build`"


def _probe_isa(path: Path) -> tuple[str | None, str | None]:
    """The library's dispatch path on this CPU, asked through its C entry point."""
    try:
        lib = ctypes.CDLL(str(path))
        probe = lib.sparse_transfer_kernels_isa
    except (OSError, AttributeError) as exc:
        return None, f"cannot load {path}: {exc}"
    probe.restype = ctypes.c_char_p
    probe.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
    error = ctypes.create_string_buffer(512)
    isa = probe(error, len(error))
    if isa is None:
        return None, f"no usable CPU path: {error.value.decode()}"
    return isa.decode(), None


def weight_form(path: Path, row_ptr, block_col, values, k: int) -> str:
    """The form the library at `path` runs a packed weight in on this CPU: ``"amx"`` (16-row
    groups on AMX tiles), ``"amx-expanded"`` (every chunk on tiles, expanded from the
    non-zeros), ``"quads"`` or ``"blocks"`` (the planner's choice at session load).

    Raises:
        ValueError: the weight is malformed or the CPU has no usable path (the reason).
    """
    import numpy as np

    lib = ctypes.CDLL(str(path))
    fn = lib.sparse_transfer_kernels_form
    fn.restype = ctypes.c_char_p
    fn.argtypes = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_void_p, ctypes.c_int64,
                   ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_char_p,
                   ctypes.c_size_t]  # fmt: skip
    arrays = [np.ascontiguousarray(a, dtype) for a, dtype in
              ((row_ptr, np.int32), (block_col, np.int32), (values, np.int8))]  # fmt: skip
    error = ctypes.create_string_buffer(512)
    form = fn(arrays[0].ctypes.data, arrays[0].size, arrays[1].ctypes.data, arrays[1].size,
              arrays[2].ctypes.data, arrays[2].size, k, error, len(error))  # fmt: skip
    if form is None:
        raise ValueError(error.value.decode())
    return form.decode()


def kernel_status() -> KernelStatus:
    """Whether the kernels can run in this process, and if not, why (never raises)."""
    ort_version = _ort_version()
    path, reason = _library_path()
    library = str(path) if path else None
    if reason is None and _version_tuple(ort_version) < MIN_ORT:
        reason = f"onnxruntime {ort_version} is too old: the kernels need >= 1.17 (C API 17)"
    isa = None
    if reason is None:
        isa, reason = _probe_isa(path)
    return KernelStatus(reason is None, library, isa, ort_version, reason)


def register_library(options) -> KernelStatus:
    """Registers the kernels with an ``onnxruntime.SessionOptions`` when they can run here.

    Returns the status; an unavailable library (or one ORT refuses) is reported, not raised.
    """
    status = kernel_status()
    if not status.available:
        return status
    try:
        options.register_custom_ops_library(status.library)
    except Exception as exc:  # ORT raises its own error types; all mean "not registered"
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return KernelStatus(False, status.library, status.isa, status.onnxruntime,
                            f"onnxruntime refused the library: {message}")  # fmt: skip
    return status
