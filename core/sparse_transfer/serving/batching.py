"""Adaptive batching: concurrent requests share one engine call, behind a bounded queue.

A request's instances are never split between batches (its answer is one piece);
a batch takes waiting requests until it holds `max_batch_size` instances or the
first one has waited `max_latency_s`. The engine runs on worker threads, so
the event loop keeps accepting requests (and answering health checks) meanwhile.
Past `max_queue` waiting instances a request is refused at once (`QueueFull`, a
503 with Retry-After) instead of waiting without bound.

With several runners (``serve --engine_workers``), that many batches run at once:
batches still form one at a time, and the next one forms while the engine runs
the previous (TensorFlow Serving's ``num_batch_threads``; its batching guide,
tensorflow/serving/batching/README.md, advises one per core on CPUs). Each runner
is used by one worker only, so its tokenizer is never called from two threads.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any


class QueueFull(RuntimeError):
    """More instances are waiting than the queue holds."""


@dataclass
class _Job:
    items: list[Any]
    future: asyncio.Future = field(repr=False)


Runner = Callable[[list[Any]], list[Any]]


class AdaptiveBatcher:
    """`await submit(items)` -> results of ``run_batch(items of several requests)``;
    `runners` is one such callable, or one per concurrent batch."""

    def __init__(
        self,
        runners: Runner | Sequence[Runner],
        max_batch_size: int,
        max_latency_s: float,
        max_queue: int,
        on_batch: Callable[[int, int], None] | None = None,
    ) -> None:
        self.runners = list(runners) if isinstance(runners, Sequence) else [runners]
        self.max_batch_size = max_batch_size
        self.max_latency_s = max_latency_s
        self.max_queue = max_queue
        self.on_batch = on_batch  # (instances in the batch, instances still waiting)
        self.waiting = 0  # instances queued, not yet handed to the engine
        self.batches = 0  # engine calls so far (for tests and metrics)
        self._queue: asyncio.Queue[_Job] | None = None
        self._held: _Job | None = None  # a request that did not fit the previous batch
        self._forming: asyncio.Lock | None = None  # one batch forms at a time
        self._workers: list[asyncio.Task] = []
        self._executor = concurrent.futures.ThreadPoolExecutor(
            len(self.runners), "sparse-transfer-engine"
        )

    async def submit(self, items: list[Any]) -> list[Any]:
        if self.waiting + len(items) > self.max_queue:
            raise QueueFull(
                f"{self.waiting} instances are waiting and the queue holds {self.max_queue} "
                "(--max_queue); retry later"
            )
        loop = asyncio.get_running_loop()
        if self._queue is None:  # created in the server's loop, on first use
            self._queue, self._forming = asyncio.Queue(), asyncio.Lock()
            self._workers = [loop.create_task(self._work(run)) for run in self.runners]
        job = _Job(list(items), loop.create_future())
        self.waiting += len(job.items)
        self._queue.put_nowait(job)
        return await job.future

    async def _next_batch(self) -> list[_Job]:
        assert self._queue is not None
        first, self._held = self._held, None
        jobs = [first if first is not None else await self._queue.get()]
        size = len(jobs[0].items)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_latency_s
        while size < self.max_batch_size:
            if not self._queue.empty():
                nxt = self._queue.get_nowait()
            else:
                timeout = deadline - loop.time()
                if timeout <= 0:
                    break
                try:
                    nxt = await asyncio.wait_for(self._queue.get(), timeout)
                except asyncio.TimeoutError:
                    break
            if size + len(nxt.items) > self.max_batch_size:
                self._held = nxt  # whole requests stay together: it opens the next batch
                break
            jobs.append(nxt)
            size += len(nxt.items)
        return jobs

    async def _work(self, run_batch: Runner) -> None:
        loop = asyncio.get_running_loop()
        assert self._forming is not None
        while True:
            async with self._forming:
                jobs = await self._next_batch()
            items = [item for job in jobs for item in job.items]
            self.waiting -= len(items)
            try:
                results = await loop.run_in_executor(self._executor, run_batch, items)
            except Exception as exc:  # noqa: BLE001  (handed to the request that caused it)
                if len(jobs) == 1:
                    if not jobs[0].future.done():
                        jobs[0].future.set_exception(exc)
                    continue
                # one request broke a shared batch: rerun each alone so only it fails
                for job in jobs:
                    try:
                        alone = await loop.run_in_executor(self._executor, run_batch, job.items)
                    except Exception as own:  # noqa: BLE001
                        if not job.future.done():
                            job.future.set_exception(own)
                    else:
                        if not job.future.done():
                            job.future.set_result(alone)
                self.batches += len(jobs)
                continue
            self.batches += 1
            if self.on_batch is not None:
                self.on_batch(len(items), self.waiting)
            start = 0
            for job in jobs:
                end = start + len(job.items)
                if not job.future.done():
                    job.future.set_result(results[start:end])
                start = end
