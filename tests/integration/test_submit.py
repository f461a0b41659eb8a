"""Upload, submit and schedule against a fake KFP v2beta1 API that decides like KFP 2.17.

The fake (tests/kfp_fake.py) keeps pipelines, versions, experiments, runs and recurring runs,
and refuses what KFP's API server refuses: no identity (401), no rights in the namespace or,
for a shared pipeline, in KFP's own namespace (403), duplicate names (409). Request bodies are
also checked against kfp-server-api's models (generated from KFP's OpenAPI spec).
"""

import json
from pathlib import Path

import pytest
import yaml
from kfp_server_api import models
from kfp_server_api.exceptions import ApiException

from pipelines import client as kfp_client
from sparse_transfer.cli import main
from sparse_transfer.errors import PipelineError
from tests.kfp_fake import FakeKfp, images

pytestmark = pytest.mark.integration

TOKEN = "test-token-123"
NS = "team-a"
USERS = {TOKEN: ("alice@example.com", {NS})}
SPEC = kfp_client.COMPILED_DIR / "sparse_transfer_pipeline.yaml"


@pytest.fixture
def kfp():
    with FakeKfp() as fake:
        yield fake


@pytest.fixture
def multi_user():
    with FakeKfp(multi_user=True, users=USERS) as fake:
        yield fake


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(
        "pipeline: sparse_transfer\nrun_name: nightly-sst2\nexperiment: sst2\n"
        "parameters:\n  max_seq_length: 64\n  distill_teacher: disable\n"
        "  dataset_snapshot_prefix: s3://data/sst2\n  publish_stub: zoo:demo/sst2/pruned90_quant\n"
        "  accelerator_type: nvidia.com/gpu\n  accelerator_limit: '1'\n"
    )
    return path


def assert_fits(body: dict, model_cls) -> None:
    """Every JSON field is one the v2beta1 API model defines."""
    unknown = set(body) - set(model_cls.attribute_map.values())
    assert not unknown, f"{model_cls.__name__} has no fields {unknown}"


def client(fake, **kwargs):
    return kfp_client.make_client(fake.url, token=TOKEN, **kwargs)


def test_submit_sends_the_spec_parameters_and_pipeline_root_and_the_gpu_reaches_the_pod(
    kfp, config
):
    run_id = kfp_client.submit(client(kfp), config, pipeline_root="s3://bucket/root")
    run = kfp.state.runs[run_id]
    assert_fits({k: v for k, v in run.items() if k != "namespace"}, models.V2beta1Run)
    assert run["display_name"] == "nightly-sst2"
    assert run["runtime_config"]["pipeline_root"] == "s3://bucket/root"
    assert run["runtime_config"]["parameters"]["accelerator_limit"] == "1"
    pipeline_spec, platform_spec = yaml.safe_load_all(SPEC.read_text())
    assert run["pipeline_spec"]["pipeline_spec"] == pipeline_spec
    assert run["pipeline_spec"]["platform_spec"] == platform_spec
    # KFP's driver puts the GPU on the training pods (a string parameter; see kfp_fake).
    assert kfp.state.pod_limits(run, "exec-sparse-transfer") == {"nvidia.com/gpu": "1"}
    assert kfp.state.pod_limits(run, "exec-teacher") == {"nvidia.com/gpu": "1"}
    assert all(s["authorization"] == f"Bearer {TOKEN}" for s in kfp.state.seen)


def test_commands_refuse_a_backend_below_the_floor(config, capsys):
    # Kubeflow 1.9.1 ships KFP 2.3.0 (kubeflow/manifests README): below the 2.5.0 floor.
    with FakeKfp(tag_name="2.3.0") as old:
        with pytest.raises(PipelineError, match=r"backend 2\.3\.0 is too old.*KFP >= 2\.5\.0"):
            kfp_client.submit(client(old), config)
        for argv in (
            ["submit", str(config)],
            ["upload"],
            ["schedule", str(config), "--cron", "0 3 * * 1"],
        ):
            assert main(["pipeline", *argv, "--host", old.url, "--token", TOKEN]) == 2
            assert "2.3.0 is too old" in capsys.readouterr().err
        assert old.state.runs == {} and old.state.pipelines == {}
        assert old.state.recurring_runs == {}
    # Kubeflow 1.10.2 ships KFP 2.5.0, Kubeflow 1.11 ships 2.15.0: both accepted.
    for tag in ("2.5.0", "2.15.0"):
        with FakeKfp(tag_name=tag) as supported:
            assert kfp_client.check_backend(client(supported))["tag_name"] == tag


def test_multi_user_upload_is_namespaced_and_shared_or_anonymous_uploads_are_refused(
    multi_user, capsys
):
    ids = kfp_client.upload(client(multi_user, namespace=NS), namespace=NS, version="v1")
    pipeline = multi_user.state.pipelines[ids["pipeline_id"]]
    assert pipeline["namespace"] == NS and pipeline["name"] == "sparse-transfer"
    # No --namespace: a shared pipeline, which needs rights in KFP's own namespace.
    with pytest.raises(ApiException) as refused:
        kfp_client.upload(client(multi_user), name="other")
    assert refused.value.status == 403
    assert main(["pipeline", "upload", "--host", multi_user.url, "--token", TOKEN]) == 2
    assert "HTTP 403" in capsys.readouterr().err
    # Another profile's namespace: 403; no identity at all: 401.
    with pytest.raises(ApiException) as other:
        kfp_client.upload(client(multi_user), namespace="team-b", name="x")
    assert other.value.status == 403
    anonymous = kfp_client.make_client(multi_user.url)
    with pytest.raises(ApiException) as nobody:
        anonymous.upload_pipeline(str(SPEC), pipeline_name="y", namespace=NS)
    assert nobody.value.status == 401
    assert len(multi_user.state.pipelines) == 1


def test_fake_refuses_duplicate_names_like_kfp(kfp):
    kfp_client_ = client(kfp)
    kfp_client_.upload_pipeline(str(SPEC), pipeline_name="p")
    with pytest.raises(ApiException) as duplicate:
        kfp_client_.upload_pipeline(str(SPEC), pipeline_name="p")
    assert duplicate.value.status == 409
    pid = next(iter(kfp.state.pipelines))
    kfp_client_.upload_pipeline_version(str(SPEC), pipeline_version_name="v", pipeline_id=pid)
    with pytest.raises(ApiException) as again:
        kfp_client_.upload_pipeline_version(str(SPEC), pipeline_version_name="v", pipeline_id=pid)
    assert again.value.status == 409


def test_upload_adds_versions_and_is_idempotent_per_version_name(kfp, tmp_path):
    c = client(kfp)
    first = kfp_client.upload(c, version="v1")
    second = kfp_client.upload(c, version="v2")
    again = kfp_client.upload(c, version="v2")  # a retried hook Job
    assert first["pipeline_id"] == second["pipeline_id"] == again["pipeline_id"]
    assert again["version_id"] == second["version_id"] != first["version_id"]
    assert len(kfp.state.pipelines) == 1 and len(kfp.state.versions) == 2
    # --package: the given spec is uploaded as is (the chart's, with its image).
    custom = tmp_path / "spec.yaml"
    custom.write_text(SPEC.read_text().replace("ghcr.io/sparse-transfer/", "registry.example/"))
    third = kfp_client.upload(c, version="v3", package=custom)
    assert images(kfp.state.versions[third["version_id"]]["pipeline_spec"]) == {
        "registry.example/sparse-transfer:0.1.0"
    }


def test_schedule_points_at_the_version_and_replaces_the_run_of_that_name(multi_user, config):
    c = client(multi_user, namespace=NS)
    kwargs = {"cron": "0 3 * * 1", "name": "weekly-sst2", "namespace": NS}
    first = kfp_client.schedule(c, config, **kwargs, version="v1", pipeline_root="s3://b/r")
    assert list(multi_user.state.recurring_runs) == [first]
    second = kfp_client.schedule(c, config, **kwargs, version="v2")
    (job,) = multi_user.state.recurring_runs.values()
    assert job["recurring_run_id"] == second != first
    assert_fits({k: v for k, v in job.items() if k != "namespace"}, models.V2beta1RecurringRun)
    (version,) = [v for v in multi_user.state.versions.values() if v["name"] == "v2"]
    assert job["pipeline_version_reference"] == {
        "pipeline_id": version["pipeline_id"],
        "pipeline_version_id": version["pipeline_version_id"],
    }
    assert "pipeline_spec" not in job and job["namespace"] == NS
    assert job["trigger"]["cron_schedule"]["cron"] == "0 0 3 * * 1"
    assert job["mode"] == "ENABLE" and int(job["max_concurrency"]) == 1 and job["no_catchup"]
    # the config's flat names fold into the run form's objects; the switch is forced on there
    parameters = job["runtime_config"]["parameters"]
    assert parameters["advanced"] == {"must_beat_published": True}
    assert parameters["trainer_flags"] == {"dataset_snapshot_prefix": "s3://data/sst2"}
    assert "must_beat_published" not in parameters and "dataset_snapshot_prefix" not in parameters
    assert multi_user.state.pod_limits(job, "exec-sparse-transfer") == {"nvidia.com/gpu": "1"}
    # A schedule of another name is a second recurring run.
    kfp_client.schedule(c, config, cron="0 4 * * *", name="daily", namespace=NS)
    assert len(multi_user.state.recurring_runs) == 2


def test_prune_removes_only_the_owners_disabled_or_removed_schedules(multi_user, config, capsys):
    """A schedule disabled or removed from the chart's values, or a release uninstalled, must
    stop: KFP keeps a recurring run until it is deleted. Only the owner's runs are touched."""
    c = client(multi_user, namespace=NS)
    mine = {"namespace": NS, "owner": "helm/team-a/st", "experiment": "retrain"}
    kfp_client.schedule(c, config, cron="0 3 * * 1", name="weekly", **mine)
    kfp_client.schedule(c, config, cron="0 4 * * *", name="daily", **mine)
    kfp_client.schedule(c, config, cron="0 5 * * *", name="by-hand", namespace=NS,
                        experiment="retrain")  # fmt: skip
    other = dict(mine, owner="helm/team-a/other")
    kfp_client.schedule(c, config, cron="0 6 * * *", name="other-release", **other)

    def names():
        return sorted(r["display_name"] for r in multi_user.state.recurring_runs.values())

    # `daily` was disabled or removed from the values: the upgrade keeps only `weekly`.
    deleted = kfp_client.prune_schedules(
        c, owner="helm/team-a/st", keep=("weekly",), experiment="retrain", namespace=NS
    )
    assert deleted == ["daily"]
    assert names() == ["by-hand", "other-release", "weekly"]
    # helm uninstall: everything the release made goes, through the CLI the hook runs.
    argv = ["pipeline", "prune-schedules", "--owner", "helm/team-a/st", "--experiment", "retrain",
            "--host", multi_user.url, "--token", TOKEN, "--namespace", NS]  # fmt: skip
    assert main(argv) == 0
    assert "recurring runs deleted: weekly" in capsys.readouterr().out
    assert names() == ["by-hand", "other-release"]
    with pytest.raises(PipelineError, match="needs --owner"):
        kfp_client.prune_schedules(c, owner="", experiment="retrain", namespace=NS)


def test_schedule_refuses_configs_that_cannot_retrain(kfp, tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("pipeline: sparse_transfer\nparameters: {publish_stub: zoo:x/y}\n")
    with pytest.raises(PipelineError, match="dataset_snapshot_prefix"):
        kfp_client.schedule(client(kfp), path, cron="0 3 * * 1")
    path.write_text(
        "pipeline: sparse_transfer\nparameters: {publish_stub: zoo:x/y, "
        "dataset_snapshot_prefix: s3://d/p, must_beat_published: false}\n"
    )
    with pytest.raises(PipelineError, match="must_beat_published"):
        kfp_client.schedule(client(kfp), path, cron="0 3 * * 1")
    path.write_text(  # the same, spelled inside the run form's JSON objects
        "pipeline: sparse_transfer\nparameters: {publish_stub: zoo:x/y, "
        "trainer_flags: {dataset_snapshot_prefix: s3://d/p}, "
        "advanced: {must_beat_published: false}}\n"
    )
    with pytest.raises(PipelineError, match="must_beat_published is false"):
        kfp_client.schedule(client(kfp), path, cron="0 3 * * 1")
    path.write_text(
        "pipeline: sparse_transfer\nparameters: {publish_stub: zoo:x/y, dataset_snapshot_prefix: s3://d/p}\n"
    )
    with pytest.raises(PipelineError, match="has 2 fields"):
        kfp_client.schedule(client(kfp), path, cron="0 3")
    assert {s["method"] for s in kfp.state.seen} <= {"GET"}
    assert kfp.state.recurring_runs == {} and kfp.state.pipelines == {}


def test_cli_submit_reads_token_from_environment(kfp, config, monkeypatch, capsys):
    monkeypatch.setenv("KF_PIPELINES_TOKEN", TOKEN)
    assert main(["pipeline", "submit", str(config), "--host", kfp.url, "--experiment", "cli"]) == 0
    (run_id,) = kfp.state.runs
    assert f"run created: {run_id}" in capsys.readouterr().out
    (experiment,) = kfp.state.experiments.values()
    assert experiment["display_name"] == "cli"
    assert all(s["authorization"] == f"Bearer {TOKEN}" for s in kfp.state.seen)


def test_cli_run_on_a_host_sends_set_overrides_folded_into_the_run_forms_objects(
    kfp, config, monkeypatch, capsys
):
    """`pipeline run --host ... --set` used to drop the overrides; flat names off the form
    fold into trainer_flags/advanced and merge with what the config gives there."""
    monkeypatch.setenv("KF_PIPELINES_TOKEN", TOKEN)
    argv = ["pipeline", "run", str(config), "--host", kfp.url, "--set", "publish_force=true",
            "--set", "fp16=false", "--set", "max_seq_length=32"]  # fmt: skip
    assert main(argv) == 0
    (run,) = kfp.state.runs.values()
    parameters = run["runtime_config"]["parameters"]
    assert parameters["advanced"] == {"publish_force": True}
    assert parameters["trainer_flags"] == {
        "dataset_snapshot_prefix": "s3://data/sst2",
        "fp16": False,
    }
    assert parameters["max_seq_length"] == 32
    assert main([*argv[:5], "--set", "publish_forc=true"]) == 2
    assert "unknown parameter 'publish_forc'" in capsys.readouterr().err
    assert len(kfp.state.runs) == 1


def test_session_cookie_is_sent_when_no_token(kfp, monkeypatch):
    monkeypatch.delenv("KF_PIPELINES_TOKEN", raising=False)
    monkeypatch.setenv("KF_PIPELINES_COOKIE", "authservice_session=abc123")
    kfp_client.check_backend(kfp_client.make_client(kfp.url))
    assert kfp.state.seen and all(
        s["cookie"] == "authservice_session=abc123" for s in kfp.state.seen
    )


def test_bad_config_fails_before_any_request(kfp, tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("pipeline: sparse_transfer\nparameters: {max_seq_len: 64}\n")
    c = client(kfp)
    kfp.state.seen.clear()
    with pytest.raises(PipelineError, match=f"{path}: unknown parameter 'max_seq_len'"):
        kfp_client.submit(c, path)
    assert kfp.state.seen == []


def test_int_gpu_count_in_a_config_is_refused_with_the_reason(kfp, tmp_path):
    path = tmp_path / "gpu.yaml"
    path.write_text("pipeline: sparse_transfer\nparameters: {accelerator_limit: 1}\n")
    with pytest.raises(PipelineError, match="'accelerator_limit' must be str"):
        kfp_client.submit(client(kfp), path)


def test_missing_service_account_token_file(tmp_path):
    with pytest.raises(PipelineError, match="does not exist"):
        kfp_client.make_client("http://127.0.0.1:9", sa_token_path=str(Path(tmp_path) / "none"))


def test_request_bodies_fit_the_api_models(kfp, config):
    kfp_client.schedule(client(kfp), config, cron="0 3 * * 1", name="weekly")
    (experiment,) = kfp.state.experiments.values()
    assert_fits(json.loads(json.dumps(experiment)), models.V2beta1Experiment)


def test_shared_pipelines_are_readable_by_anyone_but_writable_only_with_system_rights():
    """pipeline_server.go canAccessPipeline: get/list of a shared pipeline skips authorization;
    create is authorized against KFP's own namespace."""
    admin = "admin-token"
    users = {**USERS, admin: ("admin@example.com", {"kubeflow"})}
    with FakeKfp(multi_user=True, users=users) as kfp:
        shared = kfp_client.upload(kfp_client.make_client(kfp.url, token=admin), name="shared")
        assert kfp.state.pipelines[shared["pipeline_id"]]["namespace"] == ""
        anonymous = kfp_client.make_client(kfp.url)
        found = anonymous.list_pipelines(filter=kfp_client._equals("display_name", "shared"))
        assert [p.pipeline_id for p in found.pipelines] == [shared["pipeline_id"]]
        with pytest.raises(ApiException) as refused:  # alice may not add a version to it
            client(kfp).upload_pipeline_version(
                str(SPEC), pipeline_version_name="v9", pipeline_id=shared["pipeline_id"]
            )
        assert refused.value.status == 403
        # Alice's namespaced list does not show it: namespaces are separate.
        assert kfp_client._find_pipeline(client(kfp), "shared", NS) is None
