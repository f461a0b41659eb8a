"""`FastInfer`: which requests it answers itself, and that everything else reaches kserve's
app with the very bytes the client sent (tests/integration/test_serve.py compares the two
paths' answers on a real server)."""

from __future__ import annotations

import asyncio
import json
import math
from types import SimpleNamespace

import pytest
from kserve.errors import InvalidInput
from prometheus_client import REGISTRY

from sparse_transfer.serving.batching import QueueFull
from sparse_transfer.serving.codecs import InputError
from sparse_transfer.serving.fast_infer import FastInfer
from sparse_transfer.serving.options import ServeOptions
from sparse_transfer.serving.predictor import DeploymentModel

LIMIT = 1000
V2 = "/v2/models/m/infer"
V1 = "/v1/models/m:predict"


class Codec:
    """The codec's contract as FastInfer sees it: texts checked, typed outputs named."""

    fields = ("text", "text_pair")
    typed_outputs = (("label", "BYTES"), ("score", "FP32"))

    def check_all(self, rows):
        if not all(isinstance(r, str) or isinstance(r, dict) and isinstance(r.get("text"), str)
                   for r in rows):  # fmt: skip
            raise InputError("instance: text must be a string")
        return [r if isinstance(r, dict) else {"text": r} for r in rows]


class Model(DeploymentModel):
    def __init__(self, fail: Exception | None = None, score: float = 0.1) -> None:
        super().__init__(None, {}, ServeOptions(), "m")
        self.loaded = SimpleNamespace(codec=Codec())
        self.ready = True
        self.fail, self.score, self.runs = fail, score, []

    async def run_instances(self, instances):
        self.runs.append(instances)
        if self.fail is not None:
            raise self.fail
        return [{"label": "positive", "score": self.score} for _ in instances]


class Kserve:
    """Stands for kserve's app: records what reached it, body read to the end."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []

    async def __call__(self, scope, receive, send) -> None:
        body = b""
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        self.bodies.append(body)
        await send({"type": "http.response.start", "status": 299, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})


def call(app, body: bytes, path=V2, method="POST", headers=None, chunks=1, declare=True):
    """Runs one request through `app`: (status, headers, body)."""
    headers = [(b"content-type", b"application/json")] if headers is None else headers
    if declare:
        headers = [*headers, (b"content-length", str(len(body)).encode())]
    size = max(1, math.ceil(len(body) / chunks))
    parts = [body[i : i + size] for i in range(0, len(body), size)] or [b""]
    messages = [{"type": "http.request", "body": p, "more_body": i < len(parts) - 1}
                for i, p in enumerate(parts)]  # fmt: skip
    sent = []

    async def receive():
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": method, "path": path, "headers": headers}
    asyncio.run(app(scope, receive, send))
    start, end = sent
    return start["status"], dict(start["headers"]), end["body"]


def v2_body(data, **extra) -> bytes:
    tensor = {"name": "text", "shape": [len(data)], "datatype": "BYTES", "data": data}
    return json.dumps({"inputs": [tensor], **extra}).encode()


def test_a_well_formed_v2_request_never_reaches_kserve():
    kserve, model = Kserve(), Model()
    status, headers, body = call(FastInfer(kserve, model, LIMIT), v2_body(["good", "bad"], id="r"))
    assert status == 200 and kserve.bodies == []
    assert headers[b"content-type"] == b"application/json"
    assert int(headers[b"content-length"]) == len(body)
    out = json.loads(body)
    assert (out["model_name"], out["id"], out["model_version"], out["parameters"]) == (
        "m", "r", None, None
    )  # fmt: skip
    outputs = {o["name"]: o for o in out["outputs"]}
    assert [json.loads(p) for p in outputs["prediction"]["data"]] == [
        {"label": "positive", "score": 0.1}
    ] * 2  # fmt: skip
    assert outputs["label"]["data"] == ["positive", "positive"]
    # kserve's to_rest sends FP32 as float32 values, not the float64 we computed
    assert outputs["score"]["data"] == [0.10000000149011612] * 2
    assert model.runs == [[{"text": "good"}, {"text": "bad"}]]


def test_a_well_formed_v1_request_and_kserves_latency_histogram():
    before = REGISTRY.get_sample_value("request_predict_seconds_count", {"model_name": "m"}) or 0
    kserve = Kserve()
    status, _, body = call(FastInfer(kserve, Model(), LIMIT), b'{"instances": ["good"]}', V1)
    assert (status, json.loads(body), kserve.bodies) == (
        200, {"predictions": [{"label": "positive", "score": 0.1}]}, []
    )  # fmt: skip
    after = REGISTRY.get_sample_value("request_predict_seconds_count", {"model_name": "m"})
    assert after == before + 1


ROUTED = [
    # (what, body, path, method, headers)
    ("malformed JSON", b'{"inputs": [', V2, "POST", None),
    ("an unknown top-level field", v2_body(["good"], parameters={}), V2, "POST", None),
    ("an unknown tensor field", json.dumps({"inputs": [{
        "name": "text", "shape": [1], "datatype": "BYTES", "data": ["a"], "parameters": {}}]
    }).encode(), V2, "POST", None),
    ("a shape of strings", json.dumps({"inputs": [{
        "name": "text", "shape": ["1"], "datatype": "BYTES", "data": ["a"]}]}).encode(),
     V2, "POST", None),
    ("a shape of booleans", json.dumps({"inputs": [{
        "name": "text", "shape": [True], "datatype": "BYTES", "data": ["a"]}]}).encode(),
     V2, "POST", None),
    ("a numeric id", v2_body(["good"], id=7), V2, "POST", None),
    ("no inputs", b'{"id": "x"}', V2, "POST", None),
    ("a wrong input name", json.dumps({"inputs": [{
        "name": "question", "shape": [1], "datatype": "BYTES", "data": ["a"]}]}).encode(),
     V2, "POST", None),
    ("a text the codec refuses", v2_body([3]), V2, "POST", None),
    ("v1 with another field", b'{"instances": ["good"], "note": 1}', V1, "POST", None),
    ("v1 not an object", b'["good"]', V1, "POST", None),
    ("text/plain", v2_body(["good"]), V2, "POST", [(b"content-type", b"text/plain")]),
    ("no content type", v2_body(["good"]), V2, "POST", []),
    ("a CloudEvent", v2_body(["good"]), V2, "POST",
     [(b"content-type", b"application/json"), (b"ce-specversion", b"1.0")]),
    ("the binary extension", v2_body(["good"]), V2, "POST",
     [(b"content-type", b"application/json"), (b"inference-header-content-length", b"10")]),
    ("another model", v2_body(["good"]), "/v2/models/other/infer", "POST", None),
    ("another route", b"", "/v2/health/ready", "GET", None),
    ("GET on the route", b"", V2, "GET", None),
]  # fmt: skip


@pytest.mark.parametrize("what,body,path,method,headers", ROUTED, ids=[r[0] for r in ROUTED])
@pytest.mark.parametrize("chunks", [1, 3])
def test_anything_else_reaches_kserve_byte_for_byte(what, body, path, method, headers, chunks):
    kserve, model = Kserve(), Model()
    status, _, _ = call(FastInfer(kserve, model, LIMIT), body, path, method, headers, chunks)
    assert status == 299 and kserve.bodies == [body] and model.runs == []


def test_a_model_still_loading_is_kserves_to_answer():
    kserve, model = Kserve(), Model()
    model.ready = False
    body = v2_body(["good"])
    assert call(FastInfer(kserve, model, LIMIT), body)[0] == 299
    assert kserve.bodies == [body]


@pytest.mark.parametrize("declare", [True, False], ids=["content-length", "chunked"])
def test_a_body_over_the_limit_reaches_kserves_body_limit_whole(declare):
    """Declared too big: not read at all; chunked: read to the limit, then replayed and the
    rest passed on, so the BodyLimit guard inside answers its 413 as before."""
    kserve, model = Kserve(), Model()
    body = v2_body(["good " * 300])
    assert len(body) > LIMIT
    status, _, _ = call(FastInfer(kserve, model, LIMIT), body, chunks=7, declare=declare)
    assert status == 299 and kserve.bodies == [body] and model.runs == []


ERRORS = [
    (QueueFull("12 instances are waiting"), 503, "12 instances are waiting", b"1"),
    (InvalidInput("no room for the context"), 400, "no room for the context", None),
    (RuntimeError("boom"), 500, "RuntimeError : boom", None),
]


@pytest.mark.parametrize("error,status,words,retry", ERRORS, ids=["queue", "input", "crash"])
def test_errors_after_the_batcher_are_answered_as_kserve_words_them(error, status, words, retry):
    kserve = Kserve()
    got, headers, body = call(FastInfer(kserve, Model(fail=error), LIMIT), v2_body(["good"]))
    assert (got, json.loads(body), headers.get(b"retry-after")) == (status, {"error": words}, retry)
    assert kserve.bodies == []  # answered once, never run twice


def test_a_non_finite_score_is_a_500_not_a_token():
    status, _, body = call(
        FastInfer(Kserve(), Model(score=float("nan")), LIMIT), b'{"instances": ["a"]}', V1
    )
    assert status == 500 and "NaN" not in body.decode() and "ValueError" in body.decode()
