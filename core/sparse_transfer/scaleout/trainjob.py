"""Many nodes: a Kubeflow Trainer v2 ``TrainJob`` built from typed models, created and followed.

Targets Kubeflow Trainer **v2.3.0** (``trainer.kubeflow.org/v1alpha1``), through
the typed models of PyPI ``kubeflow-trainer-api==2.3.0``. The job references the
``torch-distributed`` ClusterTrainingRuntime that Trainer installs
(kubeflow/trainer ``charts/kubeflow-trainer/files/runtimes/torch-distributed.yaml``);
its torch plugin sets ``PET_NNODES``, ``PET_NPROC_PER_NODE``, ``PET_NODE_RANK``,
``PET_MASTER_ADDR`` and ``PET_MASTER_PORT`` in every node's container
(``pkg/runtime/framework/plugins/torch/torch.go``), which ``torchrun`` reads as
its defaults. So every node runs the same command,
``torchrun -m sparse_transfer.cli.trainjob_node ...``.

Status: the TrainJob's ``Complete`` / ``Failed`` conditions
(``pkg/apis/trainer/v1alpha1/trainjob_types.go``); node pods belong to the
JobSet of the same name (label ``jobset.sigs.k8s.io/jobset-name``), replicated
job ``node`` (constants.Node), and node 0 has job completion index 0.
S3 credentials reach the nodes as ``secretKeyRef`` env vars, never as values.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sparse_transfer.errors import PipelineError

log = logging.getLogger(__name__)

TRAINER_VERSION = "v2.3.0"
GROUP = "trainer.kubeflow.org"
VERSION = "v1alpha1"
PLURAL = "trainjobs"
DEFAULT_RUNTIME = "torch-distributed"
NODE_CONTAINER = "node"
JOBSET_LABEL = "jobset.sigs.k8s.io/jobset-name"
COMPLETION_INDEX_LABEL = "batch.kubernetes.io/job-completion-index"
LOG_DRAIN_SECONDS = 30.0
S3_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL")
# Kubernetes object names used as DNS-1035 labels (the JobSet's Services need them).
_NAME = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")


@dataclass(frozen=True)
class TrainJobRequest:
    """What a multi-node training step asks Kubeflow Trainer for.

    Attributes:
        name: TrainJob (and JobSet) name: a DNS-1035 label, at most 63 characters.
        namespace: where the job runs (the pipeline's namespace).
        image: the project's image (the same one the pipeline steps use).
        num_nodes: pods (>= 1).
        nproc_per_node: processes per pod (GPUs per pod on GPU nodes).
        node_args: arguments after ``torchrun -m sparse_transfer.cli.trainjob_node``.
        s3_secret: Kubernetes Secret with the S3 keys (env names in `S3_ENV`).
        accelerator_type / accelerator_limit: e.g. ``nvidia.com/gpu`` and 8 per node.
        cpu / memory: requests (and memory limit) per node.
        runtime: ClusterTrainingRuntime name.
        labels: extra labels for the TrainJob.
    """

    name: str
    namespace: str
    image: str
    num_nodes: int
    nproc_per_node: int
    node_args: list[str]
    s3_secret: str
    accelerator_type: str = ""
    accelerator_limit: int = 0
    cpu: str = "4"
    memory: str = "16Gi"
    runtime: str = DEFAULT_RUNTIME
    labels: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise PipelineError(
                f"TrainJob name {self.name!r} must be a DNS-1035 label: lowercase letters, "
                "digits and '-', starting with a letter, at most 63 characters"
            )
        if self.num_nodes < 1:
            raise PipelineError(f"num_nodes must be >= 1, got {self.num_nodes}")
        if self.nproc_per_node < 1:
            raise PipelineError(f"nproc_per_node must be >= 1, got {self.nproc_per_node}")
        if self.accelerator_limit < 0 or (self.accelerator_limit and not self.accelerator_type):
            raise PipelineError(
                f"accelerator_limit {self.accelerator_limit} needs an accelerator_type "
                "(e.g. nvidia.com/gpu) and must be >= 0"
            )


def build_trainjob(request: TrainJobRequest):
    """The ``TrainJob`` as the ``kubeflow_trainer_api`` typed model."""
    from kubeflow_trainer_api import models as m

    quantity = m.IoK8sApimachineryPkgApiResourceQuantity
    limits = {"memory": quantity(request.memory)}
    if request.accelerator_type and request.accelerator_limit:
        limits[request.accelerator_type] = quantity(str(request.accelerator_limit))
    env = [
        m.IoK8sApiCoreV1EnvVar(
            name=key,
            value_from=m.IoK8sApiCoreV1EnvVarSource(
                secret_key_ref=m.IoK8sApiCoreV1SecretKeySelector(name=request.s3_secret, key=key)
            ),
        )
        for key in S3_ENV
    ]
    env.append(m.IoK8sApiCoreV1EnvVar(name="OMP_NUM_THREADS", value="1"))
    trainer = m.TrainerV1alpha1Trainer(
        image=request.image,
        command=["torchrun", "-m", "sparse_transfer.cli.trainjob_node"],
        args=list(request.node_args),
        env=env,
        num_nodes=request.num_nodes,
        num_proc_per_node=request.nproc_per_node,
        resources_per_node=m.IoK8sApiCoreV1ResourceRequirements(
            requests={"cpu": quantity(request.cpu), "memory": quantity(request.memory)},
            limits=limits,
        ),
    )
    return m.TrainerV1alpha1TrainJob(
        api_version=f"{GROUP}/{VERSION}",
        kind="TrainJob",
        metadata=m.IoK8sApimachineryPkgApisMetaV1ObjectMeta(
            name=request.name,
            namespace=request.namespace,
            labels={"app.kubernetes.io/part-of": "sparse-transfer", **request.labels},
        ),
        spec=m.TrainerV1alpha1TrainJobSpec(
            runtime_ref=m.TrainerV1alpha1RuntimeRef(
                name=request.runtime, kind="ClusterTrainingRuntime", api_group=GROUP
            ),
            trainer=trainer,
        ),
    )


def trainjob_manifest(request: TrainJobRequest) -> dict[str, Any]:
    """The ``TrainJob`` as the JSON object the API server receives."""
    return build_trainjob(request).to_dict()


def trainjob_outcome(obj: dict[str, Any]) -> tuple[str, str]:
    """``("running" | "complete" | "failed", reason)`` from a TrainJob's status conditions."""
    conditions = (obj.get("status") or {}).get("conditions") or []
    for cond in conditions:
        if cond.get("type") == "Failed" and cond.get("status") == "True":
            reason = cond.get("reason") or "Failed"
            message = cond.get("message") or ""
            return "failed", f"{reason}: {message}" if message else reason
    for cond in conditions:
        if cond.get("type") == "Complete" and cond.get("status") == "True":
            return "complete", cond.get("reason") or "Complete"
    return "running", ""


def _stream_node0_logs(core_api, namespace: str, name: str, emit: Callable[[str], None]):
    """Streams node 0's container log (waits for the pod to start)."""
    selector = f"{JOBSET_LABEL}={name},{COMPLETION_INDEX_LABEL}=0"
    while True:
        pods = core_api.list_namespaced_pod(namespace, label_selector=selector).items
        running = [
            p for p in pods if p.status and p.status.phase in ("Running", "Succeeded", "Failed")
        ]
        if running:
            break
        time.sleep(5)
    stream = core_api.read_namespaced_pod_log(
        running[0].metadata.name,
        namespace,
        container=NODE_CONTAINER,
        follow=True,
        _preload_content=False,
    )
    for line in stream:
        emit(line.decode(errors="replace").rstrip("\n"))


def follow_trainjob(
    request: TrainJobRequest,
    *,
    poll_seconds: float = 10.0,
    timeout_seconds: float | None = None,
    api_client: Any = None,
    emit: Callable[[str], None] = print,
) -> str:
    """Creates the TrainJob, streams node 0's log, waits for it to finish.

    Args:
        request: the job.
        poll_seconds: how often the status is read.
        timeout_seconds: give up (and raise) after this long; None waits.
        api_client: a ``kubernetes.client.ApiClient``; default: in-cluster config
            (the step's service account, which needs the chart's TrainJob RBAC).
        emit: where log lines go (the step's stdout).

    Returns:
        The completion reason.

    Raises:
        PipelineError: the TrainJob failed (with its reason and message) or timed out.
    """
    from kubernetes import client, config

    if api_client is None:
        config.load_incluster_config()
        api_client = client.ApiClient()
    custom = client.CustomObjectsApi(api_client)
    core = client.CoreV1Api(api_client)
    custom.create_namespaced_custom_object(
        GROUP, VERSION, request.namespace, PLURAL, trainjob_manifest(request)
    )
    where = f"TrainJob {request.namespace}/{request.name}"
    log.info(
        "created %s (Kubeflow Trainer %s, %d nodes x %d processes)",
        where,
        TRAINER_VERSION,
        request.num_nodes,
        request.nproc_per_node,
    )
    logs = threading.Thread(
        target=_stream_node0_logs,
        args=(core, request.namespace, request.name, emit),
        daemon=True,
    )
    logs.start()
    started = time.monotonic()
    while True:
        obj = custom.get_namespaced_custom_object(
            GROUP, VERSION, request.namespace, PLURAL, request.name
        )
        state, reason = trainjob_outcome(obj)
        if state != "running":
            logs.join(timeout=LOG_DRAIN_SECONDS)  # node 0's last lines, when its log ended
        if state == "complete":
            log.info("%s complete (%s)", where, reason)
            return reason
        if state == "failed":
            raise PipelineError(f"{where} failed: {reason}")
        if timeout_seconds is not None and time.monotonic() - started > timeout_seconds:
            raise PipelineError(f"{where} did not finish within {timeout_seconds:.0f} s")
        time.sleep(poll_seconds)
