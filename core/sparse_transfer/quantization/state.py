"""Saving and restoring the fake-quant state next to a ``save_pretrained`` model.

``save_pretrained`` writes the float weights (same names as a plain HF model,
since QAT keeps them); this adds ``quantization.json`` (the settings, the
quantized module names, observer flags) and ``quantization_state.safetensors``
(scales and observer min/max). ``restore_qat`` on a freshly loaded HF model
re-applies `prepare_qat` to the same modules and loads those tensors.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from sparse_transfer import storage
from sparse_transfer.errors import SparseTransferError
from sparse_transfer.quantization.qat import (
    activation_quants,
    prepare_qat,
    qat_config,
    qat_modules,
)

CONFIG_NAME = "quantization.json"
STATE_NAME = "quantization_state.safetensors"
FORMAT_VERSION = 1


def save_qat_config(model: nn.Module, directory: str | Path) -> bool:
    """Writes the QAT state of `model` into `directory`; False (nothing written) if not QAT."""
    from safetensors.torch import save

    config = qat_config(model)
    if config is None:
        return False
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {}
    flags: dict[str, dict[str, bool]] = {}
    for name, module in qat_modules(model).items():
        tensors[f"{name}.weight_scale"] = module.weight_scale.detach().float().cpu().contiguous()
        flags[name] = {"weight_observer_enabled": bool(module.weight_observer_enabled)}
    activation_flags: dict[str, bool] = {}
    for label, aq in activation_quants(model):
        for buf in ("min_val", "max_val"):
            tensors[f"{label}.{buf}"] = getattr(aq, buf).detach().float().cpu().reshape(1)
        tensors[f"{label}.initialized"] = aq.initialized.detach().cpu().reshape(1).to(torch.uint8)
        activation_flags[label] = bool(aq.observer_enabled)
    payload = {
        "format_version": FORMAT_VERSION,
        "config": config,
        "observers": flags,
        "activation_observers": activation_flags,
    }
    storage.write_bytes_atomic(directory / STATE_NAME, save(tensors))
    storage.write_bytes_atomic(
        directory / CONFIG_NAME, (json.dumps(payload, indent=2) + "\n").encode()
    )
    return True


def restore_qat(model: nn.Module, directory: str | Path) -> bool:
    """Re-applies saved QAT state to a freshly loaded model; False if `directory` has none.

    Raises:
        SparseTransferError: the files exist but do not match the model.
    """
    from safetensors.torch import load_file

    directory = Path(directory)
    config_path, state_path = directory / CONFIG_NAME, directory / STATE_NAME
    if not config_path.is_file():
        return False
    if not state_path.is_file():
        raise SparseTransferError(
            f"{config_path} exists but {state_path.name} is missing; re-save the model"
        )
    payload = json.loads(config_path.read_text())
    config = payload["config"]
    names = dict(model.named_modules())
    attention_modules = config.get("attention_modules", [])  # absent in older saves
    missing = [n for n in [*config["modules"], *attention_modules] if n not in names]
    if missing:
        raise SparseTransferError(
            f"{config_path}: quantized modules {missing[:5]} are not in this model; "
            "was it saved from a different architecture or task head?"
        )
    prepare_qat(
        model,
        modules=config["modules"],
        weight_bits=config["weight_bits"],
        activation_bits=config["activation_bits"],
        reduce_range=config["reduce_range"],
        # saves from before 7-bit Linear weights were the default trained full range
        reduce_weight_range=config.get("reduce_weight_range", False),
        quantize_linear_activations=config["quantize_linear_activations"],
        quantize_embedding_activations=config["quantize_embedding_activations"],
        activation_qconfig_kwargs={"averaging_constant": config["averaging_constant"]},
        attention_modules=attention_modules,
    )
    tensors = load_file(str(state_path))
    flags = payload.get("observers", {})
    with torch.no_grad():
        for name, module in qat_modules(model).items():
            scale = tensors[f"{name}.weight_scale"]
            module.weight_scale.copy_(scale.to(module.weight_scale.device))
            module.weight_observer_enabled = flags.get(name, {}).get(
                "weight_observer_enabled", True
            )
        activation_flags = payload.get("activation_observers", {})
        for label, aq in activation_quants(model):
            aq.min_val.copy_(tensors[f"{label}.min_val"].reshape(()))
            aq.max_val.copy_(tensors[f"{label}.max_val"].reshape(()))
            aq.initialized.copy_(tensors[f"{label}.initialized"].reshape(()).bool())
            if label in activation_flags:
                aq.observer_enabled = activation_flags[label]
            else:  # older saves: flags[module]["input_quant_observer_enabled"]
                module_name, attr = label.rsplit(".", 1)
                key = f"{attr}_observer_enabled"
                aq.observer_enabled = flags.get(module_name, {}).get(key, True)
    return True
