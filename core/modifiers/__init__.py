"""Recipe modifiers: one module each, one shared lifecycle (see `base`)."""

from sparse_transfer.modifiers.base import (
    Event,
    FieldError,
    Modifier,
    known_modifiers,
    modifier_class,
    register_modifier,
)

__all__ = ["Event", "FieldError", "Modifier", "known_modifiers", "modifier_class", "register_modifier"]
