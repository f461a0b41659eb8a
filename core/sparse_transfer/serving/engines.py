"""Which runtime executes the graph: ONNX Runtime (default; its standard or sparse graph,
`sparse_transfer.runtime.engines`) or DeepSparse.

Only the choice lives here; the DeepSparse engines are in `deepsparse_engines`.

Every engine is a callable ``features -> {output name: array}`` with
``input_names`` and ``output_names``, the shape `predict_numpy` expects.
DeepSparse is found the way ``benchmark`` finds it
(`sparse_transfer.export.benchmark._deepsparse_python`): importable here, it runs
in-process (`DeepSparseEngine`); otherwise, when ``SPARSE_TRANSFER_DEEPSPARSE_PYTHON``
names an interpreter (DeepSparse 1.8 pins onnx 1.14 / numpy 1.26, so it usually
lives in its own venv), it runs in a persistent worker process of that interpreter
(`DeepSparseWorkerEngine`, speaking `deepsparse_runner.py serve`'s framing).
"""

from __future__ import annotations

import functools
import os
import subprocess
from pathlib import Path

from sparse_transfer.export import deepsparse_runner as runner
from sparse_transfer.serving.deepsparse_engines import DeepSparseEngine, DeepSparseWorkerEngine
from sparse_transfer.serving.options import ServingError

__all__ = [
    "DeepSparseEngine",
    "DeepSparseWorkerEngine",
    "close_engine",
    "deepsparse_here",
    "deepsparse_interpreter",
    "load_engine",
    "select_engine",
]


IN_PROCESS, WORKER = "deepsparse", "deepsparse-worker"
ORT_ENGINES = ("auto", "onnxruntime", "onnxruntime-sparse")  # OnnxModel decides auto


def deepsparse_here() -> tuple[bool, str]:
    """(True, "") when DeepSparse imports inside this process, else (False, why)."""
    try:
        import deepsparse  # noqa: F401
    except Exception as exc:  # not installed here (the usual case) or broken
        return False, f"deepsparse is not importable here ({type(exc).__name__})"
    return True, ""


def deepsparse_interpreter() -> tuple[str | None, str]:
    """(the interpreter ``SPARSE_TRANSFER_DEEPSPARSE_PYTHON`` names, "") when it imports
    deepsparse, else (None, why)."""
    python = os.environ.get(runner.ENV_PYTHON)
    if not python:
        return None, f"deepsparse is not importable here and {runner.ENV_PYTHON} is not set"
    return _probe_interpreter(python)


@functools.lru_cache(maxsize=8)
def _probe_interpreter(python: str) -> tuple[str | None, str]:
    """Checked once per interpreter: it exists and imports deepsparse (a few seconds)."""
    where = f"{runner.ENV_PYTHON}={python}"
    if not (os.path.isfile(python) and os.access(python, os.X_OK)):
        return None, f"{where}: not an executable file"
    try:
        done = subprocess.run(
            [python, "-c", "import deepsparse"], capture_output=True, text=True, timeout=300
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"{where}: cannot run it ({type(exc).__name__}: {exc})"
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-1:] or ["(no output)"]
        return None, f"{where}: `import deepsparse` fails there: {tail[0]}"
    return python, ""


def select_engine(name: str) -> str:
    """ONNX Runtime's engines as named (`OnnxModel` resolves ``auto``); ``deepsparse`` ->
    in-process when importable, else the worker in the configured interpreter, else a
    ServingError saying why neither works."""
    if name in ORT_ENGINES:
        return name
    ok, _ = deepsparse_here()
    if ok:
        return IN_PROCESS
    python, why = deepsparse_interpreter()
    if python is None:
        raise ServingError(f"--engine deepsparse: {why}")
    return WORKER


def load_engine(name: str, folder: Path, threads: int | None, max_batch: int, length: int):
    """The engine object for a resolved deployment folder."""
    chosen = select_engine(name)
    if chosen in ORT_ENGINES:
        from sparse_transfer.runtime import OnnxModel

        # verify_deployment checked the files; no spinning between the server's runs
        return OnnxModel(folder, threads=threads, engine=chosen, spin=False)
    if chosen == IN_PROCESS:
        return DeepSparseEngine(folder, threads, max_batch, length)
    python, _ = deepsparse_interpreter()
    return DeepSparseWorkerEngine(folder, python, threads, max_batch, length)


def close_engine(engine) -> None:
    """Releases what an engine holds (a worker process); engines without ``close`` hold none."""
    close = getattr(engine, "close", None)
    if callable(close):
        close()
