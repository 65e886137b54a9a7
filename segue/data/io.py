"""Where datasets live and what a registered dataset is: the data directory, file lookup, DatasetSpec.

Shared by the dataset registry (segue/data/datasets.py) and the loaders that register datasets
from their own modules (segue/data/playlists.py), so neither imports the other.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from segue.data.interactions import Interactions
from segue.errors import DatasetNotFoundError

DATA_DIR_ENV = "SEGUE_DATA_DIR"
DEFAULT_DATA_DIR = Path("~/.cache/segue")
DOCS = "docs/datasets.md"
Loader = Callable[..., Interactions]


def resolve_data_dir(data_dir: str | Path | None = None) -> Path:
    """The data directory: ``data_dir`` if given, else ``$SEGUE_DATA_DIR``, else ``~/.cache/segue``."""
    if data_dir is not None and str(data_dir) != "":
        return Path(data_dir).expanduser()
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        return Path(env).expanduser()
    return DEFAULT_DATA_DIR.expanduser()


def find_file(data_dir: str | Path, rel: str) -> Path | None:
    """``data_dir/rel`` if it exists, else ``data_dir/rel.gz`` if that exists, else None."""
    base = Path(data_dir) / rel
    for p in (base, base.with_name(base.name + ".gz")):
        if p.is_file():
            return p
    return None


def _not_found(name: str, rel: str, data_dir: Path, what: str, why: str = "") -> DatasetNotFoundError:
    gz = "" if rel.endswith(".zip") else f" (or {Path(rel).name}.gz)"
    why = f" and could not be downloaded ({why})" if why else ""
    return DatasetNotFoundError(f"{name}: file {rel}{gz} not found in {data_dir}{why}; put {what} there (see {DOCS}).")


def _require(name: str, rel: str, data_dir: Path, what: str) -> Path:
    p = find_file(data_dir, rel)
    if p is None:
        raise _not_found(name, rel, data_dir, what)
    return p


@dataclass(frozen=True)
class DatasetSpec:
    """A known dataset: where its files go, where it comes from, and how to load it.

    ``files`` are paths under the data directory (each may also be stored as ``.gz``);
    ``mirror_files`` are accepted instead of them (a mirror copy). ``loader`` is called as
    ``loader(data_dir, download=..., progress=...)``. ``default_protocol`` names the evaluation
    protocol of :mod:`segue.evaluation.protocols` used by default. ``synthetic_time`` says that the
    ``timestamp`` column only orders events (positions, not seconds since 1970).
    """

    name: str
    description: str
    files: tuple[str, ...]
    terms: str
    url: str
    loader: Loader
    default_protocol: str
    mirror_files: tuple[str, ...] = ()
    downloadable: bool = False
    synthetic_time: bool = False
