"""Maps the import package `sparse_transfer` onto the `core/` folder.

Metadata lives in pyproject.toml; this file only exists because setuptools'
declarative config cannot rename a folder while discovering its subpackages.
"""

from setuptools import find_packages, setup

core_packages = ["sparse_transfer"] + [f"sparse_transfer.{p}" for p in find_packages("core")]
other_packages = [p for p in find_packages(".", include=["components*", "pipelines*"])]

setup(
    packages=core_packages + other_packages,
    package_dir={"sparse_transfer": "core"},
)
