"""CMN: Collaborative Memory Network (Ebesu, Shen and Fang, SIGIR 2018), the CMN++ baseline of
the SDMR (Table 5.3) and MASR (Table 4.4) tables.

For a query user ``u`` and a candidate item ``i`` the neighbourhood ``N(i)`` is the set of
training users who consumed ``i``; with user memory ``M``, item memory ``E`` and output
memory ``C``:

* ``q_uiv = m_u . m_v + e_i . m_v`` for ``v`` in ``N(i)`` (Eq. 1), ``p = softmax(q)`` (Eq. 2),
  ``o = sum_v p_uiv c_v`` (Eq. 3);
* ``H`` hops: ``z^0 = m_u + e_i`` (so hop 1 is Eq. 1), ``q^h_uiv = z^{h-1} . m_v``,
  ``z^h = ReLU(W^h z^{h-1} + o^h)`` (Eqs. 5-6);
* ``r_ui = v . ReLU(U (m_u * e_i) + W o^H + b)`` (Eq. 4), trained with BPR and 4 negatives.

``pretrain=True`` (CMN++, as Tran's tables name it) initialises ``M`` and ``E`` from a GMF
model trained first with the same settings, the CMN paper's pre-training. The neighbourhood
is built from the training data in :meth:`CMN.fit` (or :meth:`CMN.set_neighbourhood`) and
kept as a buffer, so it is saved with the weights.

Choices the CMN paper leaves open, ours:

* [AMBIG] Neighbourhood size: at most ``max_neighbours`` users per item (default 50), a
  fixed seeded sample for popular items, padded with 0 and masked out of the softmax.
* [AMBIG] Leakage: the query user is masked out of ``N(i)``; otherwise a training positive
  always finds its own user in the neighbourhood (a negative never does) and the attention
  learns to detect that, which cannot happen for a held-out item.
* An item without any other neighbour gets ``o = 0``.
* Per-hop ``W^h`` (not tied); weights Xavier-normal, memories ``N(0, init_std^2)``;
  ``reg`` times the squared norm of the memory rows a batch touches, per case.

Use it for playlists by keying the training rows by playlist (``keyed_train``): the
neighbourhood is then playlist-based, the variant the MASR table also runs.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from segue.errors import ConfigError, DataError, NotFittedError
from segue.models.base import Context, Recommender, register

if TYPE_CHECKING:
    from segue.data.interactions import Interactions

#: Elements of the largest (cases, candidates, neighbours, d) block materialised at once.
_BLOCK_ELEMENTS = 1 << 23


def neighbourhoods(train: Interactions, max_neighbours: int, seed: int = 0) -> np.ndarray:
    """(n_items + 1, K) users who consumed each item in ``train`` (at most ``max_neighbours``, seeded sample), 0-padded."""
    if max_neighbours < 1:
        raise ConfigError(f"max_neighbours must be >= 1, got {max_neighbours}.")
    m = train.to_csr().T.tocsr()  # item x user
    m.sum_duplicates()
    rng = np.random.default_rng(seed)
    lens = np.diff(m.indptr)
    k = int(min(max_neighbours, max(1, lens.max(initial=1))))
    out = np.zeros((m.shape[0], k), dtype=np.int64)
    for i in np.flatnonzero(lens):
        users = m.indices[m.indptr[i] : m.indptr[i + 1]]
        if len(users) > k:
            users = rng.choice(users, size=k, replace=False)
        out[i, : len(users)] = users
    return out


# -- kernels -----------------------------------------------------------------------------------
# Each hop reads one neighbourhood of K users per (case, candidate) row. Gathering the
# (B, C, K, d) memory rows and contracting them with einsum (a batched GEMV on the non-BLAS
# path, then an outer-product backward and a 64k-row scatter) costs far more than the
# arithmetic. Instead the neighbourhood is a sparse (rows x users) pattern S with K entries
# per row, and
#   q = (z M^T) sampled on S           (torch.sparse.sampled_addmm, nothing gathered)
#   o = S_p C                          (F.embedding_bag with per-sample weights p)
# with the backward passes of the same two kinds; dL/dM and dL/dC (sums over the rows that
# read each user) are embedding bags over S^T, whose structure is built once per batch.


class _Neighbourhood:
    """The pattern S of ``nb`` (R, K): CSR structure for the rows and the row order of S^T, per user."""

    def __init__(self, nb: Tensor, n_rows: int) -> None:
        rows, k = nb.shape
        self.nb = nb
        self.k = k
        self.crow = torch.arange(0, rows * k + 1, k, device=nb.device)
        flat = nb.reshape(-1)
        self.order = torch.argsort(flat, stable=True)  # entries grouped by user
        self.row_of = torch.div(self.order, k, rounding_mode="floor")
        self.offsets = nb.new_zeros(n_rows + 1)
        torch.cumsum(torch.bincount(flat, minlength=n_rows), 0, out=self.offsets[1:])

    def sampled_dot(self, x: Tensor, table: Tensor) -> Tensor:
        """``out[r, k] = x[r] . table[nb[r, k]]`` for x (R, d)."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "sparse CSR support is in beta"
            s = torch.sparse_csr_tensor(
                self.crow, self.nb.reshape(-1), x.new_zeros(self.nb.numel()), size=(x.shape[0], table.shape[0])
            )
        return torch.sparse.sampled_addmm(s, x, table.t(), beta=0.0).values().view(self.nb.shape)

    def weighted_sum(self, w: Tensor, table: Tensor) -> Tensor:
        """``out[r] = sum_k w[r, k] table[nb[r, k]]``, (R, d)."""
        return F.embedding_bag(self.nb, table, mode="sum", per_sample_weights=w)

    def scatter(self, w: Tensor, x: Tensor) -> Tensor:
        """``out[u] = sum over (r, k) with nb[r, k] = u of w[r, k] x[r]``, (n_rows, d): S_w^T x."""
        return F.embedding_bag(
            self.row_of,
            x,
            self.offsets,
            mode="sum",
            per_sample_weights=w.reshape(-1)[self.order],
            include_last_offset=True,
        )


class _SampledDot(torch.autograd.Function):
    """``q[r, k] = z[r] . M[nb[r, k]]`` (Eq. 1 / Eq. 5's attention logits) for z (R, d)."""

    @staticmethod
    def forward(ctx: Any, z: Tensor, table: Tensor, hood: _Neighbourhood) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(z, table)
        ctx.hood = hood
        return hood.sampled_dot(z, table)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, Tensor | None, None]:
        z, table = ctx.saved_tensors
        hood: _Neighbourhood = ctx.hood
        gz = hood.weighted_sum(grad, table) if ctx.needs_input_grad[0] else None
        gt = hood.scatter(grad, z) if ctx.needs_input_grad[1] else None
        return gz, gt, None


class _WeightedSum(torch.autograd.Function):
    """``o[r] = sum_k p[r, k] C[nb[r, k]]`` (Eq. 3) for p (R, K)."""

    @staticmethod
    def forward(ctx: Any, p: Tensor, table: Tensor, hood: _Neighbourhood) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(p, table)
        ctx.hood = hood
        return hood.weighted_sum(p, table)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, Tensor | None, None]:
        p, table = ctx.saved_tensors
        hood: _Neighbourhood = ctx.hood
        gp = hood.sampled_dot(grad, table) if ctx.needs_input_grad[0] else None
        gt = hood.scatter(p, grad) if ctx.needs_input_grad[1] else None
        return gp, gt, None


@register
class CMN(Recommender):
    """Collaborative Memory Network with ``hops`` memory hops over the item's user neighbourhood."""

    name: ClassVar[str] = "cmn"
    train_defaults: ClassVar[dict[str, Any]] = {"lr": 1e-3, "batch_size": 256, "n_negatives": 4, "loss": "bpr"}

    @dataclass
    class Config:
        dim: int = 64
        hops: int = 2
        max_neighbours: int = 50
        init_std: float = 0.01
        reg: float = 1e-4
        pretrain: bool = True  # CMN++: memories initialised from a trained GMF
        seed: int = 0

    def __init__(self, n_users: int, n_items: int, config: Any = None) -> None:
        super().__init__(n_users, n_items, config)
        c = self.config
        if c.dim < 1 or c.hops < 1 or c.max_neighbours < 1 or c.init_std <= 0 or c.reg < 0:
            raise ConfigError(f"cmn needs dim, hops, max_neighbours >= 1, init_std > 0 and reg >= 0, got {c}.")
        d = c.dim
        self.user_mem = nn.Embedding(n_users + 1, d, padding_idx=0)
        self.item_mem = nn.Embedding(n_items + 1, d, padding_idx=0)
        self.out_mem = nn.Embedding(n_users + 1, d, padding_idx=0)
        for e in (self.user_mem, self.item_mem, self.out_mem):
            nn.init.normal_(e.weight, std=c.init_std)
            with torch.no_grad():
                e.weight[0].zero_()
        self.hop_w = nn.ModuleList(nn.Linear(d, d, bias=False) for _ in range(c.hops - 1))
        self.u_proj = nn.Linear(d, d, bias=False)
        self.w_proj = nn.Linear(d, d)
        self.v = nn.Linear(d, 1, bias=False)
        for lin in [*self.hop_w, self.u_proj, self.w_proj, self.v]:
            nn.init.xavier_normal_(lin.weight)
        nn.init.zeros_(self.w_proj.bias)
        self.register_buffer("neighbours", torch.zeros(n_items + 1, 1, dtype=torch.long))
        self.has_neighbourhood = False

    def set_neighbourhood(self, train: Interactions) -> None:
        """Build ``N(i)`` from the training rows (the trainer does it through :meth:`prepare`)."""
        if train.n_items != self.n_items:
            raise DataError(f"The training data has {train.n_items} items but the model was built for {self.n_items}.")
        nb = neighbourhoods(train, self.config.max_neighbours, self.config.seed)
        self.neighbours = torch.as_tensor(nb, device=self.neighbours.device)
        self.has_neighbourhood = True

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        nb = state_dict.get(prefix + "neighbours")
        if nb is not None:  # the saved neighbourhood fixes the buffer's width
            self.neighbours = torch.zeros_like(nb, device=self.neighbours.device)
            self.has_neighbourhood = True
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def score(self, users: Tensor, items: Tensor, context: Context | None = None) -> Tensor:
        if not self.has_neighbourhood:
            raise NotFittedError("cmn has no neighbourhood yet; call fit() or set_neighbourhood(train) first.")
        if items.dim() != 2 or users.shape[0] != items.shape[0]:
            raise DataError(
                f"cmn expects users (B,) and items (B, C), got {tuple(users.shape)} and {tuple(items.shape)}."
            )
        b, c = items.shape
        step = max(1, _BLOCK_ELEMENTS // max(1, c * self.neighbours.shape[1] * self.config.dim))
        if b <= step:
            return self._score(users, items)
        return torch.cat([self._score(users[i : i + step], items[i : i + step]) for i in range(0, b, step)])

    def _score(self, users: Tensor, items: Tensor) -> Tensor:
        b, c = items.shape
        d = self.config.dim
        m_u = self.user_mem(users)[:, None, :]  # (B, 1, d)
        e_i = self.item_mem(items)  # (B, C, d)
        nb = self.neighbours[items].reshape(b * c, -1)  # (B*C, K)
        users_of_rows = users.repeat_interleave(c)[:, None]
        mask = (nb != 0) & (nb != users_of_rows)  # the query user is not its own neighbour
        hood = _Neighbourhood(nb, self.user_mem.num_embeddings)
        z = (m_u + e_i).reshape(b * c, d)
        o = torch.zeros_like(z)
        for hop in range(self.config.hops):
            if hop:
                z = torch.relu(self.hop_w[hop - 1](z) + o)
            q = _SampledDot.apply(z, self.user_mem.weight, hood).masked_fill(~mask, float("-inf"))  # z . m_v
            p = torch.softmax(q, dim=-1).nan_to_num(0.0)  # a case without neighbours attends to nothing
            o = _WeightedSum.apply(p, self.out_mem.weight, hood)  # sum_v p_v c_v
        o = o.view(b, c, d)
        return self.v(torch.relu(self.u_proj(m_u * e_i) + self.w_proj(o))).squeeze(-1)

    def sparse_tables(self) -> tuple[str, ...]:  # read only by row: the sparse optimizers may update just those
        return ("user_mem.weight", "item_mem.weight", "out_mem.weight")

    def regularization(self, users: Tensor, items: Tensor) -> Tensor:
        if not self.config.reg:
            return torch.zeros((), device=users.device)
        rows = self.user_mem(users).pow(2).sum() + self.out_mem(users).pow(2).sum() + self.item_mem(items).pow(2).sum()
        return self.config.reg * rows / len(users)

    def prepare(self, train: Interactions) -> None:
        self.set_neighbourhood(train)

    def parts(self) -> dict[str, Recommender]:
        """CMN++: a GMF of the same size, pre-trained for the user and item memories."""
        from segue.models.metric_baselines import GMF

        c = self.config
        if not c.pretrain:
            return {}
        return {"gmf": GMF(self.n_users, self.n_items, GMF.Config(factors=c.dim, init_std=c.init_std, reg=c.reg))}

    def assemble(
        self, train: Interactions, parts: dict[str, Recommender], *, seed: int = 0, context: str = "history"
    ) -> None:
        if "gmf" in parts:
            gmf = parts["gmf"]
            with torch.no_grad():
                self.user_mem.weight.copy_(gmf.gmf_user.weight)
                self.item_mem.weight.copy_(gmf.gmf_item.weight)
