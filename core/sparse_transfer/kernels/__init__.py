"""Native sparse int8 kernels for ONNX Runtime: the op contract (`spec`), the library.

`kernel_status()` says whether the custom-op library (built from ``csrc/`` by
``python -m sparse_transfer.kernels.build``) runs here and which CPU path it takes;
`register_library(options)` adds it to an ``onnxruntime.SessionOptions``.
"""

from sparse_transfer.kernels.library import KernelStatus, kernel_status, register_library

__all__ = ["KernelStatus", "kernel_status", "register_library"]
