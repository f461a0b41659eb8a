"""The KServe objects that serve a published zoo entry on a cluster, as plain manifests.

Built from the kserve SDK's typed models (`V1beta1InferenceService`, ...) and the
Kubernetes client's (`V1Container`, `V1Secret`, ...), serialised with the client's
own `sanitize_for_serialization`, so field names are the API's camelCase ones.

* The predictor is a *custom container* (the project's one image) running
  ``sparse-transfer serve /mnt/models``: KServe's storage initializer downloads the
  ``STORAGE_URI`` env of the container named ``kserve-container`` into /mnt/models
  (kserve pkg/apis/serving/v1beta1/predictor_custom.go ``GetStorageUri``,
  pkg/constants ``CustomSpecStorageUriEnvVarKey``). The URI is the whole zoo entry, so
  its manifest.json comes along and ``serve`` re-verifies every file before loading.
* S3 credentials reach the initializer the way KServe reads them: a Secret with data
  keys ``awsAccessKeyID``/``awsSecretAccessKey`` and ``serving.kserve.io/s3-*``
  annotations, listed by the predictor's ServiceAccount (kserve pkg/credentials/s3/s3_secret.go).

Schema: KServe 0.21's InferenceService CRD (tests/data/kserve/, validated in tests).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

from sparse_transfer.serving.options import ServingError

API_VERSION = "serving.kserve.io/v1beta1"
CONTAINER_NAME = "kserve-container"  # kserve constants.InferenceServiceContainerName
MODEL_DIR = "/mnt/models"  # kserve constants.DefaultModelLocalMountPath
HTTP_PORT = 8080
MANAGED_BY = {"app.kubernetes.io/managed-by": "sparse-transfer"}
_DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")  # InferenceService names (kserve webhook)
_DNS_1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def service_name(stub: str, max_length: int = 45) -> str:
    """A DNS-1035 name for a stub: readable tail + 8 hex of its hash (stable per stub).

    KServe builds Knative/Deployment names from it, so it stays well under 63.
    """
    digest = hashlib.sha256(stub.encode()).hexdigest()[:8]
    tail = re.sub(r"[^a-z0-9]+", "-", "-".join(stub.lower().split("/")[-2:])).strip("-")
    head = f"st-{tail}"[: max_length - 9].rstrip("-")
    return f"{head}-{digest}"


@dataclass(frozen=True)
class ServingSettings:
    """What the deploy step and the chart decide: names, image, sizes, replicas."""

    name: str
    namespace: str
    storage_uri: str
    image: str
    model_name: str
    service_account: str = "sparse-transfer-serving"
    storage_secret: str = "sparse-transfer-serving-s3"
    cpu_request: str = "1"
    memory_request: str = "1Gi"
    cpu_limit: str = "2"
    memory_limit: str = "2Gi"
    min_replicas: int = 1
    max_replicas: int = 1
    serve_args: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        problems = []
        if len(self.name) > 63 or not _DNS_1035.match(self.name):
            problems.append(f"name {self.name!r} is not a DNS-1035 label")
        for what in ("namespace", "service_account", "storage_secret"):
            value = getattr(self, what)
            if len(value) > 253 or not _DNS_1123.match(value):
                problems.append(f"{what} {value!r} is not a DNS-1123 name")
        if not self.storage_uri.startswith("s3://"):
            problems.append(f"storage_uri {self.storage_uri!r} must be an s3:// URI")
        if not (0 <= self.min_replicas <= self.max_replicas and self.max_replicas >= 1):
            problems.append(
                f"replicas min {self.min_replicas} / max {self.max_replicas}: need 0 <= min <= max, max >= 1"
            )
        if not self.image:
            problems.append("image is empty")
        if problems:
            raise ServingError("invalid InferenceService settings: " + "; ".join(problems))


def _serialize(obj) -> dict[str, Any]:
    from kubernetes.client import ApiClient

    return ApiClient().sanitize_for_serialization(obj)


def inference_service(s: ServingSettings) -> dict[str, Any]:
    """The InferenceService manifest (a dict ready for the API or YAML)."""
    from kserve import V1beta1InferenceService, V1beta1InferenceServiceSpec, V1beta1PredictorSpec
    from kubernetes import client

    container = client.V1Container(
        name=CONTAINER_NAME,
        image=s.image,
        command=["sparse-transfer", "serve", MODEL_DIR],
        args=[
            "--host",
            "0.0.0.0",
            "--http_port",
            str(HTTP_PORT),  # noqa: S104 (in a pod)
            "--model_name",
            s.model_name,
            *s.serve_args,
        ],  # fmt: skip
        # PROTOCOL: what KServe records for a custom predictor (CustomPredictor.GetProtocol,
        # pkg/apis/serving/v1beta1/predictor_custom.go: v1 when unset); we serve v2 (and v1).
        env=[
            client.V1EnvVar(name="STORAGE_URI", value=s.storage_uri),
            client.V1EnvVar(name="PROTOCOL", value="v2"),
        ],
        ports=[client.V1ContainerPort(container_port=HTTP_PORT, protocol="TCP")],
        resources=client.V1ResourceRequirements(
            requests={"cpu": s.cpu_request, "memory": s.memory_request},
            limits={"cpu": s.cpu_limit, "memory": s.memory_limit},
        ),
        readiness_probe=client.V1Probe(
            http_get=client.V1HTTPGetAction(
                path=f"/v2/models/{s.model_name}/ready", port=HTTP_PORT
            ),
            period_seconds=5,
        ),
    )
    isvc = V1beta1InferenceService(
        api_version=API_VERSION,
        kind="InferenceService",
        metadata=client.V1ObjectMeta(name=s.name, namespace=s.namespace, labels=dict(MANAGED_BY)),
        spec=V1beta1InferenceServiceSpec(
            predictor=V1beta1PredictorSpec(
                containers=[container],
                service_account_name=s.service_account,
                min_replicas=s.min_replicas,
                max_replicas=s.max_replicas,
            )
        ),
    )
    return _serialize(isvc)


def storage_secret(
    s: ServingSettings, endpoint_url: str, region: str, access_key: str, secret_key: str
) -> dict[str, Any]:
    """The Secret KServe's storage initializer reads (credentials go in as stringData)."""
    from kubernetes import client

    parsed = urlparse(endpoint_url if "://" in endpoint_url else f"https://{endpoint_url}")
    if not parsed.hostname:
        raise ServingError(f"S3 endpoint {endpoint_url!r} has no host")
    annotations = {
        "serving.kserve.io/s3-endpoint": parsed.netloc,
        "serving.kserve.io/s3-usehttps": "1" if parsed.scheme == "https" else "0",
        "serving.kserve.io/s3-verifyssl": "1" if parsed.scheme == "https" else "0",
        "serving.kserve.io/s3-region": region,
    }
    secret = client.V1Secret(
        api_version="v1",
        kind="Secret",
        metadata=client.V1ObjectMeta(
            name=s.storage_secret,
            namespace=s.namespace,
            labels=dict(MANAGED_BY),
            annotations=annotations,
        ),
        type="Opaque",
        string_data={"awsAccessKeyID": access_key, "awsSecretAccessKey": secret_key},
    )
    return _serialize(secret)


def service_account(s: ServingSettings) -> dict[str, Any]:
    """The predictor's ServiceAccount; KServe finds the S3 Secret through its ``secrets``."""
    from kubernetes import client

    sa = client.V1ServiceAccount(
        api_version="v1",
        kind="ServiceAccount",
        metadata=client.V1ObjectMeta(
            name=s.service_account, namespace=s.namespace, labels=dict(MANAGED_BY)
        ),
        secrets=[client.V1ObjectReference(name=s.storage_secret)],
        automount_service_account_token=False,
    )
    return _serialize(sa)
