"""Every run config the docs show passes the run-config check a user's `pipeline submit` runs
(pipelines.client.read_config: the pipeline's parameter names and types)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pipelines.client import read_config

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"```yaml\n(.*?)```", re.DOTALL)


def _run_configs():
    for doc in DOCS:
        for i, block in enumerate(BLOCK.findall(doc.read_text())):
            if re.search(r"^pipeline: \w+$", block, re.MULTILINE):
                yield pytest.param(block, id=f"{doc.name}#{i}")


@pytest.mark.parametrize("block", list(_run_configs()))
def test_documented_run_configs_pass_the_check(block, tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(block.replace("zoo:...", "zoo:a/b/c/d/e/f/g"))
    config = read_config(path)
    assert config.parameters
