"""Train / validation / test splits, each seeded and deterministic.

=====================  ===============================================================
function               protocol
=====================  ===============================================================
:func:`leave_one_out`  each user's last item (by time; random when there is no time)
                       is the test item, one random remaining item the dev item
                       (SDMR / NCF / MASR general task; ``dev_rule="last"``: the
                       second-to-last item)
:func:`group_holdout`  per playlist (or basket, session): 2 random member items held
                       out, one test and one dev (MASR playlist protocol)
:func:`temporal_split` global chronological 70/10/20 (QUALSE / RME), or per user
:func:`random_split`   random row split by ratios (RME play counts)
=====================  ===============================================================

All parts share the id maps of the input, so internal ids agree across them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from segue.data.interactions import GROUP_COLUMNS, Interactions
from segue.errors import ConfigError, DataError

ShortPolicy = Literal["error", "drop", "train"]


@dataclass
class Split:
    """Three disjoint parts of one interaction table."""

    train: Interactions
    valid: Interactions | None
    test: Interactions
    name: str = ""
    params: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> dict[str, int]:
        return {
            "train": len(self.train),
            "valid": 0 if self.valid is None else len(self.valid),
            "test": len(self.test),
        }


def _random_rank(keys: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """For rows grouped by ``keys``, a uniformly random order within each group (0-based position)."""
    noise = rng.random(len(keys))
    order = np.lexsort((noise, keys))
    pos = np.empty(len(keys), dtype=np.int64)
    sorted_keys = keys[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_keys)) + 1]
    group_start = np.repeat(starts, np.diff(np.r_[starts, len(keys)]))
    pos[order] = np.arange(len(keys)) - group_start
    return pos


def _handle_short(
    data: Interactions, key: str, need: int, policy: ShortPolicy, what: str
) -> tuple[Interactions, np.ndarray]:
    """Return the data and a mask of rows whose ``key`` group has at least ``need`` rows."""
    counts = np.bincount(data.df[key].to_numpy(), minlength=2)
    per_row = counts[data.df[key].to_numpy()]
    ok = per_row >= need
    if ok.all():
        return data, ok
    bad = np.flatnonzero(counts[1:] < need)
    bad = bad[counts[1:][bad] > 0] + 1
    if policy == "error":
        raw = data.user_map.to_raw([bad[0]])[0] if key == "user" else data.group_maps[key].to_raw([bad[0]])[0]
        raise DataError(
            f"{key} {raw} has {counts[bad[0]]} interaction(s) but {what} needs at least {need}; "
            f"{len(bad)} {key}s are too short (filter with k-core, or pass short='drop' or short='train')."
        )
    if policy == "drop":
        return data.take(ok), np.ones(int(ok.sum()), dtype=bool)
    return data, ok


def leave_one_out(
    data: Interactions,
    *,
    seed: int = 0,
    dev: bool = True,
    by_time: bool = True,
    short: ShortPolicy = "error",
    dev_rule: str = "random",
) -> Split:
    """Leave-last-out test item per user and (optionally) one dev item per user.

    The test item is the user's latest interaction when the table has timestamps and
    ``by_time`` is set (ties broken by file order), otherwise a random one. The dev item
    is drawn uniformly from the user's remaining items (``dev_rule="random"``, the SDMR/NCF
    protocol), or is the second-to-last one (``dev_rule="last"``, which needs the time order).
    Users need 3 interactions (2
    without ``dev``); shorter users raise, are dropped, or stay wholly in train according
    to ``short``.
    """
    if dev_rule not in ("random", "last"):
        raise ConfigError(f"The dev rule must be random or last, got {dev_rule!r}.")
    if dev and dev_rule == "last" and not (by_time and data.has_time):
        raise ConfigError(
            f"{data.name} has no timestamps, so there is no second-to-last item to hold out; use the random dev rule."
        )
    need = 3 if dev else 2
    rng = np.random.default_rng(seed)
    data, eligible = _handle_short(data, "user", need, short, "leave-one-out" + (" with a dev item" if dev else ""))
    df = data.df
    users = df["user"].to_numpy()
    n = len(df)
    if by_time and data.has_time:
        # position from the end in (time, file order): 0 is the latest row of the user
        order = np.lexsort((np.arange(n), df["timestamp"].to_numpy(), users))
        pos = np.empty(n, dtype=np.int64)
        sorted_users = users[order]
        ends = np.r_[np.flatnonzero(np.diff(sorted_users)) + 1, n]
        group_end = np.repeat(ends, np.diff(np.r_[0, ends]))
        pos[order] = group_end - 1 - np.arange(n)
    else:
        pos = _random_rank(users, rng)
    is_test = (pos == 0) & eligible
    is_dev = np.zeros(n, dtype=bool)
    if dev and dev_rule == "last":
        is_dev = (pos == 1) & eligible
    elif dev:
        # among the rest (pos >= 1), a random one per user
        rest = np.flatnonzero((pos >= 1) & eligible)
        rank = _random_rank(users[rest], rng)
        is_dev[rest[rank == 0]] = True
    train = data.take(~(is_test | is_dev), "train")
    return Split(
        train=train,
        valid=data.take(is_dev, "valid") if dev else None,
        test=data.take(is_test, "test"),
        name="leave-one-out",
        params={
            "seed": seed,
            "dev": dev,
            "by_time": bool(by_time and data.has_time),
            "short": short,
            **({"dev_rule": "last"} if dev and dev_rule == "last" else {}),
        },
    )


def group_holdout(
    data: Interactions,
    *,
    group: str = "playlist",
    seed: int = 0,
    n_test: int = 1,
    n_dev: int = 1,
    min_train: int = 1,
    short: ShortPolicy = "error",
) -> Split:
    """Per group (playlist, basket, session): hold out ``n_test`` random members for test and ``n_dev`` for dev."""
    if group not in GROUP_COLUMNS or group not in data.df.columns:
        raise DataError(
            f"{data.name} has no {group!r} grouping; expected one of the columns {', '.join(GROUP_COLUMNS)}."
        )
    need = n_test + n_dev + min_train
    data, eligible = _handle_short(data, group, need, short, f"holding out {n_test}+{n_dev} items per {group}")
    rng = np.random.default_rng(seed)
    rank = _random_rank(data.df[group].to_numpy(), rng)
    is_test = (rank < n_test) & eligible
    is_dev = (rank >= n_test) & (rank < n_test + n_dev) & eligible
    return Split(
        train=data.take(~(is_test | is_dev), "train"),
        valid=data.take(is_dev, "valid") if n_dev else None,
        test=data.take(is_test, "test"),
        name=f"{group}-holdout",
        params={"group": group, "seed": seed, "n_test": n_test, "n_dev": n_dev},
    )


def _check_ratios(ratios: Sequence[float]) -> tuple[float, float, float]:
    if (
        len(ratios) != 3
        or any(r < 0 for r in ratios)
        or not np.isclose(sum(ratios), 1.0)
        or ratios[0] <= 0
        or ratios[2] <= 0
    ):
        raise DataError(
            f"Split ratios must be three non-negative numbers (train, valid, test) summing to 1, got {tuple(ratios)}."
        )
    return float(ratios[0]), float(ratios[1]), float(ratios[2])


def _cut(n: int, ratios: tuple[float, float, float]) -> tuple[int, int]:
    a = round(n * ratios[0])
    b = round(n * (ratios[0] + ratios[1]))
    return a, b


def temporal_split(
    data: Interactions,
    ratios: Sequence[float] = (0.7, 0.1, 0.2),
    *,
    per_user: bool = False,
) -> Split:
    """Chronological split: globally (all rows sorted by time) or within each user's history.

    Ties in time keep file order. Test and validation rows of users or items never seen in
    train stay in those parts; protocols decide whether to evaluate them.
    """
    if not data.has_time:
        raise DataError(f"{data.name} has no timestamp column, so it cannot be split by time.")
    r = _check_ratios(ratios)
    df = data.df
    n = len(df)
    t = df["timestamp"].to_numpy()
    part = np.zeros(n, dtype=np.int8)
    if not per_user:
        order = np.lexsort((np.arange(n), t))
        a, b = _cut(n, r)
        part[order[a:b]] = 1
        part[order[b:]] = 2
    else:
        users = df["user"].to_numpy()
        order = np.lexsort((np.arange(n), t, users))
        su = users[order]
        starts = np.r_[0, np.flatnonzero(np.diff(su)) + 1]
        lens = np.diff(np.r_[starts, n])
        pos = np.arange(n) - np.repeat(starts, lens)
        length = np.repeat(lens, lens)
        frac_a = np.round(length * r[0])
        frac_b = np.round(length * (r[0] + r[1]))
        p = np.where(pos < frac_a, 0, np.where(pos < frac_b, 1, 2)).astype(np.int8)
        part[order] = p
    return Split(
        train=data.take(part == 0, "train"),
        valid=data.take(part == 1, "valid") if r[1] > 0 else None,
        test=data.take(part == 2, "test"),
        name="temporal" + ("-per-user" if per_user else ""),
        params={"ratios": list(r), "per_user": per_user},
    )


def random_split(data: Interactions, ratios: Sequence[float] = (0.7, 0.1, 0.2), *, seed: int = 0) -> Split:
    """Random row split by ``ratios`` (train, valid, test)."""
    r = _check_ratios(ratios)
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(data))
    a, b = _cut(len(data), r)
    part = np.zeros(len(data), dtype=np.int8)
    part[perm[a:b]] = 1
    part[perm[b:]] = 2
    return Split(
        train=data.take(part == 0, "train"),
        valid=data.take(part == 1, "valid") if r[1] > 0 else None,
        test=data.take(part == 2, "test"),
        name="random",
        params={"ratios": list(r), "seed": seed},
    )


def positives_by_user(parts: Sequence[Interactions]) -> pd.Series:
    """Helper for tests and protocols: the set of items of each user over several parts."""
    df = pd.concat([p.df[["user", "item"]] for p in parts])
    return df.groupby("user")["item"].agg(lambda s: set(s.tolist()))
