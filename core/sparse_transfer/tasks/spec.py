"""`TaskSpec`: how one task plugs into the shared train/evaluate loop (a row of the registry)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class TaskSpec:
    """How one task plugs into the shared train/evaluate loop.

    Attributes:
        name: the CLI name, e.g. ``text-classification``.
        auto_class: name of the ``transformers`` auto class for the head.
        args_class: dataclass of task-only flags (parsed with the shared ones).
        distill_output_keys: model outputs a teacher distils for this task.
        default_max_seq_length: used when ``--max_seq_length`` is not given.
        prepare: ``prepare(raw, sources, data_args, task_args, model_config)``
            -> a `PreparedTask` (labels, config overrides, tokenise/metric fns).
    """

    name: str
    auto_class: str
    args_class: type | None
    distill_output_keys: tuple[str, ...]
    default_max_seq_length: int
    prepare: Callable[..., Any]
    output_names: tuple[str, ...] = ("logits",)
    extra: dict[str, Any] = field(default_factory=dict)
