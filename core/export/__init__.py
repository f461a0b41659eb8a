"""ONNX export (FP32, int8 from QAT), verification, runtime and benchmark.

`export_onnx` writes a verified deployment folder; `OnnxModel` runs one;
`benchmark` measures one.
"""

from sparse_transfer.export.benchmark import benchmark, compare
from sparse_transfer.export.deployment import FORMATS, export_onnx
from sparse_transfer.export.runtime import OnnxModel

__all__ = ["FORMATS", "OnnxModel", "benchmark", "compare", "export_onnx"]
