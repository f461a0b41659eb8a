"""The DeepSparse worker's framing and the server side's handling of a worker gone wrong.

No DeepSparse here: the worker loop (`deepsparse_runner.serve_requests`) runs
with a stand-in engine, and the error paths of `DeepSparseWorkerEngine` are
driven by tiny scripts that speak (or break) the protocol. That DeepSparse itself
serves correctly is `tests/integration/test_serve.py::test_deepsparse_worker_*`,
which needs ``SPARSE_TRANSFER_DEEPSPARSE_PYTHON``.
"""

from __future__ import annotations

import io
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from sparse_transfer.export import deepsparse_runner as runner
from sparse_transfer.serving import deepsparse_engines, engines
from sparse_transfer.serving.options import ServingError

NAMES = ["input_ids", "attention_mask"]
BATCH, LENGTH = 4, 8


class SumEngine:
    """Stands in for a compiled DeepSparse engine: logits = (sum of ids, sum of mask) per row."""

    def run(self, feeds):
        ids, mask = feeds
        return [np.stack([ids.sum(1), mask.sum(1)], axis=1).astype(np.float32)]


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """A deployment folder's model.onnx with the runner's view: two int64 inputs, logits."""
    root = tmp_path_factory.mktemp("worker")
    inputs = [helper.make_tensor_value_info(n, TensorProto.INT64, ["N", "L"]) for n in NAMES]
    logits = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 2])
    node = helper.make_node("Cast", ["input_ids"], ["cast"], to=TensorProto.FLOAT)
    reduce = helper.make_node("ReduceSum", ["cast"], ["logits"], keepdims=1)
    graph = helper.make_graph([node, reduce], "g", inputs, [logits])
    onnx.save(helper.make_model(graph), str(root / "model.onnx"))
    return root


def _request(**arrays) -> bytes:
    payload = runner.pack_arrays(arrays)
    return runner.HEADER.pack(runner.DATA, len(payload)) + payload


def _feeds(n: int = BATCH, width: int = LENGTH) -> dict[str, np.ndarray]:
    ids = np.arange(n * width, dtype=np.int64).reshape(n, width)
    return {"input_ids": ids, "attention_mask": np.ones((n, width), dtype=np.int64)}


def _serve(folder: Path, stream: bytes) -> tuple[int, list[tuple[bytes, bytes]]]:
    replies = io.BytesIO()
    code = runner.serve_requests(
        folder / "model.onnx", BATCH, LENGTH, SumEngine(), io.BytesIO(stream), replies
    )
    replies.seek(0)
    frames = []
    while (frame := runner.read_frame(replies)) is not None:
        frames.append(frame)
    return code, frames


# -- the worker loop -----------------------------------------------------------------


def test_worker_answers_each_request_and_survives_bad_ones(folder):
    good = _feeds()
    wrong_shape = {k: v[:, :3] for k, v in good.items()}
    objects = {"input_ids": np.array([{"x": 1}], dtype=object), "attention_mask": good["attention_mask"]}  # fmt: skip
    stream = (
        _request(**good)
        + _request(**wrong_shape)
        + _request(input_ids=good["input_ids"])  # a missing input
        + runner.HEADER.pack(runner.DATA, 5) + b"hello"  # not an .npz
        + _request(**objects)  # would need unpickling: refused
        + runner.HEADER.pack(runner.ERROR, 2) + b"hi"  # an error frame is not a request
        + _request(**good)
    )  # fmt: skip
    code, frames = _serve(folder, stream)
    assert code == 0  # end of stream: a clean exit
    assert [k for k, _ in frames] == [runner.DATA] + [runner.ERROR] * 5 + [runner.DATA]
    first = runner.unpack_arrays(frames[0][1])["logits"]
    np.testing.assert_array_equal(first[:, 0], good["input_ids"].sum(1))
    np.testing.assert_array_equal(first[:, 1], [LENGTH] * BATCH)
    errors = [p.decode() for _, p in frames[1:6]]
    assert "int64[4, 8]" in errors[0] and "input_ids" in errors[0]
    assert "the graph takes ['input_ids', 'attention_mask']" in errors[1]
    assert "not an .npz archive" in errors[2]
    assert "allow_pickle=False" in errors[3]
    assert "expected b'D'" in errors[4]
    assert frames[6] == frames[0]  # and it still answers


@pytest.mark.parametrize(
    "broken,words",
    [
        (b"X" + bytes(8), "unknown frame kind b'X'"),
        (runner.HEADER.pack(runner.DATA, runner.MAX_FRAME_BYTES + 1), "exceeds"),
        (runner.HEADER.pack(runner.DATA, 100) + b"short", "ended after 5 of 100"),
        (b"D\0\0", "inside a frame header (3 bytes)"),
    ],
)
def test_a_desynchronised_stream_ends_the_worker_with_a_reason(folder, broken, words):
    code, frames = _serve(folder, _request(**_feeds()) + broken)
    assert code == 2
    assert [k for k, _ in frames] == [runner.DATA, runner.ERROR]
    assert words in frames[1][1].decode() and "worker exits" in frames[1][1].decode()


def test_unpack_refuses_a_bare_npy():
    buffer = io.BytesIO()
    np.save(buffer, np.zeros(3))
    with pytest.raises(runner.FrameError, match="bare .npy"):
        runner.unpack_arrays(buffer.getvalue())


# -- the server side against workers that go wrong ----------------------------------

PRELUDE = f"""
import json, os, sys, time
sys.path.insert(0, {str(Path(runner.__file__).parent)!r})
import deepsparse_runner as runner
out = os.fdopen(os.dup(1), "wb")
"""

READY = 'out.write((json.dumps({"ready": True, "pid": os.getpid()}) + "\\n").encode()); out.flush()'


def _worker(folder: Path, tmp_path: Path, body: str, **kwargs) -> engines.DeepSparseWorkerEngine:
    script = tmp_path / "worker.py"
    script.write_text(PRELUDE + textwrap.dedent(body))
    return engines.DeepSparseWorkerEngine(
        folder, "fake-python", None, BATCH, LENGTH, command=[sys.executable, str(script)], **kwargs
    )


def _gone(pid: int) -> bool:
    """Exited (a zombie waiting for a parent that is not us to reap it counts as exited)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_worker_protocol_end_to_end_then_clean_close(folder, tmp_path):
    body = f"""
    import numpy as np
    class SumEngine:
        def run(self, feeds):
            ids, mask = feeds
            return [np.stack([ids.sum(1), mask.sum(1)], axis=1).astype(np.float32)]
    {READY}
    sys.exit(runner.serve_requests({str(folder / "model.onnx")!r}, {BATCH}, {LENGTH},
                                   SumEngine(), sys.stdin.buffer, out))
    """
    engine = _worker(folder, tmp_path, body)
    assert engine.input_names == NAMES and engine.output_names == ["logits"]
    feeds = _feeds(n=3, width=5)  # padded to 4x8 on the way, cut back to 3 rows after
    got = engine(feeds)["logits"]
    np.testing.assert_array_equal(got, np.stack([feeds["input_ids"].sum(1), [5, 5, 5]], axis=1))
    with pytest.raises(ServingError, match="exceeds the compiled 4x8"):
        engine(_feeds(n=5))
    engine.close()
    assert engine.proc.returncode == 0  # end of file on stdin: it left on its own


def test_a_worker_that_dies_before_ready_names_interpreter_and_stderr(folder, tmp_path):
    body = """
    print("ModuleNotFoundError: No module named 'deepsparse'", file=sys.stderr, flush=True)
    sys.exit(3)
    """
    with pytest.raises(ServingError) as info:
        _worker(folder, tmp_path, body)
    message = str(info.value)
    assert "fake-python" in message and "exited with status 3 before its ready line" in message
    assert "No module named 'deepsparse'" in message


def test_a_worker_that_never_gets_ready_is_stopped_at_the_deadline(folder, tmp_path):
    body = """
    print("compiling forever", file=sys.stderr, flush=True)
    time.sleep(600)
    """
    start = time.monotonic()
    with pytest.raises(ServingError, match="no its ready line within the time limit") as info:
        _worker(folder, tmp_path, body, ready_timeout_s=1.0)
    assert time.monotonic() - start < 30  # stdin EOF is ignored while sleeping: terminated
    pid = int(str(info.value).split("pid ")[1].split(")")[0])
    assert _gone(pid) and "compiling forever" in str(info.value)


def test_a_worker_that_prints_junk_instead_of_ready(folder, tmp_path):
    with pytest.raises(ServingError, match="instead of its JSON ready line"):
        _worker(folder, tmp_path, 'out.write(b"hello\\n"); out.flush(); time.sleep(60)')


def test_a_worker_that_dies_mid_request_is_an_error_not_a_hang_then_replaced(folder, tmp_path):
    """Its first life crashes on the first request; the next request gets a new worker."""
    crashed = tmp_path / "crashed-once"
    body = f"""
    import numpy as np
    {READY}
    if not os.path.exists({str(crashed)!r}):
        open({str(crashed)!r}, "w").close()
        runner.read_frame(sys.stdin.buffer)
        print("Segmentation fault (core dumped)", file=sys.stderr, flush=True)
        os._exit(139)
    while runner.read_frame(sys.stdin.buffer):
        runner.write_frame(out, runner.DATA, runner.pack_arrays({{"logits": np.ones((4, 2))}}))
    """
    engine = _worker(folder, tmp_path, body, call_timeout_s=60)
    first = engine.pid
    start = time.monotonic()
    with pytest.raises(ServingError) as info:
        engine(_feeds())
    assert time.monotonic() - start < 30
    assert f"pid {first}): it exited with status 139 before a reply" in str(info.value)
    assert "Segmentation fault" in str(info.value)
    assert engine(_feeds(n=1))["logits"].shape == (1, 2)  # served by its replacement
    assert engine.pid != first and _gone(first)
    engine.close()
    assert engine.proc.returncode == 0
    with pytest.raises(ServingError, match="closed"):
        engine(_feeds())


def test_a_malformed_reply_stops_the_worker(folder, tmp_path):
    body = f"""
    {READY}
    runner.read_frame(sys.stdin.buffer)
    out.write(b"Z" + bytes(8)); out.flush()
    time.sleep(60)
    """
    engine = _worker(folder, tmp_path, body)
    with pytest.raises(ServingError, match="malformed reply frame: unknown frame kind b'Z'"):
        engine(_feeds())
    assert engine.proc.poll() is not None


def test_an_error_frame_fails_one_call_and_the_worker_serves_on(folder, tmp_path):
    body = f"""
    import numpy as np
    {READY}
    runner.read_frame(sys.stdin.buffer)
    runner.write_frame(out, runner.ERROR, b"RuntimeError: engine said no")
    runner.read_frame(sys.stdin.buffer)
    runner.write_frame(out, runner.DATA, runner.pack_arrays({{"logits": np.ones((4, 2))}}))
    runner.read_frame(sys.stdin.buffer)
    """
    engine = _worker(folder, tmp_path, body)
    with pytest.raises(ServingError, match="DeepSparse worker: RuntimeError: engine said no"):
        engine(_feeds())
    assert engine(_feeds(n=2))["logits"].shape == (2, 2)
    engine.close()


def test_an_unreferenced_worker_is_stopped(folder, tmp_path):
    import gc

    engine = _worker(folder, tmp_path, f"{READY}\nsys.stdin.buffer.read()\n")
    proc = engine.proc
    del engine
    gc.collect()
    assert proc.returncode == 0  # weakref.finalize closed its stdin and waited


def test_a_worker_leaves_when_the_server_is_killed(folder, tmp_path):
    """SIGKILL skips every cleanup; the worker still sees end of file on stdin and exits."""
    import signal
    import subprocess

    model = str(folder / "model.onnx")
    worker_script = tmp_path / "worker.py"
    worker_script.write_text(
        PRELUDE + f"{READY}\n"
        f"sys.exit(runner.serve_requests({model!r}, 4, 8, None, sys.stdin.buffer, out))\n"
    )
    server_script = tmp_path / "server.py"
    server_script.write_text(textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from sparse_transfer.serving.engines import DeepSparseWorkerEngine
        engine = DeepSparseWorkerEngine(Path({str(folder)!r}), "fake-python", None, 4, 8,
                                        command=[sys.executable, {str(worker_script)!r}])
        print(engine.pid, flush=True)
        time.sleep(600)
    """))  # fmt: skip
    server = subprocess.Popen([sys.executable, str(server_script)], stdout=subprocess.PIPE)
    worker = int(server.stdout.readline())
    assert not _gone(worker)
    server.send_signal(signal.SIGKILL)
    server.wait()
    server.stdout.close()
    deadline = time.monotonic() + 10
    while not _gone(worker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _gone(worker)


def test_per_token_outputs_are_cut_back_to_the_batch_width(tmp_path):
    """A QA/NER head's [batch, sequence] outputs come back as wide as the batch sent, as
    ONNX Runtime returns them; [batch, labels] ones only lose the padding rows."""
    ids = helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "sequence"])
    start = helper.make_tensor_value_info("start_logits", TensorProto.FLOAT, ["batch", "sequence"])
    logits = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", LENGTH])
    nodes = [helper.make_node("Cast", ["input_ids"], ["start_logits"], to=TensorProto.FLOAT),
             helper.make_node("Cast", ["input_ids"], ["logits"], to=TensorProto.FLOAT)]  # fmt: skip
    graph = helper.make_graph(nodes, "g", [ids], [start, logits])
    onnx.save(helper.make_model(graph), str(tmp_path / "model.onnx"))
    names, per_token = deepsparse_engines._graph_outputs(tmp_path / "model.onnx")
    assert names == ["start_logits", "logits"] and per_token == {"start_logits"}
    full = {k: np.zeros((BATCH, LENGTH)) for k in names}  # as compiled: 4 x 8
    cut = deepsparse_engines._unpadded(full, per_token, n=3, width=5)
    assert cut["start_logits"].shape == (3, 5) and cut["logits"].shape == (3, LENGTH)


# -- choosing the engine ---------------------------------------------------------------


def test_select_engine_names_a_bad_interpreter(monkeypatch, tmp_path):
    if engines.deepsparse_here()[0]:
        pytest.skip("deepsparse is importable here: the in-process engine is chosen")
    monkeypatch.setenv(runner.ENV_PYTHON, str(tmp_path / "nope" / "python"))
    with pytest.raises(
        ServingError, match=r"--engine deepsparse: .*nope/python: not an executable"
    ):
        engines.select_engine("deepsparse")
    monkeypatch.setenv(runner.ENV_PYTHON, sys.executable)  # a Python without deepsparse
    with pytest.raises(ServingError, match="`import deepsparse` fails there"):
        engines.select_engine("deepsparse")
    monkeypatch.delenv(runner.ENV_PYTHON)
    with pytest.raises(ServingError, match=f"{runner.ENV_PYTHON} is not set"):
        engines.select_engine("deepsparse")
    # ONNX Runtime's engines pass through: OnnxModel resolves auto (runtime.engines.choose)
    assert [engines.select_engine(n) for n in ("auto", "onnxruntime", "onnxruntime-sparse")] == [
        "auto",
        "onnxruntime",
        "onnxruntime-sparse",
    ]
