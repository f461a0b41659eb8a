"""Reference -> verified local folder -> tokenizer, codec and engine ready to run."""

from __future__ import annotations

import copy
import dataclasses
import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sparse_transfer.runtime.cores import cfs_quota, usable_cores
from sparse_transfer.serving.codecs import Codec, codec_for
from sparse_transfer.serving.engines import load_engine, select_engine
from sparse_transfer.serving.options import ServeOptions, ServingError
from sparse_transfer.serving.verify import verify_deployment

log = logging.getLogger(__name__)


def resolve_deployment(ref: str, engine: str = "onnxruntime") -> tuple[Path, dict[str, Any]]:
    """A folder, s3:// URI or zoo stub -> (verified local folder, its export report).

    Resolution goes through `zoo.resolve(ref, "deployment")`, the same as
    ``evaluate`` and ``benchmark``: published folders, s3:// and stubs are
    checked file by file against their manifest (a mismatch raises StorageError).
    """
    from sparse_transfer.zoo import resolve

    folder = Path(resolve(ref, "deployment"))
    if not folder.is_dir():
        raise ServingError(f"{ref}: resolved to {folder}, which is not a deployment folder")
    return folder, verify_deployment(folder, engine)


def sequence_length(report: dict[str, Any], options: ServeOptions, spec, config) -> int:
    """--max_seq_length, else the export's requested length, else the task default; checked
    (and capped at the model's positions) by the one rule of `tasks.lengths`."""
    from sparse_transfer.tasks.lengths import model_positions, resolve_lengths

    recorded = (report.get("sequence_length") or {}).get("requested")
    length, _ = resolve_lengths(
        spec, options.max_seq_length or recorded, options.doc_stride,
        model_positions(config), error=ServingError,
    )  # fmt: skip
    return length


@dataclass
class Loaded:
    """Everything a batch needs; `run_batch` is what the batcher calls."""

    codec: Codec
    engine: Any
    engine_name: str
    max_batch_size: int

    def run_batch(self, instances: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return self.codec.run(self.engine, instances, self.max_batch_size)

    def runners(self, count: int) -> list[Callable[[list[dict[str, Any]]], list[dict]]]:
        """One batch runner per engine worker, each with its own copy of the codec: a fast
        tokenizer must not be called from two threads at once (nor from the event loop's
        checks while a worker encodes); the engine, an ONNX Runtime session, is shared."""
        own = [copy.deepcopy(self.codec) for _ in range(count)]
        return [functools.partial(codec.run, self.engine, batch_size=self.max_batch_size)
                for codec in own]  # fmt: skip


def engine_threads(options: ServeOptions) -> int | None:
    """Intra-op threads per engine call: as asked, else the usable cores shared out between
    the workers; None (ONNX Runtime's default, every core it finds) for one worker when no CPU
    quota caps the process. ORT counts the node's cores, so under a pod's CPU limit it would
    start more threads than the quota runs."""
    if options.threads:
        return options.threads
    if options.engine_workers == 1 and cfs_quota() is None:
        return None
    return max(1, usable_cores() // options.engine_workers)


def load_deployment(folder: Path, report: dict[str, Any], options: ServeOptions) -> Loaded:
    from sparse_transfer.tasks.lengths import resolve_lengths
    from sparse_transfer.tasks.models import load_config, load_tokenizer
    from sparse_transfer.tasks.registry import get_task

    spec = get_task(report["task"])
    config = load_config(str(folder))
    tokenizer = load_tokenizer(folder)
    length = sequence_length(report, options, spec, config)
    _, stride = resolve_lengths(spec, length, options.doc_stride, error=ServingError)
    if stride is not None:
        options = dataclasses.replace(options, doc_stride=stride)
    codec = codec_for(spec, tokenizer, config, options, length)
    engine_name = select_engine(options.engine)
    threads = engine_threads(options)
    engine = load_engine(engine_name, folder, threads, options.max_batch_size, length)
    engine_name = getattr(engine, "engine", engine_name)  # what ``auto`` became
    log.info(
        "serving %s (%s, max_seq_length %d) with %s: %d engine worker(s), %s thread(s) each",
        folder, spec.name, length, engine_name, options.engine_workers, threads or "all",
    )  # fmt: skip
    return Loaded(codec, engine, engine_name, options.max_batch_size)
