"""Non-learned baselines: popularity, item-based kNN (cosine) and a uniformly random ranking.

All three are closed-form: ``fit`` computes buffers from the training interactions, so they
are saved and loaded through ``state_dict`` like every other model.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor

from segue.errors import ConfigError, DataError, NotFittedError
from segue.models.base import Context, Recommender, register

if TYPE_CHECKING:
    from segue.data.interactions import Interactions
    from segue.models.base import Monitor


def _check_train(model: Recommender, train: Interactions) -> None:
    if len(train) == 0:
        raise DataError("Cannot fit on an empty training set.")
    if train.n_users != model.n_users or train.n_items != model.n_items:
        raise DataError(
            f"The training data has {train.n_users} users and {train.n_items} items "
            f"but the model was built for {model.n_users} and {model.n_items}."
        )


@register
class Popularity(Recommender):
    """Scores every item by its number of training interactions (the same for every user)."""

    name: ClassVar[str] = "pop"
    trainable: ClassVar[bool] = False

    @dataclass
    class Config:
        pass

    def __init__(self, n_users: int, n_items: int, config: Any = None) -> None:
        super().__init__(n_users, n_items, config)
        self.register_buffer("counts", torch.zeros(n_items + 1))

    def fit(self, train: Interactions, monitor: Monitor | None = None, **extras: Any) -> None:
        _check_train(self, train)
        self.counts = torch.as_tensor(train.item_counts(), dtype=torch.float32)
        self.fitted = True

    def score(self, users: Tensor, items: Tensor, context: Context | None = None) -> Tensor:
        return self.counts.to(items.device)[items]

    def score_all(self, users: Tensor, context: Context | None = None, chunk: int = 4096) -> Tensor:
        out = self.counts.to(users.device).expand(users.shape[0], -1).clone()
        out[:, 0] = float("-inf")
        return out


#: 31-bit mixing constants of the random ranking's hash (products stay below 2^62: no int64 overflow)
_MASK31 = 0x7FFFFFFF


def _hash_uniform(seed: int, users: Tensor, items: Tensor) -> Tensor:
    """A deterministic uniform score in [0, 1) per (seed, user, item): the same pair always gets the same score."""
    h = (users.long() * 1000003 + items.long() * 7919 + seed * 104729) & _MASK31
    for mult in (0x2C1B3C6D, 0x297A2D39, 0x1B873593):
        h = ((h ^ (h >> 15)) * mult) & _MASK31
    h = h ^ (h >> 13)
    return h.double().div_(2.0**31).float()


@register
class RandomRanking(Recommender):
    """Uniformly random scores: the reference row "what chance gets" (issue 16 item 4).

    A score is a hash of ``(seed + draw, user, item)``, so ``score``, ``score_all``, a saved and
    reloaded model and every evaluation agree. :func:`segue.evaluation.protocols.evaluate` ranks
    with ``draws`` independent draws (``draw = 0 .. draws - 1``) and averages the metrics: the
    **expected** metrics of a uniformly random ranking of the same candidates, with a standard error
    ``1 / sqrt(draws)`` times that of one draw (the per-case spread over the draws is not kept).
    Ties (two candidates with the same 24-bit score) are rare and count against the positive, as
    for every model.
    """

    name: ClassVar[str] = "random"
    trainable: ClassVar[bool] = False

    @dataclass
    class Config:
        seed: int = 0
        draws: int = 50  # rankings averaged by evaluate() (1 = one random ranking)

    def __init__(self, n_users: int, n_items: int, config: Any = None) -> None:
        super().__init__(n_users, n_items, config)
        if not isinstance(self.config.draws, int) or self.config.draws < 1:
            raise ConfigError(f"random needs draws >= 1 (an integer), got {self.config.draws!r}.")
        self.draw = 0  # set by evaluate() for each draw

    @property
    def draws(self) -> int:
        return int(self.config.draws)

    def fit(self, train: Interactions, monitor: Monitor | None = None, **extras: Any) -> None:
        _check_train(self, train)
        self.fitted = True

    def score(self, users: Tensor, items: Tensor, context: Context | None = None) -> Tensor:
        return _hash_uniform(int(self.config.seed) + self.draw, users[:, None].expand_as(items), items)

    def score_all(self, users: Tensor, context: Context | None = None, chunk: int = 4096) -> Tensor:
        items = torch.arange(self.n_items + 1, device=users.device)
        out = _hash_uniform(int(self.config.seed) + self.draw, users[:, None], items[None, :])
        out[:, 0] = float("-inf")
        return out


def _topk_per_row(m: sp.csr_matrix, k: int) -> sp.csr_matrix:
    """Keep the ``k`` largest entries of each CSR row (vectorised)."""
    m = m.tocsr()
    m.sort_indices()
    counts = np.diff(m.indptr)
    if counts.max(initial=0) <= k:
        return m
    rows = np.repeat(np.arange(m.shape[0]), counts)
    order = np.lexsort((-m.data, rows))
    pos = np.arange(len(order)) - np.repeat(m.indptr[:-1], counts)
    keep = order[pos < k]
    out = sp.csr_matrix((m.data[keep], (rows[keep], m.indices[keep])), shape=m.shape)
    return out


@register
class ItemKNN(Recommender):
    """Item-based kNN: score(u, j) = sum over u's training items i of cos(i, j), top-``k`` neighbours per item.

    Cosine similarity between the binary item columns of the user-item matrix, with an
    optional shrinkage term ``shrink`` in the denominator; self-similarity is zero.

    Ties: on sparse data most candidates share no neighbour with the user's items and score 0,
    and the evaluator ranks a held-out item below every negative it ties with. The item-kNN
    baselines of the literature do not break ties by popularity (RecBole shuffles scores before
    top-k, i.e. breaks them at random), so neither does this model: every evaluation reports
    ``tie_rate`` instead, and :func:`segue.evaluation.protocols.tie_diagnostic` the optimistic bound.
    """

    name: ClassVar[str] = "itemknn"
    trainable: ClassVar[bool] = False

    @dataclass
    class Config:
        k: int = 100
        shrink: float = 0.0

    def __init__(self, n_users: int, n_items: int, config: Any = None) -> None:
        super().__init__(n_users, n_items, config)
        if self.config.k < 1:
            raise ConfigError(f"itemknn needs k >= 1 neighbours, got {self.config.k}.")
        for name in ("sim_rows", "sim_cols", "hist_indices"):
            self.register_buffer(name, torch.zeros(0, dtype=torch.long))
        self.register_buffer("sim_vals", torch.zeros(0))
        self.register_buffer("hist_indptr", torch.zeros(n_users + 2, dtype=torch.long))
        self._sim_t: Tensor | None = None

    def fit(self, train: Interactions, monitor: Monitor | None = None, **extras: Any) -> None:
        _check_train(self, train)
        x = train.to_csr()
        x.data[:] = 1.0
        xt = x.T.tocsr()
        co = (xt @ x).tocsr()
        co.setdiag(0)
        co.eliminate_zeros()
        norms = np.sqrt(np.asarray(x.sum(axis=0)).ravel())
        coo = co.tocoo()
        denom = norms[coo.row] * norms[coo.col] + self.config.shrink
        sim = sp.csr_matrix((coo.data / np.maximum(denom, 1e-12), (coo.row, coo.col)), shape=co.shape)
        # neighbours of j: the k items most similar to j, stored as sim[i, j] for i in N(j)
        sim = _topk_per_row(sim, self.config.k).T.tocoo()
        self.sim_rows = torch.as_tensor(sim.row, dtype=torch.long)
        self.sim_cols = torch.as_tensor(sim.col, dtype=torch.long)
        self.sim_vals = torch.as_tensor(sim.data, dtype=torch.float32)
        self.hist_indptr = torch.as_tensor(x.indptr, dtype=torch.long)
        self.hist_indices = torch.as_tensor(x.indices, dtype=torch.long)
        self._sim_t = None
        self.fitted = True

    def _similarity_t(self) -> Tensor:
        """S transposed, as sparse CSR: row j holds sim(i, j) for the neighbours i of j."""
        if self._sim_t is None:
            n = self.n_items + 1
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
                self._sim_t = self._build_sim_t(n)
        return self._sim_t

    def _build_sim_t(self, n: int) -> Tensor:
        return (
            torch.sparse_coo_tensor(
                torch.stack([self.sim_cols, self.sim_rows]).cpu(), self.sim_vals.cpu(), (n, n), check_invariants=False
            )
            .coalesce()
            .to_sparse_csr()
        )

    def _history_dense(self, users: Tensor) -> Tensor:
        if self.hist_indices.numel() == 0:
            raise NotFittedError("itemknn is not fitted: call fit() or load a run directory first.")
        ptr = self.hist_indptr.cpu()
        u = users.cpu()
        starts, ends = ptr[u], ptr[u + 1]
        lens = ends - starts
        rows = torch.repeat_interleave(torch.arange(len(u)), lens)
        offs = torch.arange(int(lens.sum())) - torch.repeat_interleave(torch.cumsum(lens, 0) - lens, lens)
        cols = self.hist_indices.cpu()[torch.repeat_interleave(starts, lens) + offs]
        h = torch.zeros(len(u), self.n_items + 1)
        h[rows, cols] = 1.0
        return h

    def score_all(self, users: Tensor, context: Context | None = None, chunk: int = 4096) -> Tensor:
        h = self._history_dense(users)
        # scores = H @ S = (S^T @ H^T)^T, with S[i, j] = sim(i, j) for i a neighbour of j
        out = torch.sparse.mm(self._similarity_t(), h.t()).t().contiguous()
        out[:, 0] = float("-inf")
        return out.to(users.device)

    def score(self, users: Tensor, items: Tensor, context: Context | None = None) -> Tensor:
        return self.score_all(users).to(items.device).gather(1, items)

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self._sim_t = None
