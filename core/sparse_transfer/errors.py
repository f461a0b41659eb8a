"""The one exception family users see.

Every error we raise on bad input derives from `SparseTransferError`, so the
CLI can print its message (which names the file, line, field and value) and
exit non-zero without a traceback.
"""

from __future__ import annotations


class SparseTransferError(Exception):
    """Base class: an actionable problem with the user's input or environment."""


class RecipeError(SparseTransferError):
    """A recipe that cannot be parsed, validated or evaluated."""


class DataError(SparseTransferError):
    """A dataset, column or label problem."""


class ExportError(SparseTransferError):
    """A model that cannot be exported or fails verification."""


class StorageError(SparseTransferError):
    """An artifact store problem: missing, partial, corrupted or unauthorised."""


class ZooError(SparseTransferError):
    """A malformed stub or a zoo entry that does not exist / already exists."""


class PipelineError(SparseTransferError):
    """A bad pipeline run configuration or submission problem."""


class NonFiniteError(SparseTransferError):
    """A loss, weight or number that is NaN or infinite where only finite values make sense."""
