"""ONNX export (FP32, int8 from QAT), verification and benchmark.

`export_onnx` writes a verified deployment folder; `benchmark` measures one;
`sparse_transfer.runtime.OnnxModel` runs one.
"""

from sparse_transfer.export.benchmark import benchmark, compare
from sparse_transfer.export.deployment import FORMATS, export_onnx

__all__ = ["FORMATS", "benchmark", "compare", "export_onnx"]
