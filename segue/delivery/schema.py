"""The crowdfunding data schema of dissertation chapter 3 (spec Part B, B.2 and B.7 item 1).

A dataset is four tables, one file each in a directory (``.parquet`` or ``.csv``):

- ``projects``: one row per project (:class:`Project`); the labels ``on_time`` and ``delivery_days``
  are optional columns (empty where unknown).
- ``rewards``: one row per reward (:class:`Reward`); every project needs at least one.
- ``comments``: one row per comment (:class:`Comment`); optional file (no comments).
- ``updates``: one row per creator update (:class:`Update`); optional file (no updates).

The dataclasses below *are* the schema: their field names are the column names and their
annotations the column kinds (``str`` text, ``float``/``int`` numbers, ``datetime`` dates, ``bool``
flags). Every problem is a :class:`segue.errors.DataError` with one sentence naming the file, the
column and, where there is one, the row (1-based, header excluded).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from segue.errors import DataError

SYNTHETIC_MARKER = "SYNTHETIC"


@dataclass(frozen=True)
class Project:
    """A project page. ``deadline`` is the end of fundraising; ``pledged``/``backers`` are final counts.

    ``on_time`` (Task 1 label) and ``delivery_days`` (Task 2 target: days from the end of fundraising
    until all rewards shipped) may be missing. ``creator_backed_projects`` and
    ``creator_created_projects`` are used only by the Kim et al. baseline (spec B.5).
    """

    project_id: str
    category: str
    goal: float
    pledged: float
    backers: int
    launched_at: datetime
    deadline: datetime
    n_images: int
    n_faqs: int
    description: str
    creator_bio: str
    creator_backed_projects: int
    creator_created_projects: int
    on_time: bool | None = None
    delivery_days: float | None = None


@dataclass(frozen=True)
class Reward:
    """A reward: its description, how many backers chose it, and its estimated delivery date."""

    project_id: str
    description: str
    backers: int
    estimated_delivery: datetime


@dataclass(frozen=True)
class Comment:
    """A comment on the project page, by the creator (``is_creator``) or a backer (``author``)."""

    project_id: str
    author: str
    is_creator: bool
    posted_at: datetime
    text: str


@dataclass(frozen=True)
class Update:
    """A creator update."""

    project_id: str
    posted_at: datetime
    text: str


TABLES: dict[str, type] = {"projects": Project, "rewards": Reward, "comments": Comment, "updates": Update}
OPTIONAL_TABLES = ("comments", "updates")
LABEL_COLUMNS = ("on_time", "delivery_days")
# text columns that may be empty (a project may have no bio); reward descriptions may not
_EMPTY_TEXT_OK = {("projects", "description"), ("projects", "creator_bio"), ("comments", "text"), ("updates", "text")}


def _kind(tp: Any) -> str:
    s = str(tp)
    for k in ("bool", "datetime", "float", "int", "str"):
        if s.startswith(k):
            return k
    raise AssertionError(f"unknown schema type {s}")  # pragma: no cover


def columns(table: str) -> dict[str, str]:
    """Column name -> kind (``str``, ``float``, ``int``, ``datetime``, ``bool``) of one table."""
    return {f.name: _kind(f.type) for f in dataclasses.fields(TABLES[table])}


def required_columns(table: str) -> list[str]:
    return [c for c in columns(table) if not (table == "projects" and c in LABEL_COLUMNS)]


@dataclass
class DeliveryData:
    """The four validated tables. ``synthetic`` is True for data made by :mod:`segue.delivery.synthetic`."""

    projects: pd.DataFrame
    rewards: pd.DataFrame
    comments: pd.DataFrame
    updates: pd.DataFrame
    synthetic: bool = False
    source: str = "<memory>"
    _by_project: dict[str, dict[str, pd.DataFrame]] = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return len(self.projects)

    @property
    def ids(self) -> list[str]:
        return list(self.projects["project_id"])

    def subset(self, ids: list[str]) -> DeliveryData:
        keep = set(ids)
        return DeliveryData(
            *(t[t["project_id"].isin(keep)].reset_index(drop=True) for t in self.tables()),
            synthetic=self.synthetic,
            source=self.source,
        )

    def tables(self) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
        return self.projects, self.rewards, self.comments, self.updates

    def save(self, directory: str | Path, fmt: str = "parquet") -> Path:
        """Write the four tables as ``directory/{projects,rewards,comments,updates}.{parquet,csv}``."""
        if fmt not in ("parquet", "csv"):
            raise DataError(f"Unknown table format {fmt!r}; use 'parquet' or 'csv'.")
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        for name, t in zip(TABLES, self.tables(), strict=True):
            t.to_parquet(d / f"{name}.parquet", index=False) if fmt == "parquet" else t.to_csv(
                d / f"{name}.csv", index=False
            )
        if self.synthetic:
            (d / "SYNTHETIC.txt").write_text(
                "SYNTHETIC data made by segue.delivery.synthetic: not Kickstarter data, no real project.\n"
            )
        return d


def _file_for(directory: Path, name: str) -> Path | None:
    for ext in (".parquet", ".csv"):
        p = directory / f"{name}{ext}"
        if p.is_file():
            return p
    return None


def _read(path: Path) -> pd.DataFrame:
    try:
        if path.suffix == ".parquet":
            return pd.read_parquet(path)
        return pd.read_csv(path, dtype=str, keep_default_na=False)
    except Exception as e:  # pyarrow / parser errors of many types
        raise DataError(f"Cannot read {path}: {str(e).splitlines()[0] if str(e) else type(e).__name__}.") from e


def load_data(directory: str | Path) -> DeliveryData:
    """Load and validate ``directory/{projects,rewards}[.parquet|.csv]`` (+ optional comments, updates)."""
    d = Path(directory)
    if not d.is_dir():
        raise DataError(f"Delivery data directory {d} does not exist (expected projects and rewards tables in it).")
    frames: dict[str, pd.DataFrame] = {}
    labels: dict[str, str] = {}
    for name in TABLES:
        p = _file_for(d, name)
        if p is None:
            if name in OPTIONAL_TABLES:
                frames[name] = pd.DataFrame({c: [] for c in columns(name)})
                labels[name] = f"{name} (absent)"
                continue
            raise DataError(f"{d} has no {name}.parquet or {name}.csv file.")
        frames[name] = _read(p)
        labels[name] = str(p)
    data = validate(frames, labels)
    data.synthetic = (d / "SYNTHETIC.txt").is_file()
    data.source = str(d)
    return data


def from_records(
    projects: list[Project], rewards: list[Reward], comments: list[Comment] = (), updates: list[Update] = ()
) -> DeliveryData:
    """Build validated tables from dataclass records."""
    frames = {
        name: pd.DataFrame([dataclasses.asdict(r) for r in recs], columns=list(columns(name)))
        for name, recs in zip(TABLES, (projects, rewards, list(comments), list(updates)), strict=True)
    }
    return validate(frames, {n: n for n in TABLES})


def load_project_json(path: str | Path) -> DeliveryData:
    """One project as JSON: ``{"project": {...}, "rewards": [...], "comments": [...], "updates": [...]}``."""
    p = Path(path)
    try:
        obj = json.loads(p.read_text())
    except FileNotFoundError as e:
        raise DataError(f"Project file {p} does not exist.") from e
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{p} is not valid JSON ({e}).") from e
    if not isinstance(obj, dict) or not isinstance(obj.get("project"), dict):
        raise DataError(f"{p} must be a JSON object with a 'project' object and a 'rewards' list.")
    pid = str(obj["project"].get("project_id", "project"))
    frames = {"projects": pd.DataFrame([{"project_id": pid, **obj["project"]}])}
    for name in ("rewards", "comments", "updates"):
        rows = obj.get(name, [])
        if not isinstance(rows, list):
            raise DataError(f"{p}: '{name}' must be a list of objects.")
        frames[name] = pd.DataFrame([{"project_id": pid, **r} for r in rows], columns=None) if rows else None
        if frames[name] is None:
            frames[name] = pd.DataFrame({c: [] for c in columns(name)})
    return validate(frames, {n: f"{p} ({n})" for n in TABLES})


def _coerce(df: pd.DataFrame, table: str, label: str) -> pd.DataFrame:
    cols = columns(table)
    missing = [c for c in required_columns(table) if c not in df.columns]
    if missing:
        raise DataError(f"{label} has no column {missing[0]!r} (required: {', '.join(required_columns(table))}).")
    out = pd.DataFrame(index=range(len(df)))
    for c, kind in cols.items():
        if c not in df.columns:  # an optional label column
            out[c] = np.nan if kind == "float" else pd.Series([pd.NA] * len(df), dtype="boolean")
            continue
        s = df[c].reset_index(drop=True)
        out[c] = _coerce_column(s, kind, c, label, optional=table == "projects" and c in LABEL_COLUMNS)
        if kind == "str" and (table, c) not in _EMPTY_TEXT_OK:
            empty = out[c].str.strip() == ""
            if empty.any():
                i = int(np.flatnonzero(empty.to_numpy())[0])
                what = "reward description" if table == "rewards" else f"value of column {c!r}"
                pid = f" (project {out['project_id'].iloc[i]!r})" if c != "project_id" else ""
                raise DataError(f"{label} row {i + 1}{pid} has an empty {what}.")
    return out


def _is_blank(s: pd.Series) -> pd.Series:
    return s.isna() | (s.astype(str).str.strip() == "")


def _coerce_column(s: pd.Series, kind: str, c: str, label: str, optional: bool) -> pd.Series:
    blank = _is_blank(s)
    if blank.any() and not optional and kind != "str":
        i = int(np.flatnonzero(blank.to_numpy())[0])
        raise DataError(f"{label} column {c!r} row {i + 1} is empty.")
    if kind == "str":
        return s.where(~s.isna(), "").astype(str)
    if kind == "datetime":
        parsed = pd.to_datetime(s.where(~blank, None), errors="coerce", utc=True, format="mixed")
        bad = parsed.isna() & ~blank
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            raise DataError(f"{label} column {c!r} row {i + 1} is {s.iloc[i]!r}, which is not a date.")
        return parsed.dt.tz_localize(None)
    if kind == "bool":
        m = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False, "1.0": True, "0.0": False}
        low = s.astype(str).str.strip().str.lower()
        vals = low.map(m)
        bad = vals.isna() & ~blank
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            raise DataError(f"{label} column {c!r} row {i + 1} is {s.iloc[i]!r}, not true/false.")
        return vals.where(~blank, None).astype("boolean")
    num = pd.to_numeric(s.where(~blank, None), errors="coerce")
    bad = num.isna() & ~blank
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataError(f"{label} column {c!r} row {i + 1} is {s.iloc[i]!r}, not a number.")
    if (num < 0).any():
        i = int(np.flatnonzero((num < 0).to_numpy())[0])
        raise DataError(f"{label} column {c!r} row {i + 1} is {s.iloc[i]!r}, a negative number.")
    if kind == "int":
        return num.astype("float64").round().astype("int64") if not blank.any() else num
    return num.astype("float64")


def validate(frames: dict[str, pd.DataFrame], labels: dict[str, str]) -> DeliveryData:
    """Coerce and check the four tables (columns, kinds, ids, dates, rewards per project)."""
    t = {name: _coerce(frames[name], name, labels[name]) for name in TABLES}
    p = t["projects"]
    if p.empty:
        raise DataError(f"{labels['projects']} has no rows.")
    dup = p["project_id"].duplicated()
    if dup.any():
        i = int(np.flatnonzero(dup.to_numpy())[0])
        raise DataError(f"{labels['projects']} row {i + 1} repeats project_id {p['project_id'].iloc[i]!r}.")
    before = p["deadline"] <= p["launched_at"]
    if before.any():
        i = int(np.flatnonzero(before.to_numpy())[0])
        raise DataError(
            f"{labels['projects']} row {i + 1} (project {p['project_id'].iloc[i]!r}) has a deadline that is not after its launch."
        )
    ids = set(p["project_id"])
    for name in ("rewards", "comments", "updates"):
        unknown = ~t[name]["project_id"].isin(ids)
        if unknown.any():
            i = int(np.flatnonzero(unknown.to_numpy())[0])
            raise DataError(
                f"{labels[name]} row {i + 1} names project {t[name]['project_id'].iloc[i]!r}, which is not in {labels['projects']}."
            )
    has = set(t["rewards"]["project_id"])
    without = [x for x in p["project_id"] if x not in has]
    if without:
        raise DataError(f"Project {without[0]!r} in {labels['projects']} has no rewards in {labels['rewards']}.")
    dd = p["delivery_days"]
    if (dd.notna() & (dd <= 0)).any():
        i = int(np.flatnonzero((dd.notna() & (dd <= 0)).to_numpy())[0])
        raise DataError(
            f"{labels['projects']} column 'delivery_days' row {i + 1} is {dd.iloc[i]!r}; durations must be positive days."
        )
    return DeliveryData(t["projects"], t["rewards"], t["comments"], t["updates"])
