"""sparse-transfer: fine-tune pre-sparsified transformers while keeping their sparsity.

The library behind every CLI command and every Kubeflow component. Public
entry points live in the subpackages (`recipe`, `modifiers`, `training`,
`tasks`, `export`, `storage`, `zoo`); this module only carries the version.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
