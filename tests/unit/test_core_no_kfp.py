"""The library must never import kfp: components depend on core, never the reverse."""

import pkgutil
import subprocess
import sys

import sparse_transfer


def test_importing_every_core_module_leaves_kfp_unloaded():
    modules = [
        info.name
        for info in pkgutil.walk_packages(sparse_transfer.__path__, prefix="sparse_transfer.")
        if not info.name.endswith(".__main__")  # importing a __main__ runs its program
    ]
    assert "sparse_transfer.pipeline.steps" in modules and "sparse_transfer.cli.pipeline" in modules
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "from sparse_transfer.cli import build_parser\n"
        "build_parser()\n"
        "bad = sorted(m for m in sys.modules if m == 'kfp' or m.startswith('kfp.'))\n"
        "assert not bad, bad\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
