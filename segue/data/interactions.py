"""The interaction table and the raw <-> internal id maps.

An :class:`Interactions` holds one row per (user, item) event in a pandas DataFrame with
internal integer ids: users ``1..n_users``, items ``1..n_items`` and, for group columns
(``playlist``, ``session``, ``basket``), ``1..n_groups``. Id ``0`` is reserved for padding
everywhere, so embedding tables have ``n + 1`` rows and padded windows use ``0``.

Columns (only ``user`` and ``item`` are required):

==============  =========  ==============================================================
column          dtype      meaning
==============  =========  ==============================================================
``user``        int64      internal user id, ``>= 1``
``item``        int64      internal item id, ``>= 1``
``timestamp``   float64    event time (seconds), if known
``weight``      float32    rating, play count or confidence, if known
``playlist``    int64      internal group id (also ``session`` or ``basket``)
other           any        context columns, kept as given
==============  =========  ==============================================================

Rows keep the order they were given in; :meth:`Interactions.sorted` orders them by user
and time (stable, so the file order breaks ties).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from segue.errors import DataError, UnknownIdError

GROUP_COLUMNS = ("playlist", "session", "basket")
RESERVED = ("user", "item", "timestamp", "weight", *GROUP_COLUMNS)


class IdMap:
    """A bijection between raw ids (any hashable, compared as strings) and ``1..n``.

    Index ``0`` is the padding id and has no raw id. Raw ids are compared through
    ``str()``, so ``196`` and ``"196"`` name the same user: a run directory read back
    from disk, or an id typed on the command line, finds the same entity.
    """

    def __init__(self, raw: Sequence[Any] | np.ndarray, kind: str = "id") -> None:
        raw = np.asarray(raw)
        if raw.ndim != 1:
            raise DataError(f"{kind} ids must be one-dimensional, got shape {raw.shape}.")
        keys = raw.astype(str)
        if len(set(keys.tolist())) != len(keys):
            raise DataError(f"{kind} ids are not unique.")
        self.kind = kind
        self.raw = raw
        self._index = {k: i + 1 for i, k in enumerate(keys.tolist())}

    def __len__(self) -> int:
        return len(self.raw)

    def __repr__(self) -> str:
        return f"IdMap({self.kind}, n={len(self)})"

    def __contains__(self, raw_id: object) -> bool:
        return str(raw_id) in self._index

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, IdMap)
            and len(self) == len(other)
            and bool(np.all(self.raw.astype(str) == other.raw.astype(str)))
        )

    __hash__ = None  # type: ignore[assignment]

    def to_internal(self, raw_ids: Iterable[Any] | Any, *, missing: str = "raise") -> np.ndarray:
        """Map raw ids to internal ids.

        ``missing="raise"`` raises :class:`UnknownIdError` naming the first unknown id;
        ``missing="zero"`` maps unknown ids to 0 (padding) for the caller to handle.
        """
        scalar = np.isscalar(raw_ids) or isinstance(raw_ids, str)
        keys = [str(raw_ids)] if scalar else [str(r) for r in raw_ids]
        out = np.fromiter((self._index.get(k, 0) for k in keys), dtype=np.int64, count=len(keys))
        if missing == "raise" and (out == 0).any():
            bad = keys[int(np.flatnonzero(out == 0)[0])]
            raise UnknownIdError(f"Unknown {self.kind} id {bad!r}: it does not occur in the training data.")
        return out

    def to_raw(self, internal: Iterable[int] | np.ndarray) -> np.ndarray:
        """Map internal ids (``1..n``) back to raw ids."""
        idx = np.asarray(internal, dtype=np.int64)
        if idx.size and (idx.min() < 1 or idx.max() > len(self)):
            raise UnknownIdError(f"Internal {self.kind} id out of range 1..{len(self)}.")
        return self.raw[idx - 1]

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "kind": self.kind,
                "internal": np.arange(1, len(self) + 1, dtype=np.int64),
                "raw": self.raw.astype(str),
                "raw_dtype": str(self.raw.dtype.kind),
            }
        )

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, kind: str) -> IdMap:
        part = frame[frame["kind"] == kind].sort_values("internal")
        if len(part) == 0:
            raise DataError(f"No {kind} ids in the id map table.")
        if not np.array_equal(part["internal"].to_numpy(), np.arange(1, len(part) + 1)):
            raise DataError(f"The {kind} id map is not contiguous from 1.")
        raw = part["raw"].to_numpy(dtype=str)
        if str(part["raw_dtype"].iloc[0]) in ("i", "u"):
            raw = raw.astype(np.int64)
        return cls(raw, kind=kind)


def _factorize(values: pd.Series, kind: str) -> tuple[np.ndarray, IdMap]:
    codes, uniques = pd.factorize(values, sort=False)
    if (codes < 0).any():
        raise DataError(f"The {kind} column has missing values (NaN or None).")
    return codes.astype(np.int64) + 1, IdMap(np.asarray(uniques), kind=kind)


@dataclass
class Interactions:
    """A table of interactions with internal ids and the maps back to raw ids."""

    df: pd.DataFrame
    user_map: IdMap
    item_map: IdMap
    group_maps: dict[str, IdMap] = field(default_factory=dict)
    name: str = "interactions"

    # -- construction ------------------------------------------------------------------
    @classmethod
    def from_frame(
        cls,
        frame: pd.DataFrame,
        *,
        user: str = "user",
        item: str = "item",
        timestamp: str | None = None,
        weight: str | None = None,
        groups: dict[str, str] | None = None,
        context: Sequence[str] = (),
        name: str = "interactions",
    ) -> Interactions:
        """Build a table from raw ids, validating columns and values.

        ``groups`` maps a group kind (``playlist``, ``session`` or ``basket``) to a column
        of ``frame``; ``context`` names further columns to carry along unchanged.
        """
        if not isinstance(frame, pd.DataFrame):
            raise DataError(f"Expected a pandas DataFrame, got {type(frame).__name__}.")
        groups = dict(groups or {})
        for kind in groups:
            if kind not in GROUP_COLUMNS:
                raise DataError(f"Unknown group kind {kind!r}; expected one of {', '.join(GROUP_COLUMNS)}.")
        wanted = {"user": user, "item": item}
        if timestamp:
            wanted["timestamp"] = timestamp
        if weight:
            wanted["weight"] = weight
        wanted.update(groups)
        for c in context:
            if c in RESERVED:
                raise DataError(f"Context column {c!r} clashes with a reserved column name.")
            wanted[c] = c
        missing = [src for src in wanted.values() if src not in frame.columns]
        if missing:
            raise DataError(
                f"Missing column(s) {', '.join(map(repr, missing))}; the table has {', '.join(map(str, frame.columns))}."
            )
        if len(frame) == 0:
            raise DataError(f"The {name} table is empty.")
        out = pd.DataFrame(index=pd.RangeIndex(len(frame)))
        users, user_map = _factorize(frame[user], "user")
        items, item_map = _factorize(frame[item], "item")
        out["user"] = users
        out["item"] = items
        if timestamp:
            out["timestamp"] = _numeric(frame[timestamp], timestamp, np.float64)
        if weight:
            out["weight"] = _numeric(frame[weight], weight, np.float32)
        group_maps = {}
        for kind, col in groups.items():
            codes, gmap = _factorize(frame[col], kind)
            out[kind] = codes
            group_maps[kind] = gmap
        for c in context:
            out[c] = frame[c].to_numpy()
        return cls(out, user_map, item_map, group_maps, name=name)

    def __post_init__(self) -> None:
        for col in ("user", "item"):
            if col not in self.df.columns:
                raise DataError(f"Interactions need a {col!r} column.")
        if len(self.df):
            for col, m in (("user", self.user_map), ("item", self.item_map), *self.group_maps.items()):
                v = self.df[col].to_numpy()
                if v.min() < 1 or v.max() > len(m):
                    raise DataError(f"Internal {col} ids fall outside 1..{len(m)}.")

    # -- shape and views -----------------------------------------------------------------
    @property
    def n_users(self) -> int:
        return len(self.user_map)

    @property
    def n_items(self) -> int:
        return len(self.item_map)

    @property
    def shape(self) -> tuple[int, int]:
        """Shape of the user-item matrix including the padding row and column."""
        return self.n_users + 1, self.n_items + 1

    def __len__(self) -> int:
        return len(self.df)

    def __repr__(self) -> str:
        return f"Interactions({self.name}: {self.n_users} users, {self.n_items} items, {len(self)} rows)"

    @property
    def users(self) -> np.ndarray:
        return self.df["user"].to_numpy(np.int64)

    @property
    def items(self) -> np.ndarray:
        return self.df["item"].to_numpy(np.int64)

    @property
    def has_time(self) -> bool:
        return "timestamp" in self.df.columns

    @property
    def has_weight(self) -> bool:
        return "weight" in self.df.columns

    def with_frame(self, df: pd.DataFrame, name: str | None = None) -> Interactions:
        """The same maps over another frame (a filtered or split part of this one)."""
        return Interactions(df.reset_index(drop=True), self.user_map, self.item_map, self.group_maps, name or self.name)

    def take(self, mask_or_index: np.ndarray, name: str | None = None) -> Interactions:
        idx = np.asarray(mask_or_index)
        part = self.df[idx] if idx.dtype == bool else self.df.iloc[idx]
        return self.with_frame(part, name)

    def sorted(self) -> Interactions:
        """Rows ordered by user, then time (stable: file order breaks ties)."""
        keys = ["user", "timestamp"] if self.has_time else ["user"]
        return self.with_frame(self.df.sort_values(keys, kind="stable"))

    def to_csr(self, values: str | None = None, dtype: Any = np.float32) -> sp.csr_matrix:
        """User x item matrix of shape :attr:`shape`; ones, or the named column, summed over duplicates."""
        data = np.ones(len(self), dtype=dtype) if values is None else self.df[values].to_numpy(dtype)
        m = sp.csr_matrix((data, (self.users, self.items)), shape=self.shape)
        m.sum_duplicates()
        return m

    def item_counts(self) -> np.ndarray:
        """Number of rows per internal item id (index 0 is padding and stays 0)."""
        return np.bincount(self.items, minlength=self.n_items + 1)

    def user_counts(self) -> np.ndarray:
        return np.bincount(self.users, minlength=self.n_users + 1)

    def compact(self) -> Interactions:
        """Re-number ids so that only the users, items and groups present remain (after filtering)."""
        if len(self.df) == 0:
            raise DataError(f"The {self.name} table is empty after filtering.")
        df = self.df.copy()
        u_codes, u_uni = pd.factorize(df["user"], sort=True)
        i_codes, i_uni = pd.factorize(df["item"], sort=True)
        df["user"] = u_codes.astype(np.int64) + 1
        df["item"] = i_codes.astype(np.int64) + 1
        gmaps = {}
        for kind, gm in self.group_maps.items():
            g_codes, g_uni = pd.factorize(df[kind], sort=True)
            df[kind] = g_codes.astype(np.int64) + 1
            gmaps[kind] = IdMap(gm.to_raw(g_uni), kind=kind)
        return Interactions(
            df.reset_index(drop=True),
            IdMap(self.user_map.to_raw(u_uni), kind="user"),
            IdMap(self.item_map.to_raw(i_uni), kind="item"),
            gmaps,
            self.name,
        )

    # -- description -----------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        """Users, items, interactions, density and time span (counts of the ids present)."""
        n_u = int(self.df["user"].nunique())
        n_i = int(self.df["item"].nunique())
        out: dict[str, Any] = {
            "name": self.name,
            "users": n_u,
            "items": n_i,
            "interactions": len(self),
            "density": len(self) / max(1, n_u * n_i),
        }
        if self.has_time:
            t = self.df["timestamp"]
            out["time_min"] = pd.to_datetime(t.min(), unit="s").isoformat()
            out["time_max"] = pd.to_datetime(t.max(), unit="s").isoformat()
        for kind in self.group_maps:
            out[kind + "s"] = int(self.df[kind].nunique())
        return out


def _numeric(col: pd.Series, name: str, dtype: Any) -> np.ndarray:
    """Convert a column to numbers, naming the column and the first bad value on failure."""
    conv = pd.to_numeric(col, errors="coerce")
    bad = conv.isna() & col.notna()
    if bad.any():
        raise DataError(f"Column {name!r} has a non-numeric value {col[bad].iloc[0]!r}.")
    if conv.isna().any():
        raise DataError(f"Column {name!r} has missing values (NaN).")
    arr = conv.to_numpy(dtype)
    if not np.isfinite(arr).all():
        raise DataError(f"Column {name!r} has infinite values.")
    return arr
