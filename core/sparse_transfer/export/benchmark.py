"""Latency and throughput of a deployment folder in ONNX Runtime (and DeepSparse if installed).

Random token ids of the requested shape (full attention mask) after a
warm-up; latency percentiles per batch size and throughput in items/s.
DeepSparse is optional (its 1.8 release pins onnx 1.14 / numpy 1.26, so it
lives in its own environment): the branch runs if ``import deepsparse`` works
here, or else in the interpreter ``SPARSE_TRANSFER_DEEPSPARSE_PYTHON`` names
(`deepsparse_runner.py` run by path), on a copy of the graph with the shape
fixed, as DeepSparse requires.
"""

from __future__ import annotations

import itertools
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sparse_transfer.errors import ExportError
from sparse_transfer.export.deepsparse_rounds import DeepSparseRounds, failure_cause
from sparse_transfer.runtime.onnx_model import OnnxModel, _model_file


def _inputs(
    model: OnnxModel,
    batch: int,
    length: int,
    vocab: int,
    texts: Sequence[str] | None = None,
    first: int = 0,
    tokenizer=None,
) -> dict[str, np.ndarray]:
    """Random token ids with a full mask, or with `texts` real sentences (`batch` of them from
    index `first`, cycled) padded to `length` with their masks: random ids hide data-dependent
    costs (the attention's masked keys and peaked rows once made it 3x slower on real ones).
    `tokenizer`: the deployment's, when the caller has loaded it already."""
    if texts:
        from sparse_transfer.tasks.models import load_tokenizer

        chosen = [texts[(first + i) % len(texts)] for i in range(batch)]
        enc = (tokenizer or load_tokenizer(model.directory))(
            chosen, padding="max_length", truncation=True, max_length=length, return_tensors="np"
        )
        return model.feeds({k: v for k, v in enc.items() if k in model.input_names})
    rng = np.random.default_rng(0)
    ids = rng.integers(5, max(6, vocab), size=(batch, length), dtype=np.int64)
    return model.feeds({"input_ids": ids})


MAX_TEXT_BATCHES = 32


def _cycled_runs(model: OnnxModel, batch: int, length: int, vocab: int, texts=None):
    """A function that runs the next input batch: with `texts`, up to `MAX_TEXT_BATCHES`
    consecutive batches of them in turn (every sentence once where they fit), so a timing
    covers many sentences, not the first `batch` again and again; else the one random batch."""
    if not texts:
        batches = [_inputs(model, batch, length, vocab)]
    else:
        from sparse_transfer.tasks.models import load_tokenizer

        tokenizer = load_tokenizer(model.directory)  # once, not once per batch
        count = min(MAX_TEXT_BATCHES, -(-len(texts) // batch))
        batches = [_inputs(model, batch, length, vocab, texts, j * batch, tokenizer)
                   for j in range(count)]  # fmt: skip
    turn = itertools.cycle(batches)
    session = model.session
    return lambda: session.run(None, next(turn))


TEXT_FIELDS = ("text", "sentence")
NO_TEXTS_FOR_DEEPSPARSE = {
    "available": False,
    "reason": "not run with --texts: DeepSparse's runner times random token ids only",
}


def load_texts(path: str | Path, limit: int = 4096) -> list[str]:
    """The `text` (or `sentence`) field of each JSON line of `path`, at most `limit`: the
    data files `train` and `evaluate` read. A bad line is an error naming file and line."""
    texts: list[str] = []
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ExportError(f"--texts {path}: cannot read it ({type(exc).__name__})") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            raise ExportError(f"--texts {path}:{number}: not a JSON object") from None
        text = next((row[f] for f in TEXT_FIELDS if isinstance(row, dict) and f in row), None)
        if not isinstance(text, str) or not text.strip():
            raise ExportError(
                f"--texts {path}:{number}: needs a non-empty string field "
                f"{' or '.join(TEXT_FIELDS)}"
            )
        texts.append(text)
        if len(texts) == limit:
            break
    if not texts:
        raise ExportError(f"--texts {path}: no rows")
    return texts


def _stats(times: Sequence[float], batch: int) -> dict[str, float]:
    ms = np.asarray(times) * 1000.0
    return {
        "p50_ms": round(float(np.percentile(ms, 50)), 3),
        "p90_ms": round(float(np.percentile(ms, 90)), 3),
        "p99_ms": round(float(np.percentile(ms, 99)), 3),
        "mean_ms": round(float(ms.mean()), 3),
        "throughput_items_per_s": round(batch * 1000.0 / float(ms.mean()), 3),
        "iterations": len(times),
    }


def _time(fn, warmup: int, iterations: int, min_seconds: float) -> list[float]:
    for _ in range(warmup):
        fn()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < iterations or (
        time.perf_counter() - start < min_seconds and len(times) < 10 * iterations
    ):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return times


def _vocab_size(directory: Path) -> int:
    """The model's vocab_size: random token ids must stay below it."""
    config = directory / "config.json"
    try:
        vocab = json.loads(config.read_text(encoding="utf-8"))["vocab_size"]
    except FileNotFoundError:
        raise ExportError(
            f"{directory}: no config.json; a deployment written by export-onnx has one "
            "(the benchmark needs its vocab_size)"
        ) from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ExportError(f"{config}: no readable vocab_size ({type(exc).__name__})") from None
    if not isinstance(vocab, int) or isinstance(vocab, bool) or vocab < 6:
        raise ExportError(f"{config}: vocab_size must be an integer of at least 6, got {vocab!r}")
    return vocab


def benchmark(
    deployment_dir: str | Path,
    batch_sizes: Sequence[int] = (1, 32),
    sequence_length: int = 128,
    threads: int | None = None,
    warmup: int = 3,
    iterations: int = 20,
    min_seconds: float = 0.0,
    engines: Sequence[str] = ("onnxruntime", "deepsparse"),
    ort_engine: str = "onnxruntime",
    texts: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Measures the deployment; returns ``{"onnxruntime": {"batch_1": {...}}, ...}``.

    `ort_engine` (`sparse_transfer.runtime.engines`) picks ONNX Runtime's graph: the
    standard ``model.onnx``, the sparse one with the kernel library, or ``auto``;
    ``result["ort_engine"]`` says which ran. `texts`: real sentences as inputs (`_inputs`)."""
    path = _model_file(deployment_dir)
    directory = path.parent
    vocab = _vocab_size(directory)
    result: dict[str, Any] = {
        "model": str(path),
        "sequence_length": int(sequence_length),
        "threads": threads or os.cpu_count(),
        "model_onnx_bytes": path.stat().st_size,
        "inputs": f"{len(texts)} real texts" if texts else "random token ids",
    }
    warnings = _exactness_warnings({"deployment": directory}, engines)
    if warnings:
        result["warnings"] = warnings
    if "onnxruntime" in engines:
        model = OnnxModel(
            directory, threads=threads, check_cpu=False, engine=ort_engine, verify=True
        )
        result["ort_engine"] = model.engine
        runs = {}
        for b in batch_sizes:
            run = _cycled_runs(model, b, sequence_length, vocab, texts)
            times = _time(run, warmup, iterations, min_seconds)
            runs[f"batch_{b}"] = _stats(times, b)
        result["onnxruntime"] = runs
    if "deepsparse" in engines and texts:
        result["deepsparse"] = dict(NO_TEXTS_FOR_DEEPSPARSE)
    elif "deepsparse" in engines:
        result["deepsparse"] = _deepsparse(
            path, batch_sizes, sequence_length, threads, vocab, warmup, iterations, min_seconds
        )
    return result


def _exactness_warnings(directories: dict[str, Path], engines: Sequence[str]) -> list[str]:
    """Loud warnings for deployments this CPU computes wrongly (timed anyway: speed is real)."""
    import json
    import logging

    from sparse_transfer.runtime.cpu_features import int8_variant_is_exact_here
    from sparse_transfer.runtime.onnx_model import REPORT_FILE

    out = []
    for name, directory in directories.items():
        report_path = Path(directory) / REPORT_FILE
        report = json.loads(report_path.read_text()) if report_path.is_file() else {}
        for engine in engines:
            exact, reason = int8_variant_is_exact_here(report, engine=engine)
            if not exact:
                out.append(f"{name} ({engine}): WRONG RESULTS ON THIS CPU, timing only: {reason}")
                logging.getLogger(__name__).warning(out[-1])
    return out


def _deepsparse_python() -> tuple[str | None, dict[str, Any] | None]:
    """Where DeepSparse runs: (this interpreter if it imports deepsparse, else the one
    `SPARSE_TRANSFER_DEEPSPARSE_PYTHON` names, None), or (None, the "not available" result)."""
    import sys

    from sparse_transfer.export import deepsparse_runner as runner

    try:
        import deepsparse  # noqa: F401

        return sys.executable, None
    except Exception as exc:  # not installed here (the usual case) or broken
        python = os.environ.get(runner.ENV_PYTHON)
        if python:
            return python, None
        return None, {
            "available": False,
            "reason": f"deepsparse not importable ({exc.__class__.__name__}) and "
            f"{runner.ENV_PYTHON} not set",
        }


def _deepsparse(path, batch_sizes, length, threads, vocab, warmup, iterations, min_seconds):
    """DeepSparse latencies (DeepSparse 1.8 usually needs its own environment)."""
    import sys

    from sparse_transfer.export import deepsparse_runner as runner

    python, unavailable = _deepsparse_python()
    if unavailable:
        return unavailable
    args = (path, list(batch_sizes), length, threads, vocab, warmup, iterations, min_seconds)
    try:
        if python == sys.executable:
            raw, where = runner.time_engine(*args), "this interpreter"
        else:
            raw, where = _deepsparse_subprocess(python, *args), python
    except Exception as exc:
        return {"available": False, "reason": f"deepsparse in {python} failed: {exc}"}
    runs: dict[str, Any] = {"available": True, "python": where}
    for key, r in raw.items():
        runs[key] = {**_stats(r.pop("times_s"), int(key.split("_")[1])), **r}
    return runs


def _deepsparse_subprocess(
    python, path, batch_sizes, length, threads, vocab, warmup, iterations, min_seconds
) -> dict[str, Any]:
    from sparse_transfer.export import deepsparse_runner as runner

    command = [python, runner.__file__, "time", str(path)]
    command += ["--batch_sizes", ",".join(str(b) for b in batch_sizes)]
    command += ["--sequence_length", str(length), "--vocab", str(vocab), "--warmup", str(warmup)]
    command += ["--iterations", str(iterations), "--min_seconds", str(min_seconds)]
    if threads:
        command += ["--threads", str(threads)]
    return _runner_json(command)


def _runner_json(command: list[str]) -> dict[str, Any]:
    """Runs `deepsparse_runner.py`; its last JSON line, or RuntimeError with the cause."""
    import json
    import subprocess

    done = subprocess.run(command, capture_output=True, text=True, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"exit {done.returncode}: {failure_cause(done.stderr + done.stdout)}")
    return json.loads(lines[-1])


def _round_stats(rounds_s: Sequence[Sequence[float]], batch: int) -> dict[str, Any]:
    """Percentiles over every interleaved run, plus each round's p50 and the best of them."""
    per_round = [float(np.percentile(np.asarray(r) * 1000.0, 50)) for r in rounds_s]
    stats = _stats([t for r in rounds_s for t in r], batch)
    stats.update(
        {
            "best_round_p50_ms": round(min(per_round), 3),
            "round_p50_ms": [round(v, 3) for v in per_round],
            "rounds": len(rounds_s),
        }
    )
    return stats


def compare(
    deployments: dict[str, str | Path | tuple[str | Path, str]],
    batch: int = 1,
    sequence_length: int = 128,
    threads: int | None = None,
    rounds: int = 30,
    iterations: int = 3,
    warmup: int = 3,
    engines: Sequence[str] = ("onnxruntime", "deepsparse"),
    ort_engines: Sequence[str] = ("onnxruntime",),
    deepsparse_names: Sequence[str] | None = None,
    texts: Sequence[str] | None = None,
) -> dict[str, dict[str, Any]]:
    """Times several deployments in interleaved rounds; ``{engine: {name: stats}}``.

    Each deployment runs under every ONNX Runtime engine of `ort_engines` (the
    standard and the sparse graph of one deployment, interleaved like the rest);
    with more than one, names read ``"NAME [ENGINE]"`` and ``stats["engine"]`` says
    which graph ran (``auto`` may fall back). A ``(folder, engine)`` value pins one
    deployment to one engine (a dense FP32 folder has no sparse graph).

    Each round runs every model `iterations` times, one model after another,
    so load from elsewhere on a shared machine falls on every model alike
    (measured here: a neighbour's load can double int8 latency within
    minutes). Many short rounds interleave finely; ``p50_ms`` is over all
    runs. DeepSparse (when available, see `benchmark`) runs every model (or
    those `deepsparse_names` names) in one worker of its own interpreter, one
    DeepSparse round after each ONNX Runtime round (`deepsparse_rounds`). With `texts`, real
    sentences are the inputs (`_inputs`) and DeepSparse, which makes its own, is not run.
    """
    pinned = {n: d[1] for n, d in deployments.items() if isinstance(d, tuple)}
    paths = {n: _model_file(d[0] if isinstance(d, tuple) else d) for n, d in deployments.items()}
    vocab = min(_vocab_size(p.parent) for p in paths.values())  # ids valid in every model
    out: dict[str, dict[str, Any]] = {}
    warnings = _exactness_warnings({n: p.parent for n, p in paths.items()}, engines)
    if warnings:
        out["warnings"] = warnings  # type: ignore[assignment]
    deepsparse = None
    if "deepsparse" in engines and texts:
        out["deepsparse"] = dict(NO_TEXTS_FOR_DEEPSPARSE)
    elif "deepsparse" in engines:
        chosen = _deepsparse_paths(paths, deepsparse_names)
        deepsparse = _deepsparse_rounds(chosen, batch, sequence_length, threads, vocab, warmup,
                                        iterations)  # fmt: skip
    step = deepsparse.step if isinstance(deepsparse, DeepSparseRounds) else None
    try:
        if "onnxruntime" in engines:
            out["onnxruntime"] = _ort_rounds(
                paths, pinned, ort_engines, batch, sequence_length, threads, vocab, rounds,
                iterations, warmup, between=step, texts=texts,
            )  # fmt: skip
        elif step is not None:
            for _ in range(rounds):
                step()
    finally:
        if isinstance(deepsparse, DeepSparseRounds):
            deepsparse.close()
    if deepsparse is not None:
        out["deepsparse"] = _deepsparse_result(deepsparse, batch)
    return out


# Idle time before each model's turn in a round. After a run, ONNX Runtime's intra-op pool
# threads spin before they block (`session.intra_op.allow_spinning`, on by default;
# onnxruntime/core/platform/EigenNonBlockingThreadPool.h), so on a 2-core machine the model
# that ran last steals CPU from the next one: measured with BERT-base int8, ORT's own int8 read
# 46.5 ms p50 and our 90% block4 sparse graph 36.9 ms back to back, 37.4 and 19.9 ms with this
# gap (whose p50 matches ORT's profile of the same graph). A served model runs alone; the gap
# gives every model that start.
SESSION_GAP_S = 0.05


def _ort_rounds(paths, pinned, ort_engines, batch, length, threads, vocab, rounds, iterations,
                warmup, between=None, texts=None):  # fmt: skip
    """ONNX Runtime's part of `compare`: every (deployment, engine) once per round, each after
    `SESSION_GAP_S` of idle time; `between()` after each round (DeepSparse's round)."""
    sessions = {}
    for name, path in paths.items():
        mine = [pinned[name]] if name in pinned else ort_engines
        for engine in mine:
            key = name if len(mine) == 1 else f"{name} [{engine}]"
            model = OnnxModel(
                path.parent, threads=threads, check_cpu=False, engine=engine, verify=True
            )
            run = _cycled_runs(model, batch, length, vocab, texts)
            for _ in range(warmup):
                run()
            sessions[key] = (run, model.engine)
    rounds_s: dict[str, list[list[float]]] = {n: [] for n in sessions}
    for _ in range(rounds):
        for name, (run, _) in sessions.items():
            time.sleep(SESSION_GAP_S)
            rounds_s[name].append(_time(run, 0, iterations, 0.0))
        if between is not None:
            between()
    return {n: {**_round_stats(r, batch), "engine": sessions[n][1]} for n, r in rounds_s.items()}


def dynamic_int8_copy(dense: str | Path, dest: str | Path) -> Path:
    """`dest`: the dense FP32 deployment `dense` with ONNX Runtime's ``quantize_dynamic``
    (int8 weights) in place of its graph: the yardstick a sparse deployment must beat.

    The copy is a deployment of its own: the source's file record (which lists the FP32
    graph) is not copied; a fresh one is written last, so the copy passes the same check
    before use as any export."""
    import shutil

    from onnxruntime.quantization import QuantType, quantize_dynamic

    from sparse_transfer import storage
    from sparse_transfer.export.deployment import DEPLOYMENT

    source = _model_file(dense).parent
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=False)
    skip = {"model.onnx", "model.sparse.onnx", storage.RECORD}
    for f in source.iterdir():
        if f.is_file() and f.name not in skip:
            shutil.copyfile(f, dest / f.name)
    quantize_dynamic(
        str(source / "model.onnx"), str(dest / "model.onnx"), weight_type=QuantType.QInt8
    )
    storage.record_files(dest, DEPLOYMENT)
    return dest


def _deepsparse_paths(paths: dict[str, Path], names: Sequence[str] | None) -> dict[str, Path]:
    if names is None:
        return paths
    unknown = sorted(set(names) - set(paths))
    if unknown:
        raise ExportError(f"deepsparse_names {unknown}: not among the deployments {sorted(paths)}")
    return {n: p for n, p in paths.items() if n in names}


def _deepsparse_rounds(paths, batch, length, threads, vocab, warmup, iterations):
    """A started `DeepSparseRounds` worker, or the "not available" result."""
    from sparse_transfer.export import deepsparse_runner as runner

    python, unavailable = _deepsparse_python()
    if unavailable:
        return unavailable
    unique = dict.fromkeys(str(p) for p in paths.values())  # two names may share one graph
    command = [python, runner.__file__, "rounds", *unique]
    command += ["--batch", str(batch), "--sequence_length", str(length), "--vocab", str(vocab)]
    command += ["--warmup", str(warmup), "--iterations", str(iterations)]
    command += ["--gap_s", str(SESSION_GAP_S)]
    if threads:
        command += ["--threads", str(threads)]
    return DeepSparseRounds(command, paths)


def _deepsparse_result(deepsparse, batch: int) -> dict[str, Any]:
    if not isinstance(deepsparse, DeepSparseRounds):
        return deepsparse  # not available, and why
    if deepsparse.failure:
        return {"available": False, "reason": f"deepsparse failed: {deepsparse.failure}"}
    result: dict[str, Any] = {"available": True, "python": deepsparse.python, "interleaved": True}
    for name, rounds_s in deepsparse.rounds_s.items():
        result[name] = {**_round_stats(rounds_s, batch), **deepsparse.facts[name]}
    return result
