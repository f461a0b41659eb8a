"""Create-or-replace our serving objects through the Kubernetes API.

The rules are the API server's: a create of an existing name is 409 AlreadyExists;
a replace must carry the object's current ``metadata.resourceVersion`` (a stale one
is 409 Conflict; custom resources such as InferenceService refuse a replace without
one, kubernetes apiextensions-apiserver pkg/registry/customresource/strategy.go
``AllowUnconditionalUpdate`` = false). We read, then replace with the version we read,
so a concurrent writer makes us fail instead of silently overwriting it; and we only
replace objects labelled as ours (``app.kubernetes.io/managed-by: sparse-transfer``).
"""

from __future__ import annotations

import copy
import logging
from typing import Any

from sparse_transfer.serving.inference_service import API_VERSION, MANAGED_BY
from sparse_transfer.serving.options import ServingError

log = logging.getLogger(__name__)

GROUP, VERSION = API_VERSION.split("/")
PLURAL = "inferenceservices"


def in_cluster_client():
    """An ApiClient with the pod's service account (the step runs inside the cluster)."""
    from kubernetes import client, config

    config.load_incluster_config()
    return client.ApiClient()


def _read(api_client, obj: dict[str, Any]) -> dict[str, Any] | None:
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    meta = obj["metadata"]
    try:
        if obj["kind"] == "InferenceService":
            return client.CustomObjectsApi(api_client).get_namespaced_custom_object(
                GROUP, VERSION, meta["namespace"], PLURAL, meta["name"]
            )
        core = client.CoreV1Api(api_client)
        reader = {
            "Secret": core.read_namespaced_secret,
            "ServiceAccount": core.read_namespaced_service_account,
        }[obj["kind"]]
        return api_client.sanitize_for_serialization(reader(meta["name"], meta["namespace"]))
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise ServingError(
            f"reading {obj['kind']} {meta['namespace']}/{meta['name']}: {exc.status} {exc.reason}"
        ) from None


def _write(api_client, obj: dict[str, Any], create: bool) -> dict[str, Any]:
    from kubernetes import client

    meta = obj["metadata"]
    ns, name = meta["namespace"], meta["name"]
    if obj["kind"] == "InferenceService":
        custom = client.CustomObjectsApi(api_client)
        if create:
            return custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, obj)
        return custom.replace_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name, obj)
    core = client.CoreV1Api(api_client)
    kind = {"Secret": "secret", "ServiceAccount": "service_account"}[obj["kind"]]
    if create:
        result = getattr(core, f"create_namespaced_{kind}")(ns, obj)
    else:
        result = getattr(core, f"replace_namespaced_{kind}")(name, ns, obj)
    return api_client.sanitize_for_serialization(result)


def apply(api_client, obj: dict[str, Any]) -> str:
    """Creates `obj`, or replaces our earlier one; returns ``created`` or ``replaced``."""
    from kubernetes.client.rest import ApiException

    meta = obj["metadata"]
    what = f"{obj['kind']} {meta['namespace']}/{meta['name']}"
    current = _read(api_client, obj)
    body = copy.deepcopy(obj)
    if current is not None:
        labels = (current.get("metadata") or {}).get("labels") or {}
        if any(labels.get(k) != v for k, v in MANAGED_BY.items()):
            raise ServingError(
                f"{what} exists and was not made by sparse-transfer (no label "
                f"app.kubernetes.io/managed-by=sparse-transfer); refusing to replace it"
            )
        body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
    try:
        _write(api_client, body, create=current is None)
    except ApiException as exc:
        raise ServingError(f"writing {what}: {exc.status} {exc.reason}: {exc.body}") from None
    action = "created" if current is None else "replaced"
    log.info("%s %s", action, what)
    return action


def own_image(api_client, namespace: str, pod_name: str, container: str = "main") -> str:
    """The image of this pod's container (KFP names a step's container ``main``)."""
    from kubernetes import client

    pod = client.CoreV1Api(api_client).read_namespaced_pod(pod_name, namespace)
    for c in pod.spec.containers:
        if c.name == container:
            return c.image
    return pod.spec.containers[0].image
