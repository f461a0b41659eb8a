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
S3 credentials reach the nodes as ``secretKeyRef`` env vars, never as values; the zoo root
and region as ``configMapKeyRef`` env vars from the chart's settings ConfigMap.

What a cluster admin can live with: every TrainJob has a deadline
(``spec.activeDeadlineSeconds``: Trainer then fails it with ``DeadlineExceeded``,
``pkg/apis/trainer/v1alpha1/trainjob_types.go``), is owned by the step's pod (deleting the
pod, as KFP does when a run is terminated or garbage-collected, deletes the job), and is
deleted by the step itself when it fails or times out. Trainer's Helm chart installs no
ClusterTrainingRuntime unless ``runtimes.torchDistributed.enabled`` (v2.3.0
``charts/kubeflow-trainer/values.yaml``), so the runtime is looked up first.
"""

from __future__ import annotations

import logging
import re
import signal
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
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
SETTINGS_ENV = ("SPARSE_TRANSFER_ZOO", "AWS_DEFAULT_REGION")
DEFAULT_DEADLINE_SECONDS = 3 * 24 * 3600  # a long fine-tune, never forever
RUNTIME_PLURAL = "clustertrainingruntimes"
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
        settings_config_map: ConfigMap with the zoo root and region (env names in
            `SETTINGS_ENV`); empty: none.
        deadline_seconds: ``activeDeadlineSeconds`` (> 0).
        owner: the step's pod as ``{"name", "uid"}``; the TrainJob gets it as owner.
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
    settings_config_map: str = ""
    deadline_seconds: int = DEFAULT_DEADLINE_SECONDS
    owner: dict[str, str] = field(default_factory=dict)

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
        if self.deadline_seconds < 1:
            raise PipelineError(f"deadline_seconds must be >= 1, got {self.deadline_seconds}")
        if not self.image:
            raise PipelineError("TrainJob image is empty: nodes run the step's own image")
        if self.accelerator_limit < 0 or (self.accelerator_limit and not self.accelerator_type):
            raise PipelineError(
                f"accelerator_limit {self.accelerator_limit} needs an accelerator_type "
                "(e.g. nvidia.com/gpu) and must be >= 0"
            )


def _node_env(request: TrainJobRequest) -> list:
    """S3 keys from the Secret, zoo root and region from the settings ConfigMap."""
    from kubeflow_trainer_api import models as m

    def ref(key, **source):
        return m.IoK8sApiCoreV1EnvVar(name=key, value_from=m.IoK8sApiCoreV1EnvVarSource(**source))

    env = [
        ref(key, secret_key_ref=m.IoK8sApiCoreV1SecretKeySelector(name=request.s3_secret, key=key))
        for key in S3_ENV
    ]
    if request.settings_config_map:
        selector = m.IoK8sApiCoreV1ConfigMapKeySelector
        env += [
            ref(key, config_map_key_ref=selector(name=request.settings_config_map, key=key))
            for key in SETTINGS_ENV
        ]
    env.append(m.IoK8sApiCoreV1EnvVar(name="OMP_NUM_THREADS", value="1"))
    return env


def _owner_references(request: TrainJobRequest) -> list | None:
    from kubeflow_trainer_api import models as m

    if not request.owner:
        return None
    reference = m.IoK8sApimachineryPkgApisMetaV1OwnerReference(
        api_version="v1", kind="Pod", name=request.owner["name"], uid=request.owner["uid"]
    )
    return [reference]


def build_trainjob(request: TrainJobRequest):
    """The ``TrainJob`` as the ``kubeflow_trainer_api`` typed model."""
    from kubeflow_trainer_api import models as m

    quantity = m.IoK8sApimachineryPkgApiResourceQuantity
    limits = {"memory": quantity(request.memory)}
    if request.accelerator_type and request.accelerator_limit:
        limits[request.accelerator_type] = quantity(str(request.accelerator_limit))
    env = _node_env(request)
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
            owner_references=_owner_references(request),
        ),
        spec=m.TrainerV1alpha1TrainJobSpec(
            active_deadline_seconds=request.deadline_seconds,
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


def check_runtime(custom, request: TrainJobRequest) -> None:
    """A clear error when the ClusterTrainingRuntime the job names is not installed."""
    from kubernetes.client.exceptions import ApiException

    try:
        custom.get_cluster_custom_object(GROUP, VERSION, RUNTIME_PLURAL, request.runtime)
    except ApiException as exc:
        if exc.status == 403:  # no ClusterRole for the lookup: the create will tell
            log.warning("cannot read ClusterTrainingRuntime %r (forbidden)", request.runtime)
            return
        if exc.status != 404:
            raise
        raise PipelineError(
            f"no ClusterTrainingRuntime {request.runtime!r} in the cluster: Kubeflow Trainer "
            f"{TRAINER_VERSION}'s Helm chart installs none by default; install it with "
            "`--set runtimes.torchDistributed.enabled=true` (docs/distributed.md), or run with "
            "num_nodes=1"
        ) from None


def delete_trainjob(custom, request: TrainJobRequest) -> None:
    """Deletes the job (and, through the JobSet it owns, its pods); a missing one is fine."""
    from kubernetes.client.exceptions import ApiException

    try:
        custom.delete_namespaced_custom_object(
            GROUP, VERSION, request.namespace, PLURAL, request.name
        )
        log.info("deleted TrainJob %s/%s", request.namespace, request.name)
    except ApiException as exc:
        if exc.status != 404:
            log.warning("could not delete TrainJob %s/%s: %s", request.namespace, request.name, exc)


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
        timeout_seconds: give up (delete the job and raise) after this long; None: the job's
            deadline plus 10 minutes for scheduling and Trainer to report it.
        api_client: a ``kubernetes.client.ApiClient``; default: in-cluster config
            (the step's service account, which needs the chart's TrainJob RBAC).
        emit: where log lines go (the step's stdout).

    Returns:
        The completion reason.

    Raises:
        PipelineError: no runtime, the TrainJob failed (with its reason and message) or timed
            out. A job that did not complete is deleted, whatever stopped the wait.
    """
    from kubernetes import client, config

    if api_client is None:
        config.load_incluster_config()
        api_client = client.ApiClient()
    custom = client.CustomObjectsApi(api_client)
    check_runtime(custom, request)
    custom.create_namespaced_custom_object(
        GROUP, VERSION, request.namespace, PLURAL, trainjob_manifest(request)
    )
    log.info(
        "created TrainJob %s/%s (Kubeflow Trainer %s, %d nodes x %d processes)",
        request.namespace, request.name, TRAINER_VERSION, request.num_nodes,
        request.nproc_per_node,
    )  # fmt: skip
    if timeout_seconds is None:
        timeout_seconds = request.deadline_seconds + 600.0
    try:
        with _sigterm_raises():
            return _wait(custom, client.CoreV1Api(api_client), request, poll_seconds,
                         timeout_seconds, emit)  # fmt: skip
    except BaseException:
        delete_trainjob(custom, request)  # failed, timed out, or the step was stopped
        raise


@contextmanager
def _sigterm_raises():
    """SIGTERM (a terminated KFP run stops the step's pod) raises, so the job gets deleted."""

    def stop(signum, frame):
        raise SystemExit(f"stopped by signal {signum} while waiting for the TrainJob")

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _wait(custom, core, request, poll_seconds, timeout_seconds, emit) -> str:
    where = f"TrainJob {request.namespace}/{request.name}"
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
        if time.monotonic() - started > timeout_seconds:
            raise PipelineError(f"{where} did not finish within {timeout_seconds:.0f} s")
        time.sleep(poll_seconds)
