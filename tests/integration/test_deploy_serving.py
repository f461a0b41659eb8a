"""The InferenceService the deploy step and the chart produce, and how the step applies it.

Manifests are validated against KServe's InferenceService CRD schema (tests/data/kserve,
see SOURCE.md) the way the API server treats a custom resource: types, enums and required
fields as declared, and no field the schema does not know (a structural schema would
silently prune it, so we treat it as an error). The step talks to a fake Kubernetes API
over HTTP through the real `kubernetes` client; the fake enforces the API server's rules
for create / replace (see `FakeKubeApi`).
"""

from __future__ import annotations

import copy
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((ROOT / "tests/data/kserve/inferenceservice-v1beta1.openapi.json").read_text())
STUB = "zoo:nlp/sentiment_analysis/minilm-l6/pytorch/huggingface/sst2/pruned90_quant-none"


def _strict(schema):
    """Adds additionalProperties: false where the CRD lists properties and keeps no unknowns."""
    if isinstance(schema, dict):
        out = {k: _strict(v) for k, v in schema.items()}
        if (
            "properties" in out
            and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")
        ):
            out["additionalProperties"] = False
        if out.get("x-kubernetes-int-or-string"):
            out.setdefault("anyOf", [{"type": "integer"}, {"type": "string"}])
        return out
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    return schema


STRICT = _strict(SCHEMA)


def isvc_errors(manifest: dict) -> list[str]:
    import jsonschema

    validator = jsonschema.Draft7Validator(STRICT)
    errors = [f"{list(e.path)}: {e.message}" for e in validator.iter_errors(manifest)]
    if manifest.get("apiVersion") != "serving.kserve.io/v1beta1":
        errors.append(f"apiVersion {manifest.get('apiVersion')!r}")
    if manifest.get("kind") != "InferenceService":
        errors.append(f"kind {manifest.get('kind')!r}")
    # kserve's validating webhook: names are DNS-1035 labels (inference_service_validation.go)
    if not re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", manifest["metadata"].get("name", "")):
        errors.append(f"name {manifest['metadata'].get('name')!r} is not DNS-1035")
    return errors


def settings(**overrides):
    from sparse_transfer.serving.inference_service import ServingSettings, service_name

    base = dict(
        name=service_name(STUB),
        namespace="kubeflow-user-example-com",
        storage_uri="s3://zoo-bucket/zoo/" + STUB.removeprefix("zoo:"),
        image="registry.local/sparse-transfer:0.1.0",
        model_name="text-classification",
    )
    return ServingSettings(**{**base, **overrides})


def test_builder_manifest_is_schema_valid_and_complete():
    from sparse_transfer.serving.inference_service import inference_service

    manifest = inference_service(
        settings(min_replicas=2, max_replicas=4, serve_args=("--max_batch_size", "16"))
    )
    assert isvc_errors(manifest) == []
    predictor = manifest["spec"]["predictor"]
    assert predictor["minReplicas"] == 2 and predictor["maxReplicas"] == 4
    assert predictor["serviceAccountName"] == "sparse-transfer-serving"
    (container,) = predictor["containers"]
    assert container["name"] == "kserve-container"
    assert container["command"] == ["sparse-transfer", "serve", "/mnt/models"]
    assert container["args"][-2:] == ["--max_batch_size", "16"]
    assert {"name": "STORAGE_URI", "value": "s3://zoo-bucket/zoo/" + STUB[4:]} in container["env"]
    # KServe records a custom predictor's protocol from this env (predictor_custom.go).
    assert {"name": "PROTOCOL", "value": "v2"} in container["env"]
    assert container["resources"]["limits"] == {"cpu": "2", "memory": "2Gi"}
    assert len(manifest["metadata"]["name"]) <= 45


def test_the_validator_catches_what_the_api_would_reject_or_drop():
    from sparse_transfer.serving.inference_service import inference_service

    manifest = inference_service(settings())
    typo = copy.deepcopy(manifest)
    typo["spec"]["predictor"]["minReplica"] = 1  # pruned silently by the API server
    wrong_type = copy.deepcopy(manifest)
    wrong_type["spec"]["predictor"]["maxReplicas"] = "four"
    no_name = copy.deepcopy(manifest)
    del no_name["spec"]["predictor"]["containers"][0]["name"]  # containers[].name is required
    for bad, words in ((typo, "minReplica"), (wrong_type, "four"), (no_name, "'name'")):
        errors = isvc_errors(bad)
        assert errors and any(words in e for e in errors), errors


@pytest.mark.parametrize(
    "overrides,words",
    [
        ({"name": "Bad_Name"}, "name 'Bad_Name'"),
        ({"storage_uri": "/local/zoo"}, "s3://"),
        ({"min_replicas": 3, "max_replicas": 2}, "replicas min 3"),
    ],
)
def test_bad_settings_are_refused(overrides, words):
    from sparse_transfer.serving.options import ServingError

    with pytest.raises(ServingError, match="invalid InferenceService settings") as info:
        settings(**overrides)
    assert words in str(info.value)


def test_service_name_is_a_stable_dns_label():
    from sparse_transfer.serving.inference_service import service_name

    name = service_name(STUB)
    assert name == service_name(STUB) and re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", name)
    assert len(name) <= 45 and name != service_name(STUB.replace("sst2", "mnli"))


# -- the chart ---------------------------------------------------------------------------


def _render(*extra: str) -> list[dict]:
    from tests.integration.test_helm_chart import HELM, render

    if HELM is None:
        pytest.skip("no helm binary")
    return render(None, "--set", "s3.accessKey=AK", "--set", "s3.secretKey=SK", *extra)


def test_chart_renders_no_serving_objects_by_default():
    docs = _render()
    assert not [d for d in docs if d["kind"] == "InferenceService"]


def test_chart_inference_service_is_schema_valid_and_matches_the_builder():
    import kubernetes_validate

    from sparse_transfer.serving.inference_service import inference_service

    docs = _render(
        "--set", "serving.enabled=true", "--set", f"serving.stub={STUB}",
        "--set", "serving.modelName=text-classification", "--set", "serving.maxReplicas=3",
        "--set-json", 'serving.args=["--max_batch_size", "16"]',
    )  # fmt: skip
    (isvc,) = [d for d in docs if d["kind"] == "InferenceService"]
    assert isvc_errors(isvc) == []
    (secret,) = [d for d in docs if d["kind"] == "Secret" and "serving" in d["metadata"]["name"]]
    (sa,) = [
        d for d in docs if d["kind"] == "ServiceAccount" and "serving" in d["metadata"]["name"]
    ]
    for doc in (secret, sa):
        kubernetes_validate.validate(doc, "1.30.0", strict=True)
    assert sa["secrets"] == [{"name": secret["metadata"]["name"]}]
    assert secret["metadata"]["annotations"]["serving.kserve.io/s3-endpoint"] == "s3.amazonaws.com"
    assert set(secret["data"]) == {"awsAccessKeyID", "awsSecretAccessKey"}
    predictor = isvc["spec"]["predictor"]
    assert predictor["serviceAccountName"] == sa["metadata"]["name"]
    built = inference_service(
        settings(
            name=isvc["metadata"]["name"],
            namespace="ml",
            storage_uri="s3://sparse-transfer/zoo/" + STUB[4:],
            image="ghcr.io/sparse-transfer/sparse-transfer:0.1.0",
            service_account=sa["metadata"]["name"],
            max_replicas=3,
            serve_args=("--max_batch_size", "16"),
        )
    )["spec"]["predictor"]
    chart_container = {
        k: v for k, v in predictor["containers"][0].items() if k != "imagePullPolicy"
    }
    assert chart_container == built["containers"][0]
    assert {k: v for k, v in predictor.items() if k != "containers"} == {
        k: v for k, v in built.items() if k != "containers"
    }


def test_chart_refuses_serving_without_a_stub():
    from tests.integration.test_helm_chart import CHART, HELM, helm

    if HELM is None:
        pytest.skip("no helm binary")
    proc = helm("template", "st", str(CHART), "--set", "s3.accessKey=a", "--set",
                "s3.secretKey=b", "--set", "serving.enabled=true", check=False)  # fmt: skip
    assert proc.returncode != 0 and "serving.stub is required" in proc.stderr


# -- applying through the Kubernetes API ---------------------------------------------------


class FakeKubeApi:
    """The slice of the Kubernetes API the deploy step uses, with the API server's rules.

    * POST of an existing name: 409 AlreadyExists; PUT of a missing one: 404
      (k8s.io/apiserver pkg/registry/generic/registry/store.go Create / Update).
    * PUT with a resourceVersion other than the stored one: 409 Conflict; PUT without one:
      allowed for Secrets/ServiceAccounts (core strategies allow unconditional update),
      422 for custom resources (apiextensions-apiserver customresource/strategy.go).
    * Every write bumps resourceVersion; the body's namespace/name must match the URL (400).
    * InferenceService bodies are validated against the CRD schema (422), as the
      apiextensions-apiserver validates custom resources.
    """

    ROUTES = re.compile(
        r"^/(?:api/v1|apis/serving\.kserve\.io/v1beta1)/namespaces/(?P<ns>[^/]+)/"
        r"(?P<plural>secrets|serviceaccounts|inferenceservices|pods)(?:/(?P<name>[^/?]+))?"
    )

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str, str], dict] = {}
        self.version = 100
        self.log: list[tuple[str, str, int]] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def _send(self, status: int, body: dict) -> None:
                data = json.dumps(body).encode()
                fake.log.append((self.command, self.path, status))  # before the client can read it
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _route(self):
                m = fake.ROUTES.match(self.path)
                if not m:
                    self._send(404, {"kind": "Status", "code": 404, "reason": "NotFound"})
                    return None
                return m.group("ns"), m.group("plural"), m.group("name")

            def _body(self) -> dict:
                return json.loads(self.rfile.read(int(self.headers["Content-Length"])))

            def do_GET(self):
                route = self._route()
                if route is None:
                    return
                obj = fake.objects.get(route)
                if obj is None:
                    self._send(404, {"kind": "Status", "code": 404, "reason": "NotFound"})
                else:
                    self._send(200, obj)

            def do_POST(self):
                route = self._route()
                if route is None:
                    return
                body = self._body()
                key = (route[0], route[1], body["metadata"]["name"])
                problem = fake.check(route[0], route[1], body)
                if problem:
                    self._send(*problem)
                elif key in fake.objects:
                    self._send(409, {"kind": "Status", "code": 409, "reason": "AlreadyExists"})
                else:
                    self._send(201, fake.store(key, body))

            def do_PUT(self):
                route = self._route()
                if route is None:
                    return
                body = self._body()
                problem = fake.check(route[0], route[1], body, route[2])
                current = fake.objects.get(route)
                given = body["metadata"].get("resourceVersion")
                if problem:
                    self._send(*problem)
                elif current is None:
                    self._send(404, {"kind": "Status", "code": 404, "reason": "NotFound"})
                elif given is None and route[1] == "inferenceservices":
                    self._send(422, {"kind": "Status", "code": 422, "reason": "Invalid",
                                     "message": "metadata.resourceVersion: must be specified for an update"})  # fmt: skip
                elif given is not None and given != current["metadata"]["resourceVersion"]:
                    self._send(409, {"kind": "Status", "code": 409, "reason": "Conflict"})
                else:
                    self._send(200, fake.store(route, body))

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def check(self, ns, plural, body, name=None):
        meta = body.get("metadata", {})
        if meta.get("namespace", ns) != ns or (name is not None and meta.get("name") != name):
            return 400, {"kind": "Status", "code": 400, "reason": "BadRequest"}
        if plural == "inferenceservices":
            errors = isvc_errors(body)
            if errors:
                return 422, {"kind": "Status", "code": 422, "reason": "Invalid", "message": errors}
        return None

    def store(self, key, body) -> dict:
        self.version += 1
        obj = copy.deepcopy(body)
        obj["metadata"]["resourceVersion"] = str(self.version)
        obj["metadata"]["namespace"] = key[0]
        if obj.get("kind") == "Secret" and "stringData" in obj:  # the API server folds it in
            import base64

            data = obj.setdefault("data", {})
            for k, v in obj.pop("stringData").items():
                data[k] = base64.b64encode(v.encode()).decode()
        self.objects[key] = obj
        return obj

    def client(self):
        from kubernetes import client

        configuration = client.Configuration()
        configuration.host = self.url
        return client.ApiClient(configuration)

    def stop(self):
        self.server.shutdown()


@pytest.fixture
def kube():
    fake = FakeKubeApi()
    yield fake
    fake.stop()


def _s3():
    from sparse_transfer.serving.deploy import S3Access

    return S3Access("http://minio.ml.svc:9000", "us-east-1", "AKIDEXAMPLE", "wJalrXUtnFEMI")


def test_deploy_creates_then_replaces_with_the_current_resource_version(kube):
    from sparse_transfer.serving.deploy import deploy_inference_service

    args = dict(stub=STUB, zoo_root="s3://zoo-bucket/zoo", namespace="ml",
                image="registry.local/st:1", s3=_s3(), model_name="text-classification")  # fmt: skip
    first = deploy_inference_service(kube.client(), **args)
    assert first["InferenceService"] == first["Secret"] == first["ServiceAccount"] == "created"
    assert first["storage_uri"] == "s3://zoo-bucket/zoo/" + STUB[4:]
    isvc_key = ("ml", "inferenceservices", first["name"])
    v1 = kube.objects[isvc_key]["metadata"]["resourceVersion"]
    secret = kube.objects[("ml", "secrets", "sparse-transfer-serving-s3")]
    assert secret["metadata"]["annotations"]["serving.kserve.io/s3-endpoint"] == "minio.ml.svc:9000"
    assert secret["metadata"]["annotations"]["serving.kserve.io/s3-usehttps"] == "0"
    assert set(secret["data"]) == {"awsAccessKeyID", "awsSecretAccessKey"}

    second = deploy_inference_service(kube.client(), **{**args, "max_replicas": 3})
    assert second["InferenceService"] == "replaced"
    stored = kube.objects[isvc_key]
    assert stored["spec"]["predictor"]["maxReplicas"] == 3
    assert int(stored["metadata"]["resourceVersion"]) > int(v1)
    puts = [entry for entry in kube.log if entry[0] == "PUT"]
    assert len(puts) == 3 and all(status == 200 for _, _, status in puts)


def test_deploy_waits_for_ready_and_names_why_not(kube):
    """KServe's Ready condition (inference_service_status.go); the wait ends, with the reason."""
    from sparse_transfer.serving.deploy import deploy_inference_service, wait_ready
    from sparse_transfer.serving.options import ServingError

    args = dict(stub=STUB, zoo_root="s3://zoo-bucket/zoo", namespace="ml",
                image="registry.local/st:1", s3=_s3(), model_name="text-classification")  # fmt: skip
    name = deploy_inference_service(kube.client(), **args)["name"]
    stored = kube.objects[("ml", "inferenceservices", name)]
    clock = {"now": 0.0}
    ticks = dict(
        clock=lambda: clock["now"], sleep=lambda s: clock.__setitem__("now", clock["now"] + s)
    )
    stored["status"] = {"conditions": [{"type": "Ready", "status": "False",
                                        "reason": "PredictorConfigurationReady not ready"}]}  # fmt: skip
    with pytest.raises(ServingError, match=rf"ml/{name} not Ready after 30 s: Predictor"):
        wait_ready(kube.client(), name, "ml", timeout_seconds=30, poll_seconds=5, **ticks)
    assert clock["now"] == 30
    stored["status"]["conditions"][0]["status"] = "True"
    wait_ready(kube.client(), name, "ml", timeout_seconds=30, **ticks)  # returns at once
    assert clock["now"] == 30


def test_deploy_refuses_to_replace_what_it_did_not_make(kube):
    from sparse_transfer.serving.deploy import deploy_inference_service
    from sparse_transfer.serving.inference_service import service_name
    from sparse_transfer.serving.options import ServingError

    theirs = {"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
              "metadata": {"name": service_name(STUB), "namespace": "ml"},
              "spec": {"predictor": {"containers": [{"name": "kserve-container", "image": "x"}]}}}  # fmt: skip
    kube.store(("ml", "inferenceservices", service_name(STUB)), theirs)
    with pytest.raises(ServingError, match="not made by sparse-transfer"):
        deploy_inference_service(
            kube.client(), stub=STUB, zoo_root="s3://zoo-bucket/zoo", namespace="ml",
            image="i:1", s3=_s3(), model_name="m",
        )  # fmt: skip
    assert kube.objects[("ml", "inferenceservices", service_name(STUB))]["spec"] == theirs["spec"]


def test_a_concurrent_write_is_a_conflict_not_an_overwrite(kube, monkeypatch):
    from sparse_transfer.serving import kube as kube_module
    from sparse_transfer.serving.inference_service import inference_service
    from sparse_transfer.serving.options import ServingError

    manifest = inference_service(settings(namespace="ml"))
    api = kube.client()
    assert kube_module.apply(api, manifest) == "created"
    real_read = kube_module._read

    def read_then_someone_writes(api_client, obj):
        current = real_read(api_client, obj)
        key = ("ml", "inferenceservices", obj["metadata"]["name"])
        kube.store(key, kube.objects[key])  # another writer bumps the version
        return current

    monkeypatch.setattr(kube_module, "_read", read_then_someone_writes)
    with pytest.raises(ServingError, match="409"):
        kube_module.apply(api, manifest)


def test_deploy_needs_an_s3_zoo_and_a_published_stub(kube):
    from sparse_transfer.serving.deploy import deploy_inference_service
    from sparse_transfer.serving.options import ServingError

    common = dict(namespace="ml", image="i:1", s3=_s3(), model_name="m")
    with pytest.raises(ServingError, match="not on S3"):
        deploy_inference_service(kube.client(), stub=STUB, zoo_root="/tmp/zoo", **common)
    with pytest.raises(ServingError, match="did not publish"):
        deploy_inference_service(kube.client(), stub="", zoo_root="s3://b/zoo", **common)
    assert kube.objects == {}


def test_credentials_never_show_in_repr():
    assert "wJalr" not in repr(_s3()) and "AKID" not in repr(_s3())


def test_component_does_nothing_unless_enabled_and_published():
    import components

    step = components.deploy_serving.python_func
    assert step(enabled=False, task="text-classification", published=STUB) == ""
    assert step(enabled=True, task="text-classification", published="") == ""
