"""Task table: one `TaskSpec` per task name, extended by adding a row.

A spec says which HF auto class builds the model, which argument dataclass
holds the task's own flags, which model outputs a teacher distils, and how the
task analyses, tokenises and scores data. The train and evaluate loops
(`training.py`, `evaluation.py`) only talk to specs, never to a particular task.
"""

from __future__ import annotations

from collections.abc import Callable

from sparse_transfer.tasks.spec import TaskSpec

# The tasks this package ships (each module's `SPEC`, loaded on first use);
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
    # The built-in rows: this table imports the task modules, which import only `spec`.
    if all(name in _TASKS for name in BUILTIN_TASK_NAMES):
        return
    from sparse_transfer.tasks import (
        masked_lm,
        question_answering,
        text_classification,
        token_classification,
    )

    for module in (text_classification, token_classification, question_answering, masked_lm):
        _TASKS.setdefault(module.SPEC.name, lambda spec=module.SPEC: spec)
