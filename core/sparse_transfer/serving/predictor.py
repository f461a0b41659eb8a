"""`DeploymentModel`: the kserve `Model` that serves one deployment folder.

kserve calls ``preprocess -> predict -> postprocess`` for both the v1 and the v2
REST routes and times each into its Prometheus histograms (``/metrics``). Here
preprocess validates the body into instances (a 400 on anything wrong),
predict hands them to the shared `AdaptiveBatcher`, and the v2 route gets an
`InferResponse` back. ``ready`` stays False until `load` finishes, so health
and inference answer 503 while the model loads.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

from kserve import InferRequest, InferResponse, Model
from kserve.errors import InvalidInput
from kserve.protocol.infer_type import InferOutput

from sparse_transfer.serving import metrics, protocol
from sparse_transfer.serving.batching import AdaptiveBatcher, QueueFull
from sparse_transfer.serving.codecs import InputError
from sparse_transfer.serving.engines import close_engine
from sparse_transfer.serving.load import Loaded, load_deployment
from sparse_transfer.serving.options import ServeOptions

log = logging.getLogger(__name__)

JSON_TYPES = ("application/json", "application/cloudevents+json")


class DeploymentModel(Model):
    def __init__(self, folder, report: dict[str, Any], options: ServeOptions, name: str) -> None:
        super().__init__(name)
        self.folder = folder
        self.report = report
        self.options = options
        self.loaded: Loaded | None = None
        self.batcher: AdaptiveBatcher | None = None
        self.load_error: str | None = None
        self.ready = False

    def load(self) -> bool:
        """Loads tokenizer, config and engine (minutes for a big graph: readiness waits)."""
        start = time.perf_counter()
        try:
            self.loaded = load_deployment(self.folder, self.report, self.options)
        except Exception as exc:  # noqa: BLE001  (kept for the log; the model stays unready)
            self.load_error = f"{type(exc).__name__}: {exc}"
            log.error("loading %s failed: %s", self.folder, self.load_error)
            return False
        self.batcher = AdaptiveBatcher(
            self.loaded.runners(self.options.engine_workers),
            self.options.max_batch_size,
            self.options.max_latency_ms / 1000.0,
            self.options.max_queue,
            on_batch=metrics.observe_batch,
        )
        self.ready = True
        log.info(
            "model %r ready (%s, %s engine) in %.1f s",
            self.name,
            self.loaded.codec.task,
            self.loaded.engine_name,
            time.perf_counter() - start,
        )
        return True

    def stop(self) -> None:
        """kserve's teardown hook; the server calls it on shutdown (a DeepSparse worker exits)."""
        super().stop()
        if self.loaded is not None:
            close_engine(self.loaded.engine)

    def get_input_types(self) -> list[dict[str, Any]]:
        """``/v2/models/{name}`` metadata: one BYTES input per accepted field."""
        fields = self.loaded.codec.fields if self.loaded else ()
        return [{"name": f, "datatype": "BYTES", "shape": [-1]} for f in fields]

    def get_output_types(self) -> list[dict[str, Any]]:
        if self.loaded is None:
            return []
        typed = self.loaded.codec.typed_outputs
        return [{"name": "prediction", "datatype": "BYTES", "shape": [-1]}] + [
            {"name": name, "datatype": datatype, "shape": [-1]} for name, datatype in typed
        ]

    async def preprocess(self, payload, headers: dict[str, str] | None = None):
        assert self.loaded is not None  # kserve answers 503 before this while not ready
        content_type = (headers or {}).get("content-type", "").split(";")[0].strip().lower()
        try:
            if content_type not in JSON_TYPES:
                raise InputError(
                    f"Content-Type {content_type or '(none)'!r} is not accepted: send "
                    "application/json"
                )
            if isinstance(payload, InferRequest):
                rows = protocol.v2_instances(payload, self.loaded.codec.fields)
            else:
                rows = protocol.v1_instances(payload)
            instances = self.loaded.codec.check_all(rows)
        except InputError as exc:
            raise InvalidInput(str(exc)) from None
        return {
            "instances": instances,
            "v2": payload if isinstance(payload, InferRequest) else None,
        }

    async def predict(self, payload, headers=None, response_headers=None):
        predictions = await self.run_instances(payload["instances"])
        request = payload["v2"]
        if request is None:
            return {"predictions": predictions}
        return self.v2_response(predictions, request.id)

    async def run_instances(self, instances: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Checked instances -> predictions, through the shared batcher (also `FastInfer`'s)."""
        assert self.batcher is not None
        try:
            return await self.batcher.submit(instances)
        except QueueFull:
            metrics.REJECTED.labels(model_name=self.name).inc()
            raise
        except InputError as exc:  # e.g. a question that leaves no room for the context
            raise InvalidInput(str(exc)) from None

    def v2_response(self, predictions: list[dict[str, Any]], request_id: str | None):
        outputs = [
            InferOutput(name=o["name"], shape=o["shape"], datatype=o["datatype"], data=o["data"])
            for o in protocol.v2_outputs(self.loaded.codec.typed_outputs, predictions)
        ]
        return InferResponse(
            model_name=self.name, infer_outputs=outputs, response_id=request_id or str(uuid.uuid4())
        )
