"""Preprocessing: implicit binarisation, de-duplication and iterated k-core filtering.

Each function returns a new :class:`Interactions` with compact ids (only the users and
items that remain) and raises :class:`~segue.errors.DataError` if nothing is left.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from segue.data.interactions import Interactions
from segue.errors import DataError


def binarize(data: Interactions, threshold: float | None = None, *, keep_weight: bool = False) -> Interactions:
    """Keep rows whose weight is ``>= threshold`` (all rows when ``threshold`` is None).

    The result is implicit feedback: the ``weight`` column is dropped unless
    ``keep_weight`` is set.
    """
    df = data.df
    if threshold is not None:
        if not data.has_weight:
            raise DataError(f"Cannot binarise {data.name} at threshold {threshold}: it has no rating/weight column.")
        df = df[df["weight"] >= threshold]
        if len(df) == 0:
            raise DataError(f"No interaction of {data.name} has a weight >= {threshold}.")
    if not keep_weight and "weight" in df.columns:
        df = df.drop(columns="weight")
    return data.with_frame(df).compact()


def dedup(
    data: Interactions, keep: Literal["first", "last"] = "first", on: tuple[str, ...] = ("user", "item")
) -> Interactions:
    """Drop repeated (user, item) rows (or rows equal on ``on``), keeping the first or last by time."""
    ordered = data.sorted() if data.has_time else data
    mask = ~ordered.df.duplicated(subset=list(on), keep=keep)
    return ordered.take(mask.to_numpy()).compact()


def filter_groups(data: Interactions, group: str, min_size: int = 1, max_size: int | None = None) -> Interactions:
    """Keep the groups (baskets, playlists, sessions) with ``min_size``..``max_size`` rows; ids are compacted."""
    if group not in data.df.columns:
        raise DataError(f"{data.name} has no {group!r} grouping.")
    if min_size < 1 or (max_size is not None and max_size < min_size):
        raise DataError(f"Group size bounds must satisfy 1 <= min_size <= max_size, got {min_size}..{max_size}.")
    size = data.df.groupby(group)[group].transform("size").to_numpy()
    keep = size >= min_size
    if max_size is not None:
        keep &= size <= max_size
    if not keep.any():
        raise DataError(f"{data.name}: no {group} has {min_size}..{max_size} items.")
    return data.take(keep).compact()


def kcore(data: Interactions, min_user: int = 5, min_item: int = 5) -> Interactions:
    """Iterated k-core: drop users with < ``min_user`` rows and items with < ``min_item`` rows until stable."""
    if min_user < 1 or min_item < 1:
        raise DataError(f"k-core thresholds must be >= 1, got users {min_user}, items {min_item}.")
    users, items = data.users, data.items
    keep = np.ones(len(data), dtype=bool)
    while True:
        uc = np.bincount(users[keep], minlength=data.n_users + 1)
        ic = np.bincount(items[keep], minlength=data.n_items + 1)
        new = keep & (uc[users] >= min_user) & (ic[items] >= min_item)
        if new.sum() == keep.sum():
            break
        keep = new
    if not keep.any():
        raise DataError(f"{data.name} is empty after {min_user}/{min_item}-core filtering.")
    return data.take(keep).compact()
