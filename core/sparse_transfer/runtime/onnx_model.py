"""`OnnxModel`: an exported deployment folder run by ONNX Runtime, HF-style outputs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from sparse_transfer.errors import ExportError

MODEL_FILE = "model.onnx"
REPORT_FILE = "export_report.json"


def _model_file(path: str | Path) -> Path:
    path = Path(path)
    model = path / MODEL_FILE if path.is_dir() else path
    if not model.is_file():
        raise ExportError(
            f"{path}: no {MODEL_FILE}; pass a deployment folder written by export-onnx"
        )
    return model


def session_options(threads: int | None = None, engine: str = "onnxruntime", spin: bool = True):
    """ORT options; for the sparse engine with the kernel library registered.

    ``spin=False`` stops the intra-op threads spinning for more work after each run
    (``session.intra_op.allow_spinning``, on by default: onnxruntime/core/session/
    onnxruntime_session_options_config_keys.h). A server wants that: between its many
    short runs the spinning threads take the CPU its HTTP loop and tokeniser need.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
    if not spin:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if engine == "onnxruntime-sparse":
        from sparse_transfer.runtime.engines import register_library

        status = register_library(options)
        if not status.available:
            raise ExportError(f"--engine onnxruntime-sparse: {status.reason}")
    return options


class OnnxModel:
    """ONNX Runtime session over ``DIR/model.onnx`` or ``DIR/model.sparse.onnx`` (CPU).

    ``engine`` (`sparse_transfer.runtime.engines`): ``onnxruntime`` runs the
    standard graph, ``onnxruntime-sparse`` the sparse one with the kernel library
    (ExportError naming the reason when it cannot), ``auto`` the sparse one when it
    can, else the standard one with a warning; ``self.engine`` says which ran.

    Calling it with tokenizer features (``input_ids``, ``attention_mask``,
    optionally ``token_type_ids``; extra keys such as ``labels`` are ignored)
    returns ``{output_name: array}`` with the HF names (``logits``, or
    ``start_logits``/``end_logits``).

    A full-range int8 deployment on a CPU whose integer kernel saturates
    (AVX2 or AVX-512 without VNNI) would give wrong answers: opening one raises
    `ExportError` saying why, unless ``check_cpu=False`` (benchmarks time it
    anyway; the export's parity check reports it itself). ``spin=False``: the
    intra-op threads sleep between runs (`session_options`; the server's choice).
    """

    def __init__(
        self,
        deployment_dir: str | Path,
        threads: int | None = None,
        check_cpu: bool = True,
        engine: str = "onnxruntime",
        verify: bool = False,
        spin: bool = True,
    ):
        import onnxruntime as ort

        from sparse_transfer.runtime.engines import choose

        self.directory = _model_file(deployment_dir).parent
        self.engine, self.path = choose(self.directory, engine, self.report)
        if check_cpu:
            from sparse_transfer.runtime.cpu_features import int8_variant_is_exact_here

            exact, reason = int8_variant_is_exact_here(self.report, engine=self.engine)
            if not exact:
                raise ExportError(f"{self.directory}: {reason}")
        from onnxruntime.capi import onnxruntime_pybind11_state as ort_errors

        try:
            self.session = ort.InferenceSession(
                str(self.path),
                session_options(threads, self.engine, spin),
                providers=["CPUExecutionProvider"],
            )
        except (ort_errors.InvalidProtobuf, ort_errors.InvalidGraph, ort_errors.Fail) as exc:
            reason = str(exc).rsplit(":", 1)[-1].strip() or type(exc).__name__
            raise ExportError(
                f"{self.path}: not a loadable ONNX model ({reason}); the file is truncated "
                "or corrupted: export the deployment again"
            ) from None
        if verify:  # evaluate, benchmark, serve: the files are the exported ones, nothing added
            from sparse_transfer import storage

            storage.verify_recorded(self.directory)
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]

    @property
    def report(self) -> dict[str, Any]:
        """The folder's export_report.json ({} when absent)."""
        path = self.directory / REPORT_FILE
        return json.loads(path.read_text()) if path.is_file() else {}

    def feeds(self, features: dict[str, Any]) -> dict[str, np.ndarray]:
        ids = np.asarray(features["input_ids"])
        feeds = {}
        for name in self.input_names:
            if name in features:
                feeds[name] = np.asarray(features[name], dtype=np.int64)
            elif name == "attention_mask":
                feeds[name] = np.ones(ids.shape, dtype=np.int64)
            elif name == "token_type_ids":
                feeds[name] = np.zeros(ids.shape, dtype=np.int64)
            else:
                raise ExportError(f"{self.path}: input {name!r} missing from the features")
        return feeds

    def __call__(self, features: dict[str, Any]) -> dict[str, np.ndarray]:
        outputs = self.session.run(self.output_names, self.feeds(features))
        return dict(zip(self.output_names, outputs, strict=True))
