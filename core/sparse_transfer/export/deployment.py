"""`export_onnx`: model directory -> verified deployment folder, written atomically.

The folder holds everything a runtime needs and nothing half-written:
``model.onnx``, ``config.json``, every tokenizer file, ``recipe.yaml`` (when
the model has one) and ``export_report.json`` (graph I/O, opset, sparsity and
int8 zero-pattern check per initializer, parity figures, sizes). It is built
in a temporary sibling directory and swapped into place only after the
parity check passed, so an error never leaves a partial ``deployment/``. The
swap is `storage.replace_directory`: an existing destination is replaced
only when it is an earlier deployment (it has ``export_report.json``) and
``overwrite`` was asked for; never the model folder, its parents, the
working directory, a file or a folder of other files.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tarfile
from pathlib import Path
from typing import Any

import numpy as np

from sparse_transfer import storage
from sparse_transfer.errors import ExportError
from sparse_transfer.export import onnx_export as ox
from sparse_transfer.export import parity
from sparse_transfer.export.int8 import u8s8_weight_max_abs
from sparse_transfer.runtime import cpu_features
from sparse_transfer.runtime.onnx_model import MODEL_FILE, REPORT_FILE, OnnxModel
from sparse_transfer.tasks.lengths import trained_length

log = logging.getLogger(__name__)

FORMATS = ("auto", "fp32", "integer", "qdq")
ARCHIVE_NAME = "deployment.tar.gz"
DEFAULT_PARITY_LENGTH = 128
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
    "added_tokens.json",
)


def export_onnx(
    model_path: str | Path,
    task: str,
    output: str | Path | None = None,
    sequence_length: int | None = None,
    format: str = "auto",  # noqa: A002  (the CLI flag's name)
    compress: bool = False,
    opset: int | None = None,
    verify_dataset: str | Path | None = None,
    overwrite: bool = False,
) -> Path:
    """Exports `model_path` to a deployment folder and verifies it; returns the folder.

    Args:
        model_path: directory written by ``save_pretrained`` (+ tokenizer, and
            ``quantization.json`` for a QAT model).
        task: text-classification, token-classification, question-answering
            or masked-language-modeling (aliases accepted).
        output: destination folder; default ``<model_path>/deployment``.
        sequence_length: length of the parity inputs and the one recorded for
            runtimes that need a fixed shape; the graph keeps dynamic batch and
            sequence axes either way (never silently fixed at 512). Unset (None
            or 0): the length the model was trained with (``run_summary.json``).
        format: ``auto`` (int8 ``integer`` for a QAT model, else ``fp32``),
            ``fp32``, ``integer`` (QuantizeLinear + MatMulInteger) or ``qdq``.
        compress: also write ``deployment.tar.gz`` (the folder's files).
        opset: ONNX opset (default 13; int8 needs >= 13).
        verify_dataset: optional JSONL file of task examples: parity runs on
            them too, and with labels the accuracy of torch and ONNX is compared.
        overwrite: replace an earlier deployment at `output` (``--overwrite``).

    Raises:
        ExportError: bad input or failed verification (nothing is left behind).
        StorageError: `output` may not be replaced (see `storage.check_replaceable`).
    """
    opset = _check_format_and_opset(format, opset)
    spec = ox.task_spec(task)
    model_dir = ox.check_model_dir(model_path)
    sequence_length = sequence_length or trained_length(model_dir)  # unset: the trained length
    if verify_dataset is not None and not Path(verify_dataset).is_file():
        raise ExportError(f"--verify_dataset {verify_dataset}: no such file")
    dest = Path(output) if output else model_dir / "deployment"
    storage.clean_leftovers(dest)
    protect = [model_dir, *([Path(verify_dataset)] if verify_dataset is not None else [])]
    storage.check_replaceable(dest, **_replace_rules(overwrite, protect))

    model, tokenizer, spec = ox.load_for_export(model_dir, spec.name)
    fmt = _pick_format(model, model_dir, format, opset)
    parity_length = _parity_length(model, sequence_length)

    work = storage.staging_dir(dest)  # marked, so a killed export's leftover is cleaned
    tmp = work / dest.name
    tmp.mkdir()
    try:
        report = _build(
            model, tokenizer, spec, model_dir, tmp, fmt, opset, parity_length, sequence_length,
            verify_dataset,
        )  # fmt: skip
        if compress:
            report["sizes"]["compressed"] = _compress(tmp, report)
        _write_json(tmp / REPORT_FILE, report)
        storage.record_files(tmp, DEPLOYMENT)  # sha256 of every file: checked before use
        storage.replace_directory(tmp, dest, **_replace_rules(overwrite, protect))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    log.info("exported %s (%s) to %s", model_dir, fmt, dest)
    return dest


def _check_format_and_opset(format: str, opset: int | None) -> int:  # noqa: A002
    """The opset to use; a format/opset pair that cannot work is refused before loading."""
    if format not in FORMATS:
        raise ExportError(f"--format {format!r}: choose one of {', '.join(FORMATS)}")
    opset = ox.DEFAULT_OPSET if opset is None else int(opset)
    if format in ("integer", "qdq") and opset < ox.MIN_OPSET_INT8:
        raise ExportError(
            f"--opset {opset} is too old for int8 export (needs >= {ox.MIN_OPSET_INT8} for "
            "per-channel QuantizeLinear/DequantizeLinear)"
        )
    if not ox.MIN_OPSET_FP32 <= opset <= ox.MAX_OPSET:
        raise ExportError(
            f"--opset {opset}: supported opsets are {ox.MIN_OPSET_FP32}..{ox.MAX_OPSET}"
        )
    return opset


def _pick_format(model, model_dir: Path, format: str, opset: int) -> str:  # noqa: A002
    """``auto`` -> int8 ``integer`` for a QAT model, else ``fp32``; int8 needs a QAT model
    whose observers ran."""
    from sparse_transfer.quantization import is_qat_prepared, uninitialized_observers

    quantized_model = is_qat_prepared(model)
    fmt = ("integer" if quantized_model else "fp32") if format == "auto" else format
    if fmt == "fp32":
        return fmt
    if not quantized_model:
        raise ExportError(
            f"--format {fmt}: {model_dir} has no quantization state (quantization.json); "
            "train it with a QuantizationModifier, or export FP32 with --format fp32"
        )
    if opset < ox.MIN_OPSET_INT8:
        raise ExportError(
            f"--opset {opset} is too old for int8 export (needs >= {ox.MIN_OPSET_INT8})"
        )
    missing = uninitialized_observers(model)
    if missing:
        raise ExportError(
            f"{model_dir}: QAT model whose observers never ran: {len(missing)} activation "
            f"scales are uninitialised (e.g. {', '.join(missing[:3])}). Train past the "
            "QuantizationModifier's start_epoch (or calibrate) before exporting."
        )
    return fmt


def _parity_length(model, sequence_length: int | None) -> int:
    """The parity inputs' length: the requested one (the schema's lower limit for
    ``max_seq_length``, at most the model's positions), else a short default."""
    from sparse_transfer.tasks.flags import FLAGS

    low = int(FLAGS["max_seq_length"].minimum or 1)
    max_len = int(getattr(model.config, "max_position_embeddings", 512) or 512)
    if sequence_length is not None and not low <= sequence_length <= max_len:
        raise ExportError(
            f"--sequence_length {sequence_length}: must be between {low} and the model's "
            f"max_position_embeddings ({max_len})"
        )
    return sequence_length or min(DEFAULT_PARITY_LENGTH, max_len)


def _build(model, tokenizer, spec, model_dir, tmp, fmt, opset, length, requested, verify_dataset):
    import onnx

    from sparse_transfer.export.int8 import collect, quantize_graph
    from sparse_transfer.export.int8_attention import collect_attention, quantize_attention

    names = ox.input_names_for(model, tokenizer)
    pair = spec.export_inputs == "pair"
    sample = ox.sample_inputs(tokenizer, names, batch=2, length=min(length, 16), pair=pair)
    graph = ox.export_float_graph(
        model, sample, names, spec.output_names, tmp / MODEL_FILE, opset=opset
    )
    fp32_bytes = graph.ByteSize()
    int8_report: dict[str, Any] = {}
    attention_matmuls = 0
    if fmt != "fp32":
        int8_report = quantize_graph(graph, collect(model), fmt)
        attention_matmuls = quantize_attention(graph, collect_attention(model), fmt)
    try:
        onnx.checker.check_model(graph, full_check=True)
    except Exception as exc:
        raise ExportError(f"the exported graph fails onnx.checker: {exc}") from exc
    onnx.save(graph, str(tmp / MODEL_FILE))

    rows: list = []  # (feeds, mask, exact reference outputs) of each parity batch
    verification = _verify(
        model, tokenizer, spec, tmp, names, length, fmt != "fp32", pair, verify_dataset, rows
    )
    sparse = _sparse_graph(graph, tmp, rows, verification, spec) if fmt == "integer" else None
    files = _write_support_files(model, tokenizer, model_dir, tmp)
    sizes = {
        "model_onnx_bytes": (tmp / MODEL_FILE).stat().st_size,
        "deployment_bytes": _dir_bytes(tmp),
        "fp32_onnx_bytes": fp32_bytes,
    }
    sizes["deployment_vs_fp32"] = round(sizes["fp32_onnx_bytes"] / sizes["model_onnx_bytes"], 3)
    return {
        "task": spec.name,
        "model_path": str(model_dir),
        "format": fmt,
        "quantized": fmt != "fp32",
        "opset": opset,
        "exporter": _exporter_version(),
        "inputs": _io(graph.graph.input),
        "outputs": _io(graph.graph.output),
        "sequence_length": {
            "requested": requested,
            "parity": length,
            "dynamic": True,
            "max_position_embeddings": int(getattr(model.config, "max_position_embeddings", 0)),
        },
        "sparsity": _sparsity(graph),
        "int8": {
            "initializers": int8_report,
            "zero_pattern_identical": all(
                r["zero_pattern_identical"] for r in int8_report.values()
            ),
            "attention_matmuls": attention_matmuls,
            # which CPUs compute it exactly (see cpu_features); attention: u8 x u8, exact
            "representation": cpu_features.representation(u8s8_weight_max_abs(graph)),
        }
        if int8_report
        else None,
        "sparse_graph": sparse,
        "parity": verification,
        "files": sorted([*files, MODEL_FILE, REPORT_FILE]),
        "sizes": sizes,
    }


def _sparse_graph(graph, tmp, rows, verification, spec) -> dict[str, Any]:
    """``model.sparse.onnx`` beside ``model.onnx`` (integer int8), verified against it."""
    from sparse_transfer.export.sparse_parity import verify_sparse_graph, write_sparse_graph

    report = write_sparse_graph(graph, tmp)
    report["parity"] = verify_sparse_graph(
        tmp, rows, verification["tolerance"], verification["one_step"], spec.output_names
    )
    log.info("sparse graph parity: %s", report["parity"]["summary"])
    return report


def _verify(model, tokenizer, spec, tmp, names, length, quantized, pair, verify_dataset, rows):
    import onnx

    onnx_model = OnnxModel(tmp, check_cpu=False)  # parity itself reports what this CPU does
    outputs = spec.output_names
    batches = [
        ox.sample_inputs(tokenizer, names, batch=8, length=length, seed=1, pair=pair),
        ox.sample_inputs(tokenizer, names, batch=3, length=max(8, length // 2), seed=2, pair=pair),
    ]
    labelled = _dataset_batches(verify_dataset, tokenizer, spec, names, length, model.config)
    reference = None
    if quantized:  # the CPU-independent integer reference of the graph (see parity)
        graph = onnx.load(str(tmp / MODEL_FILE))
        reference = parity.ReferenceGraph(graph)
        heads = parity.logit_tolerances(graph, outputs)
    pairs: dict[str, list] = {"torch_vs_runtime": [], "graph_vs_torch": [], "runtime_vs_graph": []}
    weights, refs = [], []
    metric = {"torch": 0.0, "onnx": 0.0, "onnx_runtime_here": 0.0, "n": 0}
    for features, labels in [(b, None) for b in batches] + labelled:
        t = ox.torch_outputs(model, features, outputs, fake_quant=quantized)
        o = onnx_model(features)
        r = reference(onnx_model.feeds(features)) if reference else o
        mask = features["attention_mask"]
        pairs["torch_vs_runtime"].append(parity.compare(t, o, mask, outputs))
        if reference:
            refs.append(r)
            rows.append((onnx_model.feeds(features), mask, r))
            pairs["graph_vs_torch"].append(parity.compare(t, r, mask, outputs))
            pairs["runtime_vs_graph"].append(parity.compare(r, o, mask, outputs))
        weights.append(len(features["input_ids"]))
        if labels is not None and "logits" in outputs:
            n = len(labels)
            for key, out in (("torch", t), ("onnx", r), ("onnx_runtime_here", o)):
                metric[key] += parity.label_metric("logits", out, labels, mask) * n
            metric["n"] += n
    result = parity.merge(pairs["torch_vs_runtime"], weights)
    result["examples"] = int(sum(weights))
    result["sequence_lengths"] = sorted({int(b["input_ids"].shape[1]) for b in batches})
    result["reference"] = "fake-quantized torch model" if quantized else "float torch model"
    if metric["n"]:
        n = metric.pop("n")
        result["metric"] = {"name": "accuracy", **{k: v / n for k, v in metric.items()}}
        result["metric"]["examples"] = n
    if quantized:
        tolerance = parity.resolve_tolerances(heads, refs)
        result["graph_reference"] = "onnx.reference evaluator, exact integer MatMulInteger"
        result["tolerance"] = tolerance
        result["one_step"] = {n: h["one_step"] for n, h in heads.items()}
        result["tolerance_rule"] = (
            "(1 + attention layers) * s_x * max_j sum_i |w_ji| of each output's last int8 Linear"
        )
        for key in ("graph_vs_torch", "runtime_vs_graph"):
            merged = parity.merge(pairs[key], weights)
            result[key] = parity.judge(merged, tolerance, result["one_step"])
        representation = cpu_features.representation(u8s8_weight_max_abs(graph))
        expected, note = cpu_features.int8_variant_is_exact_here(
            {"quantized": True, "int8": {"representation": representation}}
        )
        result["cpu"] = cpu_features.isa()
        result["runtime_expected_exact"], result["runtime_note"] = expected, note
    ok, reason = parity.verdict(result, quantized)
    result["passed"], result["summary"] = ok, reason
    if not ok:
        raise ExportError(f"parity check failed: {reason}")
    if quantized and not result["runtime_vs_graph"]["within_tolerance"]:
        log.warning("int8 deployment is right, but NOT on this machine: %s", result["runtime_note"])
    log.info("parity: %s", reason)
    return result


_TEXT_KEYS = ("sentence", "text", "sentence1", "question", "premise", "content")
_PAIR_KEYS = ("sentence2", "hypothesis", "context")
_TAG_KEYS = ("ner_tags", "tags", "labels", "label")


def _dataset_batches(path, tokenizer, spec, names, length, config, batch_size=32):
    """(features, labels|None) batches from a JSONL file for the parity check."""
    if path is None:
        return []
    rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    if not rows:
        raise ExportError(f"--verify_dataset {path}: no rows")
    label2id = {str(k): int(v) for k, v in (getattr(config, "label2id", None) or {}).items()}

    def label_id(value):
        if isinstance(value, str):
            if value not in label2id:
                raise ExportError(
                    f"--verify_dataset {path}: label {value!r} not in the model's labels"
                )
            return label2id[value]
        return int(value)

    out = []
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        labels = None
        kwargs = dict(padding="max_length", truncation=True, max_length=length, return_tensors="np")
        if spec.export_inputs == "words":
            words = [r["tokens"] for r in chunk]
            enc = tokenizer(words, is_split_into_words=True, **kwargs)
            key = next((k for k in _TAG_KEYS if k in chunk[0]), None)
            if key:
                labels = np.full(enc["input_ids"].shape, -100, dtype=np.int64)
                for i, r in enumerate(chunk):
                    seen = set()
                    for j, w in enumerate(enc.word_ids(i)):
                        if w is not None and w not in seen:
                            seen.add(w)
                            labels[i, j] = label_id(r[key][w])
        else:
            first = next((k for k in _TEXT_KEYS if k in chunk[0]), None)
            if first is None:
                raise ExportError(
                    f"--verify_dataset {path}: rows need one of {', '.join(_TEXT_KEYS)} (or tokens)"
                )
            second = next((k for k in _PAIR_KEYS if k in chunk[0] and k != first), None)
            texts = [r[first] for r in chunk]
            pairs = [r[second] for r in chunk] if second else None
            enc = tokenizer(texts, pairs, **kwargs)
            if spec.row_label and "label" in chunk[0]:
                labels = np.array([label_id(r["label"]) for r in chunk], dtype=np.int64)
        features = {n: np.asarray(enc[n], dtype=np.int64) for n in names}
        out.append((features, labels))
    return out


def _write_support_files(model, tokenizer, model_dir: Path, tmp: Path) -> list[str]:
    """config.json, every tokenizer file, recipe.yaml; returns the file names written."""
    src_config = model_dir / "config.json"
    shutil.copyfile(src_config, tmp / "config.json")
    tok_dir = tmp / ".tokenizer"
    tokenizer.save_pretrained(str(tok_dir))
    for f in tok_dir.iterdir():
        if f.is_file() and f.name in TOKENIZER_FILES:
            os.replace(f, tmp / f.name)
    shutil.rmtree(tok_dir)
    for name in ("vocab.txt", "vocab.json", "merges.txt", "tokenizer.model"):
        # transformers 5 fast tokenizers may not re-save the slow vocab; keep the original
        if (model_dir / name).is_file() and not (tmp / name).is_file():
            shutil.copyfile(model_dir / name, tmp / name)
    if not (tmp / "vocab.txt").is_file():
        _write_wordpiece_vocab(tokenizer, tmp / "vocab.txt")
    if not (tmp / "special_tokens_map.json").is_file():
        special = {k: str(v) for k, v in tokenizer.special_tokens_map.items() if isinstance(v, str)}
        _write_json(tmp / "special_tokens_map.json", special)
    if (model_dir / "recipe.yaml").is_file():
        shutil.copyfile(model_dir / "recipe.yaml", tmp / "recipe.yaml")
    missing = [
        f for f in ("tokenizer_config.json", "special_tokens_map.json") if not (tmp / f).is_file()
    ]
    if missing or not any(
        (tmp / f).is_file() for f in ("tokenizer.json", "vocab.txt", "vocab.json")
    ):
        raise ExportError(f"tokenizer files missing from the deployment: {missing or 'vocabulary'}")
    return sorted(p.name for p in tmp.iterdir() if p.is_file() and p.name != MODEL_FILE)


def _write_wordpiece_vocab(tokenizer, path: Path) -> None:
    """vocab.txt (one token per line, by id) for WordPiece tokenizers that no longer save it."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None or type(backend.model).__name__ != "WordPiece":
        return
    vocab = backend.get_vocab(with_added_tokens=False)
    ordered = sorted(vocab.items(), key=lambda kv: kv[1])
    if [i for _, i in ordered] != list(range(len(ordered))):
        return  # ids with gaps cannot be written as a line-numbered vocab
    path.write_text("".join(f"{token}\n" for token, _ in ordered))


def _io(values) -> list[dict[str, Any]]:
    from onnx import TensorProto

    out = []
    for v in values:
        t = v.type.tensor_type
        shape = [d.dim_param or int(d.dim_value) for d in t.shape.dim]
        out.append(
            {
                "name": v.name,
                "dtype": TensorProto.DataType.Name(t.elem_type).lower(),
                "shape": shape,
            }
        )
    return out


def _sparsity(model_proto) -> dict[str, Any]:
    """Zeros per weight initializer (2-D and up), float or int8, and overall."""
    from onnx import numpy_helper

    layers, zeros, total = {}, 0, 0
    for init in model_proto.graph.initializer:
        if len(init.dims) < 2:
            continue
        array = numpy_helper.to_array(init)
        z = int((array == 0).sum())
        layers[init.name] = {
            "dtype": str(array.dtype),
            "numel": int(array.size),
            "zeros": z,
            "sparsity": round(z / array.size, 6) if array.size else 0.0,
        }
        zeros += z
        total += int(array.size)
    return {"overall": round(zeros / total, 6) if total else 0.0, "initializers": layers}


def _compress(tmp: Path, report: dict[str, Any]) -> dict[str, Any]:
    """deployment.tar.gz of the folder's files; sizes against the dense FP32 graph."""
    archive = tmp / ARCHIVE_NAME
    _write_json(tmp / REPORT_FILE, report)  # so the archive carries a report too
    with tarfile.open(archive, "w:gz", compresslevel=9) as tar:
        for f in sorted(tmp.iterdir()):
            if f.is_file() and f.name != ARCHIVE_NAME:
                tar.add(f, arcname=f.name)
    size = archive.stat().st_size
    return {
        "file": ARCHIVE_NAME,
        "bytes": size,
        "vs_fp32_onnx": round(report["sizes"]["fp32_onnx_bytes"] / size, 3),
    }


def _dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.iterdir() if f.is_file() and f.name != ARCHIVE_NAME)


def _exporter_version() -> str:
    import onnx
    import torch

    return f"torch.onnx TorchScript exporter (torch {torch.__version__}, onnx {onnx.__version__})"


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(value):
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, np.bool_):
        return bool(value)
    raise TypeError(f"not JSON serialisable: {type(value)}")


DEPLOYMENT = "deployment"


def _replace_rules(overwrite: bool, protect: list[Path]) -> dict[str, Any]:
    """What `storage.replace_directory` may replace for a deployment: one we exported, whose
    record of files still matches (a copied export_report.json proves nothing)."""
    return {
        "recognise": lambda folder: storage.ownership_problem(folder, DEPLOYMENT) is None,
        "what": DEPLOYMENT,
        "overwrite": overwrite,
        "flag": "--overwrite",
        "protect": protect,
    }
