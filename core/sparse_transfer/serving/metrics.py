"""Prometheus metrics of our own, beside kserve's request_*_seconds histograms.

They land in prometheus_client's default registry, which kserve's ``/metrics`` serves.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

BATCH_SIZE = Histogram(
    "sparse_transfer_batch_instances",
    "Instances per engine call (adaptive batching of concurrent requests)",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128),
)
QUEUE_DEPTH = Gauge(
    "sparse_transfer_queue_instances", "Instances waiting for the engine after the last batch"
)
REJECTED = Counter(
    "sparse_transfer_rejected_requests",
    "Requests refused with 503 because the queue was full",
    ["model_name"],
)


def observe_batch(size: int, waiting: int) -> None:
    BATCH_SIZE.observe(size)
    QUEUE_DEPTH.set(waiting)
