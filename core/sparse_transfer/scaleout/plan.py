"""How a training step runs: one process, ``torchrun`` in its pod, or a multi-node TrainJob.

`train_scaled_out` is what `sparse_transfer.pipeline.steps.train_step` calls
when `ScaleOut` asks for more than one process. Both paths end with the same
output directory (model, recipe.yaml, sparsity.json, run_summary.json) that a
single-process run leaves, and return the same summary.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

from sparse_transfer.errors import PipelineError

log = logging.getLogger(__name__)

SUMMARY_NAME = "run_summary.json"
NODE_OUTPUT_DIR = "/tmp/sparse-transfer-output"  # noqa: S108 - inside the node's own pod
SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
STAGING_ENV = "SPARSE_TRANSFER_STAGING"  # the chart's settings ConfigMap: s3://<bucket>/staging
STEP_CONTAINER = "main"  # KFP names a step's container "main"
# Flags whose values are local artifact paths that nodes in other pods cannot see.
_DIR_FLAGS = ("--model_name_or_path", "--distill_teacher")
_FILE_FLAGS = ("--train_file", "--validation_file", "--test_file")


@dataclass(frozen=True)
class ScaleOut:
    """The accelerator settings of a training step.

    Attributes:
        num_nodes: pods; > 1 runs a Kubeflow Trainer TrainJob.
        nproc_per_node: processes per pod (GPUs per pod); > 1 runs torchrun.
        accelerator_type / accelerator_limit: GPUs per node for a TrainJob's pods.
        work_uri: where a TrainJob's inputs and output are staged: the step's artifact URI.
            Not s3:// (a ``minio://`` pipeline root): a fresh folder under
            ``$SPARSE_TRANSFER_STAGING`` instead, which the nodes reach with the S3 Secret.
        image: the image TrainJob nodes run; empty: this step's own (read from its pod, so
            a chart's or a private registry's image reaches the nodes too).
        namespace: TrainJob namespace (default: this pod's).
        s3_secret: the Secret holding the S3 keys, mounted into the nodes.
        settings_config_map: the ConfigMap with the zoo root and region, mounted into the nodes.
    """

    num_nodes: int = 1
    nproc_per_node: int = 1
    accelerator_type: str = ""
    accelerator_limit: int = 0
    work_uri: str = ""
    image: str = ""
    namespace: str = ""
    s3_secret: str = ""
    settings_config_map: str = ""

    def __post_init__(self) -> None:
        if self.num_nodes < 1 or self.nproc_per_node < 1:
            raise PipelineError(
                f"num_nodes and nproc_per_node must be >= 1, got {self.num_nodes} and "
                f"{self.nproc_per_node}"
            )
        if self.num_nodes > 1 and not self.s3_secret:
            raise PipelineError(f"num_nodes={self.num_nodes} needs s3_secret")

    def staging_uri(self) -> str:
        """The s3:// prefix every node can read: `work_uri`, else a folder under the staging env."""
        if self.work_uri.startswith("s3://"):
            return self.work_uri.rstrip("/")
        staging = os.environ.get(STAGING_ENV, "")
        if staging.startswith("s3://"):
            return f"{staging.rstrip('/')}/{uuid.uuid4().hex}"
        raise PipelineError(
            f"num_nodes={self.num_nodes} needs an s3:// place every node can read: the pipeline "
            f"root is {self.work_uri!r} and ${STAGING_ENV} is {staging!r} (the chart's settings "
            "ConfigMap sets it; docs/distributed.md)"
        )

    @property
    def distributed(self) -> bool:
        return self.num_nodes > 1 or self.nproc_per_node > 1


def train_scaled_out(task: str, argv: list[str], output_dir: Path, plan: ScaleOut) -> dict:
    """Runs ``sparse-transfer train TASK ARGV`` as `plan` says; returns the run summary."""
    if plan.num_nodes > 1:
        _train_on_trainjob(task, argv, output_dir, plan)
    else:
        from sparse_transfer.scaleout.torchrun import run_torchrun

        run_torchrun(plan.nproc_per_node, task, argv)
    summary_path = output_dir / SUMMARY_NAME
    if not summary_path.is_file():
        raise PipelineError(f"distributed training finished without {summary_path}")
    return json.loads(summary_path.read_text())


def stage_inputs(argv: list[str], work_uri: str) -> list[str]:
    """Uploads the local model/teacher dirs, data files and recipe in `argv`; returns argv on s3://.

    Each goes to ``WORK/inputs/<flag>/`` with a manifest. A zoo-stub recipe is
    resolved here, where the step's zoo root is set, so the nodes need no zoo
    configuration; built-in recipe names and YAML strings pass as they are.
    """
    from sparse_transfer import storage
    from sparse_transfer.zoo import resolve

    out = list(argv)
    with tempfile.TemporaryDirectory(prefix="sparse-transfer-stage-") as tmp:
        for i, arg in enumerate(argv[:-1]):
            value = argv[i + 1]
            uri = f"{work_uri}/inputs/{arg.lstrip('-')}"
            if arg in _DIR_FLAGS and Path(value).is_dir():
                storage.upload_dir(value, uri)
                out[i + 1] = uri
                continue
            if arg == "--recipe":
                value = resolve(value, "recipe")
            elif arg not in _FILE_FLAGS:
                continue
            path = Path(value)
            if path.is_file():
                folder = Path(tmp) / arg.lstrip("-")
                folder.mkdir()
                shutil.copy2(path, folder / path.name)  # upload this file alone, not its folder
                storage.upload_dir(folder, uri)
                out[i + 1] = f"{uri}/{path.name}"
    return out


def _namespace(plan: ScaleOut) -> str:
    if plan.namespace:
        return plan.namespace
    if SERVICE_ACCOUNT_NAMESPACE.is_file():
        return SERVICE_ACCOUNT_NAMESPACE.read_text().strip()
    raise PipelineError("no namespace for the TrainJob: not in a pod and none given")


def node_argv(task: str, argv: list[str], work_uri: str) -> list[str]:
    """The node entry's arguments: output to the pod's disk, published to ``WORK/output``."""
    out = list(argv)
    i = out.index("--output_dir")
    out[i + 1] = NODE_OUTPUT_DIR
    return ["--output_uri", f"{work_uri}/output", task, *out]


def step_pod(namespace: str, api_client=None) -> tuple[str, dict[str, str]]:
    """This step's image and its pod as an owner (``{"name", "uid"}``), read from the API."""
    from kubernetes import client, config

    if api_client is None:
        config.load_incluster_config()
        api_client = client.ApiClient()
    name = os.environ.get("HOSTNAME", "")
    pod = client.CoreV1Api(api_client).read_namespaced_pod(name, namespace)
    containers = {c.name: c.image for c in pod.spec.containers}
    image = containers.get(STEP_CONTAINER) or pod.spec.containers[0].image
    return image, {"name": pod.metadata.name, "uid": pod.metadata.uid}


def _train_on_trainjob(task: str, argv: list[str], output_dir: Path, plan: ScaleOut) -> None:
    from sparse_transfer import storage
    from sparse_transfer.scaleout.trainjob import TrainJobRequest, follow_trainjob

    work = plan.staging_uri()
    namespace = _namespace(plan)
    image, owner = step_pod(namespace)
    request = TrainJobRequest(
        name=f"sparse-transfer-{uuid.uuid4().hex[:12]}",
        namespace=namespace,
        image=plan.image or image,
        num_nodes=plan.num_nodes,
        nproc_per_node=plan.nproc_per_node,
        node_args=node_argv(task, stage_inputs(argv, work), work),
        s3_secret=plan.s3_secret,
        accelerator_type=plan.accelerator_type,
        accelerator_limit=plan.accelerator_limit,
        settings_config_map=plan.settings_config_map,
        owner=owner,
    )
    follow_trainjob(request)
    storage.download_dir(f"{work}/output", output_dir, overwrite=True)
