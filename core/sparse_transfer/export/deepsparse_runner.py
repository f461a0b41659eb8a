"""Runs a deployment's ``model.onnx`` in DeepSparse; also a script for DeepSparse's own Python.

DeepSparse 1.8 pins onnx 1.14 / numpy 1.26, so it lives in its own virtual
environment, where neither torch nor this package is installed. This module
imports only numpy, onnx and deepsparse, so that interpreter runs it by path
(`SPARSE_TRANSFER_DEEPSPARSE_PYTHON` names it; see `benchmark.py`)::

    PY deepsparse_runner.py run  MODEL.onnx INPUTS.npz OUTPUTS.npz   # -> JSON facts on stdout
    PY deepsparse_runner.py time MODEL.onnx --batch_sizes 1,32 --sequence_length 128 \\
        [--threads N] [--vocab 30522] [--warmup 3] [--iterations 20] [--min_seconds 0]
    PY deepsparse_runner.py rounds A.onnx B.onnx ... [--iterations 3] [--batch 1] [...]  # then
        'round' lines on stdin, one JSON line of run times back per round ('end' stops)
    PY deepsparse_runner.py serve MODEL.onnx --batch 8 --sequence_length 128 [--threads N]

``serve`` is the persistent worker behind ``sparse-transfer serve --engine deepsparse``
(`sparse_transfer.serving.deepsparse_engines.DeepSparseWorkerEngine`): it compiles once, prints
one JSON ready line, then answers request frames on stdin with reply frames on
stdout (`write_frame`: a kind byte, a big-endian 8-byte length, an ``.npz`` payload
loaded with ``allow_pickle=False``) until stdin ends.

DeepSparse compiles for one shape, so every command runs a copy of the graph
whose inputs are fixed to ``[batch, sequence_length]``; the deployment itself
keeps its dynamic axes. Facts printed include ``fraction_of_supported_ops``
(1.0: no node falls back to DeepSparse's bundled ONNX Runtime).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import signal
import struct
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ENV_PYTHON = "SPARSE_TRANSFER_DEEPSPARSE_PYTHON"

# The worker's framing: kind (DATA: an .npz payload, ERROR: a UTF-8 message), payload length.
DATA, ERROR = b"D", b"E"
HEADER = struct.Struct(">cQ")
MAX_FRAME_BYTES = 1 << 30  # a longer header is a desynchronised stream, not a request


class FrameError(ValueError):
    """Bytes on the worker's pipe that are not a frame (the stream cannot be trusted after)."""


def static_copy(model_path: str | Path, batch: int, length: int, dest: str | Path) -> Path:
    """Writes `model_path` with every [batch, sequence] input fixed to (`batch`, `length`)."""
    import onnx

    graph = onnx.load(str(model_path))
    weights = {i.name for i in graph.graph.initializer}
    for value in graph.graph.input:
        if value.name in weights:
            continue
        dims = value.type.tensor_type.shape.dim
        dims[0].dim_value = batch
        if len(dims) > 1:
            dims[1].dim_value = length
    onnx.save(graph, str(dest))
    return Path(dest)


def input_names(model_path: str | Path) -> list[str]:
    """The graph's runtime inputs, in order (what ``Engine.run`` takes)."""
    import onnx

    graph = onnx.load(str(model_path)).graph
    weights = {i.name for i in graph.initializer}
    return [v.name for v in graph.input if v.name not in weights]


def compile_engine(model_path: str | Path, batch: int, length: int, threads: int | None, tmp: Path):
    """A DeepSparse engine over a fixed-shape copy of `model_path`."""
    from deepsparse import compile_model

    static = static_copy(model_path, batch, length, tmp / f"model-b{batch}-s{length}.onnx")
    return compile_model(str(static), batch_size=batch, num_cores=threads or None)


def run(model_path: str | Path, inputs: dict[str, np.ndarray], threads: int | None = None):
    """Outputs (by graph output name) and engine facts for one batch of int64 inputs."""
    import onnx

    names = input_names(model_path)
    arrays = [np.ascontiguousarray(inputs[n], dtype=np.int64) for n in names]
    batch, length = arrays[0].shape[:2]
    outputs = [o.name for o in onnx.load(str(model_path)).graph.output]
    with tempfile.TemporaryDirectory() as tmp:
        engine = compile_engine(model_path, batch, length, threads, Path(tmp))
        got = engine.run(arrays)
        facts = _facts(engine)
    return dict(zip(outputs, got, strict=True)), facts


def time_engine(
    model_path: str | Path,
    batch_sizes,
    length: int,
    threads: int | None = None,
    vocab: int = 1000,
    warmup: int = 3,
    iterations: int = 20,
    min_seconds: float = 0.0,
) -> dict:
    """Per batch size: the raw latencies (seconds) of ``engine.run`` after warm-up, and facts."""
    names = input_names(model_path)
    result = {}
    with tempfile.TemporaryDirectory() as tmp:
        for b in batch_sizes:
            engine = compile_engine(model_path, b, length, threads, Path(tmp))
            feeds = _feeds(names, b, length, vocab)
            for _ in range(warmup):
                engine.run(feeds)
            times: list[float] = []
            start = time.perf_counter()
            while len(times) < iterations or (
                time.perf_counter() - start < min_seconds and len(times) < 10 * iterations
            ):
                t = time.perf_counter()
                engine.run(feeds)
                times.append(time.perf_counter() - t)
            result[f"batch_{b}"] = {"times_s": times, **_facts(engine)}
    return result


def _feeds(names: list[str], batch: int, length: int, vocab: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    feeds = []
    for name in names:
        if name == "input_ids":
            feeds.append(rng.integers(5, max(6, vocab), size=(batch, length), dtype=np.int64))
        elif name == "attention_mask":
            feeds.append(np.ones((batch, length), dtype=np.int64))
        else:
            feeds.append(np.zeros((batch, length), dtype=np.int64))
    return feeds


def compile_all(model_paths, batch, length, threads, vocab, warmup, tmp: Path) -> dict:
    """``{path: (engine, feeds)}``: every model compiled for one shape and warmed up."""
    engines = {}
    for i, path in enumerate(model_paths):
        sub = tmp / str(i)
        sub.mkdir()
        engine = compile_engine(path, batch, length, threads, sub)
        engines[path] = (engine, _feeds(input_names(path), batch, length, vocab))
    for engine, feeds in engines.values():
        for _ in range(warmup):
            engine.run(feeds)
    return engines


def answer_rounds(
    engines: dict, facts: dict, iterations: int, gap_s: float, commands, replies
) -> int:
    """Times one round per ``round`` line on `commands`, until ``end`` or end of stream.

    The caller interleaves these rounds with its own (`benchmark.compare`), so load from
    elsewhere falls on both engines alike. First a ready line with `facts` (path -> facts);
    then per round one JSON line ``{path: [seconds of each run]}``, each model after `gap_s`
    of idle time, as the ONNX Runtime rounds run.
    """
    _reply(replies, {"ready": True, "facts": facts})
    for line in commands:
        command = line.strip()
        if command == "end":
            return 0
        if command != "round":
            _reply(replies, {"error": f"unknown command {command[:40]!r}: expected round or end"})
            return 2
        times = {}
        for path, (engine, feeds) in engines.items():
            time.sleep(gap_s)
            runs = []
            for _ in range(iterations):
                t = time.perf_counter()
                engine.run(feeds)
                runs.append(time.perf_counter() - t)
            times[path] = runs
        _reply(replies, times)
    return 0


def _reply(replies, message: dict) -> None:
    replies.write(json.dumps(message) + "\n")
    replies.flush()


def rounds(model_paths, batch, length, threads, vocab, warmup, iterations, gap_s) -> int:
    """The ``rounds`` command: compile, then `answer_rounds` over stdin/stdout."""
    # Our JSON lines own the real stdout; DeepSparse's banner and C++ logs go to stderr.
    replies = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the caller decides when we stop
    with tempfile.TemporaryDirectory() as tmp:
        engines = compile_all(model_paths, batch, length, threads, vocab, warmup, Path(tmp))
        facts = {path: _facts(engine) for path, (engine, _) in engines.items()}
        return answer_rounds(engines, facts, iterations, gap_s, sys.stdin, replies)


def parse_header(header: bytes) -> tuple[bytes, int]:
    """(kind, payload length) of a frame header, or FrameError."""
    if len(header) != HEADER.size:
        raise FrameError(f"frame header of {len(header)} bytes, expected {HEADER.size}")
    kind, size = HEADER.unpack(header)
    if kind not in (DATA, ERROR):
        raise FrameError(f"unknown frame kind {kind!r} (expected {DATA!r} or {ERROR!r})")
    if size > MAX_FRAME_BYTES:
        raise FrameError(f"frame of {size} bytes exceeds the {MAX_FRAME_BYTES}-byte limit")
    return kind, size


def write_frame(stream, kind: bytes, payload: bytes) -> None:
    stream.write(HEADER.pack(kind, len(payload)) + payload)
    stream.flush()


def read_frame(stream) -> tuple[bytes, bytes] | None:
    """The next (kind, payload) on a blocking binary stream; None at a clean end of stream."""
    header = _read_exact(stream, HEADER.size)
    if not header:
        return None
    if len(header) != HEADER.size:
        raise FrameError(f"stream ended inside a frame header ({len(header)} bytes)")
    kind, size = parse_header(header)
    payload = _read_exact(stream, size)
    if len(payload) != size:
        raise FrameError(f"stream ended after {len(payload)} of {size} payload bytes")
    return kind, payload


def _read_exact(stream, size: int) -> bytes:
    chunks, got = [], 0
    while got < size:
        chunk = stream.read(size - got)
        if not chunk:
            break
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def pack_arrays(arrays: dict[str, np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def unpack_arrays(payload: bytes) -> dict[str, np.ndarray]:
    """Arrays of an ``.npz`` payload; never unpickles (object arrays are refused)."""
    try:
        data = np.load(io.BytesIO(payload), allow_pickle=False)
    except Exception as exc:  # not an .npz at all
        raise FrameError(f"payload is not an .npz archive ({type(exc).__name__}: {exc})") from None
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise FrameError("payload is a bare .npy array, expected an .npz archive")
    with data:
        return {name: data[name] for name in data.files}


def serve_requests(model_path, batch: int, length: int, engine, requests, replies) -> int:
    """Answers request frames with `engine` until `requests` ends (0) or desynchronises (2).

    A request is an .npz of exactly the graph's inputs, each [batch, length]
    integers; the reply is an .npz of every graph output. A request that fails
    gets an ERROR frame and the worker serves on.
    """
    import onnx

    names = input_names(model_path)
    outputs = [o.name for o in onnx.load(str(model_path), load_external_data=False).graph.output]
    while True:
        try:
            frame = read_frame(requests)
        except FrameError as exc:
            write_frame(replies, ERROR, f"malformed request frame: {exc}; worker exits".encode())
            return 2
        if frame is None:
            return 0
        kind, payload = frame
        try:
            if kind != DATA:
                raise FrameError(f"request frame of kind {kind!r}, expected {DATA!r}")
            feeds = _request_feeds(unpack_arrays(payload), names, batch, length)
            reply = pack_arrays(dict(zip(outputs, engine.run(feeds), strict=True)))
        except Exception as exc:  # one bad request; the engine is still good
            write_frame(replies, ERROR, f"{type(exc).__name__}: {exc}".encode())
            continue
        write_frame(replies, DATA, reply)


def _request_feeds(arrays, names, batch, length) -> list[np.ndarray]:
    if sorted(arrays) != sorted(names):
        raise ValueError(f"request holds inputs {sorted(arrays)}, the graph takes {names}")
    feeds = []
    for name in names:
        x = arrays[name]
        if x.shape != (batch, length) or x.dtype.kind not in "iu":
            raise ValueError(
                f"input {name!r} is {x.dtype}{list(x.shape)}, the engine is compiled for "
                f"int64[{batch}, {length}]"
            )
        feeds.append(np.ascontiguousarray(x, dtype=np.int64))
    return feeds


def serve(model_path, batch: int, length: int, threads: int | None) -> int:
    """The worker: compile once, print the ready line, serve frames over stdin/stdout."""
    # Frames own the real stdout; whatever else writes to fd 1 (DeepSparse's banner,
    # its C++ logs) goes to stderr instead of corrupting the stream.
    replies = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    # Ctrl-C reaches the whole process group: the server decides when we stop (EOF).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with tempfile.TemporaryDirectory() as tmp:
        engine = compile_engine(model_path, batch, length, threads, Path(tmp))
        ready = {"ready": True, "pid": os.getpid(), "batch": batch, "sequence_length": length}
        replies.write((json.dumps({**ready, **_facts(engine)}) + "\n").encode())
        replies.flush()
        return serve_requests(model_path, batch, length, engine, sys.stdin.buffer, replies)


def _facts(engine) -> dict:
    import deepsparse

    return {
        "fraction_of_supported_ops": float(engine.fraction_of_supported_ops),
        "deepsparse_version": str(deepsparse.__version__),
        "num_cores": int(engine.num_cores),
    }


def warn_if_inexact(model_path: str | Path) -> str | None:
    """A loud stderr warning when this CPU computes the deployment beside `model_path` wrongly.

    `runtime/cpu_features.py` is loaded by path: DeepSparse's own environment
    does not have this package installed.
    """
    import importlib.util

    report_path = Path(model_path).parent / "export_report.json"
    if not report_path.is_file():
        return None
    spec = importlib.util.spec_from_file_location(
        "cpu_features", Path(__file__).parents[1] / "runtime" / "cpu_features.py"
    )
    cpu_features = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cpu_features)
    report = json.loads(report_path.read_text())
    exact, reason = cpu_features.int8_variant_is_exact_here(report, engine="deepsparse")
    if exact:
        return None
    message = f"WARNING: {model_path}: results are WRONG on this CPU: {reason}"
    print(message, file=sys.stderr)
    return message


def _timing_options(parser: argparse.ArgumentParser, iterations: int) -> None:
    """The options `time` and `rounds` share: shape, threads, ids and run counts."""
    parser.add_argument("--sequence_length", type=int, default=128)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--vocab", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--iterations", type=int, default=iterations)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_run = sub.add_parser("run", help="outputs of one batch (inputs/outputs as .npz)")
    p_run.add_argument("model")
    p_run.add_argument("inputs")
    p_run.add_argument("outputs")
    p_run.add_argument("--threads", type=int, default=None)
    p_time = sub.add_parser("time", help="latencies per batch size, JSON on stdout")
    p_time.add_argument("model")
    p_time.add_argument("--batch_sizes", default="1")
    _timing_options(p_time, iterations=20)
    p_time.add_argument("--min_seconds", type=float, default=0.0)
    p_rounds = sub.add_parser(
        "rounds", help="interleaved timing: one round per 'round' line on stdin, JSON lines out"
    )
    p_rounds.add_argument("models", nargs="+")
    p_rounds.add_argument("--batch", type=int, default=1)
    _timing_options(p_rounds, iterations=3)
    p_rounds.add_argument("--gap_s", type=float, default=0.0)
    p_serve = sub.add_parser("serve", help="persistent worker: frames over stdin/stdout")
    p_serve.add_argument("model")
    p_serve.add_argument("--batch", type=int, required=True)
    p_serve.add_argument("--sequence_length", type=int, required=True)
    p_serve.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    for model in args.models if args.command == "rounds" else [args.model]:
        warn_if_inexact(model)
    if args.command == "rounds":
        return rounds(
            args.models,
            args.batch,
            args.sequence_length,
            args.threads,
            args.vocab,
            args.warmup,
            args.iterations,
            args.gap_s,
        )
    elif args.command == "serve":
        return serve(args.model, args.batch, args.sequence_length, args.threads)
    elif args.command == "run":
        with np.load(args.inputs) as data:
            inputs = {k: data[k] for k in data.files}
        outputs, facts = run(args.model, inputs, args.threads)
        np.savez(args.outputs, **outputs)
        print(json.dumps(facts))
    else:
        sizes = [int(b) for b in str(args.batch_sizes).split(",") if b.strip()]
        print(
            json.dumps(
                time_engine(
                    args.model,
                    sizes,
                    args.sequence_length,
                    args.threads,
                    args.vocab,
                    args.warmup,
                    args.iterations,
                    args.min_seconds,
                )
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
