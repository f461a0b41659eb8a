"""Start kserve's REST server for one deployment (the ``sparse-transfer serve`` command).

kserve's `ModelServer` holds the model registry and data plane (health, metadata,
v1/v2 inference, ``/metrics``); its ``start`` binds 0.0.0.0 and wants the model
loaded first, so we start kserve's `RESTServer` on a socket we bind ourselves
(127.0.0.1 locally, 0.0.0.0 in a pod) and load the model on a thread meanwhile:
``/v2/health/ready`` and inference answer 503 until it is ready. A deployment that
cannot load stops the server: ``serve`` ends with one line and exit code 2 instead
of answering 503 forever. Only inference, health, metadata and metrics are exposed
(`guards`: no model-repository load/unload unless asked, bodies bounded). uvicorn runs
`FastInfer` in front of kserve's app: well-formed inference requests skip kserve's FastAPI
stack, everything else reaches it unchanged (`fast_infer`).
"""

from __future__ import annotations

import logging
import signal
import socket
import sys
import threading
from pathlib import Path
from typing import Any

from sparse_transfer.serving.options import ServeOptions

log = logging.getLogger(__name__)


def model_name(folder: Path, report: dict[str, Any], options: ServeOptions) -> str:
    """--model_name, else the task (``text-classification``)."""
    return options.model_name or str(report["task"])


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.set_inheritable(True)
    return sock


def _exit_on_sigterm() -> None:
    """SIGTERM becomes SystemExit, so that shutdown code runs.

    uvicorn catches SIGINT/SIGTERM for a graceful shutdown, then restores the
    previous handlers and re-raises the signals (uvicorn/server.py,
    ``Server.capture_signals``); with SIGTERM's default action the process would die
    there, skipping ``finally`` and ``atexit`` (and a DeepSparse worker's close).
    """
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda signum, _frame: sys.exit(128 + signum))


def _rest_server(server, model, sock: socket.socket, options: ServeOptions):
    """kserve's RESTServer with our guards (body limit, no repository routes unless asked),
    behind `FastInfer`, the short path for well-formed inference requests."""
    from kserve import model_server as kserve_model_server
    from kserve.protocol.rest.server import RESTServer

    from sparse_transfer.serving.fast_infer import FastInfer
    from sparse_transfer.serving.guards import BodyLimit, NoRepository

    class GuardedRESTServer(RESTServer):
        def _add_middlewares(self, app) -> None:
            super()._add_middlewares(app)
            app.add_middleware(BodyLimit, limit=options.max_request_bytes)
            if not options.enable_model_repository:
                app.add_middleware(NoRepository)  # added last: the outermost

    if options.enable_model_repository:
        log.warning(
            "--enable_model_repository: POST /v2/repository/models/NAME/load|unload is open to "
            "anyone who reaches this port (no authentication); keep it behind a trusted proxy"
        )
    return GuardedRESTServer(
        FastInfer(kserve_model_server.app, model, options.max_request_bytes),
        server.dataplane,
        server.model_repository_extension,
        sock.getsockname()[1],
        workers=1,
    )


def serve(folder: Path, report: dict[str, Any], options: ServeOptions) -> None:
    """Blocks serving `folder` until SIGINT/SIGTERM.

    Raises:
        ServingError: the deployment could not be loaded (the server stops first).
    """
    from fastapi.responses import JSONResponse
    from kserve import ModelServer
    from kserve import model_server as kserve_model_server

    from sparse_transfer.serving.batching import QueueFull
    from sparse_transfer.serving.engines import select_engine
    from sparse_transfer.serving.guards import all_models_ready
    from sparse_transfer.serving.options import ServingError
    from sparse_transfer.serving.predictor import DeploymentModel

    select_engine(options.engine)  # refuse an engine that cannot run before listening
    sock = bind(options.host, options.http_port)
    model = DeploymentModel(folder, report, options, model_name(folder, report, options))
    server = ModelServer(
        http_port=sock.getsockname()[1], enable_grpc=False, workers=1, enable_docs_url=False
    )
    server.register_model(model)
    server.dataplane.ready = all_models_ready(server.dataplane.model_registry)

    async def queue_full(_request, exc: QueueFull):
        return JSONResponse({"error": str(exc)}, status_code=503, headers={"Retry-After": "1"})

    kserve_model_server.app.add_exception_handler(QueueFull, queue_full)
    rest = _rest_server(server, model, sock, options)
    _exit_on_sigterm()

    def load() -> None:
        if not model.load():
            rest._server.should_exit = True  # uvicorn's Server: stop serving, return from run

    threading.Thread(target=load, name="load-deployment", daemon=True).start()
    log.info("listening on http://%s:%d (model %r)", *sock.getsockname()[:2], model.name)
    try:
        rest.run(sockets=[sock])
    finally:
        model.stop()  # engines holding a process (the DeepSparse worker) release it
        log.info("stopped")
    if model.load_error is not None:
        raise ServingError(f"{folder}: the deployment cannot be loaded: {model.load_error}")
