"""The floors of `core/` (docs/architecture.md), as an executable rule.

Every import between the library's packages, function bodies included, must
point to a strictly lower floor: so a floor never reaches up, and no two
packages can import each other (no package-level import loop). A new package
fails here until it is given a floor, in this table and in docs/architecture.md.
"""

from __future__ import annotations

import ast
from pathlib import Path

CORE = Path(__file__).resolve().parents[2] / "core" / "sparse_transfer"

# Top to bottom; a package may import only packages on floors below its own.
FLOORS: list[tuple[str, ...]] = [
    ("__main__",),  # python -m sparse_transfer
    ("cli",),  # entry points: argv -> typed arguments -> one library call
    ("pipeline",),  # step logic: builds typed arguments, calls the task layer
    ("scaleout", "embedded", "serving"),  # torchrun/TrainJob; builders that train; the server
    ("export",),  # ONNX export (reads the task registry for heads and inputs)
    ("tasks",),  # task registry, data, train() / evaluate()
    ("training",),  # HF Trainer bridge, teacher, distributed helpers
    ("recipe",),  # YAML -> modifiers
    ("modifiers",),  # pruning, QAT, distillation, LR, weight decay
    ("quantization", "zoo", "runtime"),  # fake-quant; zoo client; running a deployment
    (
        "storage",
        "validation",
        "safe_yaml",
        "kernels",
    ),  # files, URIs; finite numbers; YAML; native kernels
    ("errors", "__init__"),  # the error types every floor raises
]
# Floor numbers count up from the ground (errors = 0).
FLOOR_OF = {package: len(FLOORS) - 1 - i for i, floor in enumerate(FLOORS) for package in floor}


def _package(path: Path) -> str:
    parts = path.relative_to(CORE).parts
    return parts[0] if len(parts) > 1 else parts[0].removesuffix(".py")


def _imported_packages(tree: ast.AST) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names = [node.module]
            if node.module == "sparse_transfer":  # from sparse_transfer import storage, zoo
                names = [f"sparse_transfer.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "sparse_transfer" and len(parts) > 1:
                found.append((node.lineno, parts[1]))
    return found


def _edges() -> list[tuple[str, str, str]]:
    edges = []
    for path in sorted(CORE.rglob("*.py")):
        source = _package(path)
        for line, target in _imported_packages(ast.parse(path.read_text())):
            if target != source:
                edges.append((f"{path.relative_to(CORE)}:{line}", source, target))
    return edges


def test_every_package_has_a_floor():
    packages = {_package(p) for p in CORE.rglob("*.py")}
    missing = sorted(packages - set(FLOOR_OF))
    assert not missing, (
        f"give these core packages a floor here and in docs/architecture.md: {missing}"
    )


def test_imports_only_point_down():
    upward = [
        f"{where}: {source} (floor {FLOOR_OF[source]}) imports {target} (floor {FLOOR_OF[target]})"
        for where, source, target in _edges()
        if source in FLOOR_OF and target in FLOOR_OF and FLOOR_OF[target] >= FLOOR_OF[source]
    ]
    assert not upward, "imports that reach up or sideways:\n" + "\n".join(upward)


def test_the_rule_sees_imports_inside_functions(tmp_path):
    tree = ast.parse("def f():\n    from sparse_transfer.tasks.registry import get_task\n")
    assert _imported_packages(tree) == [(2, "tasks")]
