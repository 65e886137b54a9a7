"""segue: music recommendation models, protocols and serving."""

from __future__ import annotations

__version__ = "0.1.0"

from segue.errors import (
    ConfigError,
    DataError,
    DatasetNotFoundError,
    NotFittedError,
    RunDirError,
    SegueError,
    UnknownIdError,
)

__all__ = [
    "ConfigError",
    "DataError",
    "DatasetNotFoundError",
    "NotFittedError",
    "RunDirError",
    "SegueError",
    "UnknownIdError",
    "__version__",
]
