"""Runs saved sparse-kernel cases in ONNX Runtime with the custom-op library; prints JSON.

Run by path, possibly under an emulated CPU (``qemu-x86_64 -cpu Haswell PYTHON
kernels_runner.py LIBRARY CASES_DIR``), so it imports only numpy and onnxruntime.
Each ``CASES_DIR/<case>/`` holds ``model.onnx``, ``inputs.npz`` and ``expected.npz`` (the
spec's numpy reference, computed natively). Prints one JSON line: the path the library
dispatches to (``SPARSE_TRANSFER_KERNELS_ISA`` may force a lower one) and per case the
output's dtype and shape, the count of elements that differ, and the largest difference
(absolute, and relative to the tolerance in ``expected.npz``'s ``tol`` where it has one).
"""

from __future__ import annotations

import ctypes
import json
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort


def run_case(case: Path, library: str, save: Path | None = None) -> dict:
    options = ort.SessionOptions()
    options.register_custom_ops_library(library)
    options.intra_op_num_threads = 2
    session = ort.InferenceSession(str(case / "model.onnx"), options, ["CPUExecutionProvider"])
    with np.load(case / "inputs.npz") as data:
        feeds = {i.name: data[i.name] for i in session.get_inputs()}
    with np.load(case / "expected.npz") as data:
        expected, tol = data["y"], (data["tol"] if "tol" in data.files else None)
    (got,) = session.run(None, feeds)
    if save is not None:
        np.save(save / f"{case.name}.npy", got)
    diff = np.abs(got.astype(np.float64) - expected.astype(np.float64))
    result = {
        "dtype": str(got.dtype),
        "shape": list(got.shape),
        "differ": int((diff > 0).sum()),
        "max_abs": float(diff.max()) if diff.size else 0.0,
    }
    if tol is not None:
        result["max_over_tol"] = float((diff / tol).max()) if diff.size else 0.0
    return result


def main() -> None:
    library, cases = sys.argv[1], Path(sys.argv[2])
    save = Path(sys.argv[3]) if len(sys.argv) > 3 else None  # each case's output, to compare
    lib = ctypes.CDLL(library)
    lib.sparse_transfer_kernels_isa.restype = ctypes.c_char_p
    error = ctypes.create_string_buffer(512)
    isa = lib.sparse_transfer_kernels_isa(error, ctypes.c_size_t(len(error)))
    report = {"isa": isa.decode() if isa else None, "cases": {}}
    for case in sorted(p for p in cases.iterdir() if p.is_dir()):
        report["cases"][case.name] = run_case(case, library, save)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
