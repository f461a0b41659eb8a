"""Upload, submit and schedule against a fake KFP v2 API server on loopback.

The server records every request; the tests check that each one is a request
the real KFP v2beta1 REST API accepts: the right method and path, JSON bodies
whose fields all exist in the API's own models (kfp-server-api, generated from
the server's OpenAPI spec), the multipart ``uploadfile`` part, and the bearer
token on every call.
"""

import json
import threading
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest
import yaml
from kfp_server_api import models
from sparse_transfer.errors import PipelineError

from pipelines import client as kfp_client

pytestmark = pytest.mark.integration

TOKEN = "test-token-123"


class FakeKFP(BaseHTTPRequestHandler):
    """Answers the v2beta1 endpoints kfp.Client uses; records (method, path, query, headers, body)."""

    records: list[dict] = []
    pipelines: dict[str, str] = {}  # display name -> id
    experiments: dict[str, str] = {}

    def log_message(self, *args):  # keep pytest output clean
        pass

    def _reply(self, payload: dict, status: int = 200) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _record(self) -> dict:
        url = urlparse(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        record = {
            "method": self.command,
            "path": url.path,
            "query": parse_qs(url.query),
            "headers": {k.lower(): v for k, v in self.headers.items()},
            "body": body,
        }
        self.records.append(record)
        return record

    def do_GET(self):
        rec = self._record()
        path = rec["path"]
        if path == "/apis/v2beta1/healthz":
            return self._reply({"multi_user": False})
        if path in ("/apis/v2beta1/experiments", "/apis/v2beta1/pipelines"):
            (predicate,) = json.loads(rec["query"]["filter"][0])["predicates"]
            assert predicate["key"] == "display_name"
            name = predicate.get("stringValue", predicate.get("string_value"))
            table, key, field = (
                (self.experiments, "experiments", "experiment_id")
                if "experiments" in path
                else (self.pipelines, "pipelines", "pipeline_id")
            )
            if name in table:
                return self._reply(
                    {key: [{field: table[name], "display_name": name}], "total_size": 1}
                )
            return self._reply({})
        return self._reply({"error": f"unexpected GET {path}"}, 404)

    def do_POST(self):
        rec = self._record()
        path = rec["path"]
        if path == "/apis/v2beta1/experiments":
            body = json.loads(rec["body"])
            self.experiments[body["display_name"]] = "exp-1"
            return self._reply({"experiment_id": "exp-1", "display_name": body["display_name"]})
        if path == "/apis/v2beta1/runs":
            return self._reply(
                {"run_id": "run-1", "display_name": json.loads(rec["body"])["display_name"]}
            )
        if path == "/apis/v2beta1/recurringruns":
            return self._reply({"recurring_run_id": "rr-1"})
        if path == "/apis/v2beta1/pipelines/upload":
            name = rec["query"]["name"][0]
            self.pipelines[name] = "pipe-1"
            return self._reply({"pipeline_id": "pipe-1", "display_name": name})
        if path == "/apis/v2beta1/pipelines/upload_version":
            return self._reply(
                {"pipeline_id": rec["query"]["pipelineid"][0], "pipeline_version_id": "ver-1"}
            )
        return self._reply({"error": f"unexpected POST {path}"}, 404)


@pytest.fixture
def server():
    FakeKFP.records = []
    FakeKFP.pipelines = {}
    FakeKFP.experiments = {}
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), FakeKFP)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(
        "pipeline: sparse_transfer\nrun_name: nightly-sst2\nexperiment: sst2\n"
        "parameters:\n  max_seq_length: 64\n  distill_teacher: disable\n"
        "  dataset_snapshot_prefix: s3://data/sst2\n  publish_stub: zoo:demo/sst2/pruned90_quant\n"
    )
    return path


def api_fields(model_cls) -> set[str]:
    return set(model_cls.attribute_map.values())


def assert_fits(body: dict, model_cls) -> None:
    """Every JSON field is one the v2beta1 API model defines."""
    unknown = set(body) - api_fields(model_cls)
    assert not unknown, f"{model_cls.__name__} has no fields {unknown}"


def posts(path: str) -> list[dict]:
    return [r for r in FakeKFP.records if r["method"] == "POST" and r["path"] == path]


def assert_all_authorized() -> None:
    assert FakeKFP.records
    for record in FakeKFP.records:
        assert record["headers"].get("authorization") == f"Bearer {TOKEN}", record["path"]


def test_submit_creates_experiment_then_run_with_spec_and_parameters(server, config, monkeypatch):
    monkeypatch.setenv("KF_PIPELINES_TOKEN", TOKEN)
    run_id = kfp_client.submit(kfp_client.make_client(server), config)
    assert run_id == "run-1"
    (experiment,) = posts("/apis/v2beta1/experiments")
    assert json.loads(experiment["body"]) == {"display_name": "sst2", "namespace": ""}
    assert_fits(json.loads(experiment["body"]), models.V2beta1Experiment)
    (run,) = posts("/apis/v2beta1/runs")
    body = json.loads(run["body"])
    assert_fits(body, models.V2beta1Run)
    assert_fits(body["runtime_config"], models.V2beta1RuntimeConfig)
    assert body["display_name"] == "nightly-sst2" and body["experiment_id"] == "exp-1"
    assert body["runtime_config"]["parameters"] == {
        "max_seq_length": 64,
        "distill_teacher": "disable",
        "dataset_snapshot_prefix": "s3://data/sst2",
        "publish_stub": "zoo:demo/sst2/pruned90_quant",
    }
    compiled = yaml.safe_load_all(
        (kfp_client.COMPILED_DIR / "sparse_transfer_pipeline.yaml").read_text()
    )
    pipeline_spec, platform_spec = list(compiled)
    assert body["pipeline_spec"]["pipeline_spec"] == pipeline_spec
    assert body["pipeline_spec"]["platform_spec"] == platform_spec
    assert_all_authorized()


def test_upload_then_upload_again_makes_a_version(server, monkeypatch):
    monkeypatch.setenv("KF_PIPELINES_TOKEN", TOKEN)
    client = kfp_client.make_client(server)
    assert kfp_client.upload(client) == {"pipeline_id": "pipe-1"}
    assert kfp_client.upload(client, version="v2") == {
        "pipeline_id": "pipe-1",
        "version_id": "ver-1",
    }
    (first,) = posts("/apis/v2beta1/pipelines/upload")
    (second,) = posts("/apis/v2beta1/pipelines/upload_version")
    assert first["query"]["name"] == ["sparse-transfer"]
    assert second["query"]["pipelineid"] == ["pipe-1"] and second["query"]["name"] == ["v2"]
    spec_text = (kfp_client.COMPILED_DIR / "sparse_transfer_pipeline.yaml").read_bytes()
    for record in (first, second):
        content_type = record["headers"]["content-type"]
        assert content_type.startswith("multipart/form-data; boundary=")
        message = BytesParser(policy=HTTP).parsebytes(
            b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + record["body"]
        )
        parts = {p.get_param("name", header="content-disposition"): p for p in message.iter_parts()}
        assert set(parts) == {"uploadfile"}
        assert parts["uploadfile"].get_payload(decode=True) == spec_text
    assert_all_authorized()


def test_schedule_creates_cron_recurring_run_without_cache(server, config, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    client = kfp_client.make_client(server, sa_token_path=str(token_file))
    job_id = kfp_client.schedule(client, config, cron="0 3 * * 1", name="weekly-sst2")
    assert job_id == "rr-1"
    (job,) = posts("/apis/v2beta1/recurringruns")
    body = json.loads(job["body"])
    assert_fits(body, models.V2beta1RecurringRun)
    assert_fits(body["trigger"], models.V2beta1Trigger)
    assert_fits(body["trigger"]["cron_schedule"], models.V2beta1CronSchedule)
    assert body["trigger"]["cron_schedule"]["cron"] == "0 0 3 * * 1"
    assert body["display_name"] == "weekly-sst2" and body["mode"] == "ENABLE"
    assert int(body["max_concurrency"]) == 1 and body["no_catchup"] is True
    assert body["experiment_id"] == "exp-1"
    parameters = body["runtime_config"]["parameters"]
    assert parameters["must_beat_published"] is True
    assert parameters["dataset_snapshot_prefix"] == "s3://data/sst2"
    tasks = body["pipeline_spec"]["pipeline_spec"]["root"]["dag"]["tasks"]
    assert all(t["cachingOptions"].get("enableCache", False) is False for t in tasks.values())
    assert_all_authorized()


def test_schedule_refuses_configs_that_cannot_retrain(server, tmp_path, monkeypatch):
    monkeypatch.setenv("KF_PIPELINES_TOKEN", TOKEN)
    path = tmp_path / "run.yaml"
    path.write_text("pipeline: sparse_transfer\nparameters: {publish_stub: zoo:x/y}\n")
    with pytest.raises(PipelineError, match="dataset_snapshot_prefix"):
        kfp_client.schedule(kfp_client.make_client(server), path, cron="0 3 * * 1")
    path.write_text(
        "pipeline: sparse_transfer\nparameters: {publish_stub: zoo:x/y, "
        "dataset_snapshot_prefix: s3://d/p, must_beat_published: false}\n"
    )
    with pytest.raises(PipelineError, match="must_beat_published"):
        kfp_client.schedule(kfp_client.make_client(server), path, cron="0 3 * * 1")
    path.write_text(
        "pipeline: sparse_transfer\nparameters: {publish_stub: zoo:x/y, dataset_snapshot_prefix: s3://d/p}\n"
    )
    with pytest.raises(PipelineError, match="has 2 fields"):
        kfp_client.schedule(kfp_client.make_client(server), path, cron="0 3")
    assert [r["method"] for r in FakeKFP.records] == ["GET"] * len(FakeKFP.records)  # healthz only
    assert not posts("/apis/v2beta1/recurringruns")


def test_cli_submit_reads_token_from_environment(server, config, monkeypatch, capsys):
    from sparse_transfer.cli import main

    monkeypatch.setenv("KF_PIPELINES_TOKEN", TOKEN)
    assert main(["pipeline", "submit", str(config), "--host", server, "--experiment", "cli"]) == 0
    assert "run created: run-1" in capsys.readouterr().out
    (experiment,) = posts("/apis/v2beta1/experiments")
    assert json.loads(experiment["body"])["display_name"] == "cli"
    assert_all_authorized()


def test_bad_config_fails_before_any_request(server, tmp_path, monkeypatch):
    monkeypatch.setenv("KF_PIPELINES_TOKEN", TOKEN)
    path = tmp_path / "bad.yaml"
    path.write_text("pipeline: sparse_transfer\nparameters: {max_seq_len: 64}\n")
    client = kfp_client.make_client(server)
    FakeKFP.records.clear()
    with pytest.raises(PipelineError, match=f"{path}: unknown parameter 'max_seq_len'"):
        kfp_client.submit(client, path)
    assert FakeKFP.records == []


def test_missing_service_account_token_file(tmp_path):
    with pytest.raises(PipelineError, match="does not exist"):
        kfp_client.make_client("http://127.0.0.1:9", sa_token_path=str(Path(tmp_path) / "none"))
