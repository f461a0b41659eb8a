"""Task table: one `TaskSpec` per task name, extended by adding a row.

A spec says which HF auto class builds the model, which argument dataclass
holds the task's own flags, which model outputs a teacher distils, and how the
task analyses, tokenises and scores data. The train and evaluate loops
(`training.py`, `evaluation.py`) only talk to specs, never to a particular task.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

# The tasks this package ships (their modules register themselves on first use);
# `task_names()` also lists tasks added with `register_task`.
BUILTIN_TASK_NAMES = (
    "text-classification",
    "token-classification",
    "question-answering",
    "masked-language-modeling",
)
TASK_ALIASES = {
    "text_classification": "text-classification",
    "sequence-classification": "text-classification",
    "sentiment-analysis": "text-classification",
    "glue": "text-classification",
    "token_classification": "token-classification",
    "ner": "token-classification",
    "question_answering": "question-answering",
    "qa": "question-answering",
    "masked_language_modeling": "masked-language-modeling",
    "mlm": "masked-language-modeling",
}


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


_TASKS: dict[str, Callable[[], TaskSpec]] = {}


def register_task(name: str, factory: Callable[[], TaskSpec]) -> None:
    """Adds a task; `factory` is called lazily so imports stay cheap."""
    _TASKS[name] = factory


def task_names() -> list[str]:
    _ensure_builtin()
    return sorted(_TASKS)


def get_task(name: str) -> TaskSpec:
    """Returns the spec for `name` (aliases such as ``ner`` or ``glue`` accepted)."""
    from sparse_transfer.errors import DataError

    _ensure_builtin()
    key = TASK_ALIASES.get(name, name)
    if key not in _TASKS:
        raise DataError(f"unknown task {name!r}; known tasks: {', '.join(sorted(_TASKS))}")
    return _TASKS[key]()


def _ensure_builtin() -> None:
    # Always import all four: a caller that imported one task module first has
    # registered that one only (the imports are cached, so this is cheap).
    from sparse_transfer.tasks import (  # noqa: F401  (each module registers itself)
        masked_lm,
        question_answering,
        text_classification,
        token_classification,
    )
