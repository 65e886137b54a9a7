"""Reading the files of run and export directories: every kind of damage is one sentence naming the file.

A run or export directory is read only through these helpers, which check what they read before anything
uses it: JSON documents have the type they should (an object, not a list); arrays are read with pickles off
and have the dtype, shape and id range the directory's sizes imply; file names taken from a JSON document
are relative and stay inside the directory. Whatever is wrong -- a truncated file, garbage, the wrong shape,
dtype or JSON type, ids out of range, an absolute path -- raises one :class:`~segue.errors.RunDirError`
(or the ``error`` class given, e.g. an export's) whose message names the file; nothing else escapes.

Optional files (``metrics.json``, ``history.json``) degrade gracefully instead: :func:`read_optional_json`
warns (:class:`RunFileWarning`, one sentence) and returns ``None``.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from segue.errors import RunDirError


class RunFileWarning(UserWarning):
    """An optional file of a run or export directory was damaged and is ignored."""


def first_line(e: BaseException) -> str:
    """The first line of an exception's message, trimmed (for one-sentence errors)."""
    text = str(e).strip().splitlines()
    return (text[0] if text else type(e).__name__).rstrip(".")[:200]


def read_json(path: Path, kind: type = dict, *, error: type[RunDirError] = RunDirError) -> Any:
    """``path`` parsed as JSON, checked to be a ``kind`` (dict or list)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise error(f"{path} does not exist.") from e
    except (OSError, UnicodeDecodeError) as e:
        raise error(f"{path} is unreadable ({first_line(e)}).") from e
    except (json.JSONDecodeError, RecursionError) as e:
        raise error(f"{path} is not valid JSON ({first_line(e)}).") from e
    if not isinstance(data, kind):
        raise error(f"{path} must hold a JSON {_json_name(kind)}, not {_json_name(type(data))}.")
    return data


def read_optional_json(path: Path, check: Callable[[Any], str | None]) -> Any | None:
    """An optional JSON file: ``None`` when absent; when damaged (``check`` returns why), a warning and ``None``."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        data = read_json(path)
        why = check(data)
        if why is not None:
            raise RunDirError(f"{path} {why}.")
    except RunDirError as e:
        warnings.warn(f"{e} It is optional and was ignored.", RunFileWarning, stacklevel=3)
        return None
    return data


def _json_name(t: type) -> str:
    return {dict: "object", list: "array", str: "string", int: "number", float: "number", bool: "boolean"}.get(
        t, "null" if t is type(None) else t.__name__
    )


def is_count(x: Any, low: int = 0) -> bool:
    """An integer (not a bool) of at least ``low``."""
    return isinstance(x, int) and not isinstance(x, bool) and x >= low


def inside(directory: Path, name: Any, what: str, *, error: type[RunDirError] = RunDirError) -> Path:
    """``directory / name`` for a file name read from ``what``: relative, no ``..``, staying inside ``directory``."""
    if not isinstance(name, str) or not name or "\x00" in name:
        raise error(f"{what} names a file {name!r} that is not a file name.")
    p = Path(name)
    if p.is_absolute() or p.drive or ".." in p.parts:
        raise error(f"{what} names the file {name!r}, which is not a relative path inside {directory}.")
    full = directory / p
    try:
        if not full.resolve().is_relative_to(directory.resolve()):
            raise error(f"{what} names the file {name!r}, which leads outside {directory}.")
    except OSError as e:
        raise error(f"{what} names the file {name!r}, which cannot be resolved ({first_line(e)}).") from e
    return full


def load_arrays(
    path: Path, keys: Sequence[str], optional: Sequence[str] = (), *, error: type[RunDirError] = RunDirError
) -> dict[str, np.ndarray]:
    """The arrays ``keys`` (and any of ``optional``) of the ``.npz`` file ``path``, read with pickles off."""
    try:
        with np.load(path, allow_pickle=False) as z:
            if not hasattr(z, "files"):
                raise ValueError("not an .npz archive")
            missing = [k for k in keys if k not in z.files]
            if missing:
                raise error(f"{path} lacks the array(s) {', '.join(missing)}.")
            return {k: np.asarray(z[k]) for k in (*keys, *optional) if k in z.files}
    except RunDirError:
        raise
    except Exception as e:  # zip, zlib, header or pickle errors: the file is damaged, whatever the kind
        raise error(f"{path} is unreadable or damaged ({first_line(e)}).") from e


def load_npy(path: Path, *, error: type[RunDirError] = RunDirError) -> np.ndarray:
    """A ``.npy`` array, memory-mapped read-only, with pickles off."""
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception as e:  # truncated (mmap larger than the file), bad header, object dtype
        raise error(f"{path} is unreadable or damaged ({first_line(e)}).") from e
    if not isinstance(arr, np.ndarray):
        raise error(f"{path} is not a .npy array.")
    return arr


def check_ids(
    arr: np.ndarray, path: Path, what: str, low: int, high: int, *, error: type[RunDirError] = RunDirError
) -> np.ndarray:
    """``arr`` as int64, checked to be integers within ``low..high``."""
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
        raise error(f"{path} holds {what} of dtype {arr.dtype}, not integers.")
    if arr.size and (int(arr.min()) < low or int(arr.max()) > high):
        raise error(f"{path} holds {what} outside {low}..{high} (from {int(arr.min())} to {int(arr.max())}).")
    return arr.astype(np.int64, copy=False)


def load_csr(
    path: Path, n_rows: int, n_cols: int, what: str = "item ids", *, error: type[RunDirError] = RunDirError
) -> sp.csr_matrix:
    """A 0/1 CSR matrix saved as ``indptr``, ``indices``, ``shape``: ``n_cols`` columns and at least ``n_rows``
    rows (a playlist model's rows are its playlists, which may outnumber its users)."""
    z = load_arrays(path, ("indptr", "indices", "shape"), error=error)
    shape, indptr, indices = z["shape"], z["indptr"], z["indices"]
    if shape.shape != (2,) or not np.issubdtype(shape.dtype, np.integer):
        raise error(f"{path} has a malformed shape entry {shape.tolist()!r}.")
    rows, cols = (int(x) for x in shape)
    if cols != n_cols or rows < n_rows:
        raise error(f"{path} has shape {(rows, cols)}; the directory's sizes imply ({n_rows}, {n_cols}).")
    if indptr.ndim != 1 or indices.ndim != 1 or len(indptr) != rows + 1:
        raise error(f"{path} is not a valid sparse matrix: indptr has {indptr.shape}, expected ({rows + 1},).")
    indptr = check_ids(indptr, path, "row offsets", 0, len(indices), error=error)
    if indptr[0] != 0 or indptr[-1] != len(indices) or (np.diff(indptr) < 0).any():
        raise error(
            f"{path} is not a valid sparse matrix: its row offsets are not increasing from 0 to {len(indices)}."
        )
    indices = check_ids(indices, path, what, 0, n_cols - 1, error=error)
    return sp.csr_matrix((np.ones(len(indices), np.float32), indices, indptr), shape=(rows, cols))


def all_finite(arr: np.ndarray, rows: int = 1 << 16) -> bool:
    """Whether a (possibly memory-mapped) array holds no NaN or infinity, checked in chunks of rows."""
    if arr.ndim == 0 or len(arr) == 0:
        return bool(np.isfinite(arr).all())
    return all(bool(np.isfinite(arr[i : i + rows]).all()) for i in range(0, len(arr), rows))


def check_float_matrix(
    arr: np.ndarray, path: Path, n_rows: int, dim: int | None = None, *, error: type[RunDirError] = RunDirError
) -> np.ndarray:
    """A float32 matrix of ``n_rows`` rows (and ``dim`` columns when given) without NaN or infinity."""
    if arr.dtype != np.float32:
        raise error(f"{path} holds {arr.dtype} values, not float32.")
    if arr.ndim != 2 or arr.shape[0] != n_rows or (dim is not None and arr.shape[1] != dim):
        want = f"({n_rows}, {dim if dim is not None else 'd'})"
        raise error(f"{path} has shape {arr.shape}; expected {want}.")
    if not all_finite(arr):
        raise error(f"{path} holds NaN or infinite values.")
    return arr


__all__ = [
    "RunFileWarning",
    "all_finite",
    "check_float_matrix",
    "check_ids",
    "first_line",
    "inside",
    "is_count",
    "load_arrays",
    "load_csr",
    "load_npy",
    "read_json",
    "read_optional_json",
]
