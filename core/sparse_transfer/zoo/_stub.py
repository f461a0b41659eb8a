"""Zoo stubs: `zoo:DOMAIN/SUB_DOMAIN/ARCHITECTURE/FRAMEWORK/REPO/DATASET/SPARSE_TAG`.

The same seven-part form as SparseZoo's stubs in the reference document, e.g.
``zoo:nlp/sentiment_analysis/minilm-l6/pytorch/huggingface/sst2/pruned90_quant-none``.
A stub maps to the folder of the same path under the zoo root.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields

from sparse_transfer.errors import ZooError

PREFIX = "zoo:"
PARTS = ("domain", "sub_domain", "architecture", "framework", "repo", "dataset", "sparse_tag")
FORM = "zoo:" + "/".join(p.upper() for p in PARTS)
_PART_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


@dataclass(frozen=True)
class Stub:
    domain: str
    sub_domain: str
    architecture: str
    framework: str
    repo: str
    dataset: str
    sparse_tag: str

    @property
    def path(self) -> str:
        """The entry's folder below the zoo root."""
        return "/".join(getattr(self, f.name) for f in fields(self))

    def __str__(self) -> str:
        return PREFIX + self.path


def is_stub(ref: object) -> bool:
    return isinstance(ref, str) and ref.startswith(PREFIX)


def parse_stub(text: str | Stub) -> Stub:
    """Parses a stub, naming every missing or malformed part.

    Raises:
        ZooError: e.g. ``zoo stub 'zoo:nlp/sentiment_analysis' names 2 of 7 parts; missing:
            ARCHITECTURE, FRAMEWORK, REPO, DATASET, SPARSE_TAG (form: zoo:DOMAIN/...)``.
    """
    if isinstance(text, Stub):
        return text
    if not is_stub(text):
        raise ZooError(f"'{text}' is not a zoo stub: stubs look like {FORM}")
    body = text[len(PREFIX) :].split("?", 1)[0].strip("/")
    parts = body.split("/") if body else []
    if len(parts) > len(PARTS):
        raise ZooError(
            f"zoo stub '{text}' has {len(parts)} parts, expected {len(PARTS)} ({FORM}); "
            f"extra: {'/'.join(parts[len(PARTS) :])}"
        )
    problems = []
    present = sum(1 for p in parts if p)
    missing = [PARTS[i].upper() for i in range(len(PARTS)) if i >= len(parts) or not parts[i]]
    if missing:
        problems.append(f"names {present} of {len(PARTS)} parts; missing: {', '.join(missing)}")
    bad = [f"{PARTS[i].upper()}='{p}'" for i, p in enumerate(parts) if p and not _PART_RE.match(p)]
    if bad:
        problems.append(f"invalid characters in {', '.join(bad)} (letters, digits, '_', '-', '.')")
    if problems:
        raise ZooError(f"zoo stub '{text}' " + "; ".join(problems) + f" (form: {FORM})")
    return Stub(*parts)


def stub_query(text: str) -> dict[str, str]:
    """The `?key=value&...` options after a stub (e.g. ``?recipe=dense_teacher.yaml``)."""
    if "?" not in text:
        return {}
    out = {}
    for item in text.split("?", 1)[1].split("&"):
        if item:
            key, _, value = item.partition("=")
            out[key] = value
    return out
