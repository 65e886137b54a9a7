"""segue: music recommendation models, protocols and serving."""

from __future__ import annotations

from typing import Any

from segue.errors import (
    ConfigError,
    DataError,
    DatasetNotFoundError,
    NotFittedError,
    RunDirError,
    SegueError,
    UnknownIdError,
)
from segue.version import __version__


def __getattr__(name: str) -> Any:
    """``segue.fit``, ``segue.load`` and ``segue.Fitted`` (segue.api), imported on first use."""
    if name in ("fit", "load", "Fitted"):
        from segue import api

        return getattr(api, name)
    raise AttributeError(f"module 'segue' has no attribute {name!r}")


__all__ = [
    "ConfigError",
    "DataError",
    "DatasetNotFoundError",
    "Fitted",
    "NotFittedError",
    "RunDirError",
    "SegueError",
    "UnknownIdError",
    "__version__",
    "fit",
    "load",
]
