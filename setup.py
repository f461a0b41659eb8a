"""Finds the library under `core/` beside the kfp side at the top level.

Metadata lives in pyproject.toml; this file only exists because setuptools'
declarative config cannot discover packages under two roots (`core/` and `.`).
The package lives at `core/sparse_transfer/`, so paths match import names.
"""

from setuptools import find_packages, setup

core_packages = find_packages("core", include=["sparse_transfer", "sparse_transfer.*"])
other_packages = [p for p in find_packages(".", include=["components*", "pipelines*"])]

setup(
    packages=core_packages + other_packages,
    package_dir={"sparse_transfer": "core/sparse_transfer"},
)
