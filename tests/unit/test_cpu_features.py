"""CPU flags -> ISA name, the saturation rule, the report's representation, the verdict."""

from __future__ import annotations

import json

import pytest

from sparse_transfer.errors import ExportError
from sparse_transfer.runtime import cpu_features as cf

ZEN4 = "fpu sse4_1 sse4_2 avx avx2 avx512f avx512bw avx512_vnni avx512_bf16"
HASWELL = "fpu sse4_1 sse4_2 avx avx2 fma"
SKYLAKE_SP = "fpu sse4_1 sse4_2 avx avx2 avx512f avx512bw"
ALDER_LAKE = "fpu sse4_1 sse4_2 avx avx2 avx_vnni"
NEHALEM = "fpu sse4_1 sse4_2"


def _flags(tmp_path, flags: str, key: str = "flags"):
    path = tmp_path / "cpuinfo"
    path.write_text(f"processor\t: 0\nmodel name\t: test\n{key}\t\t: {flags}\n\nprocessor\t: 1\n")
    return cf.cpu_flags(path)


@pytest.mark.parametrize(
    ("flags", "name", "saturates"),
    [
        (ZEN4, "AVX-512 VNNI", False),
        (HASWELL, "AVX2 (no VNNI)", True),
        (SKYLAKE_SP, "AVX-512 (no VNNI)", True),
        (ALDER_LAKE, "AVX-VNNI", False),
        (NEHALEM, "SSE4.x", False),
    ],
)
def test_isa_and_saturation_from_cpuinfo_flags(tmp_path, flags, name, saturates):
    parsed = _flags(tmp_path, flags)
    assert parsed == frozenset(flags.split())
    assert cf.isa(parsed, machine="x86_64") == name
    assert cf.u8s8_saturates(parsed, machine="x86_64") is saturates


def test_arm64_dot_products_do_not_saturate(tmp_path):
    parsed = _flags(tmp_path, "fp asimd asimddp i8mm", key="Features")
    assert "asimddp" in parsed
    assert cf.isa(parsed, machine="aarch64") == "aarch64"
    assert cf.u8s8_saturates(parsed, machine="aarch64") is False


def test_unreadable_cpuinfo_gives_no_flags(tmp_path):
    assert cf.cpu_flags(tmp_path / "missing") == frozenset()


def test_representation_boundary_is_the_int16_pair_sum():
    # 2 * 255 * 64 = 32640 fits int16; 2 * 255 * 65 = 33150 does not
    assert cf.EXACT_WEIGHT_MAX == 64
    seven = cf.representation(63)
    assert seven["name"] == "7bit-weights" and seven["exact_on_every_cpu"]
    assert seven["max_int16_pair_sum"] == 2 * 255 * 63 <= 32767
    assert cf.representation(64)["exact_on_every_cpu"]
    full = cf.representation(127)
    assert full["name"] == "full-range" and not full["exact_on_every_cpu"]
    assert full["max_int16_pair_sum"] == 64770


def _report(max_abs: int | None) -> dict:
    int8 = {"representation": cf.representation(max_abs)} if max_abs is not None else {}
    return {"quantized": True, "int8": int8 or {"initializers": {}}}


def test_verdict_fp32_and_7bit_are_exact_everywhere(monkeypatch):
    monkeypatch.setattr(cf, "ort_u8s8_saturates", lambda: True)  # even on a saturating CPU
    assert cf.int8_variant_is_exact_here({"quantized": False, "int8": None})[0]
    ok, reason = cf.int8_variant_is_exact_here(_report(63))
    assert ok and "every CPU" in reason


def test_verdict_full_range_depends_on_the_kernel(monkeypatch):
    monkeypatch.setattr(cf, "ort_u8s8_saturates", lambda: True)
    ok, reason = cf.int8_variant_is_exact_here(_report(127))
    assert not ok and "without VNNI" in reason and "reduce_weight_range" in reason
    # a report from before the representation was recorded: full range, judged the same
    assert not cf.int8_variant_is_exact_here(_report(None))[0]
    monkeypatch.setattr(cf, "ort_u8s8_saturates", lambda: False)
    assert cf.int8_variant_is_exact_here(_report(127))[0]


def test_verdict_sparse_kernels_are_exact_for_full_range(monkeypatch):
    """The sparse library widens |w| > 64 rows to its exact scalar path (issue 22)."""
    monkeypatch.setattr(cf, "ort_u8s8_saturates", lambda: True)
    monkeypatch.setattr(cf, "u8s8_saturates", lambda *a: True)
    ok, reason = cf.int8_variant_is_exact_here(_report(127), engine="onnxruntime-sparse")
    assert ok and "sparse kernel library is exact on every CPU" in reason
    assert not cf.int8_variant_is_exact_here(_report(127), engine="deepsparse")[0]


def test_onnxruntime_probe_agrees_with_this_hosts_flags():
    """The probe asks ONNX Runtime; natively it must agree with /proc/cpuinfo."""
    import platform

    if platform.machine() != "x86_64" or not cf.cpu_flags():
        pytest.skip("needs an x86-64 Linux host")
    assert cf.ort_u8s8_saturates() is cf.u8s8_saturates()


def test_onnx_model_refuses_a_full_range_deployment_on_a_saturating_cpu(tmp_path, monkeypatch):
    from sparse_transfer.runtime.onnx_model import OnnxModel

    (tmp_path / "model.onnx").write_bytes(b"not read: the check comes first")
    (tmp_path / "export_report.json").write_text(json.dumps(_report(127)))
    monkeypatch.setattr(cf, "ort_u8s8_saturates", lambda: True)
    with pytest.raises(ExportError, match="without VNNI"):
        OnnxModel(tmp_path)
