"""Data-parallel helpers: who am I, and the few collectives the recipe needs.

Under ``torchrun`` the HF Trainer (through accelerate) starts the default
process group and wraps the model in DDP, which averages gradients. What DDP
does not know about is recipe state computed *outside* its gradient path:
oBS's empirical Fisher (from gradients the trainer samples itself, on each
rank's own mini-batches) and masks chosen from weights. The helpers here make
the first global and check the second. (QAT observer ranges are made global
inside the observer, `sparse_transfer.quantization.fake_quant`, which sits on
a floor below this one and so uses ``torch.distributed`` directly.) Every function is a
no-op (returns its input) in a single process or when no process group is
initialised, so callers never branch on "am I distributed".

Collectives must be called by every rank in the same order; every caller in
this project does so from code all ranks run in lockstep (training steps,
observer forwards, mask updates).
"""

from __future__ import annotations

import hashlib

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    """True when a default process group with more than one rank is running."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's global rank (0 when not distributed)."""
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    """Number of processes in the default group (1 when not distributed)."""
    return dist.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    """True on the one process that writes shared outputs (rank 0, or a lone process)."""
    return rank() == 0


def barrier() -> None:
    """Waits for every rank (no-op when not distributed)."""
    if is_distributed():
        dist.barrier()


def _collective_device(tensor: torch.Tensor) -> torch.device:
    # NCCL only moves CUDA tensors, gloo only CPU ones: follow the backend.
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_(tensor: torch.Tensor, op: str = "sum") -> torch.Tensor:
    """Reduces `tensor` in place across ranks (``sum``, ``mean``, ``min`` or ``max``).

    Returns the tensor (reduced) so calls chain; unchanged when not distributed.
    """
    if not is_distributed():
        return tensor
    ops = {
        "sum": dist.ReduceOp.SUM,
        "mean": dist.ReduceOp.SUM,
        "min": dist.ReduceOp.MIN,
        "max": dist.ReduceOp.MAX,
    }
    if op not in ops:
        raise ValueError(f"unknown reduction {op!r}; expected one of {sorted(ops)}")
    device = _collective_device(tensor)
    work = tensor.detach().to(device)
    dist.all_reduce(work, op=ops[op])
    if op == "mean":
        work.div_(dist.get_world_size())
    if work is not tensor:
        with torch.no_grad():
            tensor.copy_(work.to(tensor.device))
    return tensor


def average_gradients_(params: list[torch.nn.Parameter]) -> None:
    """Replaces each ``.grad`` by its mean over ranks (one flat all-reduce per dtype).

    What DDP does for training steps, for backward passes made outside DDP (the
    oBS gradient sampler): each rank's gradient of its shard becomes the
    gradient of the global batch, exactly as one process with that batch sees it.
    """
    if not is_distributed():
        return
    by_dtype: dict[torch.dtype, list[torch.Tensor]] = {}
    for p in params:
        if p.grad is not None:
            by_dtype.setdefault(p.grad.dtype, []).append(p.grad)
    for grads in by_dtype.values():
        flat = torch.cat([g.detach().reshape(-1) for g in grads])
        all_reduce_(flat, "mean")
        offset = 0
        with torch.no_grad():
            for g in grads:
                g.copy_(flat[offset : offset + g.numel()].view_as(g))
                offset += g.numel()


def tensors_digest(tensors: list[torch.Tensor]) -> str:
    """SHA-256 over the tensors' raw bytes: equal digests mean bitwise-equal tensors."""
    h = hashlib.sha256()
    for t in tensors:
        data = t.detach().to("cpu").contiguous()
        h.update(str(data.dtype).encode() + str(tuple(data.shape)).encode())
        h.update(data.view(torch.uint8).numpy().tobytes() if data.numel() else b"")
    return h.hexdigest()


def assert_same_on_all_ranks(tensors: list[torch.Tensor], what: str) -> str:
    """Checks that every rank holds bitwise-identical `tensors`; returns their digest.

    Under DDP the weights start from rank 0's broadcast and take identical
    averaged steps, and everything the recipe derives from them (magnitude
    masks, oBS masks from all-reduced gradients, weight scales) is computed
    deterministically from identical inputs, so ranks *must* agree. We check
    rather than broadcast rank 0's copy: a disagreement means a replica
    trained on something else, and hiding it would ship a model no rank saw.

    Raises:
        RuntimeError: the ranks disagree (names `what` and each rank's digest).
    """
    digest = tensors_digest(tensors)
    if not is_distributed():
        return digest
    digests: list[str | None] = [None] * dist.get_world_size()
    dist.all_gather_object(digests, digest)
    if len(set(digests)) != 1:
        per_rank = ", ".join(f"rank {i}: {d[:12]}" for i, d in enumerate(digests))
        raise RuntimeError(
            f"{what} differ between data-parallel ranks ({per_rank}); the replicas diverged"
        )
    return digest
