"""Your own data files: interactions, item sequences, playlists and listening logs, read into :class:`Interactions`.

:func:`load_file` reads one file in one of four shapes (``FORMATS``), given by ``format`` or
inferred from the extension and the header (:func:`detect_format`):

================  ==========================================================  ======================
format            columns (canonical names; rename with ``columns``)           default protocol
================  ==========================================================  ======================
``interactions``  ``user, item[, timestamp][, rating | weight]``               ``loo-sampled``
``sequences``     a text file of ``user item1 item2 ...`` lines, oldest first   ``loo-sampled``
                  (the SASRec / S3-Rec convention; no header)
``playlists``     ``playlist, track[, user][, position]``                      ``playlist-holdout``
``sessions``      ``user, track, timestamp[, session][, any context columns]``  ``loo-sampled``
================  ==========================================================  ======================

CSV (``,``), TSV (tab) and Parquet are read by pandas / pyarrow; a ``.txt`` file is a sequence
file unless its first line holds a tab or a comma; ``.gz`` is handled. Ids are kept as text
(``007``, ``u42`` and a 30-digit number are all fine ids) and mapped to internal ids. Timestamps are
Unix seconds or ISO 8601 dates. ``columns`` maps a canonical name to the file's column, e.g.
``{"user": "uid", "item": "track_id"}``; in ``interactions`` a ``track`` column stands in for a
missing ``item`` column, and in ``playlists`` / ``sessions`` an ``item`` column for ``track``.

What each shape becomes:

* ``sequences``: one row per item; ``timestamp`` is the item's position in its user's sequence
  (0, 1, 2, ...: synthetic, it only orders events).
* ``playlists``: a ``playlist`` group column; a playlist without a ``user`` owns itself (``user`` =
  ``playlist:<id>``), as in :mod:`segue.data.playlists`; ``position`` becomes ``timestamp``.
* ``sessions``: a ``session`` group column, from the file's ``session`` column or, without one, cut
  at every gap of ``session_gap`` seconds (20 minutes) in each user's plays; every other column is
  carried as a context column. :func:`segue.data.sessions.log_from_interactions` turns the result
  into the listening log that CoSeRNN's :func:`~segue.data.sessions.build_sessions` reads.

Every malformed file raises :class:`~segue.errors.DataError` in one sentence naming the file and,
where there is one, the line and the column.
"""

from __future__ import annotations

import gzip
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from segue.data.interactions import RESERVED, Interactions
from segue.errors import ConfigError, DataError, DatasetNotFoundError

FORMATS = ("interactions", "sequences", "playlists", "sessions")
#: Canonical column names of each format, required ones first.
CANONICAL: dict[str, tuple[str, ...]] = {
    "interactions": ("user", "item", "timestamp", "rating", "weight"),
    "sequences": (),
    "playlists": ("playlist", "track", "user", "position"),
    "sessions": ("user", "track", "timestamp", "session", "rating", "weight"),
}
REQUIRED: dict[str, tuple[str, ...]] = {
    "interactions": ("user", "item"),
    "sequences": (),
    "playlists": ("playlist", "track"),
    "sessions": ("user", "track", "timestamp"),
}
DEFAULT_PROTOCOLS = {
    "interactions": "loo-sampled",
    "sequences": "loo-sampled",
    "playlists": "playlist-holdout",
    "sessions": "loo-sampled",
}
#: A column that may stand in for a missing canonical one.
_ALIASES = {"item": "track", "track": "item"}
DEFAULT_SESSION_GAP = 20 * 60.0
SUFFIXES = (".csv", ".tsv", ".tab", ".parquet", ".pq", ".txt")


@dataclass(frozen=True)
class Source:
    """What a dataset argument resolved to: the table, its format and the protocol to use by default."""

    data: Interactions
    format: str
    default_protocol: str
    synthetic_time: bool
    path: Path | None = None


# -- reading --------------------------------------------------------------------------------------


def _stem(path: Path) -> str:
    name = path.name[:-3] if path.name.endswith(".gz") else path.name
    return name.rsplit(".", 1)[0] if "." in name else name


def _ext(path: Path) -> str:
    name = path.name.lower()
    name = name[:-3] if name.endswith(".gz") else name
    return "." + name.rsplit(".", 1)[-1] if "." in name else ""


def _first_line(path: Path) -> str:
    """The first non-empty line of a text file ('' for an empty one)."""
    try:
        opener = gzip.open if path.name.endswith(".gz") else open
        with opener(path, "rt", encoding="utf-8", errors="replace") as f:  # type: ignore[operator]
            for line in f:
                if line.strip():
                    return line.rstrip("\r\n")
    except (OSError, EOFError) as e:
        raise DataError(f"Cannot read {path}: {' '.join(str(e).split())}.") from e
    return ""


def _text_sep(path: Path) -> str:
    """The separator of a delimited text file: from the extension, else sniffed from the first line."""
    ext = _ext(path)
    if ext == ".csv":
        return ","
    if ext in (".tsv", ".tab"):
        return "\t"
    line = _first_line(path)
    if "\t" in line:
        return "\t"
    if "," in line:
        return ","
    return r"\s+"


def _is_parquet(path: Path) -> bool:
    return _ext(path) in (".parquet", ".pq")


def _header(path: Path) -> list[str]:
    if _is_parquet(path):
        import pyarrow.parquet as pq

        try:
            return [str(c) for c in pq.read_schema(path).names]
        except Exception as e:  # pyarrow raises several kinds
            raise DataError(f"Cannot read {path} as Parquet: {' '.join(str(e).split())[:160]}.") from e
    line = _first_line(path)
    sep = _text_sep(path)
    return [c.strip().strip('"') for c in (line.split() if sep == r"\s+" else line.split(sep))]


def _read_table(path: Path) -> tuple[pd.DataFrame, str | None]:
    """The file as a DataFrame of text (Parquet: as stored) and its separator (None for Parquet).

    Row ``i`` of a text file is line ``i + 2`` (blank lines are kept as empty rows, then dropped by the caller).
    """
    if _is_parquet(path):
        try:
            return pd.read_parquet(path), None
        except Exception as e:  # pyarrow raises several kinds
            raise DataError(f"Cannot read {path} as Parquet: {' '.join(str(e).split())[:160]}.") from e
    sep = _text_sep(path)
    try:
        frame = pd.read_csv(
            path,
            sep=sep,
            dtype=str,
            keep_default_na=False,
            skip_blank_lines=False,
            compression="infer",
            engine="c" if sep != r"\s+" else "python",
        )
    except pd.errors.EmptyDataError as e:
        raise DataError(f"{path} is empty.") from e
    except pd.errors.ParserError as e:
        m = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", str(e))
        if m:
            raise DataError(
                f"{path}, line {m.group(2)}: {m.group(3)} fields where the header has {m.group(1)} (separator {sep!r})."
            ) from e
        raise DataError(f"Cannot parse {path}: {' '.join(str(e).split())[:160]}.") from e
    except (UnicodeDecodeError, OSError, ValueError) as e:
        raise DataError(f"Cannot read {path}: {' '.join(str(e).split())[:160]}.") from e
    return frame, sep


class _Rows:
    """The kept rows of a file and, for each, its line number (text) or 1-based row number (Parquet)."""

    def __init__(self, path: Path, frame: pd.DataFrame, sep: str | None) -> None:
        self.path, self.sep, self.width = path, sep, frame.shape[1]
        keep = np.arange(len(frame))
        if sep is not None and len(frame):
            blank = (frame.astype(str).apply(lambda c: c.str.strip()) == "").all(axis=1).to_numpy()
            keep = np.flatnonzero(~blank)
        if len(keep) == 0:
            raise DataError(f"{path} has a header but no rows.")
        self.frame = frame.iloc[keep].reset_index(drop=True)
        self.numbers = keep + (2 if sep is not None else 1)

    def where(self, row: int, column: str) -> str:
        """``file, line N, column 'c'`` (text) or ``file, row N, column 'c'`` (Parquet)."""
        kind = "line" if self.sep is not None else "row"
        return f"{self.path}, {kind} {int(self.numbers[row])}, column {column!r}"

    def empty(self, row: int, column: str) -> DataError:
        """An empty value: a short (ragged) line, or one empty field."""
        if self.sep is not None and self.sep != r"\s+":
            line = _raw_line(self.path, int(self.numbers[row]))
            n = len(line.split(self.sep))
            if n < self.width:
                return DataError(
                    f"{self.path}, line {int(self.numbers[row])}: {n} fields where the header has {self.width} "
                    f"(separator {self.sep!r})."
                )
        return DataError(f"{self.where(row, column)}: the value is empty.")

    def ids(self, col: str) -> np.ndarray:
        """A column of ids as text; an empty or missing id is an error naming its line."""
        s = self.frame[col]
        missing = s.isna().to_numpy()
        if missing.any():
            raise self.empty(int(np.flatnonzero(missing)[0]), col)
        if s.dtype.kind == "f":  # Parquet floats: 3.0 is the id "3"
            v = s.to_numpy(np.float64)
            whole = np.isfinite(v) & (v == np.round(v)) & (np.abs(v) < 2**53)
            text = np.where(whole, np.round(v).astype(np.int64).astype(str), v.astype(str))
            return text.astype(object)
        text = s.astype(str).str.strip()
        missing = (text == "").to_numpy()
        if missing.any():
            raise self.empty(int(np.flatnonzero(missing)[0]), col)
        return text.to_numpy(dtype=object)

    def numbers_of(self, col: str, what: str = "a number") -> np.ndarray:
        s = self.frame[col]
        num = pd.to_numeric(s, errors="coerce")
        bad = num.isna().to_numpy() | ~np.isfinite(num.fillna(0).to_numpy(np.float64))
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            if s.isna().iloc[row] or str(s.iloc[row]).strip() == "":
                raise self.empty(row, col)
            raise DataError(f"{self.where(row, col)}: {s.iloc[row]!r} is not {what}.")
        return num.to_numpy(np.float64)

    def times(self, col: str) -> np.ndarray:
        """Unix seconds, or ISO 8601 dates (as seconds since 1970, UTC)."""
        s = self.frame[col]
        epoch = pd.Timestamp("1970-01-01", tz="UTC")
        if s.dtype.kind == "M":
            t = pd.to_datetime(s, utc=True)
            if t.isna().any():
                raise self.empty(int(np.flatnonzero(t.isna().to_numpy())[0]), col)
            return (t - epoch).dt.total_seconds().to_numpy(np.float64)
        num = pd.to_numeric(s, errors="coerce")
        finite = num.notna().to_numpy() & np.isfinite(num.fillna(0).to_numpy(np.float64))
        if finite.all():
            return num.to_numpy(np.float64)
        text = s.astype(str).str.strip()
        if not finite.any():  # a column of dates
            dates = pd.to_datetime(text, utc=True, errors="coerce", format="ISO8601")
            if dates.notna().all():
                return (dates - epoch).dt.total_seconds().to_numpy(np.float64)
            bad = dates.isna().to_numpy()
        else:
            bad = ~finite
        row = int(np.flatnonzero(bad)[0])
        if s.isna().iloc[row] or text.iloc[row] == "":
            raise self.empty(row, col)
        raise DataError(f"{self.where(row, col)}: {s.iloc[row]!r} is not a time (Unix seconds or an ISO 8601 date).")


def _raw_line(path: Path, line_no: int) -> str:
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8", errors="replace") as f:  # type: ignore[operator]
        for no, line in enumerate(f, 1):
            if no == line_no:
                return line.rstrip("\r\n")
    return ""


# -- formats --------------------------------------------------------------------------------------


def _check_format(fmt: str) -> str:
    f = str(fmt).strip().lower()
    if f not in FORMATS:
        raise ConfigError(f"Unknown data format {fmt!r}; expected one of {', '.join(FORMATS)}.")
    return f


def _check_columns(columns: Mapping[str, str] | None, fmt: str | None) -> dict[str, str]:
    cols = dict(columns or {})
    known = set(CANONICAL[fmt]) if fmt else {c for v in CANONICAL.values() for c in v}
    unknown = sorted(set(cols) - known)
    if unknown:
        names = ", ".join(CANONICAL[fmt]) if fmt else ", ".join(sorted(known))
        where = f"the {fmt} format" if fmt else "a data file"
        raise ConfigError(f"Unknown column name(s) {', '.join(unknown)} in --columns; {where} has {names or 'none'}.")
    return cols


def parse_columns(text: str | None) -> dict[str, str]:
    """``"user=uid,item=track_id"`` -> ``{"user": "uid", "item": "track_id"}`` (the ``--columns`` flag)."""
    out: dict[str, str] = {}
    for part in (text or "").split(","):
        if not part.strip():
            continue
        if "=" not in part:
            raise ConfigError(f"--columns expects name=column pairs separated by commas, got {part.strip()!r}.")
        k, v = (x.strip() for x in part.split("=", 1))
        if not k or not v:
            raise ConfigError(f"--columns expects name=column pairs separated by commas, got {part.strip()!r}.")
        out[k] = v
    return out


def detect_format(path: str | Path, columns: Mapping[str, str] | None = None) -> str:
    """The format of a file from its extension and header (see the module docstring)."""
    path = Path(path).expanduser()
    cols = dict(columns or {})
    if not _is_parquet(path) and _ext(path) == ".txt":
        line = _first_line(path)
        if "\t" not in line and "," not in line:
            return "sequences"
    return _format_of_header(set(_header(path)), cols)


def _format_of_header(header: set[str], cols: Mapping[str, str]) -> str:
    def has(canon: str) -> bool:
        return cols.get(canon, canon) in header

    if has("playlist"):
        return "playlists"
    if (has("track") or (has("item") and "track" in cols)) and has("timestamp"):
        return "sessions"
    return "interactions"


def _resolve(path: Path, frame: pd.DataFrame, fmt: str, cols: dict[str, str]) -> dict[str, str]:
    """Canonical name -> file column, for the canonical columns the file has."""
    out: dict[str, str] = {}
    have = [str(c) for c in frame.columns]
    for canon in CANONICAL[fmt]:
        src = cols.get(canon, canon)
        if src in have:
            out[canon] = src
        elif canon in cols:
            raise DataError(f"{path}: no column {src!r} (given by --columns {canon}={src}); it has {', '.join(have)}.")
        elif canon in _ALIASES and _ALIASES[canon] in have and _ALIASES[canon] not in CANONICAL[fmt]:
            out[canon] = _ALIASES[canon]
        elif canon in REQUIRED[fmt]:
            raise DataError(
                f"{path}: no {canon!r} column for the {fmt} format (it has {', '.join(have)}); "
                f"name it with --columns {canon}=COLUMN."
            )
    return out


def _read_sequences(path: Path) -> pd.DataFrame:
    """``user item1 item2 ...`` lines (whitespace-separated, oldest first) to (user, item, position) rows."""
    users: list[str] = []
    items: list[str] = []
    try:
        opener = gzip.open if path.name.endswith(".gz") else open
        with opener(path, "rt", encoding="utf-8", errors="replace") as f:  # type: ignore[operator]
            for no, line in enumerate(f, 1):
                parts = line.split()
                if not parts:
                    continue
                if len(parts) < 2:
                    raise DataError(
                        f"{path}, line {no}: user {parts[0][:40]!r} has no items; each line is "
                        "'user item1 item2 ...' separated by spaces."
                    )
                users.extend([parts[0]] * (len(parts) - 1))
                items.extend(parts[1:])
    except (OSError, EOFError) as e:
        raise DataError(f"Cannot read {path}: {' '.join(str(e).split())}.") from e
    if not users:
        raise DataError(f"{path} is empty.")
    frame = pd.DataFrame({"user": users, "item": items})
    frame["timestamp"] = frame.groupby("user", sort=False).cumcount().astype(np.float64)
    return frame


def _session_ids(users: pd.Series, times: np.ndarray, gap: float) -> np.ndarray:
    """A session number per row: each user's plays in time order (file order breaks ties), cut at gaps >= ``gap``."""
    n = len(users)
    codes = pd.factorize(users)[0]
    order = np.lexsort((np.arange(n), times, codes))
    u, t = codes[order], times[order]
    new = np.ones(n, dtype=bool)
    new[1:] = (u[1:] != u[:-1]) | (t[1:] - t[:-1] >= gap)
    sid = np.empty(n, dtype=np.int64)
    sid[order] = np.cumsum(new)
    return sid


def load_file(
    path: str | Path,
    format: str | None = None,
    columns: Mapping[str, str] | None = None,
    *,
    name: str | None = None,
    session_gap: float = DEFAULT_SESSION_GAP,
) -> Interactions:
    """Read a user's data file into :class:`Interactions` (see the module docstring for the four formats).

    ``format`` is one of :data:`FORMATS` (inferred by :func:`detect_format` when ``None``);
    ``columns`` maps canonical names to the file's columns; the table is named after the file.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise DatasetNotFoundError(f"Data file {path} not found.")
    if path.stat().st_size == 0:
        raise DataError(f"{path} is empty.")
    fmt = _check_format(format) if format else None
    cols = _check_columns(columns, fmt)
    fmt = fmt or detect_format(path, cols)
    cols = _check_columns(cols, fmt)
    label = name or _stem(path)
    if fmt == "sequences":
        if _is_parquet(path):
            raise ConfigError(
                f"{path} is Parquet; the sequences format is a text file of 'user item1 item2 ...' lines."
            )
        return Interactions.from_frame(_read_sequences(path), timestamp="timestamp", name=label)

    frame, sep = _read_table(path)
    return _from_table(path, frame, sep, fmt, cols, label, session_gap)


def load_frame(
    frame: pd.DataFrame,
    format: str | None = None,
    columns: Mapping[str, str] | None = None,
    *,
    name: str = "DataFrame",
    session_gap: float = DEFAULT_SESSION_GAP,
) -> Interactions:
    """:func:`load_file` for a pandas DataFrame already in memory: the same four formats, columns and checks.

    The sequences format is a frame with a ``user`` column and an ``items`` column of lists (oldest
    first). Errors name the frame (``name``) and the 1-based row.
    """
    if not isinstance(frame, pd.DataFrame):
        raise DataError(f"Expected a pandas DataFrame, got {type(frame).__name__}.")
    if frame.empty:
        raise DataError(f"{name} has no rows.")
    fmt = _check_format(format) if format else None
    cols = _check_columns(columns, fmt)
    header = [str(c) for c in frame.columns]
    if fmt is None:
        fmt = "sequences" if cols.get("items", "items") in header and "item" not in header else None
        fmt = fmt or _format_of_header(set(header), cols)
    cols = _check_columns(cols, fmt) if fmt != "sequences" else cols
    if fmt == "sequences":
        user, items = cols.get("user", "user"), cols.get("items", "items")
        missing = [c for c in (user, items) if c not in header]
        if missing:
            raise DataError(f"{name}: the sequences format needs columns {user!r} and {items!r} (lists of items).")
        long = frame[[user, items]].explode(items, ignore_index=True).dropna(subset=[items])
        long["timestamp"] = long.groupby(user, sort=False).cumcount().astype(np.float64)
        long = long.rename(columns={user: "user", items: "item"})
        long["user"], long["item"] = long["user"].astype(str), long["item"].astype(str)
        return Interactions.from_frame(long, timestamp="timestamp", name=name)
    return _from_table(Path(name), frame.reset_index(drop=True), None, fmt, cols, name, session_gap)


def _from_table(
    path: Path, frame: pd.DataFrame, sep: str | None, fmt: str, cols: dict[str, str], label: str, session_gap: float
) -> Interactions:
    """The rows of a read table in one of the column formats, checked, as :class:`Interactions`."""
    src = _resolve(path, frame, fmt, cols)
    rows = _Rows(path, frame, sep)
    out = pd.DataFrame(index=pd.RangeIndex(len(rows.frame)))
    if fmt == "playlists":
        out["playlist"] = rows.ids(src["playlist"])
        out["item"] = rows.ids(src["track"])
        out["user"] = rows.ids(src["user"]) if "user" in src else "playlist:" + out["playlist"]
        if "position" in src:
            out["timestamp"] = rows.numbers_of(src["position"])
        return Interactions.from_frame(
            out, timestamp="timestamp" if "position" in src else None, groups={"playlist": "playlist"}, name=label
        )
    out["user"] = rows.ids(src["user"])
    out["item"] = rows.ids(src["item" if fmt == "interactions" else "track"])
    if "timestamp" in src:
        out["timestamp"] = rows.times(src["timestamp"])
    wsrc = src.get("weight", src.get("rating"))
    if wsrc is not None:
        out["weight"] = rows.numbers_of(wsrc)
    groups: dict[str, str] = {}
    context: list[str] = []
    if fmt == "sessions":
        if "session" in src:
            out["session"] = rows.ids(src["session"])
        else:
            out["session"] = _session_ids(out["user"], out["timestamp"].to_numpy(), session_gap)
        groups = {"session": "session"}
        used = set(src.values())
        for c in map(str, rows.frame.columns):
            if c in used:
                continue
            if c in RESERVED:
                raise DataError(
                    f"{path}: the context column {c!r} clashes with a column segue reserves; rename it in the file."
                )
            out[c] = rows.frame[c].to_numpy()
            context.append(c)
    return Interactions.from_frame(
        out,
        timestamp="timestamp" if "timestamp" in out.columns else None,
        weight="weight" if "weight" in out.columns else None,
        groups=groups,
        context=context,
        name=label,
    )


# -- dataset arguments ---------------------------------------------------------------------------


def looks_like_path(arg: str) -> bool:
    """Whether a dataset argument was meant as a file (a path separator or a data-file extension)."""
    low = arg.lower().removesuffix(".gz")
    return "/" in arg or "\\" in arg or low.endswith(SUFFIXES)


def open_dataset(
    name_or_path: str | Path,
    data_dir: str | Path | None = None,
    *,
    format: str | None = None,
    columns: Mapping[str, str] | None = None,
    download: bool = True,
    progress: bool = True,
) -> Source:
    """A registered dataset name, else an existing file; anything else is a one-sentence error.

    ``format`` and ``columns`` apply to files only.
    """
    from segue.data.datasets import _REGISTRY, load_dataset

    arg = str(name_or_path)
    key = arg.strip().lower()
    if key in _REGISTRY and not Path(arg).expanduser().is_file():
        if format or columns:
            raise ConfigError(f"--format and --columns apply to data files, not to the registered dataset {key!r}.")
        spec = _REGISTRY[key]
        data = load_dataset(key, data_dir, download=download, progress=progress)
        return Source(data, "registered", spec.default_protocol, spec.synthetic_time)
    path = Path(arg).expanduser()
    if path.is_file():
        cols = parse_columns(columns) if isinstance(columns, str) else dict(columns or {})
        fmt = _check_format(format) if format else detect_format(path, _check_columns(cols, None))
        data = load_file(path, fmt, cols)
        synthetic = fmt == "sequences" or (fmt == "playlists" and data.has_time)
        return Source(data, fmt, DEFAULT_PROTOCOLS[fmt], synthetic, path)
    if path.exists():
        raise DataError(f"{path} is not a file.")
    if looks_like_path(arg):
        raise DatasetNotFoundError(f"Data file {path} not found.")
    raise ConfigError(
        f"Unknown dataset {arg!r} (known: {', '.join(_REGISTRY)}); or give a path to a CSV/TSV/Parquet/TXT file."
    )


def describe_source(source: Source) -> dict[str, Any]:
    """:func:`segue.data.datasets.describe` of a resolved source, with its format."""
    from segue.data.datasets import describe

    out = describe(source.data, synthetic_time=source.synthetic_time)
    if source.path is not None:
        out = {"file": str(source.path), "format": source.format, **out}
    return out


__all__ = [
    "CANONICAL",
    "DEFAULT_PROTOCOLS",
    "FORMATS",
    "Source",
    "describe_source",
    "detect_format",
    "load_file",
    "load_frame",
    "looks_like_path",
    "open_dataset",
    "parse_columns",
]
