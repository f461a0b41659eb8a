"""Refuse to serve a deployment that is not the one that was verified.

Three checks run before the model is loaded; each failure names its reason:

* the files are the published ones: `zoo.resolve` (used by `load.resolve_deployment`)
  re-hashes every file of a published folder, s3:// URI or zoo stub against its
  ``manifest.json``; a plain local export folder has no manifest and is served as is;
* ``export_report.json`` says the ONNX-vs-torch parity check passed;
* an int8 deployment computes exact integer products on this CPU (`runtime.int8_variant_is_exact_here`);
* every file hashes as recorded at export (`storage.verify_recorded`) and nothing was
  added beside them: a changed classifier bias or an added ``added_tokens.json`` is refused.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sparse_transfer import storage
from sparse_transfer.runtime.cpu_features import int8_variant_is_exact_here
from sparse_transfer.serving.options import ServingError

REQUIRED_FILES = ("model.onnx", "config.json", "export_report.json")


def served_tasks() -> list[str]:
    """The tasks whose spec has a serving codec (`TaskSpec.served_as`)."""
    from sparse_transfer.tasks.registry import all_specs

    return [spec.name for spec in all_specs() if spec.served_as]


def read_report(folder: Path) -> dict[str, Any]:
    """The folder's export_report.json, or a ServingError naming what is missing."""
    missing = [name for name in REQUIRED_FILES if not (folder / name).is_file()]
    if missing:
        raise ServingError(
            f"{folder}: not a deployment folder (missing {', '.join(missing)}); "
            "pass what `sparse-transfer export-onnx` wrote, an s3:// URI or a zoo stub"
        )
    try:
        report = json.loads((folder / "export_report.json").read_text())
    except json.JSONDecodeError as exc:
        raise ServingError(f"{folder / 'export_report.json'}: not valid JSON ({exc})") from None
    except RecursionError:
        raise ServingError(f"{folder / 'export_report.json'}: nested too deeply to read") from None
    if not isinstance(report, dict):
        raise ServingError(f"{folder / 'export_report.json'}: expected a JSON object")
    return report


def verify_deployment(folder: Path, engine: str = "onnxruntime") -> dict[str, Any]:
    """Checks the report of a resolved deployment folder; returns the report.

    Raises:
        ServingError: unknown task, failed or missing parity, or an int8 variant
            whose integer products are not exact on this CPU.
    """
    report = read_report(folder)
    where = folder / "export_report.json"
    task = report.get("task")
    served = served_tasks()
    if task not in served:
        raise ServingError(f"{where}: field 'task' is {task!r}; serve handles {', '.join(served)}")
    parity = report.get("parity")
    if not isinstance(parity, dict) or parity.get("passed") is not True:
        summary = parity.get("summary") if isinstance(parity, dict) else None
        raise ServingError(
            f"{where}: field 'parity.passed' is "
            f"{parity.get('passed') if isinstance(parity, dict) else None!r}"
            f"{f' ({summary})' if summary else ''}: the ONNX graph did not match the trained "
            "model; re-export it"
        )
    ok, why = int8_variant_is_exact_here(report, engine)
    if not ok:
        raise ServingError(f"{where}: the int8 variant is not exact on this CPU: {why}")
    storage.verify_recorded(folder)
    if engine == "onnxruntime-sparse":  # refuse before listening, with the reason
        from sparse_transfer.errors import ExportError
        from sparse_transfer.runtime.engines import choose

        try:
            choose(folder, engine, report)
        except ExportError as exc:
            raise ServingError(str(exc)) from None
    return report
