"""Sequence windows for sequential and memory models.

Histories are ordered by time (file order breaks ties), oldest first, left-padded with 0.
"""

from __future__ import annotations

import numpy as np

from segue.data.interactions import Interactions
from segue.data.sampling import NegativeSampler
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


def sequence_rows(train: Interactions, max_len: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One training row per user for per-sequence (SASRec-style) training: ``(users, inputs, targets)``.

    A user's training items in time order (file order breaks ties, as in :func:`history_windows`)
    ``i_1 .. i_n`` give ``inputs = i_1 .. i_{n-1}`` and ``targets = i_2 .. i_n``: the target at each
    position is the item that follows its input. Only the most recent ``max_len`` positions are
    kept, left-padded with 0 (the layout of the SASRec authors' data.py), so the last column is
    always (second-to-last item -> last item). ``users`` (R,) ascending; ``inputs`` and
    ``targets`` (R, max_len) int64. Users with fewer than two items get no row.
    """
    if max_len < 1:
        raise DataError(f"The sequence length max_len must be >= 1, got {max_len}.")
    order = _order(train)
    su = train.users[order]
    si = train.items[order]
    n_users = train.n_users
    bounds = np.searchsorted(su, np.arange(1, n_users + 2), side="left")  # start of user u at bounds[u - 1]
    start, stop = bounds[:-1], bounds[1:]
    users = np.flatnonzero(stop - start >= 2) + 1
    start, stop = start[users - 1], stop[users - 1]
    back = max_len - np.arange(max_len)  # column j holds the target ``back[j]`` steps before the end
    tgt = stop[:, None] - back[None, :]  # sorted index of the target of each cell
    ok = tgt - 1 >= start[:, None]  # its input exists too
    inputs = np.where(ok, si[np.where(ok, tgt - 1, 0)], 0).astype(np.int64)
    targets = np.where(ok, si[np.where(ok, tgt, 0)], 0).astype(np.int64)
    return users.astype(np.int64), inputs, targets


def sequence_negatives(sampler: NegativeSampler, users: np.ndarray, targets: np.ndarray, n: int = 1) -> np.ndarray:
    """``n`` sampled negatives per target position: (R, L, n), 0 where ``targets`` is 0 (padding).

    ``sampler`` decides what counts as seen (built on the training matrix, no draw is one of the
    user's training items); draws are independent across positions (repeats are possible, as
    in the SASRec authors' sampler). Only non-padding positions are drawn.
    """
    users = np.asarray(users, dtype=np.int64)
    targets = np.asarray(targets)
    if targets.ndim != 2 or len(targets) != len(users):
        raise DataError(f"targets must be (len(users), L), got {targets.shape} for {len(users)} users.")
    out = np.zeros((*targets.shape, n), dtype=np.int64)
    rows, cols = np.nonzero(targets)
    if len(rows) and n:
        out[rows, cols] = sampler.sample(users[rows], n)
    return out


def _left_pack(mat: np.ndarray, lens: np.ndarray, s: int) -> np.ndarray:
    """Rows of right-padded ``mat`` (valid prefix of ``lens``) as their last ``s`` entries, left-padded."""
    out = np.zeros((len(mat), s), dtype=np.int64)
    for j in range(s):
        src = lens - s + j
        ok = src >= 0
        out[ok, j] = mat[np.flatnonzero(ok), src[ok]]
    return out


def _group_matrix(data: Interactions, group: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(n_groups + 1, L) members of each group in time/file order (right-padded), their counts, and per row
    its group id and position inside the group."""
    if group not in data.df.columns:
        raise DataError(f"{data.name} has no {group!r} grouping, so group contexts cannot be built.")
    g = data.df[group].to_numpy().astype(np.int64)
    n = len(g)
    keys = [np.arange(n)]
    if data.has_time:
        keys.append(data.df["timestamp"].to_numpy())
    keys.append(g)
    order = np.lexsort(keys)
    n_groups = int(g.max()) if n else 0
    lens = np.bincount(g, minlength=n_groups + 1)
    starts = np.concatenate([[0], np.cumsum(lens)[:-1]])
    pos_sorted = np.arange(n) - starts[g[order]]
    mat = np.zeros((n_groups + 1, max(1, int(lens.max()) if n else 1)), dtype=np.int64)
    mat[g[order], pos_sorted] = data.items[order]
    pos = np.empty(n, dtype=np.int64)
    pos[order] = pos_sorted
    return mat, lens, g, pos


def group_windows(data: Interactions, group: str, s: int) -> np.ndarray:
    """For every row, the *other* items of its group (basket, playlist, session): (len(data), s).

    Oldest first (time, then file order), left-padded with 0; a group with more than ``s``
    other members keeps its ``s`` latest ones. This is the basket task's context (spec
    A.1.2: "the rest of the basket").
    """
    if s < 1:
        raise DataError(f"The window length s must be >= 1, got {s}.")
    mat, lens, g, pos = _group_matrix(data, group)
    width = mat.shape[1]
    if width < 2:
        return np.zeros((len(data), s), dtype=np.int64)
    idx = np.arange(width - 1)[None, :]
    col = idx + (idx >= pos[:, None])  # skip the row's own position
    others = mat[g[:, None], np.minimum(col, width - 1)]
    return _left_pack(others, lens[g] - 1, s)


def group_members(data: Interactions, group: str, groups: np.ndarray, s: int) -> np.ndarray:
    """The items of each given group in ``data`` (its last ``s``, oldest first, left-padded): (len(groups), s)."""
    if s < 1:
        raise DataError(f"The window length s must be >= 1, got {s}.")
    mat, lens, _, _ = _group_matrix(data, group)
    groups = np.asarray(groups, dtype=np.int64)
    if groups.size and groups.min() < 0:
        raise DataError("Group ids must be >= 0.")
    groups = np.where(groups < len(mat), groups, 0)  # a group with no row in ``data`` has no member
    return _left_pack(mat[groups], lens[groups], s)


#: Row contexts the trainer can build: the user's previous items, or the rest of the row's group.
CONTEXTS = ("history", "basket", "playlist", "session")


def row_contexts(data: Interactions, s: int, context: str = "history") -> np.ndarray:
    """Per training row, the ``s`` context items a sequential model reads (see :data:`CONTEXTS`)."""
    if context == "history":
        return history_windows(data, s)
    if context in CONTEXTS:
        return group_windows(data, context, s)
    raise DataError(f"Unknown context {context!r}; expected one of {', '.join(CONTEXTS)}.")
