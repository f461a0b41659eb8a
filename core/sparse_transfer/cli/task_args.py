"""Command-line flags -> the task layer's typed arguments (`HfArgumentParser` lives here, not below).

``sparse-transfer train TASK`` parses our dataclasses together with every
Hugging Face `TrainingArguments` flag; ``sparse-transfer evaluate`` parses
`EvaluateArguments` with the data flags. Legacy flag names are translated first.
"""

from __future__ import annotations

import argparse
import logging
import os

from sparse_transfer.errors import DataError
from sparse_transfer.tasks.args import DataArguments, ModelArguments
from sparse_transfer.tasks.evaluation import EvaluateArguments
from sparse_transfer.tasks.registry import get_task
from sparse_transfer.validation import require_finite_fields

logger = logging.getLogger(__name__)

# Old TrainingArguments names (transformers 4.x / SparseML docs) -> current ones.
LEGACY_FLAGS = {
    "--evaluation_strategy": "--eval_strategy",
    "--no_cuda": "--use_cpu",
    "--per_gpu_train_batch_size": "--per_device_train_batch_size",
    "--per_gpu_eval_batch_size": "--per_device_eval_batch_size",
}
# Flags transformers 5 dropped that only change behaviour we already have.
# Flags transformers dropped that we read ourselves (`overwrite_requested`).
DROPPED_FLAGS = {"--overwrite_output_dir": "read by the CLI (TrainingArguments dropped it)"}
_TRUE = {"true", "1", "yes"}
_BOOLS = _TRUE | {"false", "0", "no"}


def normalize_argv(argv: list[str]) -> list[str]:
    """Translates legacy flag names and drops flags with no effect any more."""
    out: list[str] = []
    skip_value = False
    for i, arg in enumerate(argv):
        if skip_value:
            skip_value = False
            continue
        name, eq, value = arg.partition("=")
        if name in LEGACY_FLAGS:
            logger.info("%s is the old name of %s", name, LEGACY_FLAGS[name])
            out.append(LEGACY_FLAGS[name] + (eq + value if eq else ""))
        elif name in DROPPED_FLAGS:
            logger.info("ignoring %s: %s", name, DROPPED_FLAGS[name])
            nxt = argv[i + 1] if i + 1 < len(argv) else ""
            if not eq and nxt.lower() in {"true", "false", "1", "0", "yes", "no"}:
                skip_value = True
        else:
            out.append(arg)
    return out


def overwrite_requested(argv: list[str]) -> bool:
    """The value of ``--overwrite_output_dir [BOOL]`` / ``--overwrite_output_dir=BOOL`` in argv."""
    for i, arg in enumerate(argv):
        name, eq, value = arg.partition("=")
        if name != "--overwrite_output_dir":
            continue
        if not eq:
            nxt = argv[i + 1] if i + 1 < len(argv) else ""
            value = nxt if nxt.lower() in _BOOLS else "true"
        return value.lower() in _TRUE
    return False


def launched_world_size() -> int:
    """Processes torchrun started (its ``WORLD_SIZE``; 1 outside torchrun)."""
    value = os.environ.get("WORLD_SIZE", "1") or "1"
    try:
        return int(value)
    except ValueError:
        raise DataError(f"WORLD_SIZE={value!r} is not a number (set by torchrun)") from None


def cpu_under_torchrun(argv: list[str], world: int) -> list[str]:
    """Adds ``--use_cpu true`` under torchrun on a machine without CUDA.

    The Trainer's device setup (accelerate's ``PartialState``) enters multi-process CPU mode
    (gloo) only when told to use the CPU; without it every rank trains alone as rank 0 while
    torchrun's process group sits unused, and the ranks fight over one output folder.
    """
    flags = {a.split("=", 1)[0] for a in argv}
    if world <= 1 or "--use_cpu" in flags:
        return argv
    import torch

    if torch.cuda.is_available():
        return argv
    logger.info("torchrun on a machine without CUDA: training on CPU (--use_cpu)")
    return [*argv, "--use_cpu", "true"]


def parse_train_args(spec, argv: list[str]):
    """Parses argv into (model_args, data_args, task_args, training_args)."""
    from transformers import HfArgumentParser, TrainingArguments

    world = launched_world_size()
    argv = cpu_under_torchrun(normalize_argv(list(argv)), world)
    flags = {a.split("=", 1)[0].replace("-", "_") for a in argv if a.startswith("--")}
    if "__output_dir" not in flags and not ({"-h", "--help"} & set(argv)):
        raise DataError("--output_dir is required: where the trained model and results go")
    classes = [ModelArguments, DataArguments]
    if spec.args_class is not None:
        classes.append(spec.args_class)
    classes.append(TrainingArguments)
    parser = HfArgumentParser(classes)
    parser.prog = f"sparse-transfer train {spec.name}"
    try:
        parsed = parser.parse_args_into_dataclasses(args=argv, return_remaining_strings=True)
    except ValueError as exc:  # raised by TrainingArguments.__post_init__ validation
        raise DataError(f"invalid training arguments: {exc}") from exc
    *objs, remaining = parsed
    if remaining:
        raise DataError(f"unrecognized arguments for {spec.name}: {' '.join(remaining)}")
    for obj in objs:  # `x < 0` checks let NaN through: refuse NaN/inf in any flag
        require_finite_fields(obj)
    model_args, data_args, training_args = objs[0], objs[1], objs[-1]
    if world > 1 and training_args.world_size != world:  # ranks come from torchrun, not the Trainer
        raise DataError(
            f"torchrun started {world} processes (WORLD_SIZE) but the Trainer runs "
            f"{training_args.world_size}: every rank would train alone as rank 0. Check "
            "--use_cpu and the devices this machine has"
        )
    task_args = objs[2] if spec.args_class is not None else None
    return model_args, data_args, task_args, training_args


def parse_evaluate_args(argv: list[str]):
    """Parses argv into (eval_args, data_args, task_args)."""
    from transformers import HfArgumentParser

    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--task", required=True)
    known, _ = pre.parse_known_args(argv)
    spec = get_task(known.task)
    classes = [EvaluateArguments, DataArguments] + ([spec.args_class] if spec.args_class else [])
    parser = HfArgumentParser(classes)
    parser.prog = "sparse-transfer evaluate"
    objs = parser.parse_args_into_dataclasses(args=normalize_argv(list(argv)))
    for obj in objs:
        require_finite_fields(obj)
    eval_args, data_args = objs[0], objs[1]
    task_args = objs[2] if spec.args_class else None
    return eval_args, data_args, task_args
