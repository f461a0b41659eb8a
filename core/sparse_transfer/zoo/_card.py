"""Model cards: `model.md` with YAML front matter, then a readable body.

Front matter fields (all optional except `stub`): stub, task, dataset,
sparsity (0..1), quantized (bool), metrics (dict), parent (stub), recipe
(file under recipe/ used when the stub is passed as `--recipe`),
training_command, created (ISO date), description, base_model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

from sparse_transfer import safe_yaml
from sparse_transfer.errors import ZooError

CARD_NAME = "model.md"
FIELD_ORDER = (
    "stub",
    "task",
    "dataset",
    "sparsity",
    "quantized",
    "metrics",
    "parent",
    "recipe",
    "training_command",
    "created",
    "base_model",
    "description",
)


@dataclass
class ModelCard:
    meta: dict[str, Any] = field(default_factory=dict)
    body: str = ""

    def render(self) -> str:
        ordered = {k: self.meta[k] for k in FIELD_ORDER if k in self.meta}
        ordered.update({k: v for k, v in self.meta.items() if k not in ordered})
        front = yaml.safe_dump(ordered, sort_keys=False, allow_unicode=True, width=100)
        return f"---\n{front}---\n\n{self.body.strip()}\n"


def parse_card(text: str, where: str = CARD_NAME) -> ModelCard:
    """Splits `text` into front matter (safe-loaded YAML) and body.

    Raises:
        ZooError: front matter that is not closed or not a YAML mapping.
    """
    lines = text.splitlines()
    if not lines or lines[0].strip() != "---":
        return ModelCard({}, text)
    for end in range(1, len(lines)):
        if lines[end].strip() == "---":
            break
    else:
        raise ZooError(f"{where}: front matter opened with '---' on line 1 is never closed")
    # anyone who can push writes this YAML: the guarded loader bounds aliases and nesting
    source = f"{where} front matter"
    try:
        meta = safe_yaml.load("\n".join(lines[1:end]), source, error=ZooError) or {}
    except ZooError as exc:
        raise ZooError(str(exc).replace(": invalid YAML:", " is not valid YAML:")) from None
    if not isinstance(meta, dict):
        raise ZooError(
            f"{where}: front matter must be a mapping of fields, got {type(meta).__name__}"
        )
    check_meta(meta, where)
    return ModelCard(meta, "\n".join(lines[end + 1 :]).strip() + "\n")


#: Card fields that readers (list, search, resolve) use as text.
_TEXT_FIELDS = ("stub", "task", "dataset", "parent", "recipe", "base_model")


def check_meta(meta: dict[str, Any], where: str) -> None:
    """Refuses card fields that `list`/`search`/`resolve` could not use: wrong types, NaN/inf.

    A pushed card is read by everyone who lists the zoo, so a field of the wrong
    type must fail here, naming the field, not as an AttributeError in a reader.
    """
    from sparse_transfer.validation import require_finite

    require_finite(meta, f"{where}: field", ZooError)
    for name in _TEXT_FIELDS:
        if meta.get(name) is not None and not isinstance(meta[name], str):
            raise ZooError(f"{where}: field '{name}' must be text, got {meta[name]!r:.80}")
    sparsity = meta.get("sparsity")
    if sparsity is not None and (
        isinstance(sparsity, bool)
        or not isinstance(sparsity, (int, float))
        or not 0 <= sparsity <= 1
    ):
        raise ZooError(f"{where}: field 'sparsity' must be a number in 0..1, got {sparsity!r:.80}")
    if meta.get("metrics") is not None and not isinstance(meta["metrics"], dict):
        raise ZooError(f"{where}: field 'metrics' must be a mapping, got {meta['metrics']!r:.80}")
    if "quantized" in meta and not isinstance(meta["quantized"], bool):
        raise ZooError(
            f"{where}: field 'quantized' must be true or false, got {meta['quantized']!r:.80}"
        )


def default_body(meta: dict[str, Any], files: list[str]) -> str:
    """A readable card body from the front matter and the entry's files."""
    stub = meta.get("stub", "")
    lines = [
        f"# {stub.split('/')[-1] if stub else 'model'}: {meta.get('task', 'model')} on {meta.get('dataset', '?')}"
    ]
    if meta.get("description"):
        lines += ["", str(meta["description"])]
    facts = []
    if meta.get("sparsity") is not None:
        facts.append(f"- Sparsity: {float(meta['sparsity']):.1%} of prunable weights are zero")
    if "quantized" in meta:
        facts.append(f"- Quantized (int8 QAT): {'yes' if meta['quantized'] else 'no'}")
    if meta.get("parent"):
        facts.append(f"- Parent: `{meta['parent']}`")
    for name, value in (meta.get("metrics") or {}).items():
        facts.append(f"- {name}: {value}")
    if facts:
        lines += ["", *facts]
    has_training = any(f.startswith("training/") for f in files)
    has_recipe = any(f.startswith("recipe/") for f in files)
    usage = []
    if has_training:
        usage.append(f"--model_name_or_path {stub}")
    if has_recipe:
        usage.append(f"--recipe {stub}")
    if usage:
        lines += [
            "",
            "## Use it",
            "",
            "```bash",
            "sparse-transfer train TASK \\",
            "  " + " \\\n  ".join(usage) + " ...",
            "```",
        ]
    if meta.get("training_command"):
        lines += [
            "",
            "## How it was made",
            "",
            "```bash",
            str(meta["training_command"]).strip(),
            "```",
        ]
    groups = sorted({f.split("/")[0] + ("/" if "/" in f else "") for f in files})
    if groups:
        lines += ["", "## Contents", "", *[f"- `{g}`" for g in groups]]
    return "\n".join(lines) + "\n"
