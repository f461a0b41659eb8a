"""Local pipeline runs do not retry a failed step: a deterministic error fails the run once, fast.

On a cluster the fetch/publish steps keep their retry policy (3 retries, 30 s backoff,
factor 2); kfp's local runner honours it too (kfp/local/orchestrator/task_executor.py),
which turned a missing model folder into 3.5 minutes of identical failures.
"""

from __future__ import annotations

import json
import logging
import time

import pytest

from pipelines.client import pipelines, without_retries
from sparse_transfer.errors import PipelineError

STEPS_WITH_RETRIES = {"fetch-model", "fetch-data", "publish", "deploy-serving"}


def _retry_counts(pipeline) -> dict[str, int]:
    spec = pipeline.pipeline_spec
    dags = [spec.root.dag] + [c.dag for c in spec.components.values() if c.HasField("dag")]
    return {
        name: task.retry_policy.max_retry_count
        for dag in dags
        for name, task in dag.tasks.items()
        if task.HasField("retry_policy")
    }


def test_local_copy_has_no_retries_and_the_pipeline_keeps_them():
    pipeline = pipelines()["sparse_transfer"]
    assert _retry_counts(pipeline) == dict.fromkeys(STEPS_WITH_RETRIES, 3)
    local_copy = without_retries(pipeline)
    assert _retry_counts(local_copy) == {}
    assert _retry_counts(pipeline) == dict.fromkeys(STEPS_WITH_RETRIES, 3)  # cluster spec intact
    assert (
        local_copy.pipeline_spec.root.dag.tasks.keys()
        == pipeline.pipeline_spec.root.dag.tasks.keys()
    )


@pytest.mark.integration
def test_missing_model_folder_fails_the_local_run_once(tmp_path, caplog):
    from pipelines.client import run_local

    config = tmp_path / "run.yaml"
    parameters = {
        "task": "text-classification",
        "model_name_or_path": str(tmp_path / "no-such-model"),
        "train_file": str(tmp_path / "no-such-train.jsonl"),
        "validation_file": str(tmp_path / "no-such-validation.jsonl"),
    }
    config.write_text(f"pipeline: sparse_transfer\nparameters: {json.dumps(parameters)}\n")
    start = time.perf_counter()
    with (
        caplog.at_level(logging.INFO),
        pytest.raises(PipelineError, match="local run of sparse_transfer failed"),
    ):
        run_local(config, pipeline_root=tmp_path / "root")
    elapsed = time.perf_counter() - start
    assert "Retrying in" not in caplog.text
    assert elapsed < 30, f"{elapsed:.0f} s: the first retry alone would wait 30 s"
