"""TrainJobs a cluster admin can live with (issue 23): the step's own image on the nodes, a
deadline, an owner, cleanup when the job fails or the wait ends, a clear error without a
ClusterTrainingRuntime, ``minio://`` pipeline roots, and never an endless wait.

Rules from kubeflow/trainer v2.3.0: ``spec.activeDeadlineSeconds`` (pkg/apis/trainer/v1alpha1/
trainjob_types.go: Trainer fails the job with DeadlineExceeded), the chart installs no
ClusterTrainingRuntime unless ``runtimes.torchDistributed.enabled`` (charts/kubeflow-trainer/
values.yaml). Kubernetes calls go to in-memory fakes of the client's API classes.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import jsonschema
import pytest
from kubernetes.client.exceptions import ApiException

from sparse_transfer.errors import PipelineError
from sparse_transfer.scaleout import plan as plan_module
from sparse_transfer.scaleout import trainjob
from sparse_transfer.scaleout.plan import ScaleOut, step_pod
from sparse_transfer.scaleout.trainjob import TrainJobRequest, follow_trainjob, trainjob_manifest

SCHEMA = Path(__file__).resolve().parents[1] / "data" / "trainjob_crd_v2.3.0.schema.json"


def _request(**overrides) -> TrainJobRequest:
    fields = dict(name="sparse-transfer-0123456789ab", namespace="team", image="reg.local/st:1",
                  num_nodes=2, nproc_per_node=1, node_args=["--output_uri", "s3://b/w/output"],
                  s3_secret="sparse-transfer-s3", settings_config_map="sparse-transfer-settings",
                  owner={"name": "step-pod", "uid": "1234"})  # fmt: skip
    fields.update(overrides)
    return TrainJobRequest(**fields)


def test_manifest_has_a_deadline_an_owner_and_the_zoo_settings():
    manifest = trainjob_manifest(_request())
    jsonschema.Draft7Validator(json.loads(SCHEMA.read_text())).validate(manifest)
    assert manifest["spec"]["activeDeadlineSeconds"] == 3 * 24 * 3600
    assert manifest["metadata"]["ownerReferences"] == [
        {"apiVersion": "v1", "kind": "Pod", "name": "step-pod", "uid": "1234"}
    ]
    env = {e["name"]: e for e in manifest["spec"]["trainer"]["env"]}
    for key in ("SPARSE_TRANSFER_ZOO", "AWS_DEFAULT_REGION"):
        assert env[key]["valueFrom"] == {
            "configMapKeyRef": {"name": "sparse-transfer-settings", "key": key}
        }
    with pytest.raises(PipelineError, match="deadline_seconds must be >= 1, got 0"):
        _request(deadline_seconds=0)
    with pytest.raises(PipelineError, match="image is empty"):
        _request(image="")


class FakeCustom:
    """CustomObjectsApi in memory: one runtime (or none), jobs whose status a test sets."""

    def __init__(self, runtime=True, status=None):
        self.runtime, self.status = runtime, status or {}
        self.created, self.deleted = [], []

    def get_cluster_custom_object(self, group, version, plural, name):
        assert (group, version, plural) == (
            "trainer.kubeflow.org",
            "v1alpha1",
            "clustertrainingruntimes",
        )
        if not self.runtime:
            raise ApiException(status=404, reason="Not Found")
        return {"metadata": {"name": name}}

    def create_namespaced_custom_object(self, group, version, namespace, plural, body):
        self.created.append(body)

    def get_namespaced_custom_object(self, group, version, namespace, plural, name):
        return {"status": self.status}

    def delete_namespaced_custom_object(self, group, version, namespace, plural, name):
        self.deleted.append(f"{namespace}/{name}")


class FakeCore:
    def list_namespaced_pod(self, namespace, label_selector):
        return SimpleNamespace(items=[SimpleNamespace(
            status=SimpleNamespace(phase="Running"), metadata=SimpleNamespace(name="node-0"))])  # fmt: skip

    def read_namespaced_pod_log(self, *args, **kwargs):
        return [b"step 1\n"]


@pytest.fixture
def fake_api(monkeypatch):
    """Installs the fakes and a clock that advances by each sleep (no real waiting)."""
    import kubernetes.client

    def install(custom):
        monkeypatch.setattr(kubernetes.client, "CustomObjectsApi", lambda api: custom)
        monkeypatch.setattr(kubernetes.client, "CoreV1Api", lambda api: FakeCore())
        clock = {"now": 0.0}
        fake_time = SimpleNamespace(monotonic=lambda: clock["now"],
                                    sleep=lambda s: clock.__setitem__("now", clock["now"] + s))  # fmt: skip
        monkeypatch.setattr(trainjob, "time", fake_time)
        return clock

    return install


def test_a_missing_runtime_is_a_clear_error_and_nothing_is_created(fake_api):
    custom = FakeCustom(runtime=False)
    fake_api(custom)
    with pytest.raises(PipelineError, match=r"no ClusterTrainingRuntime 'torch-distributed' in "
                       r"the cluster: .*runtimes.torchDistributed.enabled=true"):  # fmt: skip
        follow_trainjob(_request(), api_client=object(), emit=lambda line: None)
    assert custom.created == []


def test_a_failed_job_is_deleted(fake_api):
    failed = {"conditions": [{"type": "Failed", "status": "True", "reason": "DeadlineExceeded"}]}
    custom = FakeCustom(status=failed)
    fake_api(custom)
    with pytest.raises(PipelineError, match="failed: DeadlineExceeded"):
        follow_trainjob(_request(), api_client=object(), emit=lambda line: None)
    assert custom.deleted == ["team/sparse-transfer-0123456789ab"]


def test_the_wait_ends_after_the_deadline_and_deletes_the_job(fake_api):
    """No timeout given: the job's own deadline plus 10 minutes, never forever."""
    custom = FakeCustom()  # never finishes
    clock = fake_api(custom)
    with pytest.raises(PipelineError, match="did not finish within 700 s"):
        follow_trainjob(_request(deadline_seconds=100), api_client=object(), emit=lambda x: None)
    assert 700 < clock["now"] <= 720
    assert custom.deleted == ["team/sparse-transfer-0123456789ab"]


def test_a_complete_job_is_kept(fake_api):
    done = {"conditions": [{"type": "Complete", "status": "True", "reason": "JobSetCompleted"}]}
    custom = FakeCustom(status=done)
    fake_api(custom)
    assert (
        follow_trainjob(_request(), api_client=object(), emit=lambda x: None) == "JobSetCompleted"
    )
    assert len(custom.created) == 1 and custom.deleted == []


def test_nodes_run_the_steps_own_image(monkeypatch):
    """Not a compiled constant: the image the step's pod runs (a chart's private registry)."""
    import kubernetes.client

    pod = SimpleNamespace(
        metadata=SimpleNamespace(name="run-abc-system-container-impl", uid="u-1"),
        spec=SimpleNamespace(containers=[SimpleNamespace(name="kfp-launcher", image="l:1"),
                                         SimpleNamespace(name="main", image="private.reg/st@sha256:ab")]),
    )  # fmt: skip
    calls = []

    class Core:
        def read_namespaced_pod(self, name, namespace):
            calls.append((name, namespace))
            return pod

    monkeypatch.setattr(kubernetes.client, "CoreV1Api", lambda api: Core())
    monkeypatch.setenv("HOSTNAME", "run-abc-system-container-impl")
    image, owner = step_pod("team", api_client=object())
    assert image == "private.reg/st@sha256:ab"
    assert owner == {"name": "run-abc-system-container-impl", "uid": "u-1"}
    assert calls == [("run-abc-system-container-impl", "team")]


def test_minio_roots_stage_under_the_charts_staging_prefix(monkeypatch):
    monkeypatch.setenv("SPARSE_TRANSFER_STAGING", "s3://team-models/staging/")
    plan = ScaleOut(num_nodes=2, work_uri="minio://mlpipeline/v2/artifacts/x", s3_secret="s")
    uri = plan.staging_uri()
    assert uri.startswith("s3://team-models/staging/") and len(uri.rsplit("/", 1)[1]) == 32
    s3 = ScaleOut(num_nodes=2, work_uri="s3://b/root/x-trainjob/", s3_secret="s")
    assert s3.staging_uri() == "s3://b/root/x-trainjob"
    assert plan_module.STAGING_ENV == "SPARSE_TRANSFER_STAGING"


def _unknown_fields(schema: dict, obj, path: str = "") -> list[str]:
    """Fields a structural CRD schema does not declare: the API server prunes them."""
    if isinstance(obj, dict) and "properties" in schema:
        if schema.get("x-kubernetes-preserve-unknown-fields"):
            return []
        out = []
        for key, value in obj.items():
            if key not in schema["properties"]:
                out.append(f"{path}.{key}")
            else:
                out += _unknown_fields(schema["properties"][key], value, f"{path}.{key}")
        return out
    if isinstance(obj, list) and "items" in schema:
        return [
            u
            for i, v in enumerate(obj)
            for u in _unknown_fields(schema["items"], v, f"{path}[{i}]")
        ]
    return []


@pytest.mark.parametrize(
    ("trainer", "pruned"),
    [("v2.3.0", []), ("v2.1.0", [".spec.activeDeadlineSeconds"])],
)
def test_what_each_trainer_release_keeps_of_the_manifest(trainer, pruned):
    """Kubeflow 1.11 ships Trainer v2.1.0 (kubeflow/manifests README), which has no
    activeDeadlineSeconds: the API server prunes it there (and the step's own bounded wait is
    the limit); everything else is declared by both CRDs (descriptions stripped copies)."""
    schema = json.loads((SCHEMA.parent / f"trainjob_crd_{trainer}.schema.json").read_text())
    manifest = trainjob_manifest(_request(accelerator_type="nvidia.com/gpu", accelerator_limit=8))
    assert _unknown_fields(schema, manifest) == pruned
    kept = json.loads(json.dumps(manifest))
    if pruned:
        del kept["spec"]["activeDeadlineSeconds"]
    jsonschema.Draft7Validator(schema).validate(kept)
