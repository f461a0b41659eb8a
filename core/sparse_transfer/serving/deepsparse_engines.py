"""The two DeepSparse engines the server can run: in this process, or in a worker.

DeepSparse compiles one input shape, so both pad every batch to the compiled
[batch, length] and cut the outputs back (`_padded`, `_unpadded`). The worker
runs `deepsparse_runner.py serve` in the interpreter DeepSparse lives in
(DeepSparse 1.8 pins onnx 1.14 / numpy 1.26, so usually its own venv).
"""

from __future__ import annotations

import collections
import io
import json
import logging
import os
import select
import subprocess
import tempfile
import threading
import time
import weakref
from pathlib import Path
from typing import NoReturn

import numpy as np

from sparse_transfer.export import deepsparse_runner as runner
from sparse_transfer.serving.options import ServingError

log = logging.getLogger(__name__)


def _graph_outputs(model_path: Path) -> tuple[list[str], set[str]]:
    """(output names, those with a ``sequence`` axis): per-token outputs are cut back to
    the batch's own width after padding, so they have the shape ONNX Runtime returns."""
    import onnx

    graph = onnx.load(str(model_path), load_external_data=False).graph
    per_token = {
        o.name
        for o in graph.output
        if len(o.type.tensor_type.shape.dim) > 1
        and o.type.tensor_type.shape.dim[1].dim_param == "sequence"  # export's dynamic axis
    }
    return [o.name for o in graph.output], per_token


def _unpadded(outputs: dict[str, np.ndarray], per_token: set[str], n: int, width: int):
    return {k: v[:n, :width] if k in per_token else v[:n] for k, v in outputs.items()}


def _padded(
    features: dict[str, np.ndarray], names: list[str], batch: int, length: int
) -> tuple[int, dict[str, np.ndarray]]:
    """DeepSparse compiles one shape: zero-pad every input to [batch, length] (mask 0)."""
    n, width = features["input_ids"].shape
    if n > batch or width > length:
        raise ServingError(f"batch {n}x{width} exceeds the compiled {batch}x{length}")
    padded = {}
    for name in names:
        x = np.zeros((batch, length), dtype=np.int64)
        x[:n, :width] = features[name]
        padded[name] = x
    return n, padded


class DeepSparseEngine:
    """DeepSparse in this process; batches are padded to (`max_batch`, `length`)."""

    def __init__(self, folder: Path, threads: int | None, max_batch: int, length: int) -> None:
        self.batch, self.length = max_batch, length
        self._tmp = tempfile.TemporaryDirectory(prefix="sparse-transfer-serve-")
        self.input_names = runner.input_names(folder / "model.onnx")
        self.engine = runner.compile_engine(
            folder / "model.onnx", max_batch, length, threads, Path(self._tmp.name)
        )
        self.output_names, self._per_token = _graph_outputs(folder / "model.onnx")

    def __call__(self, features: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        n, padded = _padded(features, self.input_names, self.batch, self.length)
        outputs = self.engine.run([padded[name] for name in self.input_names])
        outputs = {o: np.asarray(v) for o, v in zip(self.output_names, outputs, strict=True)}
        return _unpadded(outputs, self._per_token, n, features["input_ids"].shape[1])


class DeepSparseWorkerEngine:
    """DeepSparse in a persistent worker of another interpreter (`deepsparse_runner.py serve`).

    The worker compiles the graph once for [`max_batch`, `length`] and answers one
    request frame at a time; a lock keeps calls from several threads from
    interleaving on its pipes. A request DeepSparse rejects fails alone; a worker
    that dies or breaks the protocol fails its request with its stderr's last lines,
    and the next request starts (and waits for) a new one. The worker stops when
    `close` is called, when this object is collected or this interpreter exits
    (`weakref.finalize`), and on its own when its stdin reaches end of file, which is
    also what happens if this process dies without cleaning up: no worker outlives
    the server.
    """

    def __init__(
        self,
        folder: Path,
        python: str,
        threads: int | None,
        max_batch: int,
        length: int,
        ready_timeout_s: float = 900.0,
        call_timeout_s: float = 300.0,
        command: list[str] | None = None,
    ) -> None:
        self.python = python
        self.batch, self.length = max_batch, length
        self.call_timeout_s = call_timeout_s
        self.input_names = runner.input_names(folder / "model.onnx")
        self.output_names, self._per_token = _graph_outputs(folder / "model.onnx")
        if command is None:  # tests pass their own worker to exercise the error paths
            command = [python, runner.__file__, "serve", str(folder / "model.onnx")]
            command += ["--batch", str(max_batch), "--sequence_length", str(length)]
            command += ["--threads", str(threads)] if threads else []
        self._command, self._ready_timeout_s = command, ready_timeout_s
        self._lock = threading.Lock()
        self._closed = False
        self._start()

    def _start(self) -> None:
        """Starts the worker and waits for its ready line (ServingError, worker stopped, if not)."""
        self._gone: str | None = None  # why the worker cannot answer any more
        self._stderr: collections.deque[str] = collections.deque(maxlen=30)
        self._buffer = b""
        try:
            self.proc = subprocess.Popen(
                self._command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, bufsize=0, close_fds=True,
            )  # fmt: skip
        except OSError as exc:
            self._gone = f"it could not start ({exc})"
            raise ServingError(
                f"cannot start DeepSparse's interpreter {self.python}: {exc}"
            ) from None
        self._finalizer = weakref.finalize(self, _stop_worker, self.proc)
        self._stderr_thread = threading.Thread(
            target=_drain_stderr, args=(self.proc.stderr, self._stderr, self.proc.pid),
            name=f"deepsparse-worker-{self.proc.pid}-stderr", daemon=True,
        )  # fmt: skip
        self._stderr_thread.start()
        line = self._read_line(time.monotonic() + self._ready_timeout_s, "its ready line")
        try:
            facts = json.loads(line)
        except ValueError:
            self._fail(f"it printed {line[:200]!r} instead of its JSON ready line")
        if not isinstance(facts, dict) or facts.get("ready") is not True:
            self._fail(f"its first line {line[:200]!r} is not a ready line")
        self.facts = facts
        log.info(
            "DeepSparse worker pid %d ready in %s: %s",
            self.proc.pid, self.python, json.dumps(facts, sort_keys=True),
        )  # fmt: skip

    @property
    def pid(self) -> int:
        return self.proc.pid

    def __call__(self, features: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        n, padded = _padded(features, self.input_names, self.batch, self.length)
        request = runner.pack_arrays(padded)
        with self._lock:
            if self._closed:
                raise ServingError("the DeepSparse engine is closed")
            if self._gone:  # it died (a crash in the engine): one new worker per request
                log.warning("restarting the DeepSparse worker: %s", self._gone)
                self._finalizer()
                self._start()
            try:
                _write_all(self.proc.stdin, runner.HEADER.pack(runner.DATA, len(request)) + request)
            except (BrokenPipeError, OSError, ValueError) as exc:
                self._fail(f"writing a request failed ({type(exc).__name__})")
            kind, payload = self._read_frame(time.monotonic() + self.call_timeout_s)
        if kind == runner.ERROR:
            raise ServingError(f"DeepSparse worker: {payload.decode(errors='replace')}")
        try:
            outputs = runner.unpack_arrays(payload)
        except runner.FrameError as exc:
            raise ServingError(f"DeepSparse worker: bad reply: {exc}") from None
        if sorted(outputs) != sorted(self.output_names):
            raise ServingError(
                f"DeepSparse worker replied {sorted(outputs)}, expected {self.output_names}"
            )
        width = features["input_ids"].shape[1]
        return _unpadded({o: outputs[o] for o in self.output_names}, self._per_token, n, width)

    def close(self, timeout_s: float = 10.0) -> None:
        """End of file on the worker's stdin (a clean exit), then terminate, then kill."""
        self._closed = True
        self._finalizer.detach()
        held = self._lock.acquire(timeout=timeout_s)  # let a call in flight finish first
        try:
            _stop_worker(self.proc, timeout_s)
        finally:
            if held:
                self._lock.release()
        log.info(
            "DeepSparse worker pid %d stopped (exit status %s)", self.pid, self.proc.returncode
        )

    # -- reading the worker's stdout with a deadline -------------------------------------

    def _read_line(self, deadline: float, what: str) -> str:
        while b"\n" not in self._buffer:
            self._buffer += self._read_some(deadline, what)
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line.decode(errors="replace")

    def _read_frame(self, deadline: float) -> tuple[bytes, bytes]:
        header = self._read_exact(runner.HEADER.size, deadline, "a reply")
        try:
            kind, size = runner.parse_header(header)
        except runner.FrameError as exc:
            self._fail(f"malformed reply frame: {exc}")
        return kind, self._read_exact(size, deadline, "a reply")

    def _read_exact(self, size: int, deadline: float, what: str) -> bytes:
        while len(self._buffer) < size:
            self._buffer += self._read_some(deadline, what)
        data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data

    def _read_some(self, deadline: float, what: str) -> bytes:
        fd = self.proc.stdout.fileno()
        left = deadline - time.monotonic()
        try:
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                self._fail(f"no {what} within the time limit")
            chunk = os.read(fd, 1 << 20)
        except (OSError, ValueError) as exc:  # closed under us
            self._fail(f"reading {what} failed ({type(exc).__name__}: {exc})")
        if not chunk:
            self.proc.wait()
            self._fail(f"it exited with status {self.proc.returncode} before {what}")
        return chunk

    def _fail(self, why: str) -> NoReturn:
        """The worker cannot be trusted any more: stop it and raise, naming what it said."""
        self._gone = why
        _stop_worker(self.proc, 0.2)
        self._stderr_thread.join(timeout=1.0)  # its last lines, up to the pipe's end
        tail = "\n".join(self._stderr) or "(nothing on stderr)"
        raise ServingError(
            f"DeepSparse worker ({self.python}, pid {self.proc.pid}): {why}; its stderr ends:\n"
            f"{tail}"
        )


def _write_all(pipe, data: bytes) -> None:
    """An unbuffered pipe's write may take only part of the data."""
    view = memoryview(data)
    while view:
        view = view[pipe.write(view) :]


def _stop_worker(proc: subprocess.Popen, timeout_s: float = 10.0) -> None:
    """Close stdin (the worker's cue to exit), then escalate if it does not."""
    if proc.poll() is None:
        try:
            proc.stdin.close()
        except OSError:
            pass
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    for pipe in (proc.stdin, proc.stdout):
        try:
            pipe.close()
        except OSError:
            pass


def _drain_stderr(stream, tail: collections.deque, pid: int) -> None:
    """Keeps the worker's stderr pipe from filling; its lines go to the log and the tail."""
    for raw in io.BufferedReader(stream):
        line = raw.decode(errors="replace").rstrip()
        if line:
            tail.append(line)
            log.info("deepsparse worker %d: %s", pid, line)
