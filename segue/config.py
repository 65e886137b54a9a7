"""Typed option checks shared by the model configs and the trainer config (dataclasses loaded from TOML/CLI).

A value read from a file or a ``--set`` flag must have the field's declared type before it reaches
a constructor: ``layers=[8, 4]`` for an ``int`` field, ``lr="0.1"`` or ``epochs=true`` get a
one-sentence error instead of a ``TypeError`` deep inside a model.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from segue.errors import ConfigError

_SIMPLE: dict[str, tuple[type, ...]] = {"int": (int,), "float": (int, float), "bool": (bool,), "str": (str,)}


def _accepts(annotation: str, value: Any) -> bool | None:
    """Whether ``value`` fits a simple annotation (``int``, ``float | None``, ...); None if not checkable."""
    parts = [p.strip() for p in str(annotation).split("|")]
    if not all(p in _SIMPLE or p == "None" for p in parts):
        return None
    if value is None:
        return "None" in parts
    for p in parts:
        if p == "None":
            continue
        if isinstance(value, bool) and p != "bool":
            continue  # True is an int to Python, not to a config file
        if isinstance(value, _SIMPLE[p]):
            return True
    return False


def from_options(cls: type, values: dict[str, Any], what: str) -> Any:
    """``cls(**values)`` for a config dataclass, after rejecting unknown keys and mistyped values."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(
            f"Unknown option(s) {', '.join(unknown)} for {what}; known: {', '.join(sorted(fields)) or 'none'}."
        )
    for key, value in values.items():
        if _accepts(fields[key].type, value) is False:
            raise ConfigError(
                f"Option {key} of {what} must be {fields[key].type}, got {type(value).__name__} {value!r}."
            )
    return cls(**values)


__all__ = ["from_options"]
