"""The training objective of upstream pruning: MLM loss + hidden-state distillation.

The module the trainer sees names its parts as ``BertForMaskedLM`` does (``bert``, ``cls``),
so the recipes' ``bert.encoder.layer...`` selectors match with or without a head, and the
saved student is a plain Hugging Face checkpoint (with its MLM head when it had one).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def has_mlm_head(model_dir: Path) -> bool:
    """True when the checkpoint's weights include a masked-LM head (``cls.predictions``)."""
    from safetensors import safe_open

    weights = Path(model_dir) / "model.safetensors"
    if not weights.is_file():
        return False
    with safe_open(str(weights), "pt") as handle:
        return any(k.startswith("cls.predictions.") for k in handle.keys())


def load_quietly(loader, model_dir: Path):
    """`loader.from_pretrained` without the load report (a dropped head is expected here)."""
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        return loader.from_pretrained(str(model_dir)).eval()
    finally:
        hf_logging.set_verbosity(verbosity)


def _module(student, teacher_encoder, mlm_weight: float, distill_weight: float):
    import torch

    class UpstreamObjective(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = getattr(
                student, "bert", student
            )  # "bert.encoder.layer..." as recipes select
            if hasattr(student, "cls"):
                self.cls = student.cls
            # Not a submodule: the teacher is neither pruned, optimised nor saved.
            object.__setattr__(self, "_teacher", teacher_encoder)
            full = super().state_dict()
            # What `state_dict` leaves out; the Trainer then calls `tie_weights` on resume.
            self._keys_to_ignore_on_save = sorted(set(full) - set(self.state_dict()))

        def tie_weights(self) -> None:
            """Nothing to do: the tied tensors are one Parameter object."""

        def state_dict(self, *args, **kwargs):
            """Tied tensors once (the MLM decoder is the word embeddings): checkpoints save.

            Resume loads non-strictly (transformers' Trainer._load_from_checkpoint), and the
            tied parameter is the same object, so loading one name restores both.
            """
            full = super().state_dict(*args, **kwargs)
            seen: set[int] = set()
            for name in list(full):
                if full[name].data_ptr() in seen:
                    del full[name]
                else:
                    seen.add(full[name].data_ptr())
            return full

        def forward(self, input_ids, attention_mask, token_type_ids=None, labels=None):
            kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
            if token_type_ids is not None:
                kwargs["token_type_ids"] = token_type_ids
            out = self.bert(**kwargs, output_hidden_states=True)
            with torch.no_grad():
                target = self._teacher(**kwargs, output_hidden_states=True).hidden_states
            mask = attention_mask.unsqueeze(-1).to(out.hidden_states[-1].dtype)
            denom = mask.sum() * out.hidden_states[-1].size(-1)
            # Mean over real tokens and features, averaged over the encoder layers.
            per_layer = [
                ((s - t) ** 2 * mask).sum() / denom
                for s, t in zip(out.hidden_states[1:], target[1:], strict=True)
            ]
            loss = distill_weight * torch.stack(per_layer).mean()
            if labels is not None and hasattr(self, "cls"):
                logits = self.cls(out.last_hidden_state)
                mlm = torch.nn.functional.cross_entropy(
                    logits.view(-1, logits.size(-1)), labels.view(-1), ignore_index=-100
                )
                loss = loss + mlm_weight * mlm
            return {"loss": loss}

    return UpstreamObjective()


class BatchSeededCollator:
    """Masks each batch with a generator seeded by its own token ids (and the run's seed).

    transformers' Trainer restores the RNG from a checkpoint only after it has collated the
    first resumed batch, so masks drawn from the global RNG differ after a resume; seeding by
    the batch makes an interrupted and resumed run mask exactly as an uninterrupted one.
    The global RNG is left as it was (`torch.random.fork_rng`).
    """

    def __init__(self, inner, seed: int):
        self.inner, self.seed = inner, seed

    def __call__(self, rows):
        import zlib

        import torch

        key = zlib.crc32(repr([r["input_ids"] for r in rows]).encode()) ^ self.seed
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(key)
            return self.inner(rows)


@dataclass
class Objective:
    module: Any
    student: Any
    tokenizer: Any
    collator: Any
    has_mlm_head: bool

    def save(self, out_dir: Path) -> None:
        self.student.eval()
        self.student.save_pretrained(str(out_dir))
        self.tokenizer.save_pretrained(str(out_dir))


def build_objective(dense_dir: Path, settings: Any) -> Objective:
    """Student (a copy of the dense model), frozen teacher, loss module and collator."""
    from transformers import (
        AutoModel,
        AutoModelForMaskedLM,
        AutoTokenizer,
        DataCollatorForLanguageModeling,
        DataCollatorWithPadding,
    )

    tokenizer = AutoTokenizer.from_pretrained(str(dense_dir))
    head = has_mlm_head(dense_dir)
    teacher = load_quietly(AutoModelForMaskedLM if head else AutoModel, dense_dir)
    student = copy.deepcopy(teacher)
    teacher_encoder = getattr(teacher, "bert", teacher)
    for p in teacher.parameters():
        p.requires_grad_(False)
    if not settings.use_cpu:
        import torch

        if (
            torch.cuda.is_available()
        ):  # held outside the module's parameters: the Trainer won't move it
            import os

            teacher.to(
                torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            )  # torchrun rank's GPU
    module = _module(student, teacher_encoder, settings.mlm_weight, settings.distill_weight)
    if head:
        collator = BatchSeededCollator(
            DataCollatorForLanguageModeling(
                tokenizer, mlm=True, mlm_probability=settings.mlm_probability
            ),
            settings.seed,
        )
    else:
        collator = DataCollatorWithPadding(tokenizer)
    return Objective(module, student, tokenizer, collator, head)
