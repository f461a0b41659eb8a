"""Every YAML the product reads goes through `sparse_transfer.safe_yaml` (issue 26 item 1).

A model card read with plain ``yaml.safe_load`` let a 503-byte card take 11 GB and
83 s of `zoo list`; this walks the source of core/, pipelines/ and components/ with
`ast` for any other way into PyYAML's loaders.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("core", "pipelines", "components")
#: PyYAML's entry points that build Python data from text (safe or not).
LOADERS = {"load", "safe_load", "load_all", "safe_load_all", "full_load", "full_load_all",
           "unsafe_load", "unsafe_load_all"}  # fmt: skip
#: The guarded loader itself, the one module allowed to drive PyYAML's parser.
ALLOWED = {ROOT / "core" / "sparse_transfer" / "safe_yaml.py"}


def _yaml_loads(tree: ast.AST) -> list[int]:
    """Lines that call ``yaml.<loader>`` or import a loader from yaml by name."""
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            owner = node.func.value
            if (
                node.func.attr in LOADERS
                and isinstance(owner, ast.Name)
                and owner.id in ("yaml", "pyyaml")
            ):
                lines.append(node.lineno)
        elif isinstance(node, ast.ImportFrom) and node.module == "yaml":
            if any(alias.name in LOADERS for alias in node.names):
                lines.append(node.lineno)
    return sorted(lines)


def test_no_yaml_load_outside_the_guarded_loader():
    found = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if path in ALLOWED:
                continue
            tree = ast.parse(path.read_text(), str(path))
            found += [f"{path.relative_to(ROOT)}:{line}" for line in _yaml_loads(tree)]
    assert found == [], f"use sparse_transfer.safe_yaml instead of PyYAML's loaders: {found}"


def test_the_walker_sees_a_plain_load():
    tree = ast.parse("import yaml\nx = yaml.safe_load(t)\nfrom yaml import full_load\n")
    assert _yaml_loads(tree) == [2, 3]
