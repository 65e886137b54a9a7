"""Negative sampling: training negatives and fixed evaluation candidates.

Both are vectorised rejection samplers: all draws of a round are made at once, checked
against the user's known items with one ``searchsorted`` over encoded (user, item) keys,
and only the rejected draws are redrawn. No Python loop runs per sample.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from segue.errors import DataError

_MAX_ROUNDS = 64
_DENSE_CELLS = 64_000_000  # users x items up to which the seen set is a dense bitmap (64 MB)


class NegativeSampler:
    """Draw items a user has not interacted with.

    ``seen`` is a user x item matrix (internal ids, padding row/column 0) of the items to
    avoid. ``popularity`` (per item, length ``n_items + 1``) switches from uniform draws
    to draws proportional to ``popularity ** alpha``.
    """

    def __init__(
        self,
        seen: sp.csr_matrix,
        *,
        seed: int | np.random.Generator = 0,
        popularity: np.ndarray | None = None,
        alpha: float = 1.0,
    ) -> None:
        seen = sp.csr_matrix(seen)
        self.n_items = seen.shape[1] - 1
        if self.n_items < 1:
            raise DataError("Cannot sample negatives from an empty catalogue.")
        self.seen = seen
        self.n_seen = np.diff(seen.indptr)
        # membership test: a dense bitmap when it is small, else binary search over sorted (user, item) keys
        self._dense: np.ndarray | None = None
        if seen.shape[0] * seen.shape[1] <= _DENSE_CELLS:
            self._dense = seen.toarray() != 0
            self._keys = np.zeros(0, dtype=np.int64)
        else:
            rows = np.repeat(np.arange(seen.shape[0], dtype=np.int64), self.n_seen)
            self._keys = np.sort(rows * (self.n_items + 1) + seen.indices.astype(np.int64))
        self.rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        self._cdf: np.ndarray | None = None
        if popularity is not None:
            p = np.asarray(popularity, dtype=np.float64).copy()
            if p.shape != (self.n_items + 1,) or not np.isfinite(p).all() or (p < 0).any():
                raise DataError(f"popularity must be {self.n_items + 1} finite non-negative numbers.")
            p[0] = 0.0
            p = p**alpha
            if p.sum() <= 0:
                raise DataError("popularity weights are all zero.")
            self._cdf = np.cumsum(p / p.sum())

    def _draw(self, size: int | tuple[int, ...]) -> np.ndarray:
        if self._cdf is None:
            return self.rng.integers(1, self.n_items + 1, size=size, dtype=np.int64)
        u = self.rng.random(size)
        return np.minimum(np.searchsorted(self._cdf, u, side="right"), self.n_items).astype(np.int64)

    def is_seen(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        if self._dense is not None:
            return self._dense[users, items]
        keys = users.astype(np.int64) * (self.n_items + 1) + items
        pos = np.searchsorted(self._keys, keys)
        pos = np.minimum(pos, len(self._keys) - 1) if len(self._keys) else pos
        return (self._keys[pos] == keys) if len(self._keys) else np.zeros(keys.shape, dtype=bool)

    def sample(self, users: np.ndarray, n: int, *, distinct: bool = False) -> np.ndarray:
        """Negatives of shape (len(users), n); ``distinct`` forbids repeats within a row."""
        users = np.asarray(users, dtype=np.int64)
        if n < 0:
            raise DataError(f"The number of negatives must be >= 0, got {n}.")
        free = self.n_items - self.n_seen[users] if len(users) else np.zeros(0, dtype=np.int64)
        need = n if distinct else 1
        if len(users) and n and (free < need).any():
            u = users[int(np.flatnonzero(free < need)[0])]
            raise DataError(
                f"User {u} has interacted with {self.n_seen[u]} of {self.n_items} items, "
                f"leaving fewer than {need} to sample as negatives."
            )
        out = self._draw((len(users), n))
        bad = self._invalid(users, out, distinct)
        # redraw only the rows that still hold a rejected draw: later rounds touch few rows
        rows = np.flatnonzero(bad.any(axis=1))
        sub, sub_bad = out[rows], bad[rows]
        rounds = 0
        while len(rows):
            rounds += 1
            if rounds > _MAX_ROUNDS:
                self._exact_fill(users[rows], sub, sub_bad, distinct)
                out[rows] = sub
                break
            sub[sub_bad] = self._draw(int(sub_bad.sum()))
            sub_bad = self._invalid(users[rows], sub, distinct)
            done = ~sub_bad.any(axis=1)
            out[rows[done]] = sub[done]
            rows, sub, sub_bad = rows[~done], sub[~done], sub_bad[~done]
        return out

    def _invalid(self, users: np.ndarray, cand: np.ndarray, distinct: bool) -> np.ndarray:
        bad = self.is_seen(np.broadcast_to(users[:, None], cand.shape), cand)
        if distinct and cand.shape[1] > 1:
            order = np.argsort(cand, axis=1, kind="stable")
            s = np.take_along_axis(cand, order, axis=1)
            dup = np.zeros_like(bad)
            dup_sorted = s[:, 1:] == s[:, :-1]
            r, c = np.nonzero(dup_sorted)
            dup[r, order[r, c + 1]] = True
            bad |= dup
        return bad

    def _exact_fill(self, users: np.ndarray, out: np.ndarray, bad: np.ndarray, distinct: bool) -> None:
        """Fallback for the few rows of users who have seen most of the catalogue."""
        for r in np.flatnonzero(bad.any(axis=1)):
            u = users[r]
            allowed = np.setdiff1d(
                np.arange(1, self.n_items + 1), self.seen.indices[self.seen.indptr[u] : self.seen.indptr[u + 1]]
            )
            keep = out[r, ~bad[r]]
            if distinct:
                allowed = np.setdiff1d(allowed, keep)
            k = int(bad[r].sum())
            out[r, bad[r]] = self.rng.choice(allowed, size=k, replace=not distinct)


def sample_candidates(
    users: np.ndarray,
    known: sp.csr_matrix,
    n_negatives: int,
    *,
    seed: int = 0,
) -> np.ndarray:
    """Fixed evaluation negatives: ``n_negatives`` distinct items per case, none known to the user.

    ``known`` should hold every interaction of the user (train, dev and test), so that no
    negative is a real positive.
    """
    return NegativeSampler(known, seed=seed).sample(users, n_negatives, distinct=True)
