"""Adaptive batching, the bounded queue, option checks and the int8-on-this-CPU rule."""

from __future__ import annotations

import asyncio
import threading

import pytest

from sparse_transfer.serving.batching import AdaptiveBatcher, QueueFull
from sparse_transfer.serving.options import ServeOptions, ServingError


def test_concurrent_requests_share_one_engine_call_and_keep_their_order():
    calls: list[list[int]] = []

    def run(items):
        calls.append(list(items))
        return [i * 10 for i in items]

    async def scenario():
        batcher = AdaptiveBatcher(run, max_batch_size=8, max_latency_s=0.2, max_queue=64)
        results = await asyncio.gather(
            batcher.submit([1, 2]), batcher.submit([3]), batcher.submit([4, 5, 6])
        )
        return results, batcher.batches

    results, batches = asyncio.run(scenario())
    assert results == [[10, 20], [30], [40, 50, 60]]
    assert batches == 1 and calls == [[1, 2, 3, 4, 5, 6]]


def test_a_request_is_never_split_and_batches_respect_the_size():
    calls: list[list[int]] = []

    def run(items):
        calls.append(list(items))
        return list(items)

    async def scenario():
        batcher = AdaptiveBatcher(run, max_batch_size=4, max_latency_s=0.2, max_queue=64)
        return await asyncio.gather(
            batcher.submit([1, 2, 3]), batcher.submit([4, 5]), batcher.submit([6])
        )

    assert asyncio.run(scenario()) == [[1, 2, 3], [4, 5], [6]]
    assert calls == [[1, 2, 3], [4, 5, 6]]  # [4, 5] did not fit beside [1, 2, 3]


def test_batching_off_runs_each_request_alone():
    calls: list[list[int]] = []

    def run(items):
        calls.append(list(items))
        return list(items)

    async def scenario():
        batcher = AdaptiveBatcher(run, max_batch_size=1, max_latency_s=0.0, max_queue=64)
        return await asyncio.gather(*(batcher.submit([i]) for i in range(4)))

    assert asyncio.run(scenario()) == [[0], [1], [2], [3]]
    assert calls == [[0], [1], [2], [3]]


def test_full_queue_refuses_at_once_and_recovers():
    release = threading.Event()

    def run(items):
        release.wait(5)
        return list(items)

    async def scenario():
        batcher = AdaptiveBatcher(run, max_batch_size=2, max_latency_s=0.0, max_queue=2)
        first = asyncio.ensure_future(batcher.submit([1, 2]))  # taken by the engine
        await asyncio.sleep(0.05)
        queued = asyncio.ensure_future(batcher.submit([3, 4]))  # waits: queue now full
        await asyncio.sleep(0.01)
        with pytest.raises(QueueFull, match="--max_queue"):
            await batcher.submit([5])
        assert batcher.waiting == 2
        release.set()
        done = await asyncio.gather(first, queued)
        after = await batcher.submit([6])
        return done, after, batcher.waiting

    done, after, waiting = asyncio.run(scenario())
    assert done == [[1, 2], [3, 4]] and after == [6] and waiting == 0


def test_an_engine_error_fails_only_the_request_that_caused_it():
    calls: list[list[int]] = []

    def run(items):
        calls.append(list(items))
        if 0 in items:
            raise RuntimeError("engine broke on 0")
        return list(items)

    async def scenario():
        batcher = AdaptiveBatcher(run, max_batch_size=8, max_latency_s=0.2, max_queue=64)
        return await asyncio.gather(
            batcher.submit([5]), batcher.submit([0]), batcher.submit([7, 8]), return_exceptions=True
        )

    good, bad, other = asyncio.run(scenario())
    assert good == [5] and other == [7, 8]
    assert isinstance(bad, RuntimeError) and "engine broke on 0" in str(bad)
    assert calls == [[5, 0, 7, 8], [5], [0], [7, 8]]  # the shared batch, then each alone


@pytest.mark.parametrize(
    "kwargs,words",
    [
        ({"engine": "tensorrt"}, "engine 'tensorrt'"),
        ({"max_batch_size": 0}, "max_batch_size 0"),
        ({"max_latency_ms": float("nan")}, "max_latency_ms nan"),
        ({"max_queue": 4, "max_instances": 8}, "max_queue 4 is smaller"),
        ({"multi_label_threshold": 1.0}, "multi_label_threshold 1.0"),
        ({"engine_workers": 0}, "engine_workers 0: must be 1..64"),
        ({"engine_workers": 65}, "engine_workers 65: must be 1..64"),
        ({"engine_workers": 2, "engine": "deepsparse"}, "DeepSparse serves one batch at a time"),
    ],
)
def test_bad_options_are_refused_together(kwargs, words):
    with pytest.raises(ServingError, match="invalid serve options") as info:
        ServeOptions(**kwargs)
    assert words in str(info.value)


def test_engine_workers_run_batches_at_once_each_on_its_own_runner():
    """Two runners: the second batch forms and runs while the first is still in its engine
    call (a barrier both must reach), and each runner only ever runs on one worker."""
    barrier = threading.Barrier(2, timeout=5)
    seen: dict[int, set[int]] = {0: set(), 1: set()}

    def runner(index):
        def run(items):
            seen[index].add(threading.get_ident())
            barrier.wait()  # BrokenBarrierError unless the other batch runs meanwhile
            return [(index, i) for i in items]

        return run

    async def scenario():
        batcher = AdaptiveBatcher(
            [runner(0), runner(1)], max_batch_size=1, max_latency_s=0.0, max_queue=64
        )
        return await asyncio.gather(batcher.submit([1]), batcher.submit([2]))

    results = asyncio.run(scenario())
    assert sorted(r[0][1] for r in results) == [1, 2]
    assert {r[0][0] for r in results} == {0, 1}  # one batch on each runner
    assert all(len(threads) == 1 for threads in seen.values())


def test_one_runner_runs_one_batch_at_a_time():
    active, peak = [0], [0]
    lock = threading.Lock()

    def run(items):
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        threading.Event().wait(0.02)
        with lock:
            active[0] -= 1
        return list(items)

    async def scenario():
        batcher = AdaptiveBatcher(run, max_batch_size=1, max_latency_s=0.0, max_queue=64)
        return await asyncio.gather(*(batcher.submit([i]) for i in range(4)))

    assert asyncio.run(scenario()) == [[0], [1], [2], [3]]
    assert peak[0] == 1


@pytest.mark.parametrize(
    "threads,workers,cores,quota,want",
    [(None, 1, 8, None, None), (3, 2, 8, None, 3), (None, 2, 8, None, 4), (None, 4, 2, None, 1),
     (None, 1, 2, 2.0, 2), (5, 1, 2, 2.0, 5)],
)  # fmt: skip
def test_engine_threads_share_out_the_usable_cores(
    monkeypatch, threads, workers, cores, quota, want
):
    """ONNX Runtime's default (None) only for one worker and no CPU quota; under a quota,
    the usable cores (tests below) even for one."""
    from sparse_transfer.serving import load

    monkeypatch.setattr(load, "usable_cores", lambda: cores)
    monkeypatch.setattr(load, "cfs_quota", lambda: quota)
    options = ServeOptions(threads=threads, engine_workers=workers)
    assert load.engine_threads(options) == want


@pytest.mark.parametrize(
    "files,affinity,want",
    [
        ({"cpu.max": "200000 100000\n"}, 64, 2),  # cgroup v2, a 2-CPU pod limit
        ({"cpu.max": "150000 100000\n"}, 64, 2),  # 1.5 CPUs: rounded up
        ({"cpu.max": "max 100000\n"}, 8, 8),  # unlimited
        ({"cpu/cpu.cfs_quota_us": "400000", "cpu/cpu.cfs_period_us": "100000"}, 64, 4),  # v1
        ({"cpu/cpu.cfs_quota_us": "-1", "cpu/cpu.cfs_period_us": "100000"}, 8, 8),
        ({"cpu.max": "800000 100000\n"}, 2, 2),  # a cpuset smaller than the quota
        ({}, 6, 6),  # no cgroup files readable
    ],
)
def test_usable_cores_honour_a_pods_cpu_limit(tmp_path, monkeypatch, files, affinity, want):
    from sparse_transfer.runtime import cores

    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    monkeypatch.setattr(cores.os, "sched_getaffinity", lambda pid: set(range(affinity)))
    assert cores.usable_cores(tmp_path) == want
