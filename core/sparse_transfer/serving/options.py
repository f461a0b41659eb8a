"""`ServeOptions`: everything `sparse-transfer serve` can be told, validated in one place."""

from __future__ import annotations

import math
from dataclasses import dataclass

from sparse_transfer.errors import SparseTransferError
from sparse_transfer.tasks.flags import FLAGS, check_value

ENGINES = ("auto", "onnxruntime", "onnxruntime-sparse", "deepsparse")
MAX_ENGINE_WORKERS = 64


class ServingError(SparseTransferError):
    """A deployment that must not be served, or serve options that make no sense."""


@dataclass(frozen=True)
class ServeOptions:
    """How the server batches, bounds and decodes.

    Attributes:
        model_name: the name in ``/v2/models/{name}`` (default: the deployment folder's task).
        host / http_port: where to listen; ``127.0.0.1`` locally, ``0.0.0.0`` in a pod.
        engine: ``auto`` (ONNX Runtime: the sparse graph with the kernel library when it
            can run here, else the standard graph), ``onnxruntime``, ``onnxruntime-sparse``
            or ``deepsparse`` (`sparse_transfer.runtime.engines`).
        threads: intra-op threads of each engine call (default: the usable cores, a pod's
            CPU limit included, shared out between the engine workers; ONNX Runtime's own
            default for one worker when no CPU limit applies).
        engine_workers: batches run at once (default 1). On a CPU-bound server, one per core
            with one thread each keeps every core busy where a single batch at a time leaves
            them idle while the next batch forms; ONNX Runtime engines only.
        max_batch_size: instances run together; concurrent requests are merged up to it.
        max_latency_ms: how long the first request of a batch waits for company.
        max_queue: instances waiting at most; beyond it requests get 503 (retry later).
        max_instances: instances one request may carry.
        max_text_chars: longest accepted text field (characters), a 400 beyond.
        max_seq_length: tokens per input (default: the export's, else the task's default);
            longer texts are truncated and the prediction says so, as `evaluate` does.
        multi_label_threshold: multi-label text classification cut-off on sigmoid scores.
        doc_stride / n_best_size / max_answer_length / version_2_with_negative /
        null_score_diff_threshold: question answering post-processing, as `evaluate`'s flags.
        max_request_bytes: largest request body read; beyond it a 413, before parsing.
        enable_model_repository: expose kserve's unauthenticated model-repository
            load/unload routes (off: anyone reaching the port could unload the model).
    """

    model_name: str | None = None
    host: str = "127.0.0.1"
    http_port: int = 8080
    engine: str = "auto"
    threads: int | None = None
    engine_workers: int = 1
    max_batch_size: int = 8
    max_latency_ms: float = 5.0
    max_queue: int = 256
    max_instances: int = 64
    max_text_chars: int = 20_000
    max_seq_length: int | None = None
    multi_label_threshold: float = 0.5
    doc_stride: int | None = None
    n_best_size: int = 20
    max_answer_length: int = 30
    version_2_with_negative: bool = False
    null_score_diff_threshold: float = 0.0
    max_request_bytes: int = 4 * 1024 * 1024
    enable_model_repository: bool = False

    def __post_init__(self) -> None:
        problems = []
        if self.engine not in ENGINES:
            problems.append(f"engine {self.engine!r}: choose one of {', '.join(ENGINES)}")
        if not 0 <= self.http_port <= 65535:
            problems.append(f"http_port {self.http_port}: must be 0..65535")
        for name in ("max_batch_size", "max_queue", "max_instances", "max_text_chars",
                     "max_request_bytes"):  # fmt: skip
            if getattr(self, name) < 1:
                problems.append(f"{name} {getattr(self, name)}: must be >= 1")
        if self.max_queue < self.max_instances:
            problems.append(
                f"max_queue {self.max_queue} is smaller than max_instances {self.max_instances}: "
                "a full-size request could never be queued"
            )
        if not (math.isfinite(self.max_latency_ms) and self.max_latency_ms >= 0):
            problems.append(f"max_latency_ms {self.max_latency_ms}: must be a finite value >= 0")
        if self.threads is not None and self.threads < 1:
            problems.append(f"threads {self.threads}: must be >= 1")
        if not 1 <= self.engine_workers <= MAX_ENGINE_WORKERS:
            problems.append(
                f"engine_workers {self.engine_workers}: must be 1..{MAX_ENGINE_WORKERS}"
            )
        elif self.engine_workers > 1 and self.engine == "deepsparse":
            problems.append(
                f"engine_workers {self.engine_workers}: DeepSparse serves one batch at a time; "
                "use 1 (or an ONNX Runtime engine)"
            )
        for name in ("max_seq_length", "doc_stride"):  # the schema's limits, as train's
            value = getattr(self, name)
            problem = check_value(FLAGS[name], value) if value is not None else None
            if problem:
                problems.append(f"{name} {problem}")
        if not (0.0 < self.multi_label_threshold < 1.0):
            problems.append(
                f"multi_label_threshold {self.multi_label_threshold}: must be in (0, 1)"
            )
        if not math.isfinite(self.null_score_diff_threshold):
            problems.append("null_score_diff_threshold must be finite")
        for name in ("n_best_size", "max_answer_length"):
            if getattr(self, name) < 1:
                problems.append(f"{name} {getattr(self, name)}: must be >= 1")
        if problems:
            raise ServingError("invalid serve options: " + "; ".join(problems))
