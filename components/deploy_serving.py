"""Step (optional, last): serve the stub the gate just published with a KServe InferenceService."""

from kfp import dsl

from components._image import COMPONENT_OPTIONS


@dsl.component(**COMPONENT_OPTIONS)
def deploy_serving(
    enabled: bool,
    task: str,
    published: str,
    zoo_root: str = "",
    name: str = "",
    image: str = "",
    min_replicas: int = 1,
    max_replicas: int = 1,
    serve_args: str = "",
    ready_timeout_seconds: int = 600,
    advanced: dict = {},  # noqa: B006 (KFP reads the literal default; never mutated)
) -> str:
    """Creates or replaces the InferenceService for `published`; returns its name ("" if none).

    Does nothing unless `enabled` (the pipeline's ``deploy_serving``) and the gate published.

    Waits up to `ready_timeout_seconds` for the InferenceService to be Ready (0: no wait).
    Runs with the pod's service account in the pod's namespace; `image` empty means the
    image this step runs in (the project's one image). S3 settings come from the step's
    environment (the chart's S3 Secret), never from parameters. The run form's `advanced`
    object's ``serving_max_replicas`` wins over `max_replicas`.
    """
    if not enabled:
        return ""
    if not published:
        print("the gate did not publish: nothing to serve")
        return ""
    import os
    import shlex
    from pathlib import Path

    from sparse_transfer.pipeline.settings import run_settings
    from sparse_transfer.serving import kube
    from sparse_transfer.serving.deploy import S3Access, deploy_inference_service, wait_ready

    namespace_file = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
    namespace = namespace_file.read_text().strip()
    api = kube.in_cluster_client()
    s3 = S3Access(
        endpoint_url=os.environ.get("AWS_ENDPOINT_URL", "https://s3.amazonaws.com"),
        region=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
        access_key=os.environ["AWS_ACCESS_KEY_ID"],
        secret_key=os.environ["AWS_SECRET_ACCESS_KEY"],
    )
    result = deploy_inference_service(
        api, stub=published, zoo_root=zoo_root, namespace=namespace, s3=s3, model_name=task,
        image=image or kube.own_image(api, namespace, os.environ["HOSTNAME"]), name=name,
        min_replicas=min_replicas,
        max_replicas=run_settings(advanced, serving_max_replicas=max_replicas).serving_max_replicas,
        serve_args=tuple(shlex.split(serve_args)),
    )  # fmt: skip
    print(f"InferenceService {namespace}/{result['name']}: {result['InferenceService']}")
    if ready_timeout_seconds > 0:
        wait_ready(api, result["name"], namespace, timeout_seconds=ready_timeout_seconds)
    return result["name"]
