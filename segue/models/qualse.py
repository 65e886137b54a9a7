"""Quaternion long/short-term sequential recommenders (spec Part B, Section 5.3).

All read ``context.history`` (B, w), the user's most recent items before the target,
oldest first, left-padded with 0 (``w`` = :meth:`history_length`), and score candidates
"higher is better". A quaternion vector of size ``d`` is stored as ``[r|a|b|c]`` (see
:mod:`segue.models.quaternion`); ``d`` must be a multiple of 4.

``quale`` - long-term encoder (B.3, Eqs. 5.29-5.32)
    ``L(u)`` = the ``l`` most recent history items (the window). Personalised quaternion
    self-attention with the user context ``q_u`` from ``U(long)``: logits ``p_k (x) q_u / sqrt(d)``
    reduced to 4 per item by summing each component over its ``d/4`` positions ([AMBIG]
    default; ``per_dim=True`` is the per-dimension alternative), masked component softmax,
    ``u(long) = sum_k alpha_k x p_k``; score ``(1/4) [u(long)].[p(long)_j]``. The attention does
    not depend on the target.
``quase`` - short-term encoder (B.4, Eqs. 5.33-5.36)
    ``S(u)`` = the ``s = 5`` items just before the target, own item table ``P(short)``, no
    user embedding; a quaternion LSTM (``cell="lstm"``, Eq. 5.33) or GRU (``cell="gru"``,
    the [AMBIG] default: standard GRU gates with quaternion linear maps), hidden size ``d``,
    ``h0 = c0 = 0``; padded steps keep the previous state and are masked in the softmax.
    Attention with one *global* quaternion context ``q``, ``u(short) = tanh(W (x) sum_t alpha_t x h_t)``
    (Eq. 5.35); score ``(1/4) [u(short)].[p(short)_j]``.
``qualse`` - fusion (B.5, Eq. 5.37)
    Both encoders with separate item memories and the personalised, target-aware gate
    ``gamma = sigma(W_g1 (x) [u(long), u(short)] + W_g2 (x) u_g + W_g3 (x) p_g)`` with new gate tables
    ``U(g), P(g)`` ([AMBIG] default; ``gate_tables="reuse"`` uses ``q(long)_u`` and ``p(long)_j``) and
    no bias (``gate_bias=True`` adds one); ``o = W_o1 . [gamma x (u(long) x p(long)_j)] +
    W_o2 . [(1 - gamma) x (u(short) x p(short)_j)]``. ``W_o1`` and ``W_o2`` start at ``1/4`` each
    (our choice; with ``gamma = 1`` and ``W_o1 = 1/4`` QUALSE is QUALE). ``fusion="fixed"``
    is the weight-fixing ablation ``o = c o(short) + (1 - c) o(long)``.
``aquale``, ``aquase``, ``aqualse`` - the same models trained with QABPR (B.6)
    ``adversarial=True``: BPR first (best dev checkpoint), then the quaternion adversarial
    BPR of Eqs. 5.39-5.41 (the shared adversary, :mod:`segue.training.adversarial`): noise ``delta`` on every user and
    item quaternion table (``U(long), P(long), P(short), U(g), P(g)``), by the fast gradient
    method, ``eps * g / ||g||`` per embedding row over the full ``d`` ([AMBIG] default;
    ``adv_norm="global"`` is the flag), ``lambda_adv = 1``, noise only in training,
    ``adv_epochs`` (30) epochs keeping the best dev checkpoint.

Losses (B.6): BPR with 4 negatives per positive (the trainer's ``loss="bpr"``,
``n_negatives=4``); ``reg`` is ``lambda_E`` on the embedding rows a batch touches and
``reg_theta`` is ``lambda_Theta`` on the other parameters. Embeddings start ``N(0, init_std)``
with ``init_std = 0.01`` ([AMBIG] default), quaternion weights as in
:mod:`segue.models.quaternion`.

Efficiency: everything per (user, history) is computed once per row and shared by the
candidates (``u(long)``, ``u(short)``, the user half of the gate, ``W_o1 x u(long)`` and
``W_o2 x u(short)``); only the gate's item half and the fused read run per candidate. The
attention and the recurrence are the batched kernels of :mod:`segue.models.quaternion`; scores
are batched matrix-vector products. Embedding rows are read with one ``index_select`` per id
tensor and a table's window and candidates share one gradient table (``_Rows``; the gradient is
``F.embedding(..., padding_idx=0)``'s, row 0 gets none); the adversary's substituted tables are
read through :meth:`_QuaternionModel.table` as before.

The long-term window length ``l`` is a config value (default 50, a model never reads data);
:func:`whisker_length` computes the spec's ``Q3 + 1.5 IQR`` rule from a training table so a
caller can pass it as ``l``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from segue.errors import ConfigError, DataError
from segue.models.base import Context, Measure, Recommender, checked_history, register
from segue.models.metric_baselines import _check, _emb
from segue.models.quaternion import (
    QuaternionGRUCell,
    QuaternionLinear,
    QuaternionLSTMCell,
    check_dim,
    quaternion_attention,
    run_cell,
)
from segue.models.sdmr import fast_tanh

if TYPE_CHECKING:
    from segue.data.interactions import Interactions


def whisker_length(train: Interactions, minimum: int = 5) -> int:
    """``l = Q3 + 1.5 IQR`` of the users' sequence lengths (the upper boxplot whisker, B.3), at least ``minimum``."""
    counts = np.bincount(train.users, minlength=train.n_users + 1)[1:]
    counts = counts[counts > 0]
    if len(counts) == 0:
        raise DataError("Cannot compute the long-term window length of an empty table.")
    q1, q3 = np.percentile(counts, [25, 75])
    return max(minimum, int(np.ceil(q3 + 1.5 * (q3 - q1))))


history_of = checked_history  # the shared, checked history accessor (segue.models.base)


def _dot(vectors: Tensor, u: Tensor) -> Tensor:
    """``[vectors[b, c] . u[b]]`` (B, C) as one batched matrix-vector product."""
    return torch.bmm(vectors, u.unsqueeze(-1)).squeeze(-1)


def _check_items(model: Recommender, users: Tensor, items: Tensor) -> None:
    _check(model, users, items)
    if users.numel() and (users.min() < 1 or users.max() > model.n_users):
        raise DataError(f"{model.name}: user ids must lie in 1..{model.n_users}.")
    if items.numel() and (items.min() < 0 or items.max() > model.n_items):
        raise DataError(f"{model.name}: item ids must lie in 0..{model.n_items}.")


class _Rows(torch.autograd.Function):
    """``table[ids]`` for one or more id tensors, with the gradient of ``F.embedding(ids, table, padding_idx=0)``.

    Row 0 (padding) gets no gradient. The forward is one ``index_select`` per id tensor; the backward
    adds every output's gradient into one zero table with ``index_add_`` (on CPU about twice as fast
    as the embedding backward, which adds the rows one by one), so reading a window and the
    candidates of one table together gives it one gradient table instead of two plus their sum.
    """

    @staticmethod
    def forward(ctx: Any, table: Tensor, *ids: Tensor) -> tuple[Tensor, ...]:  # type: ignore[override]
        ctx.save_for_backward(*ids)
        ctx.n_rows = table.shape[0]
        ctx.set_materialize_grads(False)
        return tuple(table.index_select(0, i.reshape(-1)).view(*i.shape, table.shape[1]) for i in ids)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, *grads: Tensor | None) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        out = None
        for ids, grad in zip(ctx.saved_tensors, grads, strict=True):
            if grad is not None:
                if out is None:
                    out = grad.new_zeros(ctx.n_rows, grad.shape[-1])
                out.index_add_(0, ids.reshape(-1), grad.reshape(-1, grad.shape[-1]))
        if out is not None:
            out[0] = 0.0
        return (out, *(None for _ in grads))


def _sq(weight: Tensor, ids: Tensor) -> Tensor:
    """``||weight[ids]||^2`` summed over the rows (the gather's backward is one ``index_add_``)."""
    return weight.index_select(0, ids.reshape(-1)).pow(2).sum()


class _QuaternionModel(Recommender):
    """Shared plumbing: config checks, (perturbable) embedding lookups, regularisation, QABPR."""

    needs: ClassVar[frozenset[str]] = frozenset({"history"})
    train_defaults: ClassVar[dict[str, Any]] = {"loss": "bpr", "n_negatives": 4, "batch_size": 256, "lr": 1e-3}
    #: attribute names of the user and item quaternion tables (perturbed by QABPR)
    user_tables: ClassVar[tuple[str, ...]] = ()
    item_tables: ClassVar[tuple[str, ...]] = ()

    def __init__(self, n_users: int, n_items: int, config: Any = None) -> None:
        super().__init__(n_users, n_items, config)
        c = self.config
        check_dim(c.dim, "embedding size dim")
        if c.init_std <= 0 or c.reg < 0 or c.reg_theta < 0:
            raise ConfigError(f"{self.name} needs init_std > 0 and reg, reg_theta >= 0, got {c}.")
        if c.eps < 0 or c.adv_weight < 0 or c.adv_epochs < 0 or c.adv_norm not in ("row", "global"):
            raise ConfigError(
                f"{self.name} needs eps, adv_weight, adv_epochs >= 0 and adv_norm row or global, got {c}."
            )

    # -- embeddings (QABPR perturbs these tables through the shared adversary) -----------------
    def adv_tables(self) -> tuple[str, ...]:
        return tuple(n for n in (*self.user_tables, *self.item_tables) if getattr(self, n, None) is not None)

    def adversary_tables(self) -> list[str]:
        return [f"{t}.weight" for t in self.adv_tables()]

    @property
    def adversarial(self) -> bool:
        return bool(self.config.adversarial)

    def adversary_options(self) -> dict[str, Any]:
        """QABPR (B.6): unit-scale noise from delta = 0 each batch, per row or over the table (Eq. 5.40)."""
        c = self.config
        norm = "row" if c.adv_norm == "row" else "tensor"
        return {"adv_epochs": c.adv_epochs, "adv_eps": c.eps, "adv_weight": c.adv_weight, "adv_norm": norm,
                "adv_scale": "unit", "adv_warm": False, "loss": "bpr"}  # fmt: skip

    def table(self, name: str) -> Tensor:
        """The weight of an embedding table (the adversary substitutes a perturbed one while it runs)."""
        return getattr(self, name).weight

    def lookup(self, name: str, ids: Tensor) -> Tensor:
        """Rows ``ids`` of table ``name``: ``F.embedding(ids, table, padding_idx=0)`` (see :class:`_Rows`)."""
        return _Rows.apply(self.table(name), ids)[0]

    def lookups(self, name: str, *ids: Tensor) -> tuple[Tensor, ...]:
        """:meth:`lookup` of several id tensors in one table, with one gradient table for all of them."""
        return _Rows.apply(self.table(name), *ids)

    def regularization(self, users: Tensor, items: Tensor) -> Tensor:
        c = self.config
        total = torch.zeros((), device=users.device)
        if c.reg:
            rows = sum(_sq(getattr(self, t).weight, users) for t in self.user_tables if hasattr(self, t))
            rows = rows + sum(_sq(getattr(self, t).weight, items) for t in self.item_tables if hasattr(self, t))
            total = total + c.reg * rows / len(users)
        if c.reg_theta:
            emb = {id(getattr(self, t).weight) for t in self.adv_tables()}
            theta = sum(p.pow(2).sum() for p in self.parameters() if id(p) not in emb)
            total = total + c.reg_theta * theta
        return total


# -- QUALE ------------------------------------------------------------------------------------------
@register
class QUALE(_QuaternionModel):
    """Quaternion long-term encoder (see module docstring)."""

    name: ClassVar[str] = "quale"
    measure: ClassVar[Measure | None] = "dot"
    user_tables: ClassVar[tuple[str, ...]] = ("user_long",)
    item_tables: ClassVar[tuple[str, ...]] = ("item_long",)

    @dataclass
    class Config:
        dim: int = 64
        l: int = 50  # noqa: E741  (long-term window; see whisker_length)
        per_dim: bool = False
        init_std: float = 0.01
        reg: float = 1e-4
        reg_theta: float = 0.0
        adversarial: bool = False
        eps: float = 0.5
        adv_weight: float = 1.0
        adv_norm: str = "row"
        adv_epochs: int = 30

    def __init__(self, n_users: int, n_items: int, config: Any = None) -> None:
        super().__init__(n_users, n_items, config)
        c = self.config
        if c.l < 1:
            raise ConfigError(f"{self.name} needs a long-term window l >= 1, got {c.l}.")
        self.user_long = _emb(n_users, c.dim, c.init_std)
        self.item_long = _emb(n_items, c.dim, c.init_std)

    def history_length(self) -> int:
        return int(self.config.l)

    def long_user(self, users: Tensor, hist: Tensor) -> Tensor:
        """``u(long)`` (B, d) from the long-term window (B, l)."""
        return self._long(users, self.lookup("item_long", hist), hist != 0)

    def _long(self, users: Tensor, steps: Tensor, mask: Tensor) -> Tensor:
        """``u(long)`` from the window's rows ``p(long)_k`` (B, l, d) and its padding mask (Eqs. 5.29-5.31)."""
        out, _ = quaternion_attention(steps, self.lookup("user_long", users), mask, self.config.per_dim)
        return out

    def score(self, users: Tensor, items: Tensor, context: Context | None = None) -> Tensor:
        _check_items(self, users, items)
        hist = history_of(self, users, context, self.config.l)
        steps, candidates = self.lookups("item_long", hist, items)
        return _dot(candidates, self._long(users, steps, hist != 0)) / 4.0  # Eq. 5.32

    def item_vectors(self) -> Tensor:
        return self.item_long.weight.detach()

    def query_vectors(self, users: Tensor, context: Context | None = None) -> Tensor:
        hist = history_of(self, users, context, self.config.l)
        return self.long_user(users, hist).detach() / 4.0


# -- QUASE ------------------------------------------------------------------------------------------
@register
class QUASE(_QuaternionModel):
    """Quaternion short-term encoder, LSTM or GRU (see module docstring)."""

    name: ClassVar[str] = "quase"
    measure: ClassVar[Measure | None] = "dot"
    item_tables: ClassVar[tuple[str, ...]] = ("item_short",)

    @dataclass
    class Config:
        dim: int = 64
        s: int = 5
        cell: str = "lstm"  # or "gru"
        per_dim: bool = False
        init_std: float = 0.01
        reg: float = 1e-4
        reg_theta: float = 0.0
        adversarial: bool = False
        eps: float = 0.5
        adv_weight: float = 1.0
        adv_norm: str = "row"
        adv_epochs: int = 30

    def __init__(self, n_users: int, n_items: int, config: Any = None) -> None:
        super().__init__(n_users, n_items, config)
        c = self.config
        if c.s < 1 or c.cell not in ("lstm", "gru"):
            raise ConfigError(f"{self.name} needs s >= 1 and cell lstm or gru, got s={c.s}, cell={c.cell!r}.")
        self.item_short = _emb(n_items, c.dim, c.init_std)
        self.rnn = QuaternionLSTMCell(c.dim, c.dim) if c.cell == "lstm" else QuaternionGRUCell(c.dim, c.dim)
        self.context_short = nn.Parameter(torch.randn(c.dim) * c.init_std)  # global q
        self.out_short = QuaternionLinear(c.dim, c.dim)  # W of Eq. 5.35

    def history_length(self) -> int:
        return int(self.config.s)

    def short_user(self, hist: Tensor) -> Tensor:
        """``u(short)`` (B, d) from the short-term window (B, s)."""
        hist = hist[:, -self.config.s :]
        return self._short(self.lookup("item_short", hist), hist != 0)

    def _short(self, steps: Tensor, mask: Tensor) -> Tensor:
        """``u(short)`` from the window's rows ``p(short)_t`` (B, s, d) and its padding mask (Eqs. 5.33-5.35)."""
        h = run_cell(self.rnn, steps, mask)
        pooled, _ = quaternion_attention(h, self.context_short, mask, self.config.per_dim)
        return fast_tanh(self.out_short(pooled))

    def score(self, users: Tensor, items: Tensor, context: Context | None = None) -> Tensor:
        _check_items(self, users, items)
        hist = history_of(self, users, context, self.config.s)
        steps, candidates = self.lookups("item_short", hist, items)
        return _dot(candidates, self._short(steps, hist != 0)) / 4.0  # Eq. 5.36

    def item_vectors(self) -> Tensor:
        return self.item_short.weight.detach()

    def query_vectors(self, users: Tensor, context: Context | None = None) -> Tensor:
        return self.short_user(history_of(self, users, context, self.config.s)).detach() / 4.0


# -- QUALSE -----------------------------------------------------------------------------------------
@register
class QUALSE(_QuaternionModel):
    """Personalised quaternion gated fusion of QUALE and QUASE (Eq. 5.37; see module docstring)."""

    name: ClassVar[str] = "qualse"
    user_tables: ClassVar[tuple[str, ...]] = ("user_long", "user_gate")
    item_tables: ClassVar[tuple[str, ...]] = ("item_long", "item_short", "item_gate")

    @dataclass
    class Config:
        dim: int = 64
        l: int = 50  # noqa: E741
        s: int = 5
        cell: str = "lstm"
        per_dim: bool = False
        gate_tables: str = "new"  # or "reuse" (q(long)_u and p(long)_j)
        gate_bias: bool = False
        fusion: str = "gate"  # or "fixed" (weight-fixing ablation)
        fixed_c: float = 0.5  # short-term weight c of the "fixed" fusion
        init_std: float = 0.01
        reg: float = 1e-4
        reg_theta: float = 0.0
        adversarial: bool = False
        eps: float = 0.5
        adv_weight: float = 1.0
        adv_norm: str = "row"
        adv_epochs: int = 30

    def __init__(self, n_users: int, n_items: int, config: Any = None) -> None:
        super().__init__(n_users, n_items, config)
        c = self.config
        if c.l < 1 or c.s < 1 or c.s > c.l or c.cell not in ("lstm", "gru"):
            raise ConfigError(f"{self.name} needs 1 <= s <= l and cell lstm or gru, got l={c.l}, s={c.s}, {c.cell!r}.")
        if c.gate_tables not in ("new", "reuse") or c.fusion not in ("gate", "fixed") or not 0 <= c.fixed_c <= 1:
            raise ConfigError(
                f"{self.name} needs gate_tables new or reuse, fusion gate or fixed, fixed_c in [0, 1], got {c}."
            )
        d = c.dim
        self.user_long = _emb(n_users, d, c.init_std)
        self.item_long = _emb(n_items, d, c.init_std)
        self.item_short = _emb(n_items, d, c.init_std)
        self.rnn = QuaternionLSTMCell(d, d) if c.cell == "lstm" else QuaternionGRUCell(d, d)
        self.context_short = nn.Parameter(torch.randn(d) * c.init_std)
        self.out_short = QuaternionLinear(d, d)
        if c.gate_tables == "new":
            self.user_gate = _emb(n_users, d, c.init_std)
            self.item_gate = _emb(n_items, d, c.init_std)
        self.gate_1 = QuaternionLinear(2 * d, d, bias=c.gate_bias)
        self.gate_2 = QuaternionLinear(d, d)
        self.gate_3 = QuaternionLinear(d, d)
        self.w_o1 = nn.Parameter(torch.full((d,), 0.25))
        self.w_o2 = nn.Parameter(torch.full((d,), 0.25))

    def history_length(self) -> int:
        return int(self.config.l)

    @torch.no_grad()
    def init_from(self, quale: dict[str, Tensor], quase: dict[str, Tensor]) -> None:
        """Initialise the two encoders from trained QUALE and QUASE state dicts (B.5's optional pretraining).

        ``quale`` gives ``user_long`` / ``item_long``; ``quase`` gives ``item_short``, the recurrent cell,
        the global context and ``W`` of Eq. 5.35. The gate and ``W_o`` keep their fresh initialisation.
        """
        own = self.state_dict()
        for source, prefixes in (
            (quale, ("user_long.", "item_long.")),
            (quase, ("item_short.", "rnn.", "context_short", "out_short.")),
        ):
            for key, value in source.items():
                if key.startswith(prefixes):
                    if key not in own or own[key].shape != value.shape:
                        raise DataError(f"Cannot initialise {self.name} from a part: {key} does not match.")
                    own[key] = value
        self.load_state_dict(own)

    # the encoders are QUALE's and QUASE's, on this model's own tables
    long_user = QUALE.long_user
    short_user = QUASE.short_user
    _long = QUALE._long
    _short = QUASE._short

    def encode(self, users: Tensor, hist: Tensor) -> tuple[Tensor, Tensor]:
        """``(u(long), u(short))``, (B, d) each, from the long window (its last ``s`` items are S(u))."""
        return self.long_user(users, hist), self.short_user(hist)

    def gate(self, users: Tensor, items: Tensor, u_long: Tensor, u_short: Tensor) -> Tensor:
        """``gamma`` (B, C, d) of Eq. 5.37."""
        return torch.sigmoid(self._gate_user(users, u_long, u_short)[:, None, :] + self._gate_items(items))

    def _gate_user(self, users: Tensor, u_long: Tensor, u_short: Tensor) -> Tensor:
        """The per-row part of Eq. 5.37's gate, ``W_g1 (x) [u(long), u(short)] + W_g2 (x) u_g`` (B, d).

        One product: ``[u(long) | u(short) | u_g]`` times ``[W_g1 | W_g2]``, the columns of ``W_g1`` (which
        acts on the component-wise concatenation ``[r r' a a' b b' c c']``) reordered to ``[r a b c | r' a' b' c']``.
        """
        ug = "user_gate" if self.config.gate_tables == "new" else "user_long"
        d = u_long.shape[-1]
        w1 = self.gate_1.weight_matrix().view(d, 4, 2, d // 4).transpose(1, 2).reshape(d, 2 * d)
        w = torch.cat([w1, self.gate_2.weight_matrix()], dim=1)
        return F.linear(torch.cat([u_long, u_short, self.lookup(ug, users)], dim=1), w, self.gate_1.bias)

    def _gate_items(self, items: Tensor, rows: Tensor | None = None) -> Tensor:
        """The per-candidate part ``W_g3 (x) p_g`` (B, C, d); ``rows`` are the candidates' ``p_g`` if already read."""
        pg = "item_gate" if self.config.gate_tables == "new" else "item_long"
        if items.numel() > self.n_items:  # long candidate lists: transform the table once, then gather
            return F.embedding(items, self.gate_3(self.table(pg)))
        return self.gate_3(self.lookup(pg, items) if rows is None else rows)

    def score(self, users: Tensor, items: Tensor, context: Context | None = None) -> Tensor:
        _check_items(self, users, items)
        hist = history_of(self, users, context, self.config.l)
        short = hist[:, -self.config.s :]
        if items.shape[1] <= self._chunk:  # training: each table read once for the windows and the candidates
            steps_long, p_long = self.lookups("item_long", hist, items)
            steps_short, p_short = self.lookups("item_short", short, items)
        else:
            steps_long, steps_short = self.lookup("item_long", hist), self.lookup("item_short", short)
        u_long, u_short = self._long(users, steps_long, hist != 0), self._short(steps_short, short != 0)
        user_part = None if self.config.fusion == "fixed" else self._gate_user(users, u_long, u_short)  # once per row
        if items.shape[1] <= self._chunk:
            return self._fuse(items, p_long, p_short, u_long, u_short, user_part)
        # the gate is (B, C, d): score long candidate lists (1,000 sampled negatives) in slices
        parts = []
        for i in range(0, items.shape[1], self._chunk):
            chunk = items[:, i : i + self._chunk]
            p_long, p_short = self.lookup("item_long", chunk), self.lookup("item_short", chunk)
            parts.append(self._fuse(chunk, p_long, p_short, u_long, u_short, user_part))
        return torch.cat(parts, dim=1)

    _chunk: ClassVar[int] = 256

    def _fuse(
        self, items: Tensor, p_long: Tensor, p_short: Tensor, u_long: Tensor, u_short: Tensor, user_part: Tensor | None
    ) -> Tensor:
        """Eq. 5.37 (or the fixed-weight ablation) for candidates (B, C) given the two encodings.

        ``p_long``, ``p_short`` (B, C, d) are the candidates' rows ``p(long)_j``, ``p(short)_j``.
        ``o = W_o1 . [gamma x u(long) x p(long)_j] + W_o2 . [(1 - gamma) x u(short) x p(short)_j]`` is
        evaluated as ``sum_d gamma x (L - S) + sum_d S`` with ``L = (W_o1 x u(long)) x p(long)_j`` and
        ``S = (W_o2 x u(short)) x p(short)_j``, the products with ``W_o`` taken once per row.
        ``user_part`` is :meth:`_gate_user` (None for the fixed fusion).
        """
        if user_part is None:
            c = self.config.fixed_c
            return c * _dot(p_short, u_short) / 4.0 + (1 - c) * _dot(p_long, u_long) / 4.0
        rows = p_long if self.config.gate_tables == "reuse" else None
        g = torch.sigmoid(user_part[:, None, :] + self._gate_items(items, rows))
        long_vec = p_long * (u_long * self.w_o1)[:, None, :]
        short_vec = p_short * (u_short * self.w_o2)[:, None, :]
        return (g * (long_vec - short_vec)).sum(-1) + short_vec.sum(-1)


# -- adversarial versions ---------------------------------------------------------------------------
@register
class AQUALE(QUALE):
    """QUALE trained with QABPR (B.6)."""

    name: ClassVar[str] = "aquale"

    @dataclass
    class Config(QUALE.Config):
        adversarial: bool = True


@register
class AQUASE(QUASE):
    """QUASE trained with QABPR (B.6)."""

    name: ClassVar[str] = "aquase"

    @dataclass
    class Config(QUASE.Config):
        adversarial: bool = True


@register
class AQUALSE(QUALSE):
    """QUALSE trained with QABPR (B.6)."""

    name: ClassVar[str] = "aqualse"

    @dataclass
    class Config(QUALSE.Config):
        adversarial: bool = True


__all__ = ["AQUALE", "AQUALSE", "AQUASE", "QUALE", "QUALSE", "QUASE", "history_of", "whisker_length"]
