"""The one rule for ``max_seq_length`` and ``doc_stride``, used by the CLI, the pipeline's
configure step, training, export and serving alike.

Unset (None on the command line, 0 in a pipeline) means the task's own default
(`TaskSpec.default_max_seq_length`, `TaskSpec.default_doc_stride`). A length above
what the model can take is capped with a warning, as Hugging Face's
``examples/pytorch/question-answering/run_qa.py`` does (``max_seq_length =
min(data_args.max_seq_length, tokenizer.model_max_length)`` after logging that the
passed length is larger than the model's). ``doc_stride`` must stay below the
length it strides over.
"""

from __future__ import annotations

import logging

from sparse_transfer.errors import DataError
from sparse_transfer.tasks.flags import FLAGS, check_value

logger = logging.getLogger(__name__)
#: Tokenizers without a limit report a huge ``model_max_length`` (int(1e30)); ignore those.
_NO_LIMIT = 1_000_000


def model_positions(config=None, tokenizer=None) -> int | None:
    """The longest input the model takes: ``max_position_embeddings`` and the tokenizer's
    ``model_max_length``, whichever is smaller; None when neither says."""
    limits = [int(getattr(config, "max_position_embeddings", 0) or 0)]
    limits.append(int(min(getattr(tokenizer, "model_max_length", 0) or 0, _NO_LIMIT)))
    limits = [n for n in limits if 0 < n < _NO_LIMIT]
    return min(limits) if limits else None


def resolve_lengths(
    spec,
    max_seq_length: int | None = None,
    doc_stride: int | None = None,
    positions: int | None = None,
    *,
    error: type[Exception] = DataError,
    spelling: str = "--",
) -> tuple[int, int | None]:
    """``(max_seq_length, doc_stride)`` for `spec`: defaults for unset values, the length capped
    at `positions` (warned), both checked by the flag schema and against each other.

    Args:
        spec: the `TaskSpec`.
        max_seq_length / doc_stride: as given; None or 0 = unset.
        positions: the model's limit (`model_positions`); None: not known yet.
        error: the exception type raised (DataError for the CLI, PipelineError, ServingError).
        spelling: how a flag is written in messages (``--`` or ``parameter ``).

    Returns:
        The length and the stride (None for tasks without a stride).
    """
    length = max_seq_length or spec.default_max_seq_length
    for name, value in (("max_seq_length", max_seq_length), ("doc_stride", doc_stride)):
        problem = check_value(FLAGS[name], value) if value else None
        if problem:
            raise error(f"{spelling}{name} {problem}")
    if positions and length > positions:
        logger.warning(
            "max_seq_length %d is larger than the model's maximum length %d; using %d",
            length,
            positions,
            positions,
        )
        length = positions
    if spec.default_doc_stride is None:
        return int(length), None
    stride = doc_stride or min(spec.default_doc_stride, length // 2)
    if stride >= length:
        raise error(
            f"{spelling}doc_stride {stride} must be smaller than {spelling}max_seq_length {length}"
        )
    return int(length), int(stride)


def trained_length(model_dir) -> int | None:
    """The ``max_seq_length`` a model was trained with (its ``run_summary.json``), or None."""
    import json
    from pathlib import Path

    try:
        value = json.loads((Path(model_dir) / "run_summary.json").read_text()).get("max_seq_length")
    except (OSError, ValueError, AttributeError):
        return None
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else None
