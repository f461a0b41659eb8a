"""Which runtime executes the graph: ONNX Runtime (default) or DeepSparse.

Both are callables ``features -> {output name: array}`` with ``input_names``, the
shape `predict_numpy` expects. DeepSparse is found the way ``benchmark`` finds it
(`sparse_transfer.export.benchmark._deepsparse_python`): importable here, or an
interpreter named by ``SPARSE_TRANSFER_DEEPSPARSE_PYTHON``. The server hosts the
engine in its own process, so only an importable DeepSparse can serve; a separate
interpreter is reported as the reason it cannot.
"""

from __future__ import annotations

import logging
import sys
import tempfile
from pathlib import Path

import numpy as np
from sparse_transfer.serving.options import ServingError

log = logging.getLogger(__name__)


def deepsparse_here() -> tuple[bool, str]:
    """(True, "") when DeepSparse can run inside this process, else (False, why)."""
    from sparse_transfer.export.benchmark import _deepsparse_python

    python, unavailable = _deepsparse_python()
    if unavailable:
        return False, unavailable["reason"]
    if python != sys.executable:
        return False, (
            f"DeepSparse lives in another interpreter ({python}); the server runs its engine "
            "in-process, so install deepsparse beside sparse-transfer to serve with it"
        )
    return True, ""


def select_engine(name: str) -> str:
    """``auto`` -> ``onnxruntime``; ``deepsparse`` must be runnable here."""
    if name in ("auto", "onnxruntime"):
        return "onnxruntime"
    ok, why = deepsparse_here()
    if not ok:
        raise ServingError(f"--engine deepsparse: {why}")
    return "deepsparse"


def load_engine(name: str, folder: Path, threads: int | None, max_batch: int, length: int):
    """The engine object for a resolved deployment folder."""
    if select_engine(name) == "onnxruntime":
        from sparse_transfer.runtime import OnnxModel

        return OnnxModel(folder, threads=threads)
    return DeepSparseEngine(folder, threads, max_batch, length)


class DeepSparseEngine:
    """DeepSparse compiles one shape: batches are padded to (`max_batch`, `length`)."""

    def __init__(self, folder: Path, threads: int | None, max_batch: int, length: int) -> None:
        from sparse_transfer.export import deepsparse_runner as runner

        self.batch, self.length = max_batch, length
        self._tmp = tempfile.TemporaryDirectory(prefix="sparse-transfer-serve-")
        self.input_names = runner.input_names(folder / "model.onnx")
        self.engine = runner.compile_engine(
            folder / "model.onnx", max_batch, length, threads, Path(self._tmp.name)
        )
        import onnx

        graph = onnx.load(str(folder / "model.onnx"), load_external_data=False).graph
        self.output_names = [o.name for o in graph.output]

    def __call__(self, features: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        n, width = features["input_ids"].shape
        if n > self.batch or width > self.length:
            raise ServingError(f"batch {n}x{width} exceeds the compiled {self.batch}x{self.length}")
        padded = []
        for name in self.input_names:
            x = np.zeros((self.batch, self.length), dtype=np.int64)
            x[:n, :width] = features[name]
            padded.append(x)
        outputs = self.engine.run(padded)
        return {o: np.asarray(v)[:n, ...] for o, v in zip(self.output_names, outputs, strict=True)}
