"""The model zoo: stubs, entries on S3 or a local folder, and the embedded default zoo.

    >>> from sparse_transfer import zoo
    >>> zoo.resolve("zoo:nlp/sentiment_analysis/minilm-l6/pytorch/huggingface/sst2/pruned90_quant-none", "recipe")
    '/home/me/.cache/sparse-transfer/dirs/3f.../recipe.yaml'

The zoo root is `root=` / `$SPARSE_TRANSFER_ZOO` (``s3://bucket/zoo`` or a
local folder) / ``<cache>/zoo``. See `_zoo` for the entry layout and `_card`
for the model card fields; `sparse_transfer.embedded.zoo_seed` builds the
embedded zoo offline.
"""

from __future__ import annotations

from sparse_transfer.zoo._card import CARD_NAME, ModelCard, parse_card
from sparse_transfer.zoo._stub import PARTS, Stub, is_stub, parse_stub
from sparse_transfer.zoo._zoo import (
    KINDS,
    ZOO_ENV,
    card,
    entry_uri,
    list_entries,
    pull,
    push,
    resolve,
    search,
    show,
    zoo_root,
)

__all__ = [
    "CARD_NAME",
    "KINDS",
    "PARTS",
    "ZOO_ENV",
    "ModelCard",
    "Stub",
    "card",
    "entry_uri",
    "is_stub",
    "list_entries",
    "parse_card",
    "parse_stub",
    "pull",
    "push",
    "resolve",
    "search",
    "show",
    "zoo_root",
]
