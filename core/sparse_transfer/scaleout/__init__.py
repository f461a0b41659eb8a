"""Scale-out training: ``torchrun`` inside one pod, Kubeflow Trainer ``TrainJob`` across pods.

- `plan`: `ScaleOut` (a step's num_nodes / nproc_per_node / accelerator
  settings) and `train_scaled_out`, which the training step calls.
- `torchrun`: `torchrun_command`, `run_torchrun` (one node, N processes).
- `trainjob`: `TrainJobRequest`, `build_trainjob`, `trainjob_outcome`,
  `follow_trainjob` (many nodes, through Kubeflow Trainer v2).
- `node`: the entry point each TrainJob process runs
  (``python -m sparse_transfer.cli.trainjob_node``).

Correctness of the training itself under data parallelism lives in
`sparse_transfer.training.distributed`.
"""

from sparse_transfer.scaleout.plan import ScaleOut, train_scaled_out
from sparse_transfer.scaleout.torchrun import run_torchrun, torchrun_command
from sparse_transfer.scaleout.trainjob import (
    TRAINER_VERSION,
    TrainJobRequest,
    build_trainjob,
    follow_trainjob,
    trainjob_outcome,
)

__all__ = [
    "TRAINER_VERSION",
    "ScaleOut",
    "TrainJobRequest",
    "build_trainjob",
    "follow_trainjob",
    "run_torchrun",
    "torchrun_command",
    "train_scaled_out",
    "trainjob_outcome",
]
