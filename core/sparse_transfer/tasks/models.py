"""Loading models and tokenizers from local folders or hub ids.

References (zoo stubs, s3://, file://) are resolved to folders first, by the one
resolver, `sparse_transfer.zoo.resolve`.

`load_model` is the one place a checkpoint becomes a model: the task picks the
HF auto class, config overrides set the head (labels, problem type), and a
checkpoint saved during QAT gets its fake-quant state back via
`sparse_transfer.quantization.restore_qat`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from sparse_transfer.errors import SparseTransferError

logger = logging.getLogger(__name__)


def _auto_class(task: str):
    import transformers

    from sparse_transfer.tasks.registry import get_task

    return getattr(transformers, get_task(task).auto_class)


def load_config(name_or_path: str, **config_overrides: Any):
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(str(name_or_path), **config_overrides)
    except (OSError, ValueError) as exc:
        raise SparseTransferError(
            f"cannot load a model config from {name_or_path}: {exc}. Pass a local model "
            "directory (with config.json), a zoo stub, an s3:// URI or a hub id."
        ) from exc


def load_model(name_or_path: str | Path, task: str, **config_overrides: Any):
    """Loads `name_or_path` with the task's head and restores any QAT state.

    Args:
        name_or_path: local directory or hub id (resolve zoo stubs / s3:// first).
        task: a task name (``text-classification``, ...).
        **config_overrides: config attributes such as ``num_labels``,
            ``id2label``, ``label2id``, ``problem_type``.
    """
    name_or_path = str(name_or_path)
    auto = _auto_class(task)
    config = load_config(name_or_path, **config_overrides)
    from safetensors import SafetensorError

    try:
        model = auto.from_pretrained(name_or_path, config=config)
    except SafetensorError as exc:  # truncated or corrupted weights file
        weights = sorted(p.name for p in Path(name_or_path).glob("*.safetensors"))
        raise SparseTransferError(
            f"{name_or_path}: cannot read {', '.join(weights) or 'the weights'} ({exc}); the "
            "file is truncated or corrupted: copy or download the model again"
        ) from None
    except (OSError, ValueError) as exc:
        raise SparseTransferError(f"cannot load a {task} model from {name_or_path}: {exc}") from exc
    restore_qat_state(model, name_or_path)
    return model


def restore_qat_state(model, directory: str) -> bool:
    """Re-applies fake quantization saved next to a QAT checkpoint, if any."""
    from sparse_transfer.quantization import restore_qat

    if not Path(directory).is_dir():
        return False
    restored = bool(restore_qat(model, directory))
    if restored:
        logger.info("restored quantization-aware training state from %s", directory)
    return restored


# Files a saved tokenizer consists of (any one suffices): the fast tokenizer's JSON,
# WordPiece / BPE vocabularies, SentencePiece models.
TOKENIZER_FILES = (
    "tokenizer.json",
    "vocab.txt",
    "vocab.json",
    "spiece.model",
    "sentencepiece.bpe.model",
    "tokenizer.model",
)


def require_tokenizer_files(directory: str | Path) -> None:
    """A model folder without tokenizer files is an error, not a silent 5-token tokenizer.

    transformers 5 builds a tokenizer of special tokens only from a folder that
    holds a config but no vocabulary, and every word becomes ``[UNK]``.
    """
    directory = Path(directory)
    if directory.is_dir() and not any((directory / name).is_file() for name in TOKENIZER_FILES):
        raise SparseTransferError(
            f"{directory} has no tokenizer files (one of {', '.join(TOKENIZER_FILES)}); "
            "save the tokenizer with the model (tokenizer.save_pretrained) or pass "
            "--tokenizer_name"
        )


def load_tokenizer(name_or_path: str | Path, **kwargs: Any):
    """The checkpoint's fast tokenizer (needed for offsets and word ids)."""
    from transformers import AutoTokenizer

    require_tokenizer_files(name_or_path)
    tokenizer = AutoTokenizer.from_pretrained(str(name_or_path), **kwargs)
    if not getattr(tokenizer, "is_fast", False):
        raise SparseTransferError(
            f"tokenizer of {name_or_path} is not a fast tokenizer; offsets and word ids need one"
        )
    return tokenizer
