"""The `Recipe` value: resolved variables plus validated modifiers, and its YAML form."""

from __future__ import annotations

import dataclasses
import enum
from pathlib import Path
from typing import Any

import yaml

from sparse_transfer import storage
from sparse_transfer.modifiers.base import Modifier


@dataclasses.dataclass
class Recipe:
    """A loaded recipe: what training applies.

    Attributes:
        version: the recipe's ``version`` (a string such as ``"1.1.0"``) or None.
        variables: resolved variables; a stage's variables appear as ``"stage.name"``.
        modifiers: validated modifier instances in recipe order (groups and stages in
            file order).
        source_path: the file it was read from, or None for a string.
        text: the recipe text it was parsed from (for re-loading with other recipe args).
    """

    version: str | None
    variables: dict[str, Any]
    modifiers: list[Modifier]
    source_path: str | None = None
    text: str | None = dataclasses.field(default=None, repr=False, compare=False)

    def find(self, modifier: type[Modifier] | str) -> list[Modifier]:
        """Modifiers of a class (subclasses included) or recipe name, in recipe order."""
        if isinstance(modifier, str):
            return [
                m
                for m in self.modifiers
                if m.recipe_name == modifier or type(m).__name__ == modifier
            ]
        return [m for m in self.modifiers if isinstance(m, modifier)]

    def to_dict(self) -> dict[str, Any]:
        """``{"version", "variables", "modifiers": [{"type": name, **fields}]}``, JSON-safe."""
        return {
            "version": self.version,
            "variables": plain(self.variables),
            "modifiers": [
                {"type": m.recipe_name or type(m).__name__, **plain(m.resolved_fields())}
                for m in self.modifiers
            ],
        }

    def to_yaml(self) -> str:
        """The resolved recipe as YAML; loading it gives the same modifiers.

        Every ``eval(...)`` is replaced by its value, so the file records exactly what
        ran. Stage variables are listed in a comment only (the modifiers already carry
        their values).
        """
        data = self.to_dict()
        top: dict[str, Any] = {}
        if self.version is not None:
            top["version"] = self.version
        staged = {k: v for k, v in data["variables"].items() if "." in k}
        for name, value in data["variables"].items():
            if "." not in name:
                top[name] = value
        top["modifiers"] = [
            _Tagged(entry["type"], {k: v for k, v in entry.items() if k != "type"})
            for entry in data["modifiers"]
        ]
        header = "# Resolved recipe written by sparse-transfer"
        if self.source_path:
            header += f" from {self.source_path}"
        header += "\n"
        if staged:
            header += "# stage variables: " + ", ".join(f"{k}={v!r}" for k, v in staged.items())
            header += "\n"
        body = yaml.dump(top, Dumper=_Dumper, sort_keys=False, default_flow_style=False)
        return header + body

    def save(self, path: str | Path) -> Path:
        """Writes `to_yaml()` atomically (temp file in the same folder, then rename)."""
        path = Path(path)
        storage.write_bytes_atomic(path, self.to_yaml().encode("utf-8"))
        return path


def plain(value: Any) -> Any:
    """Converts a resolved value to JSON/YAML-safe builtins (tuples -> lists, enums -> value)."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [plain(v) for v in value]
    if isinstance(value, enum.Enum):
        return plain(value.value)
    if isinstance(value, Path):
        return str(value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


class _Tagged:
    def __init__(self, name: str, fields: dict[str, Any]):
        self.name = name
        self.fields = fields


class _Dumper(yaml.SafeDumper):
    """SafeDumper that writes modifiers as ``!Name`` tagged mappings and never aliases."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _represent_tagged(dumper: yaml.SafeDumper, data: _Tagged) -> yaml.Node:
    return dumper.represent_mapping(f"!{data.name}", data.fields)


_Dumper.add_representer(_Tagged, _represent_tagged)
