"""The pipeline's optional last step: serve the stub it just published with KServe."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from sparse_transfer.serving import kube
from sparse_transfer.serving.inference_service import (
    ServingSettings,
    inference_service,
    service_account,
    service_name,
    storage_secret,
)
from sparse_transfer.serving.options import ServingError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class S3Access:
    """Where the zoo lives and the credentials KServe's storage initializer needs."""

    endpoint_url: str
    region: str
    access_key: str
    secret_key: str

    def __repr__(self) -> str:  # never print credentials
        return f"S3Access(endpoint_url={self.endpoint_url!r}, region={self.region!r}, ...)"


def deploy_inference_service(
    api_client,
    stub: str,
    zoo_root: str,
    namespace: str,
    image: str,
    s3: S3Access,
    model_name: str,
    name: str = "",
    min_replicas: int = 1,
    max_replicas: int = 1,
    serve_args: tuple[str, ...] = (),
) -> dict[str, str]:
    """Creates or replaces the S3 Secret, ServiceAccount and InferenceService for `stub`.

    Returns ``{"name", "namespace", "storage_uri", <kind>: created|replaced}``.
    """
    from sparse_transfer.zoo import entry_uri

    if not stub:
        raise ServingError("nothing to serve: the gate did not publish a stub")
    storage_uri = entry_uri(stub, zoo_root)
    if not storage_uri.startswith("s3://"):
        raise ServingError(
            f"zoo root {zoo_root or '(default)'!r} is not on S3: KServe can only download "
            f"s3:// entries, got {storage_uri}"
        )
    settings = ServingSettings(
        name=name or service_name(stub),
        namespace=namespace,
        storage_uri=storage_uri,
        image=image,
        model_name=model_name,
        min_replicas=min_replicas,
        max_replicas=max_replicas,
        serve_args=tuple(serve_args),
    )
    objects = [
        storage_secret(settings, s3.endpoint_url, s3.region, s3.access_key, s3.secret_key),
        service_account(settings),
        inference_service(settings),
    ]
    result = {"name": settings.name, "namespace": namespace, "storage_uri": storage_uri}
    for obj in objects:
        result[obj["kind"]] = kube.apply(api_client, obj)
    return result


def isvc_ready(obj: dict) -> tuple[bool, str]:
    """(ready, why not) from an InferenceService's ``status.conditions`` (type ``Ready``,
    kserve pkg/apis/serving/v1beta1/inference_service_status.go)."""
    for condition in (obj.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Ready":
            reason = condition.get("reason") or condition.get("message") or "not ready"
            return condition.get("status") == "True", reason
    return False, "no Ready condition yet"


def wait_ready(
    api_client,
    name: str,
    namespace: str,
    timeout_seconds: float = 600.0,
    poll_seconds: float = 5.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Waits until the InferenceService reports Ready; ServingError with the last reason after
    `timeout_seconds` (a deploy step that returns before then hides a predictor that never
    starts: a bad image, a missing zoo entry, no GPU)."""
    from kubernetes import client

    custom = client.CustomObjectsApi(api_client)
    deadline = clock() + timeout_seconds
    while True:
        obj = custom.get_namespaced_custom_object(
            "serving.kserve.io", "v1beta1", namespace, "inferenceservices", name
        )
        ready, why = isvc_ready(obj)
        if ready:
            log.info("InferenceService %s/%s is Ready", namespace, name)
            return
        if clock() >= deadline:
            raise ServingError(
                f"InferenceService {namespace}/{name} not Ready after {timeout_seconds:.0f} s: "
                f"{why} (kubectl -n {namespace} describe inferenceservice {name})"
            )
        sleep(poll_seconds)
