"""Implicit ALS (WMF, Hu, Koren & Volinsky 2008) with its half-steps split by rows across torch.distributed ranks.

One half-step solves, for every user ``u`` with items ``I_u`` and confidences ``c_ui = 1 + alpha * r_ui``,

    (Y^T Y + Y_I^T diag(c_u - 1) Y_I + reg * I) x_u = Y_I^T c_u

given the item factors ``Y``: each row's system depends only on that row's interactions, ``Y`` and the Gram
matrix ``Y^T Y``. So the user rows split into N contiguous blocks, one per rank; every rank holds the whole
``Y`` (and computes the same Gram matrix from it), solves its block, and one ``all_gather`` of the blocks gives
every rank the whole ``X`` for the item half-step, which splits the same way over the item rows. Per
iteration that is two all-gathers of the factor tables, (users + items) x factors x 4 bytes, against
``O(nnz * f^2 + rows * f^3)`` of solving: the solves dominate as long as rows have a few interactions each.

Rows solve independently and the Gram matrix is computed from the full table on every rank, so a run over N
ranks gives the factors of one process to float rounding of the batched solves (the test checks 1e-5).
This is the "replicate the other side" variant of Spark MLlib's blocked ALS (which also sends each block only
the factor rows it needs, its in/out links); ``implicit`` (what :class:`~segue.models.mf.WMF` calls) runs the
same row solves in parallel over the cores of one machine (OpenMP, or CUDA), with conjugate-gradient steps
instead of exact solves.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp
import torch
import torch.distributed as dist

from segue.training.distributed import world

if TYPE_CHECKING:
    from segue.data.interactions import Interactions

_CHUNK_NNZ = 16_384  # outer products (nnz x f x f floats) built at once


def solve_rows(m: sp.csr_matrix, other: torch.Tensor, reg: float, alpha: float) -> torch.Tensor:
    """The least-squares factors of every row of ``m`` (weights r) given the other side's factors ``other``."""
    f = other.shape[1]
    gram = other.T @ other
    out = torch.zeros(m.shape[0], f, dtype=other.dtype)
    eye = reg * torch.eye(f, dtype=other.dtype)
    n_per_row = np.diff(m.indptr)
    start = 0
    while start < m.shape[0]:
        # rows whose interactions fit in one chunk (at least one row)
        stop = max(start + 1, int(np.searchsorted(m.indptr, m.indptr[start] + _CHUNK_NNZ, side="right")) - 1)
        stop = min(stop, m.shape[0])
        lo, hi = m.indptr[start], m.indptr[stop]
        cols = torch.as_tensor(m.indices[lo:hi], dtype=torch.long)
        conf = 1.0 + alpha * torch.as_tensor(m.data[lo:hi], dtype=other.dtype)
        rows = torch.as_tensor(np.repeat(np.arange(stop - start), n_per_row[start:stop]), dtype=torch.long)
        y = other[cols]  # (nnz, f)
        a = (gram + eye).expand(stop - start, f, f).clone()
        a.index_add_(0, rows, (conf - 1)[:, None, None] * y[:, :, None] * y[:, None, :])
        b = torch.zeros(stop - start, f, dtype=other.dtype).index_add_(0, rows, conf[:, None] * y)
        out[start:stop] = torch.linalg.solve(a, b)
        start = stop
    return out


def _half_step(m: sp.csr_matrix, other: torch.Tensor, reg: float, alpha: float) -> torch.Tensor:
    """One side's factors, its rows split across the ranks and gathered again (all rows in one process)."""
    w = world()
    if w is None:
        return solve_rows(m, other, reg, alpha)
    n = m.shape[0]
    lo, hi = w.share(n)
    mine = solve_rows(m[lo:hi], other, reg, alpha)
    width = -(-n // w.size) + 1
    buf = torch.zeros(width, other.shape[1], dtype=other.dtype)
    buf[: hi - lo] = mine
    parts = [torch.zeros_like(buf) for _ in range(w.size)]
    dist.all_gather(parts, buf.to(w.device))
    return torch.cat([parts[r][: w.share(n, r)[1] - w.share(n, r)[0]].cpu() for r in range(w.size)])


def fit_als(
    train: Interactions,
    *,
    factors: int = 64,
    reg: float = 0.01,
    alpha: float = 1.0,
    iterations: int = 15,
    seed: int = 0,
    use_weights: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """User and item factors (row 0 = padding, zero) by implicit ALS; split across ranks under torch.distributed."""
    x = train.to_csr("weight" if (use_weights and train.has_weight) else None).astype(np.float32)
    x.sort_indices()
    xt = x.T.tocsr()
    gen = torch.Generator().manual_seed(seed)
    items = torch.randn(x.shape[1], factors, generator=gen) * 0.01
    items[0] = 0
    users = torch.zeros(x.shape[0], factors)
    for _ in range(iterations):
        users = _half_step(x, items, reg, alpha)
        users[0] = 0
        items = _half_step(xt, users, reg, alpha)
        items[0] = 0
    return users, items


__all__ = ["fit_als", "solve_rows"]
