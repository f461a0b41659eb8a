"""The built-in task names, spelled once (tests/unit/test_task_names.py holds core/ to it).

Each task module names its `TaskSpec` with these and `tasks.registry` lists and
aliases them; every other module asks the spec it was handed.
"""

from __future__ import annotations

TEXT_CLASSIFICATION = "text-classification"
TOKEN_CLASSIFICATION = "token-classification"
QUESTION_ANSWERING = "question-answering"
MASKED_LANGUAGE_MODELING = "masked-language-modeling"
