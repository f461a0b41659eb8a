"""Is this deployment's int8 variant exact on the CPU we run on? (local stand-in)

The real check is ``sparse_transfer.export.cpu_features.int8_variant_is_exact_here``
(being written on another branch); this shim applies the same rule from
/work/shared design facts so `verify.py` has one call site to swap:

ONNX Runtime's u8 x s8 integer matmul sums int16 pairs without VNNI and saturates
with full-range s8 weights (98.8% of MatMulInteger outputs wrong on an AVX2 CPU);
7-bit weights (-64..63) or uint8 weights are exact everywhere, any weights are
exact with VNNI (AVX-512 VNNI or AVX-VNNI).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

EXACT_EVERYWHERE = {"uint8", "u8u8", "s7", "int7"}


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str]:
    """The flags of the first CPU in /proc/cpuinfo (empty when unreadable)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def int8_variant_is_exact_here(
    report: dict[str, Any], flags: set[str] | None = None
) -> tuple[bool, str]:
    """(ok, why) for the report's ``int8`` section on this CPU (or on `flags`)."""
    int8 = report.get("int8")
    if not int8:
        return True, "float deployment: no integer matmuls"
    variant = str(int8.get("variant") or "").lower()
    bits = int8.get("weight_bits")
    if variant in EXACT_EVERYWHERE or (bits is not None and int(bits) <= 7):
        return True, f"int8 variant {variant or f'{bits}-bit weights'} is exact on every CPU"
    flags = cpu_flags() if flags is None else flags
    vnni = sorted(f for f in flags if f in {"avx512_vnni", "avx_vnni"})
    if vnni:
        return True, f"full-range int8 weights with {', '.join(vnni)}: exact"
    return False, (
        f"full-range int8 weights (variant {variant or 'unrecorded'}, weight_bits "
        f"{bits if bits is not None else 'unrecorded'}) need VNNI, which this CPU lacks "
        "(u8 x s8 products saturate); re-export with 7-bit or uint8 weights"
    )
