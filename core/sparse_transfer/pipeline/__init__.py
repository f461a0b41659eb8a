"""Logic behind the Kubeflow steps, kept free of kfp so it runs (and is tested) anywhere.

`components/` wraps each function of `steps` in a KFP component; `pipelines/`
wires the components together; this package decides what they do: run-config
validation (`config`), the publish gate (`gate`), the Markdown report
(`report`), metric naming and confusion matrices (`metrics`) and dataset
snapshot selection (`snapshots`). Nothing here imports kfp (a test guards it).
"""

from sparse_transfer.pipeline.config import (
    RunConfig,
    load_run_config,
    to_kfp_cron,
    validate_parameters,
)
from sparse_transfer.pipeline.gate import GateResult, evaluate_gate
from sparse_transfer.pipeline.metrics import (
    confusion_matrix,
    find_metric,
    numeric_metrics,
    primary_metric,
)
from sparse_transfer.pipeline.report import render_report
from sparse_transfer.pipeline.snapshots import newest_snapshot

__all__ = [
    "GateResult",
    "RunConfig",
    "confusion_matrix",
    "evaluate_gate",
    "find_metric",
    "load_run_config",
    "newest_snapshot",
    "numeric_metrics",
    "primary_metric",
    "render_report",
    "to_kfp_cron",
    "validate_parameters",
]
