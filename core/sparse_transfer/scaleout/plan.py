"""How a training step runs: one process, ``torchrun`` in its pod, or a multi-node TrainJob.

`train_scaled_out` is what `sparse_transfer.pipeline.steps.train_step` calls
when `ScaleOut` asks for more than one process. Both paths end with the same
output directory (model, recipe.yaml, sparsity.json, run_summary.json) that a
single-process run leaves, and return the same summary.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

from sparse_transfer.errors import PipelineError

log = logging.getLogger(__name__)

SUMMARY_NAME = "run_summary.json"
NODE_OUTPUT_DIR = "/tmp/sparse-transfer-output"  # noqa: S108 - inside the node's own pod
SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
# Flags whose values are local artifact paths that nodes in other pods cannot see.
_DIR_FLAGS = ("--model_name_or_path", "--distill_teacher")
_FILE_FLAGS = ("--train_file", "--validation_file", "--test_file")


@dataclass(frozen=True)
class ScaleOut:
    """The accelerator settings of a training step.

    Attributes:
        num_nodes: pods; > 1 runs a Kubeflow Trainer TrainJob.
        nproc_per_node: processes per pod (GPUs per pod); > 1 runs torchrun.
        accelerator_type / accelerator_limit: GPUs per node for a TrainJob's pods.
        work_uri: s3:// prefix where a TrainJob's inputs and output are staged.
        image: the image TrainJob nodes run (the pipeline's own).
        namespace: TrainJob namespace (default: this pod's).
        s3_secret: the Secret holding the S3 keys, mounted into the nodes.
    """

    num_nodes: int = 1
    nproc_per_node: int = 1
    accelerator_type: str = ""
    accelerator_limit: int = 0
    work_uri: str = ""
    image: str = ""
    namespace: str = ""
    s3_secret: str = ""

    def __post_init__(self) -> None:
        if self.num_nodes < 1 or self.nproc_per_node < 1:
            raise PipelineError(
                f"num_nodes and nproc_per_node must be >= 1, got {self.num_nodes} and "
                f"{self.nproc_per_node}"
            )
        if self.num_nodes > 1:
            missing = [n for n in ("work_uri", "image", "s3_secret") if not getattr(self, n)]
            if missing:
                raise PipelineError(f"num_nodes={self.num_nodes} needs {', '.join(missing)}")
            if not self.work_uri.startswith("s3://"):
                raise PipelineError(
                    f"num_nodes={self.num_nodes} needs an s3:// work_uri that every node can "
                    f"read, got {self.work_uri!r}"
                )

    @property
    def distributed(self) -> bool:
        return self.num_nodes > 1 or self.nproc_per_node > 1


def train_scaled_out(task: str, argv: list[str], output_dir: Path, plan: ScaleOut) -> dict:
    """Runs ``sparse-transfer train TASK ARGV`` as `plan` says; returns the run summary."""
    if plan.num_nodes > 1:
        _train_on_trainjob(task, argv, output_dir, plan)
    else:
        from sparse_transfer.scaleout.torchrun import run_torchrun

        run_torchrun(plan.nproc_per_node, task, argv)
    summary_path = output_dir / SUMMARY_NAME
    if not summary_path.is_file():
        raise PipelineError(f"distributed training finished without {summary_path}")
    return json.loads(summary_path.read_text())


def stage_inputs(argv: list[str], work_uri: str) -> list[str]:
    """Uploads the local model/teacher dirs, data files and recipe in `argv`; returns argv on s3://.

    Each goes to ``WORK/inputs/<flag>/`` with a manifest. A zoo-stub recipe is
    resolved here, where the step's zoo root is set, so the nodes need no zoo
    configuration; built-in recipe names and YAML strings pass as they are.
    """
    from sparse_transfer import storage
    from sparse_transfer.zoo import resolve

    out = list(argv)
    with tempfile.TemporaryDirectory(prefix="sparse-transfer-stage-") as tmp:
        for i, arg in enumerate(argv[:-1]):
            value = argv[i + 1]
            uri = f"{work_uri}/inputs/{arg.lstrip('-')}"
            if arg in _DIR_FLAGS and Path(value).is_dir():
                storage.upload_dir(value, uri)
                out[i + 1] = uri
                continue
            if arg == "--recipe":
                value = resolve(value, "recipe")
            elif arg not in _FILE_FLAGS:
                continue
            path = Path(value)
            if path.is_file():
                folder = Path(tmp) / arg.lstrip("-")
                folder.mkdir()
                shutil.copy2(path, folder / path.name)  # upload this file alone, not its folder
                storage.upload_dir(folder, uri)
                out[i + 1] = f"{uri}/{path.name}"
    return out


def _namespace(plan: ScaleOut) -> str:
    if plan.namespace:
        return plan.namespace
    if SERVICE_ACCOUNT_NAMESPACE.is_file():
        return SERVICE_ACCOUNT_NAMESPACE.read_text().strip()
    raise PipelineError("no namespace for the TrainJob: not in a pod and none given")


def node_argv(task: str, argv: list[str], work_uri: str) -> list[str]:
    """The node entry's arguments: output to the pod's disk, published to ``WORK/output``."""
    out = list(argv)
    i = out.index("--output_dir")
    out[i + 1] = NODE_OUTPUT_DIR
    return ["--output_uri", f"{work_uri}/output", task, *out]


def _train_on_trainjob(task: str, argv: list[str], output_dir: Path, plan: ScaleOut) -> None:
    from sparse_transfer import storage
    from sparse_transfer.scaleout.trainjob import TrainJobRequest, follow_trainjob

    work = plan.work_uri.rstrip("/")
    request = TrainJobRequest(
        name=f"sparse-transfer-{uuid.uuid4().hex[:12]}",
        namespace=_namespace(plan),
        image=plan.image,
        num_nodes=plan.num_nodes,
        nproc_per_node=plan.nproc_per_node,
        node_args=node_argv(task, stage_inputs(argv, work), work),
        s3_secret=plan.s3_secret,
        accelerator_type=plan.accelerator_type,
        accelerator_limit=plan.accelerator_limit,
    )
    follow_trainjob(request)
    storage.download_dir(f"{work}/output", output_dir, overwrite=True)
