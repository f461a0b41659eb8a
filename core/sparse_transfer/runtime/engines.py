"""Which ONNX Runtime engine runs a deployment: the standard graph or the sparse one.

``onnxruntime`` runs ``model.onnx`` (every int8 Linear a ``MatMulInteger``);
``onnxruntime-sparse`` runs ``model.sparse.onnx`` (the Linears as the
``com.sparse_transfer`` custom ops, `sparse_transfer.kernels.spec`) with the
project's kernel library registered in the session; ``auto`` picks the sparse
graph when the folder has one, the library loads and the int8 variant is exact
here, and otherwise the standard graph with a one-line warning saying why. The
sparse graph computes the standard graph's numbers (export parity checks both),
so the choice changes speed, never answers.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sparse_transfer.errors import ExportError

log = logging.getLogger(__name__)

STANDARD, SPARSE, AUTO = "onnxruntime", "onnxruntime-sparse", "auto"
ENGINES = (AUTO, STANDARD, SPARSE)
MODEL_FILE = "model.onnx"
SPARSE_MODEL_FILE = "model.sparse.onnx"
ENGINE_HELP = (
    "auto (default): the sparse int8 graph (model.sparse.onnx) with the project's kernel "
    "library when the deployment has one, the library loads and it is exact on this CPU, "
    "else the standard model.onnx with a warning saying why (same answers either way); "
    "onnxruntime: always model.onnx; onnxruntime-sparse: the sparse graph or an error"
)


@dataclass(frozen=True)
class Unavailable:
    """The library's `KernelStatus` shape, for when its Python module is missing."""

    available: bool
    library: str | None
    isa: str | None
    onnxruntime: str
    reason: str | None


def kernel_status():
    """The sparse kernel library's status here (never raises)."""
    try:
        from sparse_transfer.kernels.library import kernel_status as status
    except ImportError as exc:
        return _unavailable(f"the kernel library's Python module is missing ({exc})")
    try:
        return status()
    except Exception as exc:  # a broken build must not take the standard engine down
        return _unavailable(f"kernel_status() failed: {type(exc).__name__}: {exc}")


def register_library(options):
    """Registers the custom-op library into ORT `options`; its status (never raises)."""
    try:
        from sparse_transfer.kernels.library import register_library as register
    except ImportError as exc:
        return _unavailable(f"the kernel library's Python module is missing ({exc})")
    try:
        return register(options)
    except Exception as exc:
        return _unavailable(f"registering the library failed: {type(exc).__name__}: {exc}")


def _unavailable(reason: str) -> Unavailable:
    import onnxruntime

    return Unavailable(False, None, None, onnxruntime.__version__, reason)


def _sparse_problem(directory: Path, report: dict[str, Any]) -> str | None:
    """Why the sparse engine cannot run `directory` here, or None when it can."""
    from sparse_transfer.runtime.cpu_features import int8_variant_is_exact_here

    if not (directory / SPARSE_MODEL_FILE).is_file():
        return (
            f"{directory} has no {SPARSE_MODEL_FILE} (export-onnx writes one for int8 "
            "deployments of the integer format; re-export older ones)"
        )
    status = kernel_status()
    if not status.available:
        return f"the sparse kernel library is not available: {status.reason}"
    exact, why = int8_variant_is_exact_here(report, engine=SPARSE)
    if not exact:
        return why
    return None


def choose(directory: Path, engine: str, report: dict[str, Any]) -> tuple[str, Path]:
    """(engine, graph file) for `engine` in ENGINES; ExportError when a named one cannot run."""
    if engine not in ENGINES:
        raise ExportError(f"--engine {engine!r}: choose one of {', '.join(ENGINES)}")
    if engine == STANDARD:
        return STANDARD, directory / MODEL_FILE
    problem = _sparse_problem(directory, report)
    if problem is None:
        return SPARSE, directory / SPARSE_MODEL_FILE
    if engine == SPARSE:
        raise ExportError(f"--engine {SPARSE}: {problem}")
    int8 = report.get("format") == "integer"
    (log.warning if int8 else log.debug)(
        "--engine auto: running the standard %s: %s", MODEL_FILE, problem
    )
    return STANDARD, directory / MODEL_FILE
