"""Which CPUs compute an int8 deployment exactly: CPU flags, an ONNX Runtime probe, a verdict.

ONNX Runtime's x86 integer GEMM (MLAS) multiplies uint8 activations by int8
weights with ``vpmaddubsw`` on CPUs without VNNI (AVX2, and AVX-512 without
VNNI): it adds two u8*s8 products in int16 and saturates
(onnxruntime/core/mlas/lib/amd64/SymQgemmU8KernelAvx512.asm,
``MultiplyAccumulateCellU8S8Avx512Core`` vs ``...Avx512Vnni``). VNNI
(``vpdpbusd``), AMX, the SSE4.1 kernels (16-bit widening) and arm64 dot products
accumulate in int32 and are exact. So a deployment is exact on every CPU when
``2 * 255 * max|w| <= 32767``, i.e. ``max|w| <= 64``: the 7-bit weights QAT
trains by default. A full-range deployment is exact only where the kernel does
not saturate; `int8_variant_is_exact_here` says whether this machine is one.

Measured (README, "int8 on every CPU"): full-range weights gave 100% wrong
``MatMulInteger`` outputs for some shapes under ``qemu-x86_64 -cpu Haswell``
and none under ``-cpu Nehalem`` or natively on AVX-512 VNNI; 7-bit weights and
the uint8 (zero point 128) attention operands were exact under all three.
"""

from __future__ import annotations

import functools
import platform
from pathlib import Path
from typing import Any

INT16_MAX = 32767
ACTIVATION_MAX = 255  # uint8 QuantizeLinear output: what the graph can feed a MatMulInteger
EXACT_WEIGHT_MAX = INT16_MAX // (2 * ACTIVATION_MAX)  # 64
VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")  # /proc/cpuinfo names (Linux)
REPRESENTATIONS = {
    "7bit-weights": "Linear weights in [-63, 63] (default): exact on every CPU",
    "full-range": "Linear weights in [-127, 127]: exact only with VNNI/AMX, without AVX2, "
    "or on arm64; wrong on AVX2 and AVX-512 without VNNI",
}


def cpu_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> frozenset[str]:
    """The first CPU's feature flags (x86 ``flags``, arm ``Features``); empty if unreadable."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def _is_x86(machine: str | None = None) -> bool:
    return (machine or platform.machine()).lower() in ("x86_64", "amd64", "i386", "i686")


def isa(flags: frozenset[str] | None = None, machine: str | None = None) -> str:
    """A short name of the integer-matmul ISA: "AVX-512 VNNI", "AVX2 (no VNNI)", "arm64"..."""
    flags = cpu_flags() if flags is None else flags
    machine = machine or platform.machine()
    if not _is_x86(machine):
        return machine
    if "amx_int8" in flags:
        return "AMX-INT8"
    if "avx512_vnni" in flags:
        return "AVX-512 VNNI"
    if "avx_vnni" in flags:
        return "AVX-VNNI"
    if "avx512bw" in flags:
        return "AVX-512 (no VNNI)"
    if "avx2" in flags:
        return "AVX2 (no VNNI)"
    if "sse4_1" in flags:
        return "SSE4.x"
    return "x86-64 (no SSE4.1)"


def u8s8_saturates(flags: frozenset[str] | None = None, machine: str | None = None) -> bool:
    """True where a u8 x s8 integer matmul kernel adds product pairs in int16 (by flags)."""
    flags = cpu_flags() if flags is None else flags
    if not _is_x86(machine):
        return False
    return "avx2" in flags and not any(f in flags for f in VNNI_FLAGS)


@functools.lru_cache(maxsize=1)
def ort_u8s8_saturates() -> bool:
    """Asks ONNX Runtime itself: does its u8 x s8 ``MatMulInteger`` saturate on this CPU?

    /proc/cpuinfo can mislead (an emulator such as qemu-user shows the host's
    flags); one 2x2 @ 2x1 product with 255 * 127 * 2 > 32767 cannot.
    """
    import numpy as np
    import onnxruntime as ort
    from onnx import TensorProto, helper

    nodes = [helper.make_node("MatMulInteger", ["a", "b"], ["y"])]
    graph = helper.make_graph(
        nodes,
        "probe",
        [
            helper.make_tensor_value_info("a", TensorProto.UINT8, [None, 32]),
            helper.make_tensor_value_info("b", TensorProto.INT8, [32, 8]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.INT32, [None, 8])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    a = np.full((4, 32), 255, dtype=np.uint8)
    b = np.full((32, 8), 127, dtype=np.int8)
    got = session.run(None, {"a": a, "b": b})[0]
    return bool((got != a.astype(np.int64) @ b.astype(np.int64)).any())


def representation(linear_weight_max_abs: int | None) -> dict[str, Any]:
    """The report entry for a deployment whose u8 x s8 weights reach `linear_weight_max_abs`."""
    if linear_weight_max_abs is None:  # no u8 x s8 matmul at all
        linear_weight_max_abs = 0
    exact = linear_weight_max_abs <= EXACT_WEIGHT_MAX
    name = "7bit-weights" if exact else "full-range"
    return {
        "name": name,
        "description": REPRESENTATIONS[name],
        "linear_weight_max_abs": int(linear_weight_max_abs),
        "activation_max": ACTIVATION_MAX,
        "max_int16_pair_sum": 2 * ACTIVATION_MAX * int(linear_weight_max_abs),
        "exact_on_every_cpu": exact,
    }


def int8_variant_is_exact_here(
    report: dict[str, Any], engine: str = "onnxruntime"
) -> tuple[bool, str]:
    """(exact, reason): does this machine compute the deployment `report` describes exactly?

    `report` is a deployment's ``export_report.json``. FP32 and 7-bit-weight
    deployments are exact everywhere. A full-range one (or an int8 report from
    before the representation was recorded: those were full range) is exact
    only where the kernel does not saturate: for ONNX Runtime that is asked of
    ONNX Runtime (`ort_u8s8_saturates`), for other engines read from the flags.
    """
    int8 = report.get("int8") if report.get("quantized") else None
    if not int8:
        return True, "FP32 deployment: no integer matmuls"
    rep = int8.get("representation") or representation(EXACT_WEIGHT_MAX + 1)
    if rep["exact_on_every_cpu"]:
        return True, f"int8 {rep['name']}: exact on every CPU"
    if engine == "onnxruntime-sparse":
        # kernels/csrc/kernels_x86.cc: vpdpbusd (VNNI) is exact for any int8; the
        # pmaddubsw paths take exact scalar rows for weights beyond +-64
        return True, (
            f"int8 {rep['name']} deployment: the sparse kernel library is exact on every CPU "
            "(rows with |weights| > 64 take its exact scalar path without VNNI)"
        )
    here = isa()
    saturates = ort_u8s8_saturates() if engine == "onnxruntime" else u8s8_saturates()
    if saturates:
        return False, (
            f"int8 {rep['name']} deployment (|weights| up to {rep['linear_weight_max_abs']}) "
            f"on a CPU without VNNI ({here}): {engine}'s u8 x s8 kernel saturates, outputs "
            "are wrong here. Run it on a CPU with VNNI/AMX, or re-train with the default "
            "QuantizationModifier reduce_weight_range: true (7-bit weights, exact everywhere)"
        )
    return True, f"int8 {rep['name']} deployment: exact on this CPU ({here})"
