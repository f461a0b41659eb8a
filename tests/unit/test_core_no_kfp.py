"""The library is the ground floor: `core/` never imports the kfp side, at any depth.

The source is read, not imported: every ``import``/``from`` statement in every
``core/**/*.py`` counts, inside functions, methods and ``if``/``try`` blocks too, so a
lazy import in a handler is caught as surely as one at the top of a module. The kfp-facing
command group reaches ``sparse-transfer`` through the ``sparse_transfer.cli_plugins``
entry point instead (pyproject.toml).
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CORE = ROOT / "core" / "sparse_transfer"
PACKAGE = "sparse_transfer"
FORBIDDEN = ("pipelines", "components", "kfp", "kfp_server_api")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(CORE).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join([PACKAGE, *parts])


def _is_package(path: Path) -> bool:
    return path.name == "__init__.py"


def _imports(path: Path, tree: ast.AST) -> list[tuple[str, int, bool]]:
    """(absolute module name, line, at module level) for every import in `tree`.

    ``from a import b`` yields ``a.b`` when ``a/b`` is a module of this package (a submodule
    import), else ``a`` (a name defined by ``a`` itself). Relative imports are resolved against the file's own package.
    """
    own = _module_name(path)
    package = own if _is_package(path) else own.rpartition(".")[0]
    module_level = {id(node) for node in ast.iter_child_nodes(tree)}
    for node in ast.iter_child_nodes(tree):  # `if TYPE_CHECKING:` / `try:` at module level
        if isinstance(node, ast.If | ast.Try):
            module_level.update(id(n) for n in ast.walk(node) if not isinstance(n, ast.FunctionDef))
    out = []
    for node in ast.walk(tree):
        top = id(node) in module_level
        if isinstance(node, ast.Import):
            out.extend((alias.name, node.lineno, top) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            submodules = [f"{name}.{a.name}" for a in node.names]
            submodules = [m for m in submodules if _module_path(m) is not None]
            out.extend((m, node.lineno, top) for m in submodules)
            if len(submodules) < len(node.names):  # some names come from the module itself
                out.append((name, node.lineno, top))
    return out


def _module_path(name: str) -> Path | None:
    if name == PACKAGE:
        return CORE / "__init__.py"
    if not name.startswith(PACKAGE + "."):
        return None
    rel = Path(*name.split(".")[1:])
    for candidate in (CORE / rel.with_suffix(".py"), CORE / rel / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _sources() -> dict[str, tuple[Path, ast.AST]]:
    return {
        _module_name(p): (p, ast.parse(p.read_text(), filename=str(p)))
        for p in sorted(CORE.rglob("*.py"))
    }


def _graph(module_level_only: bool) -> dict[str, set[str]]:
    sources = _sources()
    graph: dict[str, set[str]] = {name: set() for name in sources}
    for name, (path, tree) in sources.items():
        for target, _, top in _imports(path, tree):
            if target in sources and target != name and (top or not module_level_only):
                graph[name].add(target)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_scan_sees_every_core_module_and_function_level_imports():
    sources = _sources()
    assert len(sources) > 50 and "sparse_transfer.pipeline.steps" in sources
    # A lazy import inside a function is found (the old import-time check could not see it).
    tree = ast.parse("def handler():\n    from pipelines.client import upload\n")
    assert [(n, top) for n, _, top in _imports(CORE / "cli" / "x.py", tree)] == [
        ("pipelines.client", False)
    ]
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_core_never_imports_the_kfp_side_at_any_depth():
    offences = [
        f"{path.relative_to(ROOT)}:{line}: imports {name}"
        for path, tree in _sources().values()
        for name, line, _ in _imports(path, tree)
        if name.split(".")[0] in FORBIDDEN
    ]
    assert offences == [], "\n".join(offences)


def test_no_import_cycles_among_core_modules():
    cycles = _cycles(_graph(module_level_only=True))
    assert cycles == [], "module-level import cycles in core/: " + "; ".join(
        " <-> ".join(c) for c in cycles
    )


def test_no_import_cycles_inside_functions_either():
    """Cycles closed by imports inside functions count too (the task and modifier tables
    import their rows; the rows import only `tasks.spec` / `modifiers.base`)."""
    cycles = _cycles(_graph(module_level_only=False))
    assert not cycles, "function-level cycles: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_installed_cli_finds_the_pipeline_group_through_the_entry_point():
    """`sparse-transfer pipeline` comes from the plugin group; importing the CLI loads no kfp."""
    code = (
        "import sys\n"
        "from sparse_transfer.cli import build_parser\n"
        "parser = build_parser()\n"
        "assert 'pipeline' in parser._subparsers._group_actions[0].choices\n"
        "bad = sorted(m for m in sys.modules if m == 'kfp' or m.startswith('kfp.'))\n"
        "assert not bad, bad\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd="/"
    )
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.mark.slow
def test_the_wheel_works_without_the_source_tree(tmp_path):
    """Built as a wheel and imported from outside the checkout: the plugin group is declared,
    the run configs and compiled specs travel as package data, `pipeline` is a subcommand."""
    import zipfile

    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation"]
        + [str(ROOT), "-w", str(tmp_path / "dist")],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    entry_points = next(site.glob("*.dist-info/entry_points.txt")).read_text()
    assert "[sparse_transfer.cli_plugins]\npipeline = pipelines.cli:register" in entry_points
    code = (
        "import sparse_transfer, pipelines.results.run as run, pipelines.client as client\n"
        f"assert sparse_transfer.__file__.startswith({str(site)!r}), sparse_transfer.__file__\n"
        "assert (run.CONFIGS / 'real-results-sparse.yaml').is_file()\n"
        "assert (client.COMPILED_DIR / 'sparse_transfer_pipeline.yaml').is_file()\n"
        "from sparse_transfer.cli import main\n"
        "raise SystemExit(main(['pipeline', '--help']))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(site)},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "schedule" in result.stdout and "upload" in result.stdout
