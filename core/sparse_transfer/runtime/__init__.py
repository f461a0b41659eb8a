"""Running an exported deployment on this CPU: the ONNX Runtime session and the int8 rules.

Below `export`, `tasks` and `serving`, which all run deployments (parity,
evaluation, serving), so none of them needs another to do it.
"""

from sparse_transfer.runtime.cpu_features import int8_variant_is_exact_here, isa
from sparse_transfer.runtime.onnx_model import OnnxModel

__all__ = ["OnnxModel", "int8_variant_is_exact_here", "isa"]
