"""Float ONNX graph of an HF model: dynamic batch and sequence axes, named weights.

We use the TorchScript exporter (``dynamo=False``) of torch 2.13: for BERT it
exports in well under a second at any opset from 13 (DeepSparse wants 13),
and with constant folding off every weight initializer keeps its parameter
name, which the int8 pass and the sparsity report rely on. (The dynamo
exporter needs opset >= 18, takes ~10x longer and renames folded transposes.)
We then fold the ``Transpose`` of each Linear weight ourselves into an
initializer named ``<param>.T`` so the graph reads ``MatMul(x, W^T)``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sparse_transfer.errors import ExportError

log = logging.getLogger(__name__)

DEFAULT_OPSET = 13
MIN_OPSET_FP32 = 11
MIN_OPSET_INT8 = 13  # per-axis DequantizeLinear / QuantizeLinear
MAX_OPSET = 20  # the TorchScript exporter's newest
TRANSPOSED_SUFFIX = ".T"


def task_spec(task: str):
    """The tasks registry row for `task` (aliases accepted), as an ExportError if unknown."""
    from sparse_transfer.tasks.registry import get_task, task_names

    try:
        return get_task(task)
    except Exception as exc:  # DataError from the registry
        raise ExportError(f"unknown task {task!r}; known tasks: {', '.join(task_names())}") from exc


def check_model_dir(model_path: str | Path) -> Path:
    """Rejects a directory that cannot become a deployment (no config or tokenizer)."""
    path = Path(model_path)
    if not path.is_dir():
        raise ExportError(f"--model_path {path}: not a directory")
    if not (path / "config.json").is_file():
        raise ExportError(
            f"--model_path {path}: no config.json; pass a directory written by save_pretrained"
        )
    tokenizer_files = ("tokenizer.json", "vocab.txt", "tokenizer.model", "vocab.json")
    if not any((path / f).is_file() for f in tokenizer_files):
        raise ExportError(
            f"--model_path {path}: no tokenizer files ({', '.join(tokenizer_files)}); "
            "save the tokenizer next to the model (tokenizer.save_pretrained(DIR))"
        )
    return path


def load_for_export(model_path: str | Path, task: str):
    """Loads (model in eval mode with any QAT state restored, tokenizer, task spec)."""
    import transformers
    from transformers import AutoTokenizer

    from sparse_transfer.quantization import restore_qat
    from sparse_transfer.training.finite import check_weights

    spec = task_spec(task)
    path = check_model_dir(model_path)
    auto = getattr(transformers, spec.auto_class)
    try:
        model = auto.from_pretrained(str(path))
        tokenizer = AutoTokenizer.from_pretrained(str(path))
    except (OSError, ValueError) as exc:
        raise ExportError(f"cannot load a {spec.name} model from {path}: {exc}") from exc
    restore_qat(model, path)
    check_weights(model, f"--model_path {path}")  # a NaN model must never ship
    model.eval()
    return model, tokenizer, spec


def input_names_for(model, tokenizer) -> list[str]:
    """Model inputs the tokenizer produces (token_type_ids only where both use it)."""
    names = ["input_ids", "attention_mask"]
    uses_types = getattr(model.config, "type_vocab_size", 0) and "token_type_ids" in getattr(
        tokenizer, "model_input_names", ["token_type_ids"]
    )
    if uses_types:
        names.append("token_type_ids")
    return names


MASK_FILL = -10000.0  # the classic BERT additive mask value: exp() of it is 0 in float32


def additive_mask(attention_mask):
    """``(1 - mask) * -10000`` as a [batch, 1, 1, kv] float mask (the pre-v5 BERT form).

    transformers 5 builds the padding mask from Range/GreaterOrEqual/And/Where
    and an index Gather (``attention_mask[batch_idx, kv_idx]``); DeepSparse 1.8
    cannot run that Gather and hands the subgraph back to its bundled ONNX
    Runtime. A prepared 4-D mask is passed through as-is by transformers'
    mask builders, so tracing with this one gives Unsqueeze/Cast/Sub/Mul only.
    """
    import torch

    return (1.0 - attention_mask[:, None, None, :].to(torch.float32)) * MASK_FILL


class _Outputs:
    """Builds the tuple-returning wrapper the tracer needs."""

    @staticmethod
    def wrap(
        model,
        input_names: Sequence[str],
        output_names: Sequence[str],
        classic_mask: bool = False,
    ):
        import torch

        class Wrapper(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.model = model

            def forward(self, *args):
                kwargs = dict(zip(input_names, args, strict=True))
                if classic_mask and "attention_mask" in kwargs:
                    kwargs["attention_mask"] = additive_mask(kwargs["attention_mask"])
                out = self.model(**kwargs, return_dict=True)
                return tuple(out[n] for n in output_names)

        return Wrapper()


def _accepts_additive_mask(model, kwargs: dict, output_names: Sequence[str]) -> bool:
    """Whether `model` gives the same outputs with `additive_mask` as with the 2-D mask."""
    import torch

    if "attention_mask" not in kwargs:
        return False
    try:
        want = model(**kwargs, return_dict=True)
        got = model(
            **{**kwargs, "attention_mask": additive_mask(kwargs["attention_mask"])},
            return_dict=True,
        )
        return all(
            got[n].shape == want[n].shape and torch.allclose(got[n], want[n], atol=1e-5)
            for n in output_names
        )
    except Exception:  # a model that does not take 4-D masks keeps its own construction
        return False


def export_float_graph(
    model,
    sample: dict[str, np.ndarray],
    input_names: Sequence[str],
    output_names: Sequence[str],
    path: str | Path,
    opset: int = DEFAULT_OPSET,
):
    """Traces `model` (QAT bypassed) to ONNX at `path`; returns the folded ModelProto."""
    import onnx
    import torch

    from sparse_transfer.quantization import qat_bypassed

    if not MIN_OPSET_FP32 <= opset <= MAX_OPSET:
        raise ExportError(f"--opset {opset}: supported opsets are {MIN_OPSET_FP32}..{MAX_OPSET}")
    args = tuple(torch.from_numpy(np.asarray(sample[n], dtype=np.int64)) for n in input_names)
    dynamic_axes = {n: {0: "batch", 1: "sequence"} for n in input_names}
    for n in output_names:
        # logits of a sequence head have no sequence axis; decided from the traced shape below
        dynamic_axes[n] = {0: "batch"}
    with torch.no_grad():
        probe = model(**dict(zip(input_names, args, strict=True)), return_dict=True)
    for n in output_names:
        if probe[n].dim() >= 2 and probe[n].shape[1] == args[0].shape[1]:
            dynamic_axes[n] = {0: "batch", 1: "sequence"}
    attn = getattr(model.config, "_attn_implementation", None)
    _set_attention(model, "eager")  # plain MatMul/Softmax: ORT fuses it, every opset supports it
    try:
        with qat_bypassed(model), torch.no_grad():
            classic = _accepts_additive_mask(
                model, dict(zip(input_names, args, strict=True)), output_names
            )
            log.info("attention mask: %s", "additive (1-mask)*-10000" if classic else "model's own")
            wrapper = _Outputs.wrap(model, input_names, output_names, classic).eval()
            torch.onnx.export(
                wrapper,
                args,
                str(path),
                input_names=list(input_names),
                output_names=list(output_names),
                dynamic_axes=dynamic_axes,
                opset_version=opset,
                do_constant_folding=False,
                dynamo=False,
            )
    except Exception as exc:  # tracer errors are long; keep the cause
        raise ExportError(f"torch.onnx.export failed for {type(model).__name__}: {exc}") from exc
    finally:
        if attn:
            _set_attention(model, attn)
    graph = onnx.load(str(path))
    strip_wrapper_prefix(graph)
    fold_weight_transposes(graph)
    return graph


def strip_wrapper_prefix(model_proto, prefix: str = "model.") -> None:
    """Renames ``model.bert...`` initializers (the export wrapper's) back to parameter names."""
    graph = model_proto.graph
    renames = {
        i.name: i.name[len(prefix) :] for i in graph.initializer if i.name.startswith(prefix)
    }
    taken = {i.name for i in graph.initializer} | {v.name for v in graph.input}
    renames = {old: new for old, new in renames.items() if new not in taken}
    for init in graph.initializer:
        init.name = renames.get(init.name, init.name)
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name in renames:
                node.input[i] = renames[name]


def _set_attention(model, impl: str) -> None:
    try:
        model.set_attn_implementation(impl)
    except Exception:  # older/other models: keep what they have
        model.config._attn_implementation = impl


def fold_weight_transposes(model_proto) -> int:
    """Replaces ``Transpose(initializer)`` of 2-D weights by a pre-transposed initializer.

    The new initializer is named ``<param>.T`` so that both the sparsity
    report and the int8 pass can tell which parameter it holds.
    """
    from onnx import numpy_helper

    graph = model_proto.graph
    inits = {i.name: i for i in graph.initializer}
    consumers: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            consumers[name] = consumers.get(name, 0) + 1
    folded = 0
    keep = []
    new_inits = []
    renames: dict[str, str] = {}
    for node in graph.node:
        if node.op_type == "Transpose" and node.input[0] in inits:
            array = numpy_helper.to_array(inits[node.input[0]])
            perm = [a.ints for a in node.attribute if a.name == "perm"]
            perm = list(perm[0]) if perm else list(reversed(range(array.ndim)))
            if array.ndim == 2 and perm == [1, 0]:
                name = node.input[0] + TRANSPOSED_SUFFIX
                if name not in inits:
                    t = numpy_helper.from_array(np.ascontiguousarray(array.T), name)
                    inits[name] = t
                    new_inits.append(t)
                renames[node.output[0]] = name
                consumers[node.input[0]] -= 1
                folded += 1
                continue
        keep.append(node)
    for node in keep:
        for i, name in enumerate(node.input):
            if name in renames:
                node.input[i] = renames[name]
    del graph.node[:]
    graph.node.extend(keep)
    graph.initializer.extend(new_inits)
    unused = {n for n, c in consumers.items() if c == 0}
    _drop_initializers(graph, unused)
    return folded


def _drop_initializers(graph, names: set[str]) -> None:
    used = {i for node in graph.node for i in node.input} | {o.name for o in graph.output}
    kept = [i for i in graph.initializer if i.name not in names or i.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)


def sample_inputs(
    tokenizer,
    input_names: Sequence[str],
    batch: int = 8,
    length: int = 32,
    seed: int = 0,
    pair: bool = False,
) -> dict[str, np.ndarray]:
    """Real tokenized sentences of varied length built from the tokenizer's vocabulary.

    Padding is to `length` so the last rows carry padding (the attention mask
    path is exercised); lengths vary across rows.
    """
    rng = np.random.default_rng(seed)
    vocab = [
        w
        for w in tokenizer.get_vocab()
        if w.isalpha() and not w.startswith("##") and w not in tokenizer.all_special_tokens
    ]
    vocab.sort()
    if not vocab:
        raise ExportError(
            "the tokenizer's vocabulary has no plain words to build sample inputs from"
        )
    texts, seconds = [], []
    for i in range(batch):
        n = int(rng.integers(2, max(3, length - 4))) if i else length  # row 0 fills the length
        texts.append(" ".join(rng.choice(vocab, size=n)))
        seconds.append(" ".join(rng.choice(vocab, size=max(1, n // 3))))
    enc = tokenizer(
        texts,
        seconds if pair else None,
        padding="max_length",
        truncation=True,
        max_length=length,
        return_tensors="np",
    )
    return {n: np.asarray(enc[n], dtype=np.int64) for n in input_names}


def torch_outputs(
    model, features: dict[str, np.ndarray], output_names: Sequence[str], fake_quant: bool = True
) -> dict[str, Any]:
    """Runs the torch model without moving any observer.

    With ``fake_quant=False`` a QAT model runs as its float self (the
    reference for an FP32 export of it).
    """
    import contextlib

    import torch

    from sparse_transfer.quantization import observers_paused, qat_bypassed

    bypass = contextlib.nullcontext() if fake_quant else qat_bypassed(model)
    with torch.no_grad(), observers_paused(model), bypass:
        out = model(**{k: torch.from_numpy(v) for k, v in features.items()}, return_dict=True)
    return {n: out[n].float().numpy() for n in output_names}
