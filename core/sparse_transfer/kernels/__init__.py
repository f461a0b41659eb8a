"""Native sparse int8 kernels for ONNX Runtime: the op contract (`spec`), the library."""
