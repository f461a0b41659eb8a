"""A short path for plainly well-formed inference requests, in front of kserve's app.

Under load (8 users, the real-results MiniLM, 2 cores), kserve's FastAPI stack cost
the server about 1.4 ms of CPU per request with the engine taken out: route matching,
the timing middleware (which names each request by matching the routes again and logs
it), FastAPI's dependency solving, pydantic request and response models,
``jsonable_encoder`` and a log line per request. That is most of the server's own
work, and on a small CPU it is taken from the engine.

`FastInfer` answers ``POST /v1/models/{name}:predict`` and ``POST
/v2/models/{name}/infer`` for the served model when the request is plainly
well-formed: ``Content-Type: application/json``, no CloudEvent or binary-data
headers, a body within ``--max_request_bytes`` that parses, has only the fields this
path knows and passes the codec's checks. It calls the model's own code
(`DeploymentModel.run_instances`, `v2_response`) and sends what kserve's route
sends: the same ``InferResponse.to_rest`` through the same pydantic response model,
with kserve's ``request_*_seconds`` histograms observed. Anything else (bad input,
a model still loading, other routes, other fields) goes to kserve's app unchanged,
with the body replayed, so every refusal reads exactly as it did.
"""

from __future__ import annotations

import json
import logging
import time
from types import SimpleNamespace
from typing import Any

from sparse_transfer.serving import protocol
from sparse_transfer.serving.batching import QueueFull
from sparse_transfer.serving.codecs import InputError
from sparse_transfer.serving.guards import content_length, send_json_bytes

log = logging.getLogger(__name__)

V2_FIELDS = {"id", "inputs"}
V2_TENSOR_FIELDS = {"name", "shape", "datatype", "data"}
# kserve decodes these itself (kserve/protocol/dataplane.py, ``decode``; the binary
# extension in kserve/protocol/infer_type.py): such requests take kserve's route.
BINARY_HEADER = b"inference-header-content-length"
CLOUDEVENT_PREFIX = b"ce-"


class FastInfer:
    """ASGI app: the short path for `model`'s inference routes, `app` for everything else."""

    def __init__(self, app, model, limit: int) -> None:
        self.app = app
        self.model = model
        self.limit = limit
        self.routes = {
            f"/v1/models/{model.name}:predict": self._v1,
            f"/v2/models/{model.name}/infer": self._v2,
        }

    async def __call__(self, scope, receive, send) -> None:
        parse = self._route(scope)
        if parse is None:
            await self.app(scope, receive, send)
            return
        body, replay = await read_body(receive, self.limit, content_length(scope))
        started = time.perf_counter()
        parsed = parse(body) if body is not None else None
        if parsed is None:  # kserve's route answers, as it always did
            await self.app(scope, replay, send)
            return
        instances, respond = parsed
        status, payload, headers = await self._answer(instances, respond, started)
        await _send_json(send, status, payload, headers)

    def _route(self, scope):
        if scope["type"] != "http" or scope.get("method") != "POST" or not self.model.ready:
            return None
        parse = self.routes.get(scope.get("path"))
        if parse is None or not _plain_json(scope.get("headers") or []):
            return None
        return parse

    # -- parsing: None means "not plainly well-formed: kserve's route decides" --
    def _v1(self, body: bytes):
        payload = _json(body)
        if not isinstance(payload, dict) or set(payload) != {"instances"}:
            return None
        instances = self._checked(lambda: protocol.v1_instances(payload))
        if instances is None:
            return None
        return instances, lambda predictions: {"predictions": predictions}

    def _v2(self, body: bytes):
        payload = _json(body)
        if not isinstance(payload, dict) or "inputs" not in payload or set(payload) - V2_FIELDS:
            return None
        request_id = payload.get("id")
        tensors = _tensors(payload["inputs"])
        if tensors is None or not (request_id is None or isinstance(request_id, str)):
            return None
        fields = self.model.loaded.codec.fields
        request = SimpleNamespace(inputs=tensors)
        instances = self._checked(lambda: protocol.v2_instances(request, fields))
        if instances is None:
            return None
        return instances, lambda predictions: self._v2_body(predictions, request_id)

    def _checked(self, rows):
        try:
            return self.model.loaded.codec.check_all(rows())
        except InputError:
            return None

    def _v2_body(self, predictions, request_id: str | None) -> dict[str, Any]:
        from kserve.protocol.rest.v2_datamodels import InferenceResponse

        rest, _ = self.model.v2_response(predictions, request_id).to_rest()
        return InferenceResponse.model_validate(rest).model_dump(mode="json")

    # -- answering --
    async def _answer(self, instances, respond, started: float):
        from kserve.errors import InvalidInput
        from kserve.metrics import POST_HIST_TIME, PRE_HIST_TIME, PREDICT_HIST_TIME, get_labels

        labels = get_labels(self.model.name)
        PRE_HIST_TIME.labels(**labels).observe(time.perf_counter() - started)
        try:
            with PREDICT_HIST_TIME.labels(**labels).time():
                predictions = await self.model.run_instances(instances)
        except QueueFull as exc:
            return 503, {"error": str(exc)}, [(b"retry-after", b"1")]
        except InvalidInput as exc:  # as kserve's invalid_input_handler
            return 400, {"error": str(exc)}, []
        except Exception as exc:  # noqa: BLE001  (as kserve's generic_exception_handler)
            log.error("Exception:", exc_info=exc)
            return 500, {"error": f"{type(exc).__name__} : {exc}"}, []
        with POST_HIST_TIME.labels(**labels).time():
            return 200, respond(predictions), []


def _plain_json(headers) -> bool:
    """Content-Type application/json and none of the headers kserve decodes specially."""
    content_type = b""
    for name, value in headers:
        name = name.lower()
        if name.startswith(CLOUDEVENT_PREFIX) or name == BINARY_HEADER:
            return False
        if name == b"content-type":
            content_type = value.split(b";")[0].strip().lower()
    return content_type == b"application/json"


def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:  # kserve's route words the refusal
        return None


def _tensors(inputs: Any) -> list[SimpleNamespace] | None:
    """The v2 inputs as (name, shape, datatype, data) when each is plainly typed, else None."""
    if not isinstance(inputs, list):
        return None
    tensors = []
    for tensor in inputs:
        if not isinstance(tensor, dict) or set(tensor) != V2_TENSOR_FIELDS:
            return None
        shape = tensor["shape"]
        plain = (
            isinstance(tensor["name"], str)
            and isinstance(tensor["datatype"], str)
            and isinstance(tensor["data"], list)
            and isinstance(shape, list)
            and all(type(d) is int for d in shape)
        )
        if not plain:
            return None
        tensors.append(SimpleNamespace(**tensor))
    return tensors


async def read_body(receive, limit: int, declared: int | None):
    """(the whole body, a receive that replays it) or (None, a receive that replays what was
    read and goes on) when it is over `limit` or the client left: kserve's side refuses it."""
    chunks: list[bytes] = []
    if declared is None or declared <= limit:
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return None, _replay(chunks, receive, done=False, last=message)
            chunk = message.get("body", b"")
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:
                return None, _replay(chunks, receive, done=False)
            if not message.get("more_body", False):
                return b"".join(chunks), _replay(chunks, receive, done=True)
    return None, _replay(chunks, receive, done=False)


def _replay(chunks: list[bytes], receive, done: bool, last: dict | None = None):
    """A receive that hands back `chunks` (then `last`, then the client's own messages)."""
    pending = [
        {"type": "http.request", "body": chunk, "more_body": not (done and i == len(chunks) - 1)}
        for i, chunk in enumerate(chunks)
    ]
    if last is not None:
        pending.append(last)

    async def replayed() -> dict[str, Any]:
        if pending:
            return pending.pop(0)
        return await receive()

    return replayed


async def _send_json(send, status: int, payload: Any, headers: list[tuple[bytes, bytes]]) -> None:
    """As FastAPI's JSONResponse writes it (a non-finite number is an error, not a token)."""
    try:
        body = json.dumps(payload, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    except ValueError as exc:
        log.error("response not sent: %s", exc)
        status, body, headers = 500, json.dumps({"error": f"ValueError : {exc}"}), []
    await send_json_bytes(send, status, body.encode(), headers)
