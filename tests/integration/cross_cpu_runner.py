"""Runs saved int8 deployments in ONNX Runtime and compares them with saved expected outputs.

Run by path, possibly under an emulated CPU (``qemu-x86_64 -cpu Haswell PYTHON
cross_cpu_runner.py CASES_DIR``), so it imports only numpy, onnx and
onnxruntime, plus `cpu_features` loaded by file path (no torch, no package
import). Each ``CASES_DIR/<case>/`` holds a deployment (``model.onnx``,
``export_report.json``), ``inputs.npz``, ``expected.npz`` (the fake-quantized
torch model's outputs), ``mask.npy``, ``tolerance.json`` and ``one_step.json``
(from the export report). Prints one JSON line: per case the max abs difference and argmax agreement per output, whether
every output is within its tolerance, and this CPU's verdict on the deployment.

``--library PATH`` (the sparse kernel library, issue 22) also runs each case's
``model.sparse.onnx`` with the library registered (its runtime dispatch sees the
emulated CPU, so qemu's ``-cpu`` picks its instruction-set path) and adds
``sparse``: the same figures, plus whether every decision equals the standard graph's.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort

CPU_FEATURES = Path(__file__).resolve().parents[2] / "core/sparse_transfer/runtime/cpu_features.py"


def _cpu_features():
    spec = importlib.util.spec_from_file_location("cpu_features", CPU_FEATURES)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _decisions(name: str, out: np.ndarray, mask: np.ndarray) -> np.ndarray:
    if out.ndim == 2 and name in ("start_logits", "end_logits"):
        return np.where(mask.astype(bool), out, -np.inf).argmax(-1)
    if out.ndim == 3:
        return out.argmax(-1)[mask.astype(bool)]
    return out.argmax(-1)


def _session(path: Path, library: str | None):
    options = ort.SessionOptions()
    if library:
        options.register_custom_ops_library(library)  # ORT's public custom-op ABI
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _figures(got, expected, mask, tolerance, one_step) -> dict:
    names = list(got)
    diff = {n: float(np.abs(got[n] - expected[n]).max()) for n in names}
    agreement = {
        n: float((_decisions(n, got[n], mask) == _decisions(n, expected[n], mask)).mean())
        for n in names
    }
    return {
        "max_abs_diff": diff,
        "agreement": agreement,
        "tolerance": tolerance,
        "within_tolerance": all(diff[n] <= tolerance[n] for n in names),
        # below one head-input step: no integer feeding the head differs from the QAT model's
        "below_one_step": all(diff[n] < one_step[n] for n in names),
    }


def _run(session, feeds) -> dict:
    names = [o.name for o in session.get_outputs()]
    return dict(
        zip(names, session.run(names, {k: feeds[k] for k in _inputs(session)}), strict=True)
    )


def _inputs(session) -> list[str]:
    return [i.name for i in session.get_inputs()]


def run_case(case: Path, cpu_features, library: str | None = None) -> dict:
    session = _session(case / "model.onnx", None)
    with np.load(case / "inputs.npz") as data:
        feeds = {i.name: data[i.name] for i in session.get_inputs()}
    with np.load(case / "expected.npz") as data:
        expected = {k: data[k] for k in data.files}
    mask = np.load(case / "mask.npy")
    tolerance = json.loads((case / "tolerance.json").read_text())
    one_step = json.loads((case / "one_step.json").read_text())
    got = _run(session, feeds)
    report = json.loads((case / "export_report.json").read_text())
    exact, reason = cpu_features.int8_variant_is_exact_here(report)
    result = _figures(got, expected, mask, tolerance, one_step)
    result.update({"exact_here": exact, "exact_here_reason": reason})
    if library and (case / "model.sparse.onnx").is_file():
        sparse = _run(_session(case / "model.sparse.onnx", library), feeds)
        result["sparse"] = _figures(sparse, expected, mask, tolerance, one_step)
        result["sparse"]["decisions_equal_standard"] = all(
            np.array_equal(_decisions(n, sparse[n], mask), _decisions(n, got[n], mask)) for n in got
        )
    return result


def main(argv: list[str]) -> int:
    cases_dir = Path(argv[0])
    library = argv[argv.index("--library") + 1] if "--library" in argv else None
    cpu_features = _cpu_features()
    result = {
        "ort_u8s8_saturates": cpu_features.ort_u8s8_saturates(),
        "cases": {
            c.name: run_case(c, cpu_features, library)
            for c in sorted(cases_dir.iterdir())
            if c.is_dir()
        },
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
