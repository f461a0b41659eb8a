"""Finding, probing and registering the kernels library: a missing or broken library is
reported (never raised, never a wrong answer), and bad weights or inputs are refused with a
message that names the problem."""

from __future__ import annotations

import json
import re

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from sparse_transfer.cli import main
from sparse_transfer.kernels import build, kernel_status, library, register_library, spec


@pytest.fixture(scope="module")
def lib_path() -> str:
    if build.find_built() is None and build.find_compiler() is None:
        pytest.skip("no C++ compiler here: the native kernels cannot be built")
    return str(build.build())


def _unavailable(status, reason_part: str) -> None:
    assert status.available is False
    assert status.isa is None
    assert reason_part in status.reason
    options = ort.SessionOptions()
    assert register_library(options).available is False  # reported, not raised


def test_the_built_library_runs_here(lib_path, monkeypatch):
    monkeypatch.delenv(library.ISA_ENV, raising=False)
    status = kernel_status()
    assert status.available and status.reason is None
    assert status.library == lib_path
    assert status.isa in ("amx", "avx512vnni", "avx512bw", "avx2", "sse41", "scalar")
    assert status.onnxruntime == ort.__version__
    assert register_library(ort.SessionOptions()) == status


def test_missing_library_is_reported(monkeypatch, tmp_path):
    monkeypatch.setenv(library.LIB_ENV, str(tmp_path / "nope.so"))
    _unavailable(kernel_status(), "no such file")


def test_unloadable_library_is_reported(monkeypatch, tmp_path):
    bad = tmp_path / "libbroken.so"
    bad.write_text("not a shared library")
    monkeypatch.setenv(library.LIB_ENV, str(bad))
    _unavailable(kernel_status(), "cannot load")


def test_unbuilt_sources_without_a_compiler_are_reported(monkeypatch):
    monkeypatch.delenv(library.LIB_ENV, raising=False)
    monkeypatch.setattr(build, "find_built", lambda: None)
    monkeypatch.setattr(build, "find_compiler", lambda: None)
    status = kernel_status()
    _unavailable(status, "no C++ compiler")
    assert status.library is None
    with pytest.raises(build.KernelBuildError, match="no C\\+\\+ compiler"):
        build.build(force=True)


def test_too_old_onnxruntime_is_reported(lib_path, monkeypatch):
    monkeypatch.setattr(library, "_ort_version", lambda: "1.16.3")
    _unavailable(kernel_status(), "1.16.3 is too old")


@pytest.mark.parametrize("forced", ["avx9", "AVX2"])
def test_unknown_forced_path_is_refused(lib_path, monkeypatch, forced):
    monkeypatch.setenv(library.ISA_ENV, forced)
    _unavailable(kernel_status(), f"SPARSE_TRANSFER_KERNELS_ISA={forced}: unknown path")


def test_a_forced_lower_path_is_used(lib_path, monkeypatch):
    monkeypatch.setenv(library.ISA_ENV, "scalar")
    assert kernel_status().isa == "scalar"


def test_cli_reports_as_json_and_exits_0(lib_path, monkeypatch, capsys, tmp_path):
    monkeypatch.delenv(library.ISA_ENV, raising=False)
    assert main(["kernels", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report) == {"library", "isa", "onnxruntime", "available", "reason"}
    assert report["available"] is True and report["library"] == lib_path
    monkeypatch.setenv(library.LIB_ENV, str(tmp_path / "gone.so"))
    assert main(["kernels"]) == 0
    out = capsys.readouterr().out
    assert "available:   no" in out and "no such file" in out


def _session(lib_path, row_ptr, block_col, values, k=8, a_shape=(None, 8), threads=0):
    inits = [numpy_helper.from_array(np.array(3, np.uint8), "zp"),
             numpy_helper.from_array(np.asarray(row_ptr, np.int32), "row_ptr"),
             numpy_helper.from_array(np.asarray(block_col, np.int32), "block_col"),
             numpy_helper.from_array(np.asarray(values, np.int8), "values")]  # fmt: skip
    node = helper.make_node(spec.MATMUL_OP, ["a", "zp", "row_ptr", "block_col", "values"], ["y"],
                            domain=spec.DOMAIN, K=k)  # fmt: skip
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("a", TensorProto.UINT8,
                              list(a_shape))], [helper.make_tensor_value_info("y", TensorProto.INT32,
                              None)], inits)  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid(spec.DOMAIN, 1)])  # fmt: skip
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.register_custom_ops_library(lib_path)
    return ort.InferenceSession(model.SerializeToString(), options, ["CPUExecutionProvider"])


@pytest.mark.parametrize(
    ("row_ptr", "block_col", "message"),
    [([0, 2], [0], "row_ptr must start at 0 and end at nnzb = 1"),
     ([0, 1], [2], "block_col of row 0 must ascend within [0, 2), got 2"),
     ([0, 1], [-1], "must ascend within [0, 2), got -1")],
)  # fmt: skip
def test_bad_weights_are_refused_when_the_session_is_made(lib_path, row_ptr, block_col, message):
    with pytest.raises(Exception, match=re.escape(message)):
        _session(lib_path, row_ptr, block_col, [[1, 2, 3, 4]])


def test_repeated_blocks_are_refused(lib_path):
    with pytest.raises(Exception, match="must ascend"):
        _session(lib_path, [0, 2], [1, 1], [[1, 2, 3, 4], [5, 6, 7, 8]])


def test_an_input_of_the_wrong_width_is_refused(lib_path):
    session = _session(lib_path, [0, 1], [1], [[1, 2, 3, 4]], a_shape=(None, None))
    with pytest.raises(Exception, match="last dimension must be K = 8"):
        session.run(None, {"a": np.zeros((2, 7), np.uint8)})
    (y,) = session.run(None, {"a": np.full((2, 8), 5, np.uint8)})
    np.testing.assert_array_equal(y, np.full((2, 1), (5 - 3) * 10, np.int32))


@pytest.mark.parametrize("threads", [1, 3])
def test_any_thread_count_gives_the_same_answer(lib_path, threads):
    """Work is split over ORT's intra-op pool (KernelContext_ParallelFor) by token tile and
    64-row chunk; the split never changes a result."""
    rng = np.random.default_rng(threads)
    w = (rng.integers(-64, 65, (200, 72)) * (rng.random((200, 72)) < 0.2)).astype(np.int8)
    p = spec.pack_block4(w)
    session = _session(lib_path, p.row_ptr, p.block_col, p.values, 72, (None, 72), threads)
    a = rng.integers(0, 256, (150, 72)).astype(np.uint8)
    (y,) = session.run(None, {"a": a})
    np.testing.assert_array_equal(y, spec.integer_matmul(a, 3, w))


def test_a_read_only_package_builds_into_the_user_cache(lib_path, monkeypatch, tmp_path):
    """Where the package folder cannot be written (a system install), the library goes to
    $SPARSE_TRANSFER_CACHE/kernels under the same source-hash name, and the loader finds it."""
    blocker = tmp_path / "site-packages"
    blocker.write_text("a file where the package's _lib folder would be")
    monkeypatch.setattr(build, "PACKAGE_LIB_DIR", blocker / "_lib")
    monkeypatch.setenv("SPARSE_TRANSFER_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv(library.LIB_ENV, raising=False)
    assert build.find_built() is None
    stale = tmp_path / "cache" / "kernels" / f"{build.LIB_STEM}-0000000000000000.so"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"an older build")
    built = build.build()
    assert built == tmp_path / "cache" / "kernels" / build.library_name()
    assert not stale.exists()  # an older build of ours is replaced, nothing else is touched
    assert build.find_built() == built
    assert kernel_status().library == str(built)


@pytest.mark.parametrize("activation", ["relu", "gelu_with_a_name_longer_than_thirty_two_bytes"])
def test_an_unknown_activation_is_refused(lib_path, activation):
    w = np.ones((4, 8), np.int8)
    p = spec.pack_block4(w)
    inits = [numpy_helper.from_array(np.array(0.1, np.float32), "xs"),
             numpy_helper.from_array(np.array(0, np.uint8), "zp"),
             numpy_helper.from_array(p.row_ptr, "rp"), numpy_helper.from_array(p.block_col, "bc"),
             numpy_helper.from_array(p.values, "v"),
             numpy_helper.from_array(np.ones(4, np.float32), "ws"),
             numpy_helper.from_array(np.zeros(4, np.float32), "b")]  # fmt: skip
    node = helper.make_node("SparseQLinear", ["x", "xs", "zp", "rp", "bc", "v", "ws", "b"], ["y"],
                            domain=spec.DOMAIN, K=8, activation=activation)  # fmt: skip
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                              [None, 8])], [helper.make_tensor_value_info("y", TensorProto.FLOAT,
                              None)], inits)  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid(spec.DOMAIN, 1)])  # fmt: skip
    options = ort.SessionOptions()
    options.register_custom_ops_library(lib_path)
    with pytest.raises(
        Exception, match=re.escape(f"activation: '{activation}', choose none or gelu")
    ):
        ort.InferenceSession(model.SerializeToString(), options, ["CPUExecutionProvider"])


def _linear_norm_session(lib_path, activation="none", epsilon=True):
    p = spec.pack_block4(np.ones((4, 8), np.int8))
    inits = [numpy_helper.from_array(np.array(0.1, np.float32), "xs"),
             numpy_helper.from_array(np.array(0, np.uint8), "zp"),
             numpy_helper.from_array(p.row_ptr, "rp"), numpy_helper.from_array(p.block_col, "bc"),
             numpy_helper.from_array(p.values, "v"),
             numpy_helper.from_array(np.ones(4, np.float32), "ws"),
             numpy_helper.from_array(np.zeros(4, np.float32), "b"),
             numpy_helper.from_array(np.ones(4, np.float32), "g"),
             numpy_helper.from_array(np.zeros(4, np.float32), "be")]  # fmt: skip
    attrs = {"K": 8, "activation": activation, **({"epsilon": 1e-5} if epsilon else {})}
    node = helper.make_node("SparseQLinearLayerNorm",
                            ["x", "xs", "zp", "rp", "bc", "v", "ws", "b", "r", "g", "be"], ["y"],
                            domain=spec.DOMAIN, **attrs)  # fmt: skip
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 8]),
                      helper.make_tensor_value_info("r", TensorProto.FLOAT, [None, None])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid(spec.DOMAIN, 1)])  # fmt: skip
    options = ort.SessionOptions()
    options.register_custom_ops_library(lib_path)
    return ort.InferenceSession(model.SerializeToString(), options, ["CPUExecutionProvider"])


def test_a_linear_layernorm_op_refuses_what_it_cannot_compute(lib_path):
    """GELU before a LayerNorm is not a fusion the export makes; epsilon is required; the
    residual must have the output's shape (no broadcasting, as ResidualLayerNorm)."""
    with pytest.raises(
        Exception, match="SparseQLinearLayerNorm: attribute activation must be none"
    ):
        _linear_norm_session(lib_path, activation="gelu")
    with pytest.raises(
        Exception, match=r"SparseQLinearLayerNorm: the float attribute epsilon \(finite, >= 0\)"
    ):
        _linear_norm_session(lib_path, epsilon=False)
    session = _linear_norm_session(lib_path)
    x = np.arange(16, dtype=np.float32).reshape(2, 8)
    with pytest.raises(Exception, match="residual must have the output's shape"):
        session.run(None, {"x": x, "r": np.zeros((2, 5), np.float32)})
    (y,) = session.run(None, {"x": x, "r": np.zeros((2, 4), np.float32)})
    np.testing.assert_array_equal(y, np.zeros((2, 4), np.float32))  # four equal outputs: y = beta


def _qlinear_session(lib_path, w, w_scale, bias, fed: bool):
    """SparseQLinearFromU8 over `w`; w_scale and bias constant initializers (as export-onnx
    writes them, read once when ORT makes the kernel) or graph inputs (read every call)."""
    n, k = w.shape
    p = spec.pack_block4(w)
    consts = {"xs": np.array(0.05, np.float32), "zp": np.array(7, np.uint8), "rp": p.row_ptr,
              "bc": p.block_col, "v": p.values}  # fmt: skip
    epilogue = {"ws": np.asarray(w_scale, np.float32), "b": np.asarray(bias, np.float32)}
    if not fed:
        consts.update(epilogue)
    node = helper.make_node("SparseQLinearFromU8", ["x", "xs", "zp", "rp", "bc", "v", "ws", "b"],
                            ["y"], domain=spec.DOMAIN, K=k)  # fmt: skip
    inputs = [helper.make_tensor_value_info("x", TensorProto.UINT8, [None, k])]
    if fed:
        inputs += [
            helper.make_tensor_value_info(name, TensorProto.FLOAT, [None]) for name in epilogue
        ]
    graph = helper.make_graph([node], "g", inputs, [helper.make_tensor_value_info(
        "y", TensorProto.FLOAT, None)], [numpy_helper.from_array(a, nm) for nm, a in consts.items()])  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid(spec.DOMAIN, 1)])  # fmt: skip
    options = ort.SessionOptions()
    options.register_custom_ops_library(lib_path)
    session = ort.InferenceSession(model.SerializeToString(), options, ["CPUExecutionProvider"])
    return lambda x: session.run(None, {"x": x, **(epilogue if fed else {})})[0]


def test_the_epilogue_is_the_same_built_once_or_read_per_call(lib_path):
    """Constant scales and biases are turned into the epilogue's arrays once, at session
    creation; fed ones on every call. Both give the reference's bits, N not a multiple of 16
    (the arrays' padding) included."""
    rng = np.random.default_rng(3)
    w = (rng.integers(-64, 65, (37, 24)) * (rng.random((37, 24)) < 0.4)).astype(np.int8)
    w_scale = rng.uniform(1e-3, 2e-2, 37).astype(np.float32)
    bias = rng.normal(0, 1, 37).astype(np.float32)
    x = rng.integers(0, 256, (70, 24)).astype(np.uint8)
    p = spec.pack_block4(w)
    want = spec.qlinear_reference(x, np.float32(0.05), 7, p.row_ptr, p.block_col, p.values,
                                  w_scale, bias, 24)  # fmt: skip
    for fed in (False, True):
        np.testing.assert_array_equal(_qlinear_session(lib_path, w, w_scale, bias, fed)(x), want)


@pytest.mark.parametrize("fed", [False, True])
@pytest.mark.parametrize(("w_scale", "bias", "message"), [
    ([0.1, np.inf, 0.1, 0.1], np.zeros(4), "w_scale and bias must be finite"),
    (np.full(4, 0.1), [0.0, 0.0, np.nan, 0.0], "w_scale and bias must be finite"),
    (np.full(3, 0.1), np.zeros(3), r"w_scale and bias must hold N = 4 values"),
])  # fmt: skip
def test_bad_epilogue_values_are_refused_when_run(lib_path, fed, w_scale, bias, message):
    """A constant that cannot be built once is left to the per-call check, which words the
    error the same way whether the values are initializers or fed."""
    run = _qlinear_session(lib_path, np.ones((4, 8), np.int8), w_scale, bias, fed)
    with pytest.raises(Exception, match=message):
        run(np.zeros((2, 8), np.uint8))


@pytest.mark.parametrize("n", [24, 50])
def test_three_outputs_need_three_parts_of_whole_row_groups(lib_path, n):
    """``SparseQLinearU8x3`` splits its weight's N rows into three outputs of a multiple of 16
    rows each (no 16-row group straddles two outputs); another N is refused when run, and the
    spec's reference refuses it alike."""
    p = spec.pack_block4(np.ones((n, 8), np.int8))
    quant = [name for i in range(3) for name in (f"ys{i}", f"yz{i}")]
    consts = {"xs": np.array(0.05, np.float32), "zp": np.array(7, np.uint8), "rp": p.row_ptr,
              "bc": p.block_col, "v": p.values, "ws": np.full(n, 0.1, np.float32),
              "b": np.zeros(n, np.float32), **{name: np.array(0.1 if name.startswith("ys") else 9,
              np.float32 if name.startswith("ys") else np.uint8) for name in quant}}  # fmt: skip
    node = helper.make_node("SparseQLinearU8x3", ["x", "xs", "zp", "rp", "bc", "v", "ws", "b",
                            *quant], ["y0", "y1", "y2"], domain=spec.DOMAIN, K=8)  # fmt: skip
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("x", TensorProto.UINT8, [None, 8])],
        [helper.make_tensor_value_info(f"y{i}", TensorProto.UINT8, None) for i in range(3)],
        [numpy_helper.from_array(a, name) for name, a in consts.items()])  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid(spec.DOMAIN, 1)])  # fmt: skip
    options = ort.SessionOptions()
    options.register_custom_ops_library(lib_path)
    session = ort.InferenceSession(model.SerializeToString(), options, ["CPUExecutionProvider"])
    message = f"the weight's N = {n} must be 3 equal parts of a multiple of 16 rows"
    with pytest.raises(Exception, match=message):
        session.run(None, {"x": np.zeros((2, 8), np.uint8)})
    quants = [(np.float32(0.1), 9)] * 3
    with pytest.raises(ValueError, match=f"N = {n} is not 3 parts of a multiple of 16 rows"):
        spec.parts_reference(np.zeros((2, 8), np.uint8), 0.05, 7, p.row_ptr, p.block_col,
                             p.values, consts["ws"], consts["b"], 8, "none", quants)  # fmt: skip
