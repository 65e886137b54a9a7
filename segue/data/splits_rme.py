"""The data preparation and splits of the RME experiments (spec R.1 and R.7).

Two recipes, each returning an :class:`RMESplit` (a :class:`~segue.data.splits.Split` of the
*liked* interactions, plus the disliked interactions in the same id space when known):

* :func:`movielens_split` (explicit ratings with timestamps): liked = rating >= 4, disliked =
  rating <= 2, 3-star ratings dropped ([AMBIG] R.1 default). All liked ratings are sorted by
  time; the first 80% is train+validation and the last 20% test. The iterated 5-core filter
  runs on the liked train+validation rows ([AMBIG] R.7 default), test rows are restricted to
  the users and items that remain, and validation is a random 12.5% of the train+validation
  rows (10% of the total; [AMBIG] R.7 default), redrawn for each repeat while the test set
  stays the same. Validation rows whose item has no training row go back to train, and the
  disliked set holds the <= 2-star ratings made before the test period's first rating, for the
  kept users and items ([CODE-HINT] R.7: the authors' ``rme_preprocess.py`` does both).
* :func:`playcount_split` (implicit play counts, no timestamps): play count > 0 is liked, the
  iterated k-core filter runs on all rows, then a random 70/10/20 row split per repeat. Test
  rows are restricted to users and items of train+validation and validation items without a
  training row move to train ([CODE-HINT] R.7). No dislikes are known: RME infers them with
  Algorithm 2 (R.5).

Ids are compacted to the users and items that remain, and all parts share one id map. The
default seeds of the five repeats are the authors' fold seeds ([CODE-HINT]).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from segue.data.interactions import Interactions
from segue.data.preprocess import dedup
from segue.data.splits import Split
from segue.errors import ConfigError, DataError

#: The seeds of the five random validation (or 70/10/20) draws in the authors' code.
FOLD_SEEDS = (13579, 98765, 24680, 14689, 97531)

_TRAIN, _VALID, _TEST, _DISLIKE = 0, 1, 2, 3


@dataclass
class RMESplit:
    """A split of the liked interactions and, for explicit data, the disliked ones (same ids)."""

    split: Split
    dislikes: Interactions | None
    stats: dict[str, Any] = field(default_factory=dict)


def fold_seed(repeat: int, seed: int | None = None) -> int:
    """The seed of repeat ``repeat``: ``seed + repeat`` when ``seed`` is given, else the authors' fold seeds."""
    if repeat < 0:
        raise ConfigError(f"The repeat index must be >= 0, got {repeat}.")
    if seed is not None:
        return int(seed) + repeat
    return FOLD_SEEDS[repeat] if repeat < len(FOLD_SEEDS) else FOLD_SEEDS[0] + 1000 * repeat


def _kcore_mask(users: np.ndarray, items: np.ndarray, min_user: int, min_item: int) -> np.ndarray:
    if min_user < 1 or min_item < 1:
        raise ConfigError(f"k-core thresholds must be >= 1, got users {min_user}, items {min_item}.")
    keep = np.ones(len(users), dtype=bool)
    nu, ni = int(users.max(initial=0)) + 1, int(items.max(initial=0)) + 1
    while True:
        uc = np.bincount(users[keep], minlength=nu)
        ic = np.bincount(items[keep], minlength=ni)
        new = keep & (uc[users] >= min_user) & (ic[items] >= min_item)
        if new.sum() == keep.sum():
            return keep
        keep = new


def _move_cold_valid(users: np.ndarray, items: np.ndarray, part: np.ndarray) -> np.ndarray:
    """Validation rows whose item has no training row go back to train ([CODE-HINT] R.7)."""
    part = part.copy()
    train_items = np.zeros(int(items.max(initial=0)) + 1, dtype=bool)
    train_items[items[part == _TRAIN]] = True
    move = (part == _VALID) & ~train_items[items]
    part[move] = _TRAIN
    return part


def _assemble(data: Interactions, rows: np.ndarray, part: np.ndarray, name: str, params: dict[str, Any]) -> RMESplit:
    df = data.df.iloc[rows].copy()
    df["_part"] = part
    sub = data.with_frame(df).compact()
    p = sub.df["_part"].to_numpy()
    sub = sub.with_frame(sub.df.drop(columns="_part"))

    def take(code: int, label: str) -> Interactions:
        return sub.take(p == code, label)

    train, valid, test = take(_TRAIN, "train"), take(_VALID, "valid"), take(_TEST, "test")
    if len(train) == 0 or len(test) == 0:
        raise DataError(f"The RME split of {data.name} has an empty train or test part.")
    dislikes = take(_DISLIKE, "dislikes") if (p == _DISLIKE).any() else None
    liked = sub.take(p != _DISLIKE)
    stats = {
        "users": sub.n_users,
        "items": sub.n_items,
        "liked": len(liked),
        "density": len(liked) / (sub.n_users * sub.n_items),
        "train": len(train),
        "valid": len(valid),
        "test": len(test),
        "dislikes": 0 if dislikes is None else len(dislikes),
    }
    split = Split(train, valid if len(valid) else None, test, name=name, params=params)
    return RMESplit(split, dislikes, stats)


def movielens_split(
    data: Interactions,
    *,
    repeat: int = 0,
    seed: int | None = None,
    like_threshold: float = 4.0,
    dislike_threshold: float = 2.0,
    test_frac: float = 0.2,
    valid_frac: float = 0.125,
    min_user: int = 5,
    min_item: int = 5,
    per_user: bool = False,
) -> RMESplit:
    """Temporal 80/20 split of the liked ratings with a random 12.5% of the 80% as validation (module docstring).

    ``per_user=True`` is *not* the paper's protocol: each user's own latest 20% of liked
    ratings (``int(0.2 * n_u)`` of them) is the test part, and the dislikes kept are the ones
    made before that user's first test rating. It exists as a sensitivity check for small data
    such as ml-100k, where the global cut leaves few test users.
    """
    if not data.has_time or not data.has_weight:
        raise DataError(f"{data.name} needs ratings and timestamps for the RME MovieLens split.")
    if not (0 < test_frac < 1 and 0 <= valid_frac < 1):
        raise ConfigError(f"test_frac must lie in (0, 1) and valid_frac in [0, 1), got {test_frac} and {valid_frac}.")
    if dislike_threshold >= like_threshold:
        raise ConfigError(f"dislike_threshold ({dislike_threshold}) must be below like_threshold ({like_threshold}).")
    data = dedup(data)
    df = data.df
    w = df["weight"].to_numpy(np.float64)
    t = df["timestamp"].to_numpy(np.float64)
    users, items = df["user"].to_numpy(), df["item"].to_numpy()
    liked = np.flatnonzero(w >= like_threshold)
    if len(liked) < 10:
        raise DataError(f"{data.name} has only {len(liked)} ratings >= {like_threshold}.")
    liked = liked[np.lexsort((liked, t[liked]))]  # by time, file order breaks ties
    if per_user:
        lu = users[liked]
        order = np.argsort(lu, kind="stable")  # per user, still by time
        starts = np.r_[0, np.flatnonzero(np.diff(lu[order])) + 1]
        lens = np.diff(np.r_[starts, len(order)])
        pos = np.arange(len(order)) - np.repeat(starts, lens)
        n_test = np.repeat((test_frac * lens + 1e-9).astype(np.int64), lens)
        is_test = np.zeros(len(liked), dtype=bool)
        is_test[order] = pos >= np.repeat(lens, lens) - n_test
        trval, test = liked[~is_test], liked[is_test]
        first_test = np.full(data.n_users + 1, np.inf)
        np.minimum.at(first_test, users[test], t[test])
        split_time = first_test[users]  # per rating: its user's first test time
    else:
        cut = int((1.0 - test_frac) * len(liked))
        trval, test = liked[:cut], liked[cut:]
        split_time = np.full(len(df), t[liked[cut]])
    core = _kcore_mask(users[trval], items[trval], min_user, min_item)
    trval = trval[core]
    if len(trval) == 0:
        raise DataError(f"{data.name} is empty after the {min_user}/{min_item}-core filter of the RME split.")
    known_u = np.zeros(data.n_users + 1, dtype=bool)
    known_i = np.zeros(data.n_items + 1, dtype=bool)
    known_u[users[trval]] = True
    known_i[items[trval]] = True
    test = test[known_u[users[test]] & known_i[items[test]]]
    dis = np.flatnonzero((w <= dislike_threshold) & (t < split_time) & known_u[users] & known_i[items])
    rng = np.random.default_rng(fold_seed(repeat, seed))
    part = np.zeros(len(trval), dtype=np.int8)
    part[rng.choice(len(trval), size=int(valid_frac * len(trval)), replace=False)] = _VALID
    part = _move_cold_valid(users[trval], items[trval], part)
    rows = np.concatenate([trval, test, dis])
    parts = np.concatenate([part, np.full(len(test), _TEST, np.int8), np.full(len(dis), _DISLIKE, np.int8)])
    params = {
        "repeat": repeat,
        "seed": fold_seed(repeat, seed),
        "like_threshold": like_threshold,
        "dislike_threshold": dislike_threshold,
        "test_frac": test_frac,
        "valid_frac": valid_frac,
        "kcore": [min_user, min_item],
        "per_user": per_user,
    }
    return _assemble(data, rows, parts, "rme-temporal" + ("-per-user" if per_user else ""), params)


def playcount_split(
    data: Interactions,
    *,
    repeat: int = 0,
    seed: int | None = None,
    ratios: Sequence[float] = (0.7, 0.1, 0.2),
    min_user: int = 5,
    min_item: int = 5,
) -> RMESplit:
    """Random 70/10/20 split of binarised play counts after an iterated k-core filter (module docstring)."""
    r = tuple(float(x) for x in ratios)
    if len(r) != 3 or min(r) < 0 or not np.isclose(sum(r), 1.0) or r[0] <= 0 or r[2] <= 0:
        raise ConfigError(f"ratios must be three non-negative numbers (train, valid, test) summing to 1, got {r}.")
    data = dedup(data)
    if data.has_weight:
        data = data.take(data.df["weight"].to_numpy() > 0).compact()
    users, items = data.users, data.items
    rows = np.flatnonzero(_kcore_mask(users, items, min_user, min_item))
    if len(rows) == 0:
        raise DataError(f"{data.name} is empty after the {min_user}/{min_item}-core filter of the RME split.")
    rng = np.random.default_rng(fold_seed(repeat, seed))
    perm = rng.permutation(len(rows))
    a, b = round(len(rows) * r[0]), round(len(rows) * (r[0] + r[1]))
    part = np.zeros(len(rows), dtype=np.int8)
    part[perm[a:b]] = _VALID
    part[perm[b:]] = _TEST
    u, i = users[rows], items[rows]
    trval = part != _TEST
    known_u = np.zeros(data.n_users + 1, dtype=bool)
    known_i = np.zeros(data.n_items + 1, dtype=bool)
    known_u[u[trval]] = True
    known_i[i[trval]] = True
    keep = trval | (known_u[u] & known_i[i])
    rows, part = rows[keep], part[keep]
    part = _move_cold_valid(users[rows], items[rows], part)
    params = {"repeat": repeat, "seed": fold_seed(repeat, seed), "ratios": list(r), "kcore": [min_user, min_item]}
    return _assemble(data, rows, part, "rme-random", params)
