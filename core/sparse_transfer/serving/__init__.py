"""Serving a deployment folder over KServe's Open Inference Protocol (v2) and v1 REST.

``sparse-transfer serve DEPLOYMENT`` = `resolve_deployment` (manifest-verified,
report-checked) + `serve` (kserve RESTServer, adaptive batching, /metrics).
`inference_service` builds the KServe InferenceService that runs the same
command on a cluster. kserve itself is imported only inside this package.
"""

from __future__ import annotations

from typing import Any

from sparse_transfer.serving.options import ENGINES, ServeOptions, ServingError

__all__ = ["ENGINES", "ServeOptions", "ServingError", "resolve_deployment", "serve"]


def __getattr__(name: str) -> Any:
    # Lazy: importing the package must not import kserve, onnxruntime or transformers.
    if name == "resolve_deployment":
        from sparse_transfer.serving.load import resolve_deployment

        return resolve_deployment
    if name == "serve":
        from sparse_transfer.serving.server import serve

        return serve
    raise AttributeError(name)
