"""Cluster settings shared by the pipelines: resources, retries, caching, S3 and zoo settings.

Values are compile-time constants (a run cannot change them); the S3 Secret and
settings ConfigMap names can be overridden at compile time with
``SPARSE_TRANSFER_S3_SECRET`` / ``SPARSE_TRANSFER_SETTINGS``, to match what the
Helm chart (charts/sparse-transfer) creates.
"""

from __future__ import annotations

import os

from kfp import kubernetes
from kfp.dsl import PipelineTask

S3_SECRET = os.environ.get("SPARSE_TRANSFER_S3_SECRET", "sparse-transfer-s3")
# Secret key -> environment variable; boto3 reads all three (AWS_ENDPOINT_URL: MinIO, SeaweedFS...).
S3_SECRET_KEYS = {
    "AWS_ACCESS_KEY_ID": "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY": "AWS_SECRET_ACCESS_KEY",
    "AWS_ENDPOINT_URL": "AWS_ENDPOINT_URL",
}
# The chart's settings ConfigMap (always created by the chart, so its keys are required): the zoo
# root every step, TrainJob node and predictor uses when a run leaves `zoo_root` empty, the region
# (boto3 needs it for AWS S3 outside us-east-1) and an s3:// staging prefix for TrainJobs.
# Not an `optional` Secret key: `SecretAsEnv.optional` exists only from KFP 2.15.0, and older
# drivers drop it (backend/src/common/util/json.go UnmarshalString), making the key required.
SETTINGS_CONFIG_MAP = os.environ.get("SPARSE_TRANSFER_SETTINGS", "sparse-transfer-settings")
SETTINGS_KEYS = {
    "SPARSE_TRANSFER_ZOO": "SPARSE_TRANSFER_ZOO",
    "AWS_DEFAULT_REGION": "AWS_DEFAULT_REGION",
    "SPARSE_TRANSFER_STAGING": "SPARSE_TRANSFER_STAGING",
}

# (cpu request, memory request, memory limit) per kind of step.
RESOURCES = {
    "io": ("500m", "2Gi", "4Gi"),
    "light": ("250m", "512Mi", "1Gi"),
    "train": ("4", "16Gi", "32Gi"),
    "eval": ("2", "8Gi", "16Gi"),
}
RETRIES = {"num_retries": 3, "backoff_duration": "30s", "backoff_factor": 2.0}


def with_s3(task: PipelineTask) -> PipelineTask:
    """Injects the S3 credentials from the Secret (never from pipeline parameters) and the zoo
    root, region and staging prefix from the chart's settings ConfigMap."""
    kubernetes.use_secret_as_env(task, secret_name=S3_SECRET, secret_key_to_env=S3_SECRET_KEYS)
    return kubernetes.use_config_map_as_env(
        task, config_map_name=SETTINGS_CONFIG_MAP, config_map_key_to_env=SETTINGS_KEYS
    )


def resources(task: PipelineTask, kind: str) -> PipelineTask:
    cpu, memory, memory_limit = RESOURCES[kind]
    return task.set_cpu_request(cpu).set_memory_request(memory).set_memory_limit(memory_limit)


def io_step(task: PipelineTask) -> PipelineTask:
    """Fetch/publish steps: small, retried on transient storage errors, with S3 access.

    Never cached: KFP's cache key is the step's inputs and spec only
    (backend/src/v2/cacheutils/cache.go, GenerateCacheKey), so a cached fetch would serve an
    old dataset snapshot or a replaced zoo entry, and a cached publish would skip publishing.
    """
    resources(task, "io").set_retry(**RETRIES).set_caching_options(False)
    return with_s3(task)


def training_step(task: PipelineTask, accelerator_type, accelerator_limit) -> PipelineTask:
    """Training steps: big, never cached by default (a rerun should retrain), optional GPU.

    `accelerator_type`/`accelerator_limit` are pipeline parameters; an empty type
    with limit "0" means CPU only. Both must be *string* parameters: KFP's driver resolves a
    runtime placeholder in `resourceType`/`resourceCount` with ``GetStringValue()``
    (backend/src/v2/driver/util.go ``resolvePodSpecInputRuntimeParameter`` in 2.5; resolve.go
    later), which is empty for a number, and then sets no limit (driver.go ``initPodSpecPatch``).
    """
    resources(task, "train").set_caching_options(False)
    task.set_accelerator_type(accelerator_type).set_accelerator_limit(accelerator_limit)
    return with_s3(task)


def scale_out(accelerator_type, accelerator_limit, **scale) -> dict:
    """A training component's accelerator arguments (see `sparse_transfer.scaleout.plan`).

    `scale` is ``num_nodes``, ``nproc_per_node`` and ``node_accelerator_limit`` as pipeline
    parameters, or ``advanced``: the run form's settings object holding them (the step reads
    them from it). `nproc_per_node` > 1 runs torchrun inside the step's pod; `num_nodes` > 1
    makes the step create a Kubeflow Trainer TrainJob running the step's own image (read from
    its pod at run time, so the chart's or a private registry's image reaches the nodes), with
    the S3 keys from the same Secret and the zoo root from the same ConfigMap the steps use.
    Its nodes get `node_accelerator_limit` GPUs each (empty: `accelerator_limit`), so a
    multi-node run can give the waiting step's own pod none (``accelerator_limit: "0"``).
    """
    return {
        **scale,
        "accelerator_type": accelerator_type,
        "accelerator_limit": accelerator_limit,
        "s3_secret": S3_SECRET,
        "settings_config_map": SETTINGS_CONFIG_MAP,
    }
