"""Sequence windows for sequential and memory models.

Histories are ordered by time (file order breaks ties), oldest first, left-padded with 0.
"""

from __future__ import annotations

import numpy as np

from segue.data.interactions import Interactions
from segue.errors import DataError


def _order(data: Interactions) -> np.ndarray:
    n = len(data)
    keys = [np.arange(n)]
    if data.has_time:
        keys.append(data.df["timestamp"].to_numpy())
    keys.append(data.users)
    return np.lexsort(keys)


def history_windows(data: Interactions, s: int) -> np.ndarray:
    """For every row, the ``s`` items its user consumed just before it: (len(data), s), aligned with the rows."""
    if s < 1:
        raise DataError(f"The window length s must be >= 1, got {s}.")
    order = _order(data)
    users = data.users[order]
    items = data.items[order]
    n = len(order)
    win = np.zeros((n, s), dtype=np.int64)
    for back in range(1, min(s, n - 1) + 1):
        same = np.zeros(n, dtype=bool)
        same[back:] = users[back:] == users[:-back]
        prev = np.zeros(n, dtype=np.int64)
        prev[back:] = items[:-back]
        win[:, s - back] = np.where(same, prev, 0)
    out = np.empty_like(win)
    out[order] = win
    return out


def last_items(data: Interactions, users: np.ndarray, s: int) -> np.ndarray:
    """The last ``s`` items of each given user in ``data`` (oldest first, left-padded): (len(users), s)."""
    if s < 1:
        raise DataError(f"The window length s must be >= 1, got {s}.")
    order = _order(data)
    su = data.users[order]
    si = data.items[order]
    n_users = data.n_users
    ends = np.searchsorted(su, np.arange(n_users + 2), side="left")  # start of each user id
    users = np.asarray(users, dtype=np.int64)
    if users.size and (users.min() < 1 or users.max() > n_users):
        raise DataError(f"User ids must lie in 1..{n_users}.")
    start = ends[users]
    stop = ends[users + 1]
    out = np.zeros((len(users), s), dtype=np.int64)
    for back in range(1, s + 1):
        idx = stop - back
        ok = idx >= start
        out[ok, s - back] = si[idx[ok]]
    return out
