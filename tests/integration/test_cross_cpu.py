"""The tiny int8 deployments give the QAT model's answers on every CPU ONNX Runtime runs on.

Each task's tiny 90%-sparse model is QAT-prepared (default: 7-bit Linear weights),
calibrated and exported here; the fake-quantized torch model's outputs on sample inputs
are saved next to the deployment. `cross_cpu_runner.py` (numpy + onnxruntime only) then
runs every deployment natively and under qemu-user's emulated CPUs: Haswell (AVX2, no
VNNI: ONNX Runtime's u8 x s8 kernel adds products in saturating int16) and Nehalem
(SSE4.2: 16-bit widening kernels). A full-range deployment (``reduce_weight_range``
off) rides along as the control: it must be right natively (this host has VNNI) and
under Nehalem, wrong under Haswell, and `int8_variant_is_exact_here` must say so.
Without ``qemu-x86_64`` (``make install`` installs qemu-user where it can) the emulated
runs skip with a reason. With the sparse kernel library built (issue 22), each 7-bit
deployment's ``model.sparse.onnx`` runs too, the library registered: on every CPU it must
give the QAT model's integers and the standard graph's decisions (the library dispatches
on the emulated CPU's instruction set, so each ``-cpu`` takes another kernel path).
"""

from __future__ import annotations

import json
import platform
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from sparse_transfer.embedded.fixtures import make_tiny_bert
from sparse_transfer.export import export_onnx
from sparse_transfer.export.onnx_export import (
    input_names_for,
    load_for_export,
    sample_inputs,
    torch_outputs,
)
from sparse_transfer.quantization import calibrate, prepare_qat, save_qat_config
from tests.emulated_cpu import QEMU, emulated, venv_python

pytestmark = pytest.mark.integration

TASKS = [
    "text-classification",
    "token-classification",
    "question-answering",
    "masked-language-modeling",
]
FULL_RANGE = "full-range-text-classification"
RUNNER = Path(__file__).with_name("cross_cpu_runner.py")


def _case(root: Path, task: str, name: str, reduce_weight_range: bool, sparsity: float) -> None:
    src = make_tiny_bert(root / "src" / name, task=task, sparsity=sparsity)
    model, tokenizer, spec = load_for_export(src, task)
    prepare_qat(
        model,
        exclude_module_types=["LayerNorm", "Tanh"],
        quantize_embedding_activations=True,
        reduce_weight_range=reduce_weight_range,
    )
    names = input_names_for(model, tokenizer)
    pair = task == "question-answering"
    calibrate(
        model,
        [
            {
                k: torch.from_numpy(v)
                for k, v in sample_inputs(tokenizer, names, 8, 24, s, pair).items()
            }
            for s in range(3)
        ],
    )
    qat = root / "qat" / name
    model.save_pretrained(str(qat))
    tokenizer.save_pretrained(str(qat))
    shutil.copyfile(src / "vocab.txt", qat / "vocab.txt")
    save_qat_config(model, qat)
    case = export_onnx(qat, task, output=root / "cases" / name)
    features = sample_inputs(tokenizer, names, batch=6, length=32, seed=7, pair=pair)
    expected = torch_outputs(model, features, spec.output_names)
    np.savez(case / "inputs.npz", **features)
    np.savez(case / "expected.npz", **expected)
    np.save(case / "mask.npy", features["attention_mask"])
    report = json.loads((case / "export_report.json").read_text())
    parity = report["parity"]
    (case / "tolerance.json").write_text(json.dumps(parity["tolerance"]))
    (case / "one_step.json").write_text(json.dumps(parity["one_step"]))


@pytest.fixture(scope="module")
def cases(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cross-cpu")
    for task in TASKS:
        _case(root, task, task, reduce_weight_range=True, sparsity=0.9)
    # dense, so that many weights are near +-127 and the saturation shows in the outputs
    _case(root, "text-classification", FULL_RANGE, reduce_weight_range=False, sparsity=0.0)
    return root / "cases"


def _library() -> str | None:
    from sparse_transfer.runtime.engines import kernel_status

    status = kernel_status()
    return status.library if status.available else None


def _run(cases: Path, cpu: str | None, library: str | None = None) -> dict:
    command = [venv_python(), str(RUNNER), str(cases), *(["--library", library] if library else [])]
    command, env = emulated(command, cpu)
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env,
                          check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _native_has_vnni() -> bool:
    from sparse_transfer.runtime.cpu_features import cpu_flags

    return any(f in cpu_flags() for f in ("avx512_vnni", "avx_vnni", "amx_int8"))


@pytest.mark.parametrize("cpu", [None, "Haswell", "Nehalem"], ids=["native", "haswell", "nehalem"])
def test_int8_deployments_match_the_qat_model_on_every_cpu(cases, cpu):
    if cpu and (QEMU is None or platform.machine() != "x86_64"):
        pytest.skip("qemu-x86_64 not installed (make install adds qemu-user where it can)")
    result = _run(cases, cpu)
    if cpu == "Haswell":
        assert result["ort_u8s8_saturates"], "emulated AVX2 should saturate u8 x s8 pair sums"
    if cpu == "Nehalem":
        assert not result["ort_u8s8_saturates"]
    for task in TASKS:
        got = result["cases"][task]
        # 7-bit weights: the QAT model's integers (below one head-input step), the same
        # decisions, within the parity tolerance, on every CPU
        assert got["below_one_step"] and got["within_tolerance"], (cpu, task, got)
        assert all(a == 1.0 for a in got["agreement"].values()), (cpu, task, got)
        assert got["exact_here"], got["exact_here_reason"]
    full = result["cases"][FULL_RANGE]
    if result["ort_u8s8_saturates"]:
        # the control: full-range weights give other integers here, and the verdict says so
        assert not full["below_one_step"], full
        assert not full["exact_here"] and "without VNNI" in full["exact_here_reason"]
    else:
        assert full["below_one_step"] and full["exact_here"], full
    if cpu is None and _native_has_vnni():
        assert not result["ort_u8s8_saturates"]


@pytest.mark.parametrize("cpu", [None, "Haswell", "Nehalem"], ids=["native", "haswell", "nehalem"])
def test_sparse_graph_with_the_library_matches_on_every_cpu(cases, cpu):
    library = _library()
    if library is None:
        from sparse_transfer.runtime.engines import kernel_status

        pytest.skip(f"sparse kernel library not available: {kernel_status().reason}")
    if cpu and (QEMU is None or platform.machine() != "x86_64"):
        pytest.skip("qemu-x86_64 not installed (make install adds qemu-user where it can)")
    result = _run(cases, cpu, library)
    for task in TASKS:
        got = result["cases"][task]["sparse"]
        assert got["below_one_step"] and got["within_tolerance"], (cpu, task, got)
        assert got["decisions_equal_standard"], (cpu, task, got)
        assert all(a == 1.0 for a in got["agreement"].values()), (cpu, task, got)
