"""Task names live in one module (issue 24.2): every other core module asks a `TaskSpec`.

Walks core/ and fails on any string constant equal to a built-in task name outside
`sparse_transfer/tasks/names.py`, so a new branch on a task's name cannot creep back
into export, serving, the zoo or the pipeline.
"""

from __future__ import annotations

import ast
from pathlib import Path

from sparse_transfer.tasks.names import (
    MASKED_LANGUAGE_MODELING,
    QUESTION_ANSWERING,
    TEXT_CLASSIFICATION,
    TOKEN_CLASSIFICATION,
)
from sparse_transfer.tasks.registry import BUILTIN_TASK_NAMES, all_specs, architecture_tasks

CORE = Path(__file__).resolve().parents[2] / "core" / "sparse_transfer"
ALLOWED = {CORE / "tasks" / "names.py"}
NAMES = {TEXT_CLASSIFICATION, TOKEN_CLASSIFICATION, QUESTION_ANSWERING, MASKED_LANGUAGE_MODELING}


def test_task_name_literals_appear_only_in_the_names_module():
    found = []
    for path in sorted(CORE.rglob("*.py")):
        if path in ALLOWED:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and node.value in NAMES:
                found.append(f"{path.relative_to(CORE)}:{node.lineno} {node.value!r}")
    assert found == []


def test_every_builtin_task_is_one_spec_with_its_own_data():
    specs = all_specs()
    assert sorted(s.name for s in specs) == sorted(BUILTIN_TASK_NAMES) == sorted(NAMES)
    assert architecture_tasks() == {
        "ForSequenceClassification": TEXT_CLASSIFICATION,
        "ForTokenClassification": TOKEN_CLASSIFICATION,
        "ForQuestionAnswering": QUESTION_ANSWERING,
        "ForMaskedLM": MASKED_LANGUAGE_MODELING,
    }
    served = {s.name: s.served_as for s in specs if s.served_as}
    assert served == {
        TEXT_CLASSIFICATION: "sequence",
        TOKEN_CLASSIFICATION: "tokens",
        QUESTION_ANSWERING: "span",
    }
    by_name = {s.name: s for s in specs}
    assert by_name[QUESTION_ANSWERING].default_max_seq_length == 384
    assert by_name[QUESTION_ANSWERING].default_doc_stride == 128
    assert by_name[TEXT_CLASSIFICATION].reports_metric("f1_spam")
    assert by_name[TEXT_CLASSIFICATION].reports_metric("macro_f1")
    assert not by_name[TEXT_CLASSIFICATION].reports_metric("f1_")
    assert by_name[TOKEN_CLASSIFICATION].reports_metric("PER_f1")
    assert not by_name[QUESTION_ANSWERING].reports_metric("macro_f1")
