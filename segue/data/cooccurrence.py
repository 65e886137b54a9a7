"""Co-occurrence counts and SPPMI matrices (RME, Section 4.2, Eqs. 4.2-4.3), all scipy.sparse.

A *document* matrix ``docs`` has one row per context list (a user's liked items, a user's
disliked items, or an item's users) and one column per token; its non-zeros mark membership.
Every ordered pair ``(i, j)``, ``i != j``, of tokens of one list is one (word, context) pair
("greedy context": the window is the whole list, timestamps are ignored). Counting all such
pairs over all lists gives the symmetric count matrix ``#(i, j) = (D^T D)_ij`` (zero diagonal),
which is what ``itertools.permutations(list, 2)`` over every list would count, but computed as
one sparse product; nothing dense of size tokens x tokens is ever built.

``PMI(i, j) = log(#(i, j) |D| / (#(i) #(j)))`` with ``|D|`` the number of pairs and
``#(i)`` the row sum; ``SPPMI = max(PMI - log s, 0)`` keeps only positive entries, so the
result stays sparse. Shapes follow the input: with segue's padded matrices (row and column 0
for padding) the padding row and column of the result are empty.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from segue.errors import ConfigError, DataError

#: Sampling seed of the authors' code for capped lists ([CODE-HINT] of the RME spec, R.2).
COOC_SEED = 98765


def cap_lists(docs: sp.spmatrix, cap: int | None, seed: int = COOC_SEED) -> sp.csr_matrix:
    """Binary copy of ``docs`` where every row with more than ``cap`` entries keeps a random ``cap + 1`` of them.

    This follows the authors' code ([CODE-HINT], spec R.2): a list longer than 200 items is
    replaced by a random sample of 201 items (100 / 101 for user lists). ``cap=None`` keeps
    every list whole. Vectorised: one random key per entry, ranked within its row.
    """
    m = sp.csr_matrix(docs, dtype=np.float64, copy=True)
    m.sum_duplicates()
    m.eliminate_zeros()
    m.data[:] = 1.0
    if cap is None:
        return m
    if cap < 1:
        raise ConfigError(f"The co-occurrence list cap must be a positive integer or None, got {cap!r}.")
    lens = np.diff(m.indptr)
    if lens.max(initial=0) <= cap:
        return m
    rng = np.random.default_rng(seed)
    rows = np.repeat(np.arange(m.shape[0]), lens)
    order = np.lexsort((rng.random(m.nnz), rows))  # entries grouped by row, random order inside
    pos = np.empty(m.nnz, dtype=np.int64)
    pos[order] = np.arange(m.nnz) - np.repeat(m.indptr[:-1], lens)
    keep = (lens[rows] <= cap) | (pos < cap + 1)
    out = sp.csr_matrix((m.data[keep], (rows[keep], m.indices[keep])), shape=m.shape)
    out.sort_indices()
    return out


def cooccurrence(docs: sp.spmatrix, cap: int | None = None, seed: int = COOC_SEED) -> sp.csr_matrix:
    """Token x token counts ``#(i, j)`` of ordered pairs of distinct tokens sharing a list (symmetric, zero diagonal)."""
    d = cap_lists(docs, cap, seed)
    counts = (d.T @ d).tocsr()
    counts.setdiag(0)
    counts.eliminate_zeros()
    counts.sort_indices()
    return counts


def sppmi(counts: sp.spmatrix, shift: float = 1.0) -> sp.csr_matrix:
    """Shifted positive PMI of a co-occurrence count matrix (Eqs. 4.2-4.3), only positive entries stored.

    ``#(i)`` is the row sum and ``#(j)`` the column sum (equal for the symmetric counts of
    :func:`cooccurrence`); ``|D|`` is the total count. ``shift`` is ``s`` (the SGNS number of
    negative samples); the spec's [AMBIG] default is ``s = 1``, i.e. ``max(PMI, 0)``.
    """
    if not np.isfinite(shift) or shift <= 0:
        raise ConfigError(f"The SPPMI shift s must be a positive number, got {shift!r}.")
    c = sp.coo_matrix(counts, dtype=np.float64)
    if c.nnz and (c.data < 0).any():
        raise DataError("Co-occurrence counts must be non-negative.")
    c.sum_duplicates()
    c.eliminate_zeros()
    total = float(c.data.sum())
    if total == 0:
        return sp.csr_matrix(c.shape, dtype=np.float64)
    row_sum = np.asarray(c.sum(axis=1)).ravel()
    col_sum = np.asarray(c.sum(axis=0)).ravel()
    pmi = np.log(c.data) + np.log(total) - np.log(row_sum[c.row]) - np.log(col_sum[c.col])
    val = pmi - np.log(shift)
    keep = val > 0
    out = sp.csr_matrix((val[keep], (c.row[keep], c.col[keep])), shape=c.shape)
    out.sort_indices()
    return out


def sppmi_matrix(
    docs: sp.spmatrix, *, shift: float = 1.0, cap: int | None = None, seed: int = COOC_SEED
) -> sp.csr_matrix:
    """``sppmi(cooccurrence(docs, cap, seed), shift)``: the SPPMI matrix of the columns of ``docs``.

    Co-liked items (X): ``docs`` = the user x item liked matrix. Co-disliked items (Y): the user
    x item disliked matrix. Users (Z): the *transposed* liked matrix (item x user), so that two
    users co-occur when they liked the same item.
    """
    return sppmi(cooccurrence(docs, cap, seed), shift)
