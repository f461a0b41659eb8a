"""Training arguments fitted to the machine: no fp16 or pinned memory without a GPU.

The one home of the fp16-without-GPU fallback; the CLI and the pipeline's
training step both reach it through `sparse_transfer.tasks.training.train`.
"""

from __future__ import annotations

import dataclasses
import logging

logger = logging.getLogger(__name__)


def fit_to_device(training_args):
    """`training_args` as given with a GPU; without one, fp32 and no pinned memory.

    Returns a new `TrainingArguments` (rebuilt, so its own validation runs again).
    """
    import torch

    if torch.cuda.is_available():
        return training_args
    changes = {}
    if training_args.fp16 or training_args.fp16_full_eval:
        logger.warning("--fp16 needs a GPU; none is available, so training runs in fp32")
        changes.update(fp16=False, fp16_full_eval=False)
    if training_args.dataloader_pin_memory:
        changes["dataloader_pin_memory"] = False  # pinning needs an accelerator
    return dataclasses.replace(training_args, **changes) if changes else training_args
