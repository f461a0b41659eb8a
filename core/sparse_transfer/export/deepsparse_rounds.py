"""DeepSparse's rounds of `benchmark.compare`, one at a time, interleaved with ONNX Runtime's.

DeepSparse lives in its own interpreter (`deepsparse_runner.py rounds`, compiled once). Run in
a phase of its own after the ONNX Runtime rounds, its ratios carried whatever load the
machine had in that phase: on the shared 2-core host, DeepSparse's BERT-base time moved
between 11.8 and 17.4 ms across three such runs while ours held. Here every ONNX Runtime
round is followed by one DeepSparse round, so load falls on both alike.
"""

from __future__ import annotations

import json
import selectors
import subprocess
import tempfile
from pathlib import Path
from typing import Any

#: Compiling every model (DeepSparse takes seconds to minutes per graph) / one round.
COMPILE_TIMEOUT_S = 900.0
ROUND_TIMEOUT_S = 300.0


def failure_cause(output: str) -> str:
    """The lines of a failed DeepSparse process's output that say why, joined."""
    text = output.strip().splitlines()
    # DeepSparse aborts with "Assertion at FILE:LINE" and a long native backtrace
    cause = [t for t in text if "Assertion at" in t or "Error" in t][:2] or text[-3:]
    return " | ".join(cause)


class DeepSparseRounds:
    """A `deepsparse_runner.py rounds` worker: `step()` times one round of every model."""

    def __init__(self, command: list[str], paths: dict[str, Path]) -> None:
        self._paths = paths
        self.python = command[0]
        self._stderr = tempfile.TemporaryFile()
        self._proc = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr, text=True
        )
        self.failure: str | None = None
        self.rounds_s: dict[str, list[list[float]]] = {name: [] for name in paths}
        self.facts: dict[str, dict[str, Any]] = {}
        try:
            ready = self._message(COMPILE_TIMEOUT_S, "compiling")
            self.facts = {n: ready["facts"][str(p)] for n, p in paths.items()}
        except RuntimeError as exc:
            self._fail(str(exc))

    def step(self) -> None:
        """One round (each model `iterations` times); after a failure, nothing."""
        if self.failure:
            return
        try:
            self._proc.stdin.write("round\n")
            self._proc.stdin.flush()
            times = self._message(ROUND_TIMEOUT_S, "a round")
        except (RuntimeError, OSError) as exc:
            self._fail(str(exc))
            return
        for name, path in self._paths.items():
            self.rounds_s[name].append(times[str(path)])

    def close(self) -> None:
        """Ends the worker (``end``, then a kill if it does not exit)."""
        if self._proc.poll() is None:
            try:
                self._proc.stdin.write("end\n")
                self._proc.stdin.close()
                self._proc.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                self._proc.kill()
                self._proc.wait()
        self._stderr.close()

    def _message(self, timeout_s: float, what: str) -> dict[str, Any]:
        with selectors.DefaultSelector() as selector:
            selector.register(self._proc.stdout, selectors.EVENT_READ)
            if not selector.select(timeout_s):
                raise RuntimeError(f"no answer within {timeout_s:.0f} s while {what}")
        line = self._proc.stdout.readline()
        if not line:
            raise RuntimeError(f"exit {self._proc.wait()} while {what}: {self._stderr_cause()}")
        message = json.loads(line)
        if "error" in message:
            raise RuntimeError(message["error"])
        return message

    def _stderr_cause(self) -> str:
        self._stderr.seek(0)
        return failure_cause(self._stderr.read().decode(errors="replace"))

    def _fail(self, why: str) -> None:
        self.failure = why
        if self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
