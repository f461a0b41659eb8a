"""`follow_trainjob` through the real kubernetes client against a loopback fake API server.

No Kubernetes API server runs on this machine, so the fake enforces the rules
the real one applies to what we send, each from its source:

- the TrainJob body must validate against the CRD's openAPIV3Schema of
  kubeflow/trainer v2.3.0 (tests/data/trainjob_crd_v2.3.0.schema.json) and its
  top-level CEL rules (name format, length): apiextensions-apiserver rejects
  anything else with 422 Invalid;
- names are unique per namespace: a second create is 409 AlreadyExists
  (k8s.io/apiserver pkg/registry/generic/registry/store.go, Create);
- unknown objects are 404 NotFound; pods are listed by label selector
  (``key=value`` pairs, all must match); ClusterTrainingRuntimes are cluster-scoped
  (``/apis/trainer.kubeflow.org/v1alpha1/clustertrainingruntimes/NAME``); a DELETE removes
  a TrainJob (its JobSet and pods follow through owner references).

The test plays the Trainer controller: it sets the TrainJob's conditions the
way kubeflow/trainer v2.3.0 does (pkg/apis/trainer/v1alpha1/trainjob_types.go).
"""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import jsonschema
import pytest

from sparse_transfer.errors import PipelineError
from sparse_transfer.scaleout.trainjob import TrainJobRequest, follow_trainjob

pytestmark = pytest.mark.integration

SCHEMA = json.loads(
    (Path(__file__).resolve().parents[1] / "data" / "trainjob_crd_v2.3.0.schema.json").read_text()
)
TRAINJOBS = re.compile(
    r"^/apis/trainer\.kubeflow\.org/v1alpha1/namespaces/([^/]+)/trainjobs(?:/([^/]+))?$"
)
PODS = re.compile(r"^/api/v1/namespaces/([^/]+)/pods$")
POD_LOG = re.compile(r"^/api/v1/namespaces/([^/]+)/pods/([^/]+)/log$")
RUNTIMES = re.compile(r"^/apis/trainer\.kubeflow\.org/v1alpha1/clustertrainingruntimes/([^/]+)$")


class FakeCluster:
    def __init__(self):
        self.trainjobs: dict[tuple[str, str], dict] = {}
        self.pods: list[dict] = []
        self.logs: dict[str, list[str]] = {}
        self.log_requests: list[dict] = []
        self.runtimes: set[str] = {"torch-distributed"}
        self.deleted: list[str] = []

    def create_trainjob(self, namespace: str, body: dict) -> tuple[int, dict]:
        errors = [e.message for e in jsonschema.Draft7Validator(SCHEMA).iter_errors(body)]
        name = (body.get("metadata") or {}).get("name", "")
        if not re.match(r"^[a-z]([-a-z0-9]*[a-z0-9])?$", name) or len(name) > 63:
            errors.append("metadata.name must match RFC 1035 DNS label format")
        if errors:
            return 422, {"kind": "Status", "status": "Failure", "reason": "Invalid",
                         "message": "; ".join(errors), "code": 422}  # fmt: skip
        if (namespace, name) in self.trainjobs:
            return 409, {"kind": "Status", "status": "Failure", "reason": "AlreadyExists",
                         "message": f'trainjobs.trainer.kubeflow.org "{name}" already exists',
                         "code": 409}  # fmt: skip
        self.trainjobs[(namespace, name)] = {**body, "status": {}}
        return 201, self.trainjobs[(namespace, name)]


def _server(cluster: FakeCluster):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def _send(self, code: int, body, content_type="application/json"):
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self):
            m = TRAINJOBS.match(urlparse(self.path).path)
            if not m or m.group(2):
                return self._send(404, {"kind": "Status", "reason": "NotFound", "code": 404})
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            self._send(*cluster.create_trainjob(m.group(1), body))

        def do_DELETE(self):
            m = TRAINJOBS.match(urlparse(self.path).path)
            if not m or not m.group(2) or (m.group(1), m.group(2)) not in cluster.trainjobs:
                return self._send(404, {"kind": "Status", "reason": "NotFound", "code": 404})
            del cluster.trainjobs[(m.group(1), m.group(2))]
            cluster.deleted.append(f"{m.group(1)}/{m.group(2)}")
            self._send(200, {"kind": "Status", "status": "Success"})

        def do_GET(self):
            url = urlparse(self.path)
            query = parse_qs(url.query)
            if m := RUNTIMES.match(url.path):
                if m.group(1) not in cluster.runtimes:
                    return self._send(404, {"kind": "Status", "reason": "NotFound", "code": 404})
                return self._send(200, {"kind": "ClusterTrainingRuntime",
                                        "metadata": {"name": m.group(1)}})  # fmt: skip
            if (m := TRAINJOBS.match(url.path)) and m.group(2):
                obj = cluster.trainjobs.get((m.group(1), m.group(2)))
                if obj is None:
                    return self._send(404, {"kind": "Status", "reason": "NotFound", "code": 404})
                return self._send(200, obj)
            if m := PODS.match(url.path):
                wanted = dict(
                    kv.split("=", 1) for kv in query.get("labelSelector", [""])[0].split(",") if kv
                )
                items = [
                    p for p in cluster.pods
                    if p["metadata"]["namespace"] == m.group(1)
                    and all(p["metadata"]["labels"].get(k) == v for k, v in wanted.items())
                ]  # fmt: skip
                return self._send(200, {"kind": "PodList", "apiVersion": "v1", "items": items})
            if m := POD_LOG.match(url.path):
                cluster.log_requests.append({"pod": m.group(2), **query})
                text = "".join(line + "\n" for line in cluster.logs.get(m.group(2), []))
                return self._send(200, text.encode(), "text/plain")
            self._send(404, {"kind": "Status", "reason": "NotFound", "code": 404})

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture
def cluster():
    from kubernetes import client

    fake = FakeCluster()
    server = _server(fake)
    config = client.Configuration()
    config.host = f"http://127.0.0.1:{server.server_address[1]}"
    yield fake, client.ApiClient(config)
    server.shutdown()


def _request(name="sparse-transfer-0123456789ab") -> TrainJobRequest:
    return TrainJobRequest(
        name=name, namespace="team", image="registry.example/sparse-transfer:0.1.0",
        num_nodes=2, nproc_per_node=2,
        node_args=["--output_uri", "s3://b/w/output", "text-classification", "--output_dir", "/o"],
        s3_secret="sparse-transfer-s3",
    )  # fmt: skip


def _node0_pod(name: str) -> dict:
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": f"{name}-node-0-0-abcde", "namespace": "team",
                     "labels": {"jobset.sigs.k8s.io/jobset-name": name,
                                "batch.kubernetes.io/job-completion-index": "0"}},
        "status": {"phase": "Running"},
    }  # fmt: skip


def _controller(fake: FakeCluster, name: str, condition: dict) -> threading.Thread:
    """Plays the Trainer controller: node 0 starts, logs, then the condition is set."""

    def run():
        import time

        while ("team", name) not in fake.trainjobs:
            time.sleep(0.01)
        fake.logs[f"{name}-node-0-0-abcde"] = ["rank 0 of 4: training", "done"]
        fake.pods.append(_node0_pod(name))
        time.sleep(0.2)
        fake.trainjobs[("team", name)]["status"] = {"conditions": [condition]}

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_follows_a_trainjob_to_completion_with_node0_logs(cluster):
    fake, api = cluster
    lines: list[str] = []
    _controller(fake, "sparse-transfer-0123456789ab",
                {"type": "Complete", "status": "True", "reason": "JobsCompleted",
                 "message": "TrainJob is completed"})  # fmt: skip
    reason = follow_trainjob(_request(), poll_seconds=0.05, api_client=api, emit=lines.append)
    assert reason == "JobsCompleted"
    assert lines == ["rank 0 of 4: training", "done"]
    assert fake.log_requests[0]["container"] == ["node"]
    created = fake.trainjobs[("team", "sparse-transfer-0123456789ab")]
    assert created["spec"]["trainer"]["numNodes"] == 2


def test_a_failed_trainjob_fails_the_step_with_its_reason(cluster):
    fake, api = cluster
    _controller(fake, "sparse-transfer-0123456789ab",
                {"type": "Failed", "status": "True", "reason": "DeadlineExceeded",
                 "message": "TrainJob exceeded its active deadline"})  # fmt: skip
    with pytest.raises(PipelineError, match="failed: DeadlineExceeded: TrainJob exceeded"):
        follow_trainjob(_request(), poll_seconds=0.05, api_client=api, emit=lambda _: None)
    assert fake.deleted == ["team/sparse-transfer-0123456789ab"]  # no failed job left behind


def test_no_runtime_is_a_clear_error_before_anything_is_created(cluster):
    """Trainer v2.3's Helm chart installs no ClusterTrainingRuntime unless asked
    (charts/kubeflow-trainer/values.yaml runtimes.torchDistributed.enabled)."""
    fake, api = cluster
    fake.runtimes.clear()
    with pytest.raises(PipelineError, match="no ClusterTrainingRuntime 'torch-distributed'"):
        follow_trainjob(_request(), poll_seconds=0.05, api_client=api, emit=lambda _: None)
    assert fake.trainjobs == {} and fake.deleted == []


def test_the_api_server_rules_hold_in_the_fake(cluster):
    """A duplicate name is refused like the API server refuses it; so is a bad body."""
    from kubernetes import client

    fake, api = cluster
    fake.trainjobs[("team", "sparse-transfer-0123456789ab")] = {"status": {}}
    with pytest.raises(client.ApiException) as err:
        follow_trainjob(_request(), poll_seconds=0.05, api_client=api, emit=lambda _: None)
    assert err.value.status == 409
    assert fake.deleted == []  # someone else's job of that name is never deleted
    status, body = fake.create_trainjob("team", {"apiVersion": "trainer.kubeflow.org/v1alpha1",
                                                 "kind": "TrainJob", "metadata": {"name": "x"},
                                                 "spec": {"trainer": {"numNodes": "2"}}})  # fmt: skip
    assert status == 422 and "runtimeRef" in body["message"]
