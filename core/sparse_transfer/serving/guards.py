"""What the server exposes, and how much it reads: only inference, health, metadata, metrics.

kserve 0.21 registers its model-repository extension unconditionally
(kserve/protocol/rest/v2_endpoints.py, ``register_v2_endpoints``:
``POST /v2/repository/models/{name}/load|unload``, no authentication): anyone who
reaches the port could unload the model until a restart. `NoRepository`
answers 404 on those paths unless the operator asks for them (``--enable_model_repository``).

`BodyLimit` is a pure ASGI middleware that refuses a request body over the limit
with a 413 before anything parses it: at once by Content-Length, and by counting
for chunked bodies that carry none; at most `limit` bytes are ever held.

`all_models_ready` is the Open Inference Protocol's server readiness ("server ready:
every model is ready"; kserve's DataPlane.ready returns True regardless).
"""

from __future__ import annotations

import json
from typing import Any

REPOSITORY_PREFIX = "/repository/"


class NoRepository:
    """ASGI middleware: the model-repository extension's paths answer 404 before routing.

    A gate in front of the app, not a route removed from it: FastAPI keeps included
    routers behind internal wrappers whose layout changes between releases.
    """

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and REPOSITORY_PREFIX in scope.get("path", ""):
            await _answer(
                send, 404, "the model repository extension (load/unload) is off; start serve "
                "with --enable_model_repository to expose it",
            )  # fmt: skip
            return
        await self.app(scope, receive, send)


def all_models_ready(registry):
    """An async ``DataPlane.ready`` replacement: True only when every model is ready."""

    async def ready() -> bool:
        models = registry.get_models()
        return bool(models) and all(getattr(m, "ready", False) for m in models.values())

    return ready


class BodyLimit:
    """ASGI middleware: request bodies over `limit` bytes get 413, never reach the app."""

    def __init__(self, app, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = content_length(scope)
        if declared is not None and declared > self.limit:
            await self._refuse(send, declared)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:  # a chunked body: stop reading at the limit
                await self._refuse(send, None)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        sent = False

        async def replay() -> dict[str, Any]:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, send, declared: int | None) -> None:
        said = f" (Content-Length {declared})" if declared is not None else ""
        message = (
            f"request body larger than {self.limit} bytes{said}; send fewer instances per request"
        )
        await _answer(send, 413, message)


async def _answer(send, status: int, message: str) -> None:
    """A JSON ``{"error": message}`` response that closes the connection."""
    payload = json.dumps({"error": message}).encode()
    await send_json_bytes(send, status, payload, [(b"connection", b"close")])


async def send_json_bytes(send, status: int, body: bytes, headers=()) -> None:
    """An ASGI ``application/json`` response of `body` (already encoded), with `headers`."""
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def content_length(scope) -> int | None:
    for name, value in scope.get("headers") or []:
        if name.lower() == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
