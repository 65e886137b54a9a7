"""Exceptions raised by segue.

Every error a user can cause (bad data, bad arguments, a damaged run directory) is a
:class:`SegueError` with a one-sentence message naming the problem; the CLI prints that
sentence and exits with status 2 instead of showing a stack trace.
"""

from __future__ import annotations


class SegueError(ValueError):
    """Base class of all user-facing errors."""


class DataError(SegueError):
    """Malformed, missing or unusable data (columns, dtypes, NaNs, empty tables)."""


class DatasetNotFoundError(DataError, FileNotFoundError):
    """A dataset's files are not in the data directory and could not be fetched."""


class UnknownIdError(SegueError, KeyError):
    """A raw user or item id that the model has never seen."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class ConfigError(SegueError):
    """An invalid configuration value, model name or option."""


class RunDirError(SegueError):
    """A run directory that is missing, incomplete, corrupt or mismatched."""


class NotFittedError(SegueError, RuntimeError):
    """A model used before it was fitted or loaded."""


class RankFailedError(SegueError, RuntimeError):
    """A process of a distributed run raised or died, so every process stopped."""


class WriteError(RunDirError):
    """A run or export directory that could not be written (a read-only or full disk)."""
