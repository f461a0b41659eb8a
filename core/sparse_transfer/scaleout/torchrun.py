"""One node, several processes: ``torchrun --nproc_per_node N -m sparse_transfer train ...``.

The only place training argv is assembled as strings: the run crosses a process
boundary (torchrun starts N fresh interpreters), so a command line is the interface.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys

from sparse_transfer.errors import PipelineError

log = logging.getLogger(__name__)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on at this moment."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def torchrun_command(nproc_per_node: int, task: str, train_argv: list[str]) -> list[str]:
    """The command that runs ``sparse-transfer train TASK ARGV`` on `nproc_per_node` processes.

    The rendezvous stays on loopback, on a port free right now, so several
    steps on one node never collide and nothing listens beyond the pod.
    """
    if nproc_per_node < 1:
        raise PipelineError(f"nproc_per_node must be >= 1, got {nproc_per_node}")
    return [
        sys.executable, "-m", "torch.distributed.run", "--nnodes", "1",
        "--nproc_per_node", str(nproc_per_node),
        "--master_addr", "127.0.0.1", "--master_port", str(free_port()),
        "-m", "sparse_transfer", "train", task, *train_argv,
    ]  # fmt: skip


def run_torchrun(nproc_per_node: int, task: str, train_argv: list[str]) -> None:
    """Runs the command and raises `PipelineError` with its exit status when it fails.

    Output goes straight to this process's stdout/stderr (the step's log).
    ``OMP_NUM_THREADS`` is left to torchrun, which sets 1 per process unless given.
    """
    command = torchrun_command(nproc_per_node, task, train_argv)
    log.info("running %s", " ".join(command[:8]) + " ...")
    result = subprocess.run(command, env=dict(os.environ), check=False)  # noqa: S603
    if result.returncode != 0:
        raise PipelineError(
            f"torchrun with {nproc_per_node} processes failed with exit status "
            f"{result.returncode} (see the step log above for the failing rank)"
        )
