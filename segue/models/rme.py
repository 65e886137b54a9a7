"""RME: matrix factorisation regularised by co-liked, co-disliked and user embeddings (Tran et al., CIKM'18).

Section 4.2 of the dissertation; the implementation spec is Part R of
``seed-000-001-ch4-spec.md``. One class, :class:`RME`, fits the joint objective (Eq. 4.4)

.. code-block:: text

    L = 1/2 sum_{u,p} w_up (M_up - a_u.b_p)^2                          (WMF, all m x n cells)
      + 1/2 w sum_{X_pi != 0} (X_pi - b_p.g_i - bx_p - cx_i [- tx])^2    (LIE, co-liked SPPMI X)
      + 1/2 w sum_{Y_pi != 0} (Y_pi - b_p.d_i - dy_p - ey_i [- ty])^2    (DIE, co-disliked SPPMI Y)
      + 1/2 w sum_{Z_uj != 0} (Z_uj - a_u.t_j - fz_u - gz_j [- tz])^2    (UE,  user SPPMI Z)
      + 1/2 l1 (|A|^2 + |B|^2) + 1/2 l2 (|G|^2 + |D|^2 + |T|^2)

with ``w_up = c0`` on unobserved cells and ``c1`` on liked ones, by vector-wise ALS
(Eqs. 4.5-4.8, Algorithm 1): every block update is an exact minimiser, computed for all rows
at once as batched ``k x k`` solves (Cholesky, LU as the fallback). The Gram sums are one matrix
product per term: the packed outer products ``v_j v_j^T`` of the fixed side, multiplied by the
(sparse, or densified when dense enough) weight matrix of the term. The WMF term uses Hu et
al.'s ``c0 P^T P`` trick, so the all-cells sum never materialises. The score is ``a_u.b_p``
(no bias); SPPMI biases live only in their terms.

Switches of the same model (spec R.9):

==========  ====================================================  ===============
registry    terms                                                 switches
==========  ====================================================  ===============
``rme``     WMF + LIE + DIE + UE                                  all on
``u-rme``   WMF + LIE + UE (RME - DIE)                            ``use_disliked=False``
``i-rme``   WMF + LIE + DIE (RME - UE)                            ``use_users=False``
``cofactor``  WMF + LIE (Liang et al.)                            LIE only
``wmf-als`` WMF (Hu et al.), segue's own ALS                      all three off
==========  ====================================================  ===============

``separate=True`` is the separate-learning ablation (R.9): item factors and item contexts are
first fitted on the LIE and DIE terms alone, then frozen while the user side (WMF + UE) is
fitted.

Disliked items: explicit ones are passed to :meth:`RME.fit` as ``dislikes`` (the <= 2-star
ratings of :func:`segue.data.splits_rme.movielens_split`); without them, a model that uses
the DIE term infers them with Algorithm 2 (R.5): fit WMF, then alternate drawing
``int(tau * |I_u|)`` items per user from ``softmax(-scores)`` over the unobserved items
(E-step) and refitting RME on the SPPMI of the drawn lists (M-step), while validation
NDCG@100 improves.

Spec defaults followed ([AMBIG] -> choose): s = 1, c0 = 1, c1 = 10, w = 1, static
l1 = l2 = ``reg`` unless ``reg_embed`` is given, factors ~ N(0, 0.01^2) and biases 0, at most 50
sweeps with early stopping at the first sweep that does not improve validation NDCG@100
(the previous parameters are kept), ``ns = int(tau * count(u))`` with duplicates collapsed,
Algorithm 2 compared on validation NDCG@100. [CODE-HINT] options, off by default unless
stated: ``sppmi_item_weight`` (the code's c1 weight on both SPPMI terms of Eq. 4.6 only),
``intercept`` (a global intercept per SPPMI term), list caps 200/100 with seed 98765 (on, as
the code), bias update order b, c, (tx), d, e, (ty), f, g, (tz).

Deviations: the ALS keeps the padding row and column of segue's matrices (id 0); they have
no interactions and no co-occurrences, so their factors solve to exactly zero and change
nothing. Gram sums run in ``dtype`` (float32 by default, float64 for exact checks).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from segue.data.cooccurrence import COOC_SEED, sppmi_matrix
from segue.errors import ConfigError, DataError
from segue.models.base import register
from segue.models.mf import _DotModel

if TYPE_CHECKING:
    from segue.data.interactions import Interactions
    from segue.models.base import Monitor

#: A row block of a weight matrix is densified for the Gram product above this density
#: (a dense GEMM beats scipy's sparse x dense product by ~15x per flop on one core).
DENSE_THRESHOLD = 0.06
#: Default memory budget, in array elements, for one block of Gram products or outer products.
BLOCK_ELEMS = 1 << 23


# --------------------------------------------------------------------------------------------
# data and state
# --------------------------------------------------------------------------------------------


@dataclass
class RMEMatrices:
    """The matrices one fit factorises, with their transposes and binary patterns (all CSR).

    ``M`` is the binary user x item liked matrix (padded, shape ``(m + 1, n + 1)``); ``X``, ``Y``
    (item x item) and ``Z`` (user x user) are SPPMI matrices, or ``None`` when the term is off.
    """

    M: sp.csr_matrix
    X: sp.csr_matrix | None = None
    Y: sp.csr_matrix | None = None
    Z: sp.csr_matrix | None = None

    def __post_init__(self) -> None:
        self.M = _binary(self.M)
        self.MT = self.M.T.tocsr()
        m, n = self.M.shape
        for name, mat, size in (("X", self.X, n), ("Y", self.Y, n), ("Z", self.Z, m)):
            if mat is not None and mat.shape != (size, size):
                raise DataError(f"The SPPMI matrix {name} has shape {mat.shape} but needs ({size}, {size}).")
        self.X = None if self.X is None else _csr(self.X)
        self.Y = None if self.Y is None else _csr(self.Y)
        self.Z = None if self.Z is None else _csr(self.Z)
        self.XT = None if self.X is None else _csr(self.X.T)
        self.YT = None if self.Y is None else _csr(self.Y.T)
        self.ZT = None if self.Z is None else _csr(self.Z.T)

    @property
    def n_rows(self) -> int:
        return self.M.shape[0]

    @property
    def n_cols(self) -> int:
        return self.M.shape[1]


def _csr(m: sp.spmatrix) -> sp.csr_matrix:
    out = sp.csr_matrix(m, dtype=np.float64, copy=True)
    out.sum_duplicates()
    out.eliminate_zeros()
    out.sort_indices()
    return out


def _binary(m: sp.spmatrix) -> sp.csr_matrix:
    out = _csr(m)
    out.data[:] = 1.0
    return out


def _rows_of(m: sp.csr_matrix) -> np.ndarray:
    return np.repeat(np.arange(m.shape[0]), np.diff(m.indptr))


@dataclass
class RMEState:
    """All parameters of Eq. 4.4 (numpy arrays, padded rows included)."""

    U: np.ndarray  # alpha, (m + 1, k)
    P: np.ndarray  # beta, (n + 1, k)
    G: np.ndarray  # gamma, co-liked contexts (n + 1, k)
    D: np.ndarray  # delta, co-disliked contexts (n + 1, k)
    T: np.ndarray  # theta, user contexts (m + 1, k)
    b: np.ndarray  # co-liked item bias (n + 1,)
    c: np.ndarray  # co-liked context bias (n + 1,)
    d: np.ndarray  # co-disliked item bias (n + 1,)
    e: np.ndarray  # co-disliked context bias (n + 1,)
    f: np.ndarray  # user bias (m + 1,)
    g: np.ndarray  # user-context bias (m + 1,)
    tx: float = 0.0
    ty: float = 0.0
    tz: float = 0.0

    def copy(self) -> RMEState:
        return RMEState(**{k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in vars(self).items()})

    @classmethod
    def init(cls, n_rows: int, n_cols: int, k: int, *, std: float, seed: int, dtype: Any) -> RMEState:
        """Factors ~ N(0, std^2) drawn in the order U, P, G, D, T (padding rows zero), biases 0."""
        rng = np.random.default_rng(seed)

        def draw(n: int) -> np.ndarray:
            a = (rng.standard_normal((n, k)) * std).astype(dtype)
            a[0] = 0.0
            return a

        U, P = draw(n_rows), draw(n_cols)
        G, D, T = draw(n_cols), draw(n_cols), draw(n_rows)
        z_cols, z_rows = np.zeros(n_cols, dtype), np.zeros(n_rows, dtype)
        return cls(U, P, G, D, T, z_cols, z_cols.copy(), z_cols.copy(), z_cols.copy(), z_rows, z_rows.copy())


# --------------------------------------------------------------------------------------------
# the ALS engine
# --------------------------------------------------------------------------------------------


def _row_dots(A: np.ndarray, B: np.ndarray, rows: np.ndarray, cols: np.ndarray, chunk: int) -> np.ndarray:
    """``sum_k A[rows, k] * B[cols, k]`` for every (row, col) pair, in chunks."""
    out = np.empty(len(rows), dtype=np.float64)
    for s in range(0, len(rows), chunk):
        r, c = rows[s : s + chunk], cols[s : s + chunk]
        out[s : s + chunk] = np.einsum("ij,ij->i", A[r], B[c], dtype=np.float64)
    return out


class RMESolver:
    """Vector-wise ALS for Eq. 4.4 on fixed matrices (one block update per method, Algorithm 1).

    Weight patterns denser than :data:`DENSE_THRESHOLD` are kept as dense tensors (when they
    fit in ``4 * block_elems`` elements), so their Gram products are single GEMMs.
    """

    def __init__(
        self,
        mats: RMEMatrices,
        *,
        k: int,
        reg: float,
        reg_embed: float,
        c0: float = 1.0,
        c1: float = 10.0,
        w: float = 1.0,
        item_w: float | None = None,
        intercept: bool = False,
        dtype: Any = np.float32,
        block_elems: int = BLOCK_ELEMS,
    ) -> None:
        self.m = mats
        self.k = int(k)
        self.reg, self.reg_embed = float(reg), float(reg_embed)
        self.c0, self.c1, self.w = float(c0), float(c1), float(w)
        self.item_w = self.w if item_w is None else float(item_w)
        self.intercept = intercept
        self.dtype = np.dtype(dtype)
        self.tdtype = torch.float64 if self.dtype == np.float64 else torch.float32
        self.block_elems = int(block_elems)
        iu = np.triu_indices(self.k)
        self.iu = (torch.from_numpy(iu[0]), torch.from_numpy(iu[1]))
        packed_of = np.zeros((self.k, self.k), dtype=np.int64)
        packed_of[iu] = np.arange(len(iu[0]))
        packed_of[(iu[1], iu[0])] = np.arange(len(iu[0]))
        self._unpack = torch.from_numpy(packed_of.ravel())  # full (k*k) -> packed column
        self._patterns: dict[str, sp.csr_matrix] = {}
        self._dense: dict[str, torch.Tensor] = {}
        for name in ("M", "MT", "X", "XT", "Y", "YT", "Z", "ZT"):
            mat = getattr(mats, name)
            if mat is None:
                continue
            pat = _binary(mat).astype(self.dtype)
            self._patterns[name] = pat
            if self._is_dense(pat) and pat.shape[0] * pat.shape[1] <= 4 * self.block_elems:
                self._dense[name] = torch.from_numpy(pat.toarray())
        self._coo: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for name in ("M", "X", "Y", "Z"):
            mat = getattr(mats, name)
            if mat is not None:
                self._coo[name] = (_rows_of(mat), mat.indices.astype(np.int64))

    # -- linear algebra helpers ----------------------------------------------------------------
    @staticmethod
    def _is_dense(m: sp.csr_matrix) -> bool:
        return m.nnz > DENSE_THRESHOLD * m.shape[0] * m.shape[1]

    def _grams(self, terms: list[tuple[float, str, np.ndarray]], n_rows: int) -> torch.Tensor:
        """Packed ``sum_terms scale * sum_j S_rj v_j v_j^T`` for every row r: (n_rows, k(k+1)/2).

        ``S`` is the binary pattern named in the term; ``v_j v_j^T`` is packed to its upper
        triangle, so each term is one (sparse or dense) matrix product with ``k(k+1)/2`` columns.
        """
        i0, i1 = self.iu
        n_pairs = len(i0)
        out = torch.zeros((n_rows, n_pairs), dtype=self.tdtype)
        for scale, name, V in terms:
            S = self._patterns[name]
            if scale == 0 or S.nnz == 0:
                continue
            Vt = torch.from_numpy(np.ascontiguousarray(V, dtype=self.dtype))
            n_src = V.shape[0]
            col_chunk = max(1, min(n_pairs, self.block_elems // max(1, n_src)))
            dense = self._dense.get(name)
            for c0 in range(0, n_pairs, col_chunk):
                c1 = min(n_pairs, c0 + col_chunk)
                outer = Vt[:, i0[c0:c1]] * Vt[:, i1[c0:c1]]  # (n_src, c1 - c0)
                if dense is not None:
                    out[:, c0:c1].addmm_(dense, outer, alpha=scale)
                elif self._is_dense(S):
                    step = max(1, self.block_elems // max(1, n_src))
                    for r0 in range(0, n_rows, step):
                        block = torch.from_numpy(S[r0 : r0 + step].toarray())
                        out[r0 : r0 + step, c0:c1].addmm_(block, outer, alpha=scale)
                else:
                    out[:, c0:c1].add_(torch.from_numpy(np.asarray(S @ outer.numpy())), alpha=scale)
        return out

    def _solve(self, base: np.ndarray, packed: torch.Tensor, rhs: np.ndarray) -> np.ndarray:
        """Solve ``(base + unpack(packed_r)) x_r = rhs_r`` for every row r (batched k x k solves).

        Cholesky (the systems are symmetric positive definite for reg > 0), with an LU solve as
        the fallback for a block where a factorisation fails numerically.
        """
        n_rows, k = rhs.shape
        out = np.empty((n_rows, k), dtype=self.dtype)
        chunk = max(1, self.block_elems // (k * k))
        base_t = torch.from_numpy(np.ascontiguousarray(base, dtype=self.dtype))
        rhs_t = torch.from_numpy(np.ascontiguousarray(rhs, dtype=self.dtype))
        for s in range(0, n_rows, chunk):
            A = packed[s : s + chunk].index_select(1, self._unpack).view(-1, k, k) + base_t
            b = rhs_t[s : s + chunk].unsqueeze(-1)
            L, info = torch.linalg.cholesky_ex(A)
            if bool((info != 0).any()):
                x = torch.linalg.solve(A, b)
            else:
                x = torch.cholesky_solve(b, L)
            out[s : s + chunk] = x.squeeze(-1).numpy()
        return out

    def _dots(self, name: str, A: np.ndarray, B: np.ndarray) -> np.ndarray:
        """``A_r . B_c`` for every stored (r, c) of matrix ``name`` (float64)."""
        rows, cols = self._coo[name]
        if name in self._dense:  # dense enough: one GEMM, then gather
            full = (
                torch.from_numpy(np.ascontiguousarray(A, self.dtype))
                @ torch.from_numpy(np.ascontiguousarray(B, self.dtype)).T
            )
            return full.numpy()[rows, cols].astype(np.float64)
        return _row_dots(A, B, rows, cols, max(1, self.block_elems // self.k))

    def _residual(
        self, name: str, bias_row: np.ndarray, bias_col: np.ndarray, t: float, transposed: bool
    ) -> sp.csr_matrix:
        """The SPPMI matrix ``name`` with each stored value minus its two biases (and intercept).

        Entry (p, i) of X holds ``X_pi - b_p - c_i - t``; the transposed version holds the same
        value at (i, p), so its row bias is ``c`` and its column bias ``b``.
        """
        mat = getattr(self.m, name + ("T" if transposed else ""))
        rows, cols = _rows_of(mat), mat.indices
        if transposed:
            data = mat.data - bias_row[cols] - bias_col[rows] - t
        else:
            data = mat.data - bias_row[rows] - bias_col[cols] - t
        return sp.csr_matrix((data.astype(self.dtype), mat.indices, mat.indptr), shape=mat.shape)

    def _eye(self, lam: float) -> np.ndarray:
        return lam * np.eye(self.k, dtype=self.dtype)

    # -- block updates (Eqs. 4.5-4.8) ---------------------------------------------------------
    def update_users(self, s: RMEState) -> None:
        """Eq. 4.5: every alpha_u at once, with P, theta and the user biases fixed."""
        M = self.m.M
        base = self.c0 * (s.P.T @ s.P) + self._eye(self.reg)
        terms = [(self.c1 - self.c0, "M", s.P)]
        rhs = self.c1 * np.asarray(self._patterns["M"] @ s.P)
        if self.m.Z is not None:
            terms.append((self.w, "Z", s.T))
            rhs += self.w * np.asarray(self._residual("Z", s.f, s.g, s.tz, False) @ s.T)
        s.U = self._solve(base, self._grams(terms, M.shape[0]), rhs)

    def update_items(self, s: RMEState, wmf: bool = True) -> None:
        """Eq. 4.6: every beta_p at once, with U, gamma, delta and the item biases fixed.

        ``wmf=False`` drops the WMF term (phase 1 of the separate-learning ablation).
        """
        MT = self.m.MT
        k, n = self.k, MT.shape[0]
        base = self._eye(self.reg)
        terms: list[tuple[float, str, np.ndarray]] = []
        rhs = np.zeros((n, k), dtype=self.dtype)
        if wmf:
            base = base + self.c0 * (s.U.T @ s.U)
            terms.append((self.c1 - self.c0, "MT", s.U))
            rhs += self.c1 * np.asarray(self._patterns["MT"] @ s.U)
        if self.m.X is not None:
            terms.append((self.item_w, "X", s.G))
            rhs += self.item_w * np.asarray(self._residual("X", s.b, s.c, s.tx, False) @ s.G)
        if self.m.Y is not None:
            terms.append((self.item_w, "Y", s.D))
            rhs += self.item_w * np.asarray(self._residual("Y", s.d, s.e, s.ty, False) @ s.D)
        s.P = self._solve(base, self._grams(terms, n), rhs)

    def _context(self, name: str, V: np.ndarray, bias_row: np.ndarray, bias_col: np.ndarray, t: float) -> np.ndarray:
        n = self._patterns[name + "T"].shape[0]
        rhs = self.w * np.asarray(self._residual(name, bias_row, bias_col, t, True) @ V)
        return self._solve(self._eye(self.reg_embed), self._grams([(self.w, name + "T", V)], n), rhs)

    def update_contexts(self, s: RMEState) -> None:
        """Eq. 4.7: gamma, delta and theta (each an exact minimiser given the rest)."""
        if self.m.X is not None:
            s.G = self._context("X", s.P, s.b, s.c, s.tx)
        if self.m.Y is not None:
            s.D = self._context("Y", s.P, s.d, s.e, s.ty)
        if self.m.Z is not None:
            s.T = self._context("Z", s.U, s.f, s.g, s.tz)

    def _bias_pair(
        self, name: str, A: np.ndarray, B: np.ndarray, row_b: np.ndarray, col_b: np.ndarray, t: float
    ) -> tuple[np.ndarray, np.ndarray, float]:
        mat = getattr(self.m, name)
        rows, cols = self._coo[name]
        n = mat.shape[0]
        base = mat.data - self._dots(name, A, B)
        n_row = np.bincount(rows, minlength=n)
        n_col = np.bincount(cols, minlength=n)
        row_b = np.bincount(rows, weights=base - col_b[cols] - t, minlength=n) / np.maximum(n_row, 1)
        col_b = np.bincount(cols, weights=base - row_b[rows] - t, minlength=n) / np.maximum(n_col, 1)
        if self.intercept and len(base):
            t = float(np.mean(base - row_b[rows] - col_b[cols]))
        return row_b.astype(self.dtype), col_b.astype(self.dtype), t

    def update_biases(self, s: RMEState) -> None:
        """Eq. 4.8, in the code's order b, c, (tx), d, e, (ty), f, g, (tz); empty rows get 0."""
        if self.m.X is not None:
            s.b, s.c, s.tx = self._bias_pair("X", s.P, s.G, s.b, s.c, s.tx)
        if self.m.Y is not None:
            s.d, s.e, s.ty = self._bias_pair("Y", s.P, s.D, s.d, s.e, s.ty)
        if self.m.Z is not None:
            s.f, s.g, s.tz = self._bias_pair("Z", s.U, s.T, s.f, s.g, s.tz)

    def sweep(self, s: RMEState) -> None:
        """One iteration of Algorithm 1: users, items, contexts, biases."""
        self.update_users(s)
        self.update_items(s)
        self.update_contexts(s)
        self.update_biases(s)

    # -- the objective ---------------------------------------------------------------------
    def objective(self, s: RMEState, *, wmf: bool = True) -> float:
        """Eq. 4.4 at ``s`` (float64); ``wmf=False`` leaves out the WMF term and the user regulariser."""
        U, P = s.U.astype(np.float64), s.P.astype(np.float64)
        total = 0.0
        if wmf:
            rows, cols = self._coo["M"]
            sc = _row_dots(U, P, rows, cols, 1 << 16)  # exact float64 dots for the objective
            total += 0.5 * self.c0 * float(np.sum((U.T @ U) * (P.T @ P)))
            total += 0.5 * float(np.sum(self.c1 * (1.0 - sc) ** 2 - self.c0 * sc**2))
            total += 0.5 * self.reg * float(np.sum(U**2))
        total += 0.5 * self.reg * float(np.sum(P**2))
        for name, A, B, rb, cb, t, ctx, on_items in (
            ("X", P, s.G, s.b, s.c, s.tx, s.G, True),
            ("Y", P, s.D, s.d, s.e, s.ty, s.D, True),
            ("Z", U, s.T, s.f, s.g, s.tz, s.T, False),
        ):
            mat = getattr(self.m, name)
            if mat is None or (not wmf and not on_items):
                continue
            rows, cols = self._coo[name]
            r = mat.data - _row_dots(A, B.astype(np.float64), rows, cols, 1 << 16) - rb[rows] - cb[cols] - t
            total += 0.5 * self.w * float(np.sum(r**2))
            total += 0.5 * self.reg_embed * float(np.sum(ctx.astype(np.float64) ** 2))
        return total


def n_dislike_draws(counts: np.ndarray, tau: float) -> np.ndarray:
    """``ns = int(tau * count(u))`` draws per user (R.5 [AMBIG] default); ``1e-9`` absorbs float error (0.7 * 10)."""
    return np.floor(tau * np.asarray(counts, dtype=np.float64) + 1e-9).astype(np.int64)


def dislike_probabilities(scores: torch.Tensor, observed: sp.spmatrix) -> torch.Tensor:
    """Eq. 4.9: ``Pr(u)_i = exp(-r_u[i]) / sum_j exp(-r_u[j])`` with observed items (and padding column 0) at 0.

    ``scores`` is (B, n + 1), ``observed`` the matching (B, n + 1) rows of the liked matrix;
    computed stably as ``softmax(-r)`` with observed items at ``r = +inf``.
    """
    logits = -scores.to(torch.float64)
    block = sp.coo_matrix(observed)
    if block.shape != tuple(scores.shape):
        raise DataError(f"The observed matrix has shape {block.shape} but the scores {tuple(scores.shape)}.")
    logits[torch.from_numpy(block.row).long(), torch.from_numpy(block.col).long()] = -torch.inf
    logits[:, 0] = -torch.inf
    return torch.softmax(logits, dim=1)


# --------------------------------------------------------------------------------------------
# the recommender
# --------------------------------------------------------------------------------------------


@register
class RME(_DotModel):
    """RME and its variants fitted by vector-wise ALS (see the module docstring for the switches and defaults)."""

    name: ClassVar[str] = "rme"
    trainable: ClassVar[bool] = False
    #: segue.training.fit passes the dev positives as ``dislike_mask`` (Algorithm 2 never draws them)
    masks_valid_items: ClassVar[bool] = True

    @dataclass
    class Config:
        factors: int = 40  # k
        reg: float = 1.0  # lambda (static), or lambda_1 for alpha and beta
        reg_embed: float | None = None  # lambda_2 for gamma, delta, theta; None = reg (static setting)
        c0: float = 1.0  # confidence of unobserved cells (l)
        c1: float = 10.0  # confidence of liked cells (l (1 + phi))
        w: float = 1.0  # weight of every SPPMI cell, w(+p) = w(-p) = w(u)
        use_liked: bool = True  # LIE term, co-liked SPPMI X
        use_disliked: bool = True  # DIE term, co-disliked SPPMI Y
        use_users: bool = True  # UE term, user SPPMI Z
        separate: bool = False  # separate-learning ablation
        shift: float = 1.0  # SPPMI shift s
        item_cap: int | None = 200  # item lists longer than this are sampled to cap + 1
        user_cap: int | None = 100  # user lists (per item) longer than this are sampled to cap + 1
        cooc_seed: int = COOC_SEED
        sppmi_item_weight: float | None = None  # [CODE-HINT] weight of the SPPMI terms in Eq. 4.6 only
        intercept: bool = False  # [CODE-HINT] global intercept per SPPMI term
        init_std: float = 0.01
        max_iter: int = 50
        seed: int = 98765
        dislikes: Literal["auto", "explicit", "infer"] = "auto"
        tau: float = 0.2  # Algorithm 2 negative drawing ratio
        em_iter: int = 10  # Algorithm 2 iterations
        monitor_k: int = 100  # early stopping on validation NDCG@monitor_k
        dtype: Literal["float32", "float64"] = "float32"
        block_elems: int = BLOCK_ELEMS

    def __init__(self, n_users: int, n_items: int, config: Any = None) -> None:
        super().__init__(n_users, n_items, config)
        c = self.config
        checks = (
            (c.factors >= 1, "factors >= 1"),
            (c.reg > 0 and (c.reg_embed is None or c.reg_embed > 0), "reg > 0 and reg_embed > 0"),
            (c.c1 >= c.c0 >= 0, "c1 >= c0 >= 0"),
            (c.w >= 0 and (c.sppmi_item_weight is None or c.sppmi_item_weight >= 0), "w >= 0"),
            (c.shift > 0, "shift > 0"),
            (c.max_iter >= 1 and c.em_iter >= 1, "max_iter >= 1 and em_iter >= 1"),
            (0 < c.tau <= 10, "0 < tau <= 10"),
            (c.init_std > 0, "init_std > 0"),
            (c.dislikes in ("auto", "explicit", "infer"), "dislikes in auto/explicit/infer"),
            (c.dtype in ("float32", "float64"), "dtype float32 or float64"),
            (c.monitor_k >= 1 and c.block_elems >= 1, "monitor_k >= 1 and block_elems >= 1"),
            (not c.separate or c.use_liked or c.use_disliked, "separate learning needs the LIE or DIE term"),
        )
        for ok, what in checks:
            if not ok:
                raise ConfigError(f"{self.name} needs {what}, got {c}.")
        self.user_emb = nn.Embedding(n_users + 1, c.factors)
        self.item_emb = nn.Embedding(n_items + 1, c.factors)
        for emb in (self.user_emb, self.item_emb):
            emb.weight.requires_grad_(False)
            nn.init.zeros_(emb.weight)
        self.state_: RMEState | None = None
        self.solver_: RMESolver | None = None
        self.sweep_seconds: list[float] = []
        self.best_sweep_ = 0
        self.em_kept_: int | None = None

    # -- building blocks ------------------------------------------------------------------------
    def build_matrices(self, liked: sp.csr_matrix, disliked: sp.csr_matrix | None = None) -> RMEMatrices:
        """M, and X / Y / Z from training data only, as the switches ask (R.2)."""
        c = self.config
        M = _binary(liked)
        X = sppmi_matrix(M, shift=c.shift, cap=c.item_cap, seed=c.cooc_seed) if c.use_liked else None
        Y = None
        if c.use_disliked and disliked is not None:
            Y = sppmi_matrix(disliked, shift=c.shift, cap=c.item_cap, seed=c.cooc_seed)
        Z = sppmi_matrix(M.T, shift=c.shift, cap=c.user_cap, seed=c.cooc_seed) if c.use_users else None
        return RMEMatrices(M, X, Y, Z)

    def make_solver(self, mats: RMEMatrices, *, w: float | None = None) -> RMESolver:
        c = self.config
        return RMESolver(
            mats,
            k=c.factors,
            reg=c.reg,
            reg_embed=c.reg if c.reg_embed is None else c.reg_embed,
            c0=c.c0,
            c1=c.c1,
            w=c.w if w is None else w,
            item_w=c.sppmi_item_weight,
            intercept=c.intercept,
            dtype=np.float64 if c.dtype == "float64" else np.float32,
            block_elems=c.block_elems,
        )

    def init_state(self) -> RMEState:
        c = self.config
        dtype = np.float64 if c.dtype == "float64" else np.float32
        return RMEState.init(self.n_users + 1, self.n_items + 1, c.factors, std=c.init_std, seed=c.seed, dtype=dtype)

    def set_state(self, s: RMEState) -> None:
        """Copy U and P into the scoring embeddings."""
        with torch.no_grad():
            self.user_emb.weight.copy_(torch.from_numpy(np.asarray(s.U, dtype=np.float32)))
            self.item_emb.weight.copy_(torch.from_numpy(np.asarray(s.P, dtype=np.float32)))
        self.state_ = s
        self.fitted = True

    def _monitor(self, s: RMEState, monitor: Monitor | None) -> float | None:
        if monitor is None:
            return None
        self.set_state(s)
        return monitor(self, f"NDCG@{self.config.monitor_k}")

    def run_als(
        self,
        solver: RMESolver,
        monitor: Monitor | None,
        log: list[dict[str, Any]],
        stage: str = "als",
        separate: bool | None = None,
    ) -> tuple[RMEState, float | None, int]:
        """Algorithm 1 with early stopping: sweep until validation NDCG@k stops improving (or ``max_iter``).

        Returns the kept state, its validation NDCG@k (None without ``valid``) and its sweep number.
        """
        c = self.config
        separate = c.separate if separate is None else separate
        s = self.init_state()
        best, best_val, best_it = s.copy(), -np.inf, 0
        if separate:
            self._item_phase(solver, s, log, stage)
        for it in range(1, c.max_iter + 1):
            t0 = time.perf_counter()
            if separate:  # phase 2: the user side only, item factors and contexts frozen
                solver.update_users(s)
                if solver.m.Z is not None:
                    s.T = solver._context("Z", s.U, s.f, s.g, s.tz)
                    s.f, s.g, s.tz = solver._bias_pair("Z", s.U, s.T, s.f, s.g, s.tz)
            else:
                solver.sweep(s)
            secs = time.perf_counter() - t0
            self.sweep_seconds.append(secs)
            val = self._monitor(s, monitor)
            log.append({"stage": stage, "epoch": it, "loss": None, f"NDCG@{c.monitor_k}": val, "seconds": secs})
            if val is None:
                best, best_it = s, it
            elif val > best_val:
                best, best_val, best_it = s.copy(), val, it
            else:
                break
        return best, (None if monitor is None else float(best_val)), best_it

    def _item_phase(self, solver: RMESolver, s: RMEState, log: list[dict[str, Any]], stage: str) -> None:
        """Separate learning, phase 1: beta, gamma, delta and item biases on the LIE and DIE terms only."""
        prev = solver.objective(s, wmf=False)
        for it in range(1, self.config.max_iter + 1):
            solver.update_items(s, wmf=False)
            if solver.m.X is not None:
                s.G = solver._context("X", s.P, s.b, s.c, s.tx)
                s.b, s.c, s.tx = solver._bias_pair("X", s.P, s.G, s.b, s.c, s.tx)
            if solver.m.Y is not None:
                s.D = solver._context("Y", s.P, s.d, s.e, s.ty)
                s.d, s.e, s.ty = solver._bias_pair("Y", s.P, s.D, s.d, s.e, s.ty)
            obj = solver.objective(s, wmf=False)
            log.append({"stage": stage + "-items", "epoch": it, "loss": obj})
            if prev - obj <= 1e-6 * max(1.0, abs(prev)):
                break
            prev = obj

    # -- Algorithm 2 -------------------------------------------------------------------------------
    def draw_dislikes(
        self,
        s: RMEState,
        liked: sp.csr_matrix,
        tau: float,
        generator: torch.Generator,
        mask: sp.spmatrix | None = None,
    ) -> sp.csr_matrix:
        """E-step of Algorithm 2: ``int(tau * |I_u|)`` draws per user from ``softmax(-P a_u)`` over unobserved items.

        ``mask`` (same shape as ``liked``) holds further items never drawn, e.g. the validation positives
        ([CODE-HINT] thanhdtran/RME rme_rec.py ``_make_prediction(..., vad_data=vad_data)`` sets the scores of
        training and validation items to +inf before the softmax). The number of draws counts liked items only.
        """
        liked = _binary(liked)
        counts = np.diff(liked.indptr)
        observed = liked
        if mask is not None:
            if mask.shape != liked.shape:
                raise DataError(f"The dislike mask has shape {mask.shape} but the training matrix {liked.shape}.")
            observed = _binary(liked + _binary(sp.csr_matrix(mask)))
        n_obs = np.diff(observed.indptr)
        ns = n_dislike_draws(counts, tau)
        n_rows, n_cols = liked.shape
        P = torch.from_numpy(np.asarray(s.P, dtype=np.float64))
        rows_out, cols_out = [], []
        chunk = max(1, self.config.block_elems // max(1, n_cols))
        for r0 in range(0, n_rows, chunk):
            r1 = min(n_rows, r0 + chunk)
            need = ns[r0:r1]
            if need.max(initial=0) == 0:
                continue
            scores = torch.from_numpy(np.asarray(s.U[r0:r1], dtype=np.float64)) @ P.T
            # a user who liked every item has nothing to draw from
            active = np.flatnonzero((need > 0) & (n_obs[r0:r1] < n_cols - 1))
            if len(active) == 0:
                continue
            probs = dislike_probabilities(scores[torch.from_numpy(active)], observed[r0:r1][active])
            draws = torch.multinomial(probs, int(need[active].max()), replacement=True, generator=generator).numpy()
            keep = np.arange(draws.shape[1])[None, :] < need[active][:, None]
            rows_out.append(np.broadcast_to((r0 + active)[:, None], draws.shape)[keep])
            cols_out.append(draws[keep])
        if not rows_out:
            return sp.csr_matrix(liked.shape, dtype=np.float64)
        r, cc = np.concatenate(rows_out), np.concatenate(cols_out)
        return _binary(sp.csr_matrix((np.ones(len(r)), (r, cc)), shape=liked.shape))

    def _fit_inferred(
        self,
        mats: RMEMatrices,
        monitor: Monitor | None,
        log: list[dict[str, Any]],
        mask: sp.spmatrix | None = None,
    ) -> RMEState:
        """Algorithm 2: WMF first, then E/M steps while validation NDCG@k improves (X and Z built once).

        ``mask``: items never drawn as dislikes besides the training items (the validation positives).
        """
        c = self.config
        wmf_solver = self.make_solver(RMEMatrices(mats.M))
        state, _, _ = self.run_als(wmf_solver, monitor, log, stage="em0-wmf", separate=False)
        gen = torch.Generator().manual_seed(c.seed)
        best: RMEState | None = None
        prev = 0.0
        for em in range(1, c.em_iter + 1):
            disliked = self.draw_dislikes(state, mats.M, c.tau, gen, mask)
            Y = sppmi_matrix(disliked, shift=c.shift, cap=c.item_cap, seed=c.cooc_seed)
            solver = self.make_solver(RMEMatrices(mats.M, mats.X, Y, mats.Z))
            cand, val, it = self.run_als(solver, monitor, log, stage=f"em{em}")
            log.append({"stage": f"em{em}", "epoch": 0, "dislikes": int(disliked.nnz), "Y_nnz": int(Y.nnz)})
            if best is None or val is None or val > prev:
                best, state, prev = cand, cand, (0.0 if val is None else val)
                self.solver_, self.best_sweep_, self.em_kept_ = solver, it, em
                self.dislikes_ = disliked
                if val is None:
                    break
            else:
                break
        assert best is not None
        return best

    # -- fit -----------------------------------------------------------------------------------
    def fit(
        self,
        train: Interactions,
        monitor: Monitor | None = None,
        config: Any = None,
        *,
        dislikes: Interactions | sp.spmatrix | None = None,
        dislike_mask: sp.spmatrix | None = None,
        **kwargs: Any,
    ) -> dict[str, Any]:
        """Fit on the liked ``train`` rows; ``dislikes`` are explicit disliked items (same ids), if known.

        ``dislike_mask`` (users x items, like ``train.to_csr()``): items Algorithm 2 must never draw as
        dislikes besides the training items, the validation positives ([CODE-HINT] thanhdtran/RME
        rme_rec.py ``_make_prediction``). :func:`segue.training.fit` passes the dev set's positives.

        Early stopping uses the dev NDCG@``monitor_k`` that ``monitor`` reports (a full-ranking dev set);
        without ``monitor`` every fit runs ``max_iter`` sweeps.
        """
        from segue.models.baselines import _check_train

        _check_train(self, train)
        c = self.config
        t0 = time.perf_counter()
        liked = train.to_csr()
        if isinstance(dislikes, sp.spmatrix):
            disliked: sp.csr_matrix | None = sp.csr_matrix(dislikes)
        elif dislikes is not None:
            if dislikes.n_users != train.n_users or dislikes.n_items != train.n_items:
                raise DataError("The dislikes must use the same user and item ids as the training data.")
            disliked = dislikes.to_csr()
        else:
            disliked = None
        if disliked is not None and disliked.shape != liked.shape:
            raise DataError(f"The dislike matrix has shape {disliked.shape} but the training matrix {liked.shape}.")
        infer = c.use_disliked and (c.dislikes == "infer" or (c.dislikes == "auto" and disliked is None))
        if c.use_disliked and c.dislikes == "explicit" and disliked is None:
            raise ConfigError(f"{self.name} was asked for explicit dislikes but fit() received none.")
        self.sweep_seconds = []
        log: list[dict[str, Any]] = []
        mats = self.build_matrices(liked, None if infer else disliked)
        if infer:
            best = self._fit_inferred(mats, monitor, log, dislike_mask)
        else:
            self.solver_ = self.make_solver(mats)
            best, _, self.best_sweep_ = self.run_als(self.solver_, monitor, log)
        self.set_state(best)
        history: dict[str, Any] = {"epochs": log, "best_epoch": self.best_sweep_}
        if monitor is not None:
            history["monitor"] = f"NDCG@{c.monitor_k}"
            history["best_value"] = self._monitor(best, monitor)
            history["stopped_early"] = self.best_sweep_ < c.max_iter
        self.fit_seconds_ = time.perf_counter() - t0
        return history


@register
class URME(RME):
    """U_RME = RME without the co-disliked term (WMF + LIE + UE)."""

    name: ClassVar[str] = "u-rme"

    @dataclass
    class Config(RME.Config):
        use_disliked: bool = False


@register
class IRME(RME):
    """I_RME = RME without the user term (WMF + LIE + DIE)."""

    name: ClassVar[str] = "i-rme"

    @dataclass
    class Config(RME.Config):
        use_users: bool = False


@register
class Cofactor(RME):
    """Cofactor (Liang et al., RecSys'16) = WMF + the co-liked SPPMI term, i.e. RME with only LIE."""

    name: ClassVar[str] = "cofactor"

    @dataclass
    class Config(RME.Config):
        use_disliked: bool = False
        use_users: bool = False


@register
class WMFALS(RME):
    """WMF (Hu, Koren, Volinsky 2008) by segue's own vectorised ALS: RME with every SPPMI term off.

    Registered as ``wmf-als`` beside the ``implicit``-backed ``wmf``. Confidence ``c0`` on
    unobserved and ``c1`` on liked cells; ``implicit``'s ALS with ``alpha = c1 / c0`` and
    ``regularization = reg / c0`` minimises the same objective (scaled by ``c0``).
    """

    name: ClassVar[str] = "wmf-als"

    @dataclass
    class Config(RME.Config):
        use_liked: bool = False
        use_disliked: bool = False
        use_users: bool = False
