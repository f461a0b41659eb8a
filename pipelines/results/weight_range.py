"""Stage ``full_range``: the sparse transfer again with full-range int8 Linear weights.

Issue 12 asks what the default 7-bit Linear weights ([-63, 63], exact on every x86
kernel) cost in accuracy against full-range 8-bit weights ([-127, 127], exact only
with VNNI). `stage_sparse` trains the default; this stage runs the very same pipeline
config, run size and seed, with one change: the transfer recipe's
``QuantizationModifier`` gets ``reduce_weight_range: false``. It publishes nothing
(``publish_stub`` empty): the run gates and reports only. If the int8 export refuses
the model (parity), the refusal is the result for the ONNX row and the torch QAT
model is still evaluated.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipelines.results.paired import onnx_right, paired_stats

log = logging.getLogger("pipelines.results")

MARKER = "  - !QuantizationModifier\n"
SETTING = "      reduce_weight_range: false\n"


def full_range_recipe(recipe: str) -> str:
    """`recipe` with ``reduce_weight_range: false`` in its one QuantizationModifier."""
    if recipe.count(MARKER) != 1 or "reduce_weight_range" in recipe:
        raise ValueError(
            "expected exactly one '- !QuantizationModifier' and no reduce_weight_range in the "
            "transfer recipe; update pipelines/results/weight_range.py"
        )
    return recipe.replace(MARKER, MARKER + SETTING)


def _one(root: Path, pattern: str, what: str) -> Path | None:
    found = sorted(p.parent for p in root.glob(pattern))
    if len(found) > 1:
        raise RuntimeError(f"{len(found)} {what} under {root}: {found}")
    return found[0] if found else None


def stage_full_range(
    out: Path,
    size: dict[str, Any],
    params: dict[str, Any],
    run_config: Callable[..., dict[str, Any]],
    evaluate: Callable[[Path, Path, Path], float],
) -> dict[str, Any]:
    """Trains, exports and evaluates the full-range variant; accuracies in %.

    Args:
        params: the sparse transfer run's parameters (its config with the size's overrides).
        run_config: `run._run_config` (runs a pipeline config locally with overrides).
        evaluate: (model or deployment folder, validation file, work dir) -> accuracy %.
    """
    from pipelines.client import PipelineError
    from pipelines.results.settings import zoo_root
    from sparse_transfer.embedded.movie_reviews import DATASETS
    from sparse_transfer.zoo import resolve

    root = zoo_root(out)
    work = out / "full-range"
    work.mkdir(parents=True, exist_ok=True)
    recipe = work / "recipe.yaml"
    recipe.write_text(
        full_range_recipe(Path(resolve(params["recipe"], "recipe", root=root)).read_text())
    )
    overrides = {**size.get("overrides", {}), "recipe": str(recipe), "publish_stub": ""}
    root_name = "pipeline-full-range"
    record = work / "run.json"  # the run's outcome: a rerun of this stage reuses the run
    if record.is_file():
        kept = json.loads(record.read_text())
        run, failure = kept["run"], kept["failure"]
    else:
        try:
            run = run_config(out, "real-results-sparse.yaml", overrides, root_name)
            failure = ""
        except PipelineError as exc:
            run, failure = {"passed": False, "published": "", "report": ""}, str(exc)
            log.warning("full-range run failed: %s", failure.splitlines()[0])
        record.write_text(json.dumps({"run": run, "failure": failure}))
    root = out / root_name
    model = _one(root, "**/sparse_model/quantization.json", "trained models")
    deployment = _one(root, "**/deployment/export_report.json", "deployments")
    if model is None:
        raise RuntimeError(f"the full-range run trained no model: {failure}")
    qat = json.loads((model / "quantization.json").read_text())["config"]
    if qat.get("reduce_weight_range") is not False:
        raise RuntimeError(f"{model}: quantization.json is not full range: {qat}")
    accuracy: dict[str, dict[str, float | None]] = {"torch QAT": {}, "int8 ONNX": {}}
    for ds in DATASETS:
        validation = out / "data" / f"validation_{ds}.jsonl"
        accuracy["torch QAT"][ds] = evaluate(model, validation, work / f"eval-torch-{ds}")
        accuracy["int8 ONNX"][ds] = (
            evaluate(deployment, validation, work / f"eval-onnx-{ds}") if deployment else None
        )
    export = _export_facts(deployment, failure)
    log.info("full-range accuracy: %s; export: %s", accuracy, export.get("summary"))
    paired = {}
    if deployment is not None:
        seven_bit = Path(resolve(params["publish_stub"], "deployment", root=root))
        for ds in DATASETS:
            rows = out / "data" / f"validation_{ds}.jsonl"
            paired[ds] = paired_stats(
                onnx_right(seven_bit, rows, params), onnx_right(deployment, rows, params)
            )
        log.info("7-bit vs full range, paired: %s", paired)
    return {
        "accuracy": accuracy,
        "export": export,
        "paired": paired,
        "run": run,
        "failure": failure,
    }


def _export_facts(deployment: Path | None, failure: str) -> dict[str, Any]:
    """The parity figures of the full-range export (or why there is none)."""
    if deployment is None:
        line = next((x for x in failure.splitlines() if "parity" in x), failure[:500])
        return {"exported": False, "summary": line.strip()}
    report = json.loads((deployment / "export_report.json").read_text())
    parity = report.get("parity", {})
    return {
        "exported": True,
        "representation": (report.get("int8") or {}).get("representation"),
        "summary": parity.get("summary"),
        "graph_vs_torch": parity.get("graph_vs_torch"),
        "runtime_vs_graph": parity.get("runtime_vs_graph"),
        "tolerance": parity.get("tolerance"),
    }
