"""KFP v2 components: one module per pipeline step, each a thin wrapper over `sparse_transfer.pipeline.steps`.

Components import kfp at module level and the library only inside their
function bodies (the function body is what runs in the container).
"""

from components.benchmark_point import benchmark_point
from components.configure_training import configure_training
from components.deploy_serving import deploy_serving
from components.evaluate import evaluate
from components.evaluate_upstream import evaluate_upstream
from components.export_onnx import export_onnx
from components.fetch_corpus import fetch_corpus
from components.fetch_data import fetch_data
from components.fetch_model import fetch_model
from components.frontier_transfer import frontier_transfer
from components.pick_deployment import pick_deployment
from components.prune_upstream import prune_upstream
from components.publish import publish
from components.publish_upstream import publish_upstream
from components.sparse_transfer_step import sparse_transfer
from components.teacher import teacher
from components.teacher_label import teacher_label
from components.train_teacher import train_teacher

__all__ = [
    "benchmark_point",
    "configure_training",
    "deploy_serving",
    "evaluate",
    "evaluate_upstream",
    "export_onnx",
    "fetch_corpus",
    "fetch_data",
    "fetch_model",
    "frontier_transfer",
    "pick_deployment",
    "prune_upstream",
    "publish",
    "publish_upstream",
    "sparse_transfer",
    "teacher",
    "teacher_label",
    "train_teacher",
]
