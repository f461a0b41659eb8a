"""Task table: one `TaskSpec` per task name, extended by adding a row.

A spec says which HF auto class builds the model, which argument dataclass
holds the task's own flags, which model outputs a teacher distils, and how the
task analyses, tokenises and scores data. The train and evaluate loops
(`training.py`, `evaluation.py`) only talk to specs, never to a particular task.
"""

from __future__ import annotations

from collections.abc import Callable

from sparse_transfer.tasks.names import (
    MASKED_LANGUAGE_MODELING,
    QUESTION_ANSWERING,
    TEXT_CLASSIFICATION,
    TOKEN_CLASSIFICATION,
)
from sparse_transfer.tasks.spec import TaskSpec

# The tasks this package ships (each module's `SPEC`, loaded on first use);
# `task_names()` also lists tasks added with `register_task`.
BUILTIN_TASK_NAMES = (
    TEXT_CLASSIFICATION,
    TOKEN_CLASSIFICATION,
    QUESTION_ANSWERING,
    MASKED_LANGUAGE_MODELING,
)
TASK_ALIASES = {
    "text_classification": TEXT_CLASSIFICATION,
    "sequence-classification": TEXT_CLASSIFICATION,
    "sentiment-analysis": TEXT_CLASSIFICATION,
    "glue": TEXT_CLASSIFICATION,
    "token_classification": TOKEN_CLASSIFICATION,
    "ner": TOKEN_CLASSIFICATION,
    "question_answering": QUESTION_ANSWERING,
    "qa": QUESTION_ANSWERING,
    "masked_language_modeling": MASKED_LANGUAGE_MODELING,
    "mlm": MASKED_LANGUAGE_MODELING,
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


def all_specs() -> list[TaskSpec]:
    """Every registered task's spec (built-in ones first loaded)."""
    return [get_task(name) for name in task_names()]


def architecture_tasks() -> dict[str, str]:
    """Head class-name suffix -> task name (``ForSequenceClassification`` -> its task), the
    data the zoo is handed to read a model's task from its ``config.json``."""
    return {s.architecture_suffix: s.name for s in all_specs() if s.architecture_suffix}
