"""Sequential baselines of the QUALSE table (spec B.10): SASRec, AGRU / ALSTM, FPMC and AASVD.

All read ``context.history`` (B, w), the user's most recent items before the target, oldest
first, left-padded with 0, and score candidates "higher is better". Caser is
:class:`segue.models.sequential_sdmr.Caser`.

``sasrec`` (Kang and McAuley, ICDM'18)
    Item embeddings (scaled by ``sqrt(d)``) plus learned position embeddings over the last
    ``max_len`` items, dropout, ``n_blocks`` blocks of causal single-head self-attention and a
    point-wise two-layer ReLU feed-forward net, each with a residual connection and layer
    normalisation (pre-LN on the query, as in the authors' code), a final layer norm; the
    output at the last position ``F_t`` scores ``r = F_t . M_j`` with the shared item embedding
    ``M``. Authors' defaults: ``d = 50``, 2 blocks, 1 head, dropout 0.5 (sparse Amazon data; 0.2
    on MovieLens), ``max_len = 50`` (200 on MovieLens-1M), Adam lr 1e-3, binary cross-entropy
    with one sampled negative. Differences: the authors train on every position of a user's sequence at once;
    the generic trainer feeds one (history window, next item) row per position instead, with the
    same targets. :meth:`SASRec.loss` trains the authors' way (batch kind ``sequences``: one
    row per user, :func:`segue.data.sequences.sequence_rows`, a target at every position).
    Padded keys are masked (the authors only zero padded inputs), and positions are counted
    from the end of the window, which equals the authors' left-padded layout: a training row of
    length ``max_len`` and a scoring window of ``max_len`` give the last item the same position.
``agru`` / ``alstm`` (GRU4Rec, Hidasi et al. ICLR'16, with attention over the hidden states, B.10 f/g)
    A GRU (or LSTM) over the last ``s`` items (hidden size ``d``), attention over all hidden
    states with a learned global context ``q`` (the real-valued twin of QUASE's attention:
    ``alpha_t = softmax_t(h_t . q / sqrt(d))``, ``u = tanh(W sum_t alpha_t h_t)``), score
    ``u . E_j`` with separate output item embeddings; BPR. ``attention="prod"`` switches to the
    NAIS "prod" attention ``alpha_t ∝ exp(h^T ReLU(W_a (h_t * q) + b))``. Padded steps keep the
    previous state and are masked.
``fpmc`` (Rendle, Freudenthaler, Schmidt-Thieme, WWW'10)
    ``x(u, l, i) = <V_UI_u, V_IU_i> + mean_{l in B} <V_IL_i, V_LI_l>`` with the basket ``B`` = the
    previous ``s`` items (``s = 1``: the previous item, the usual sequential reading); S-BPR
    (the trainer's BPR over sampled negatives). Without a previous item only the MF term is used.
``aasvd`` (ASVD of Koren, KDD'08, with self-attention over the consumed items, B.10 a)
    ``r(u, i) = b_i + q_i . (p_u + sum_k alpha_k y_k)`` over the last ``l`` history items, with
    ``alpha_k = softmax_k(y_k . p_u / sqrt(d))`` (personalised, target-independent: the
    real-valued twin of QUALE's attention) replacing ASVD's ``|N(u)|^-1/2`` sum; BPR.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from segue.data.batch import SequenceBatch
from segue.errors import ConfigError, DataError
from segue.models.base import Context, Measure, Recommender, register
from segue.models.losses import LossSpec
from segue.models.metric_baselines import _emb
from segue.models.qualse import _check_items, history_of
from segue.models.quaternion import run_cell


class _Seq(Recommender):
    needs: ClassVar[frozenset[str]] = frozenset({"history"})
    window_field: ClassVar[str] = "s"

    def history_length(self) -> int:
        return int(getattr(self.config, self.window_field))


def _masked_softmax(logits: Tensor, mask: Tensor) -> Tensor:
    z = logits.masked_fill(~mask, float("-inf"))
    z = torch.where(mask.any(-1, keepdim=True), z, torch.zeros_like(z))
    return torch.softmax(z, dim=-1) * mask


# -- SASRec -------------------------------------------------------------------------------------------
class _SASBlock(nn.Module):
    def __init__(self, d: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.ln_attn = nn.LayerNorm(d, eps=1e-8)
        self.attn = nn.MultiheadAttention(d, heads, dropout=dropout, batch_first=True)
        self.ln_ffn = nn.LayerNorm(d, eps=1e-8)
        self.ffn = nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Dropout(dropout), nn.Linear(d, d), nn.Dropout(dropout))

    def forward(self, x: Tensor, attn_mask: Tensor, keep: Tensor) -> Tensor:
        q = self.ln_attn(x)
        out, _ = self.attn(q, x, x, attn_mask=attn_mask, need_weights=False)
        x = self.ln_ffn(q + out)
        x = x + self.ffn(x)
        return x * keep


@register
class SASRec(_Seq):
    """Self-attentive sequential recommendation (see module docstring)."""

    name: ClassVar[str] = "sasrec"
    measure: ClassVar[Measure | None] = "dot"
    batch_kind: ClassVar[str] = "sequences"
    window_field: ClassVar[str] = "max_len"
    train_defaults: ClassVar[dict[str, Any]] = {"loss": "bce", "n_negatives": 1, "batch_size": 128, "lr": 1e-3}

    @dataclass
    class Config:
        dim: int = 50
        max_len: int = 50
        n_blocks: int = 2
        n_heads: int = 1
        dropout: float = 0.5
        reg: float = 0.0

    def __init__(self, n_users: int, n_items: int, config: Any = None) -> None:
        super().__init__(n_users, n_items, config)
        c = self.config
        if c.dim < 1 or c.max_len < 1 or c.n_blocks < 1 or c.n_heads < 1 or c.dim % c.n_heads:
            raise ConfigError(f"sasrec needs positive sizes with dim divisible by n_heads, got {c}.")
        if not 0 <= c.dropout < 1 or c.reg < 0:
            raise ConfigError(f"sasrec needs dropout in [0, 1) and reg >= 0, got {c}.")
        self.item_emb = _emb(n_items, c.dim, 1.0 / math.sqrt(c.dim))
        self.pos_emb = nn.Embedding(c.max_len, c.dim)
        nn.init.normal_(self.pos_emb.weight, std=1.0 / math.sqrt(c.dim))
        self.drop = nn.Dropout(c.dropout)
        self.blocks = nn.ModuleList(_SASBlock(c.dim, c.n_heads, c.dropout) for _ in range(c.n_blocks))
        self.ln_out = nn.LayerNorm(c.dim, eps=1e-8)

    def encode(self, hist: Tensor) -> Tensor:
        """Outputs of the last block at every position (B, w, d) over the window (B, w)."""
        w = hist.shape[1]
        if w > self.config.max_len:
            hist = hist[:, -self.config.max_len :]
            w = self.config.max_len
        keep = (hist != 0).unsqueeze(-1)
        pos = torch.arange(w, device=hist.device) + (self.config.max_len - w)  # counted from the end
        x = self.item_emb(hist) * math.sqrt(self.config.dim) + self.pos_emb(pos)[None]
        x = self.drop(x) * keep
        causal = torch.triu(torch.ones(w, w, dtype=torch.bool, device=hist.device), 1)
        pad = (hist == 0)[:, None, :]  # (B, 1, w) keys
        mask = causal[None] | pad
        mask = mask & ~torch.eye(w, dtype=torch.bool, device=hist.device)[None]  # a query always sees itself
        mask = mask.repeat_interleave(self.config.n_heads, dim=0)
        for block in self.blocks:
            x = block(x, mask, keep)
        return x

    def sequence_vector(self, hist: Tensor) -> Tensor:
        """``F_t`` (B, d): the normalised output at the last position."""
        return self.ln_out(self.encode(hist)[:, -1])

    def score(self, users: Tensor, items: Tensor, context: Context | None = None) -> Tensor:
        _check_items(self, users, items)
        f = self.sequence_vector(history_of(self, users, context, self.config.max_len))
        return torch.einsum("bd,bcd->bc", f, self.item_emb(items))

    def item_vectors(self) -> Tensor:
        return self.item_emb.weight.detach()

    def query_vectors(self, users: Tensor, context: Context | None = None) -> Tensor:
        return self.sequence_vector(history_of(self, users, context, self.config.max_len)).detach()

    def loss(self, batch: SequenceBatch, spec: LossSpec) -> Tensor:
        """Mean per-position loss of whole sequences (the authors' training), plus ``reg``.

        The inputs are encoded once; the normalised output at each position (``ln_out``, as in
        :meth:`sequence_vector`) scores that position's target and negatives by a dot product with
        the item embeddings. ``spec`` (``"bce"``, the authors' loss, or ``"bpr"``) is applied
        per position exactly as the trainer applies it per window row
        (:mod:`segue.models.losses`), and averaged over the positions whose target is not 0, so the
        last position of a row gives the loss of the window that ends there. (For one negative the
        ``"bce"`` value is half the authors' ``-log s(pos) - log(1 - s(neg))``: a constant factor.)
        """
        inputs, targets, negs = batch.inputs.long(), batch.targets.long(), batch.negatives.long()
        if (
            inputs.ndim != 2
            or targets.shape != inputs.shape
            or negs.ndim != 3
            or negs.shape[:2] != inputs.shape
            or batch.users.shape != inputs.shape[:1]
        ):
            raise DataError(
                f"sasrec needs users (B,), inputs and targets (B, L) and negatives (B, L, n), got "
                f"{tuple(batch.users.shape)}, {tuple(inputs.shape)}, {tuple(targets.shape)} and {tuple(negs.shape)}."
            )
        for ids in (inputs, targets, negs):
            if ids.numel() and (ids.min() < 0 or ids.max() > self.n_items):
                raise DataError(f"sasrec: item ids must lie in 0..{self.n_items} (0 = padding).")
        if inputs.shape[1] > self.config.max_len:
            raise DataError(f"sasrec rows hold at most max_len={self.config.max_len} positions, got {inputs.shape[1]}.")
        at = targets != 0
        if not bool(at.any()):
            raise DataError("The sequence batch has no target (every position is padding).")
        h = self.ln_out(self.encode(inputs))[at]  # (N, d): only the positions that have a target
        cand = torch.cat([targets[at, None], negs[at]], 1)  # (N, 1 + n)
        logits = torch.einsum("nd,ncd->nc", h, self.item_emb(cand))
        # ``reg`` per position, as the generic trainer applies it per window row: reg * |M_cand|^2 / N
        return spec(logits) + self.regularization(cand[:, 0], cand)

    def regularization(self, users: Tensor, items: Tensor) -> Tensor:
        if not self.config.reg:
            return torch.zeros((), device=users.device)
        return self.config.reg * self.item_emb(items).pow(2).sum() / len(users)


# -- AGRU / ALSTM --------------------------------------------------------------------------------------
@register
class AGRU(_Seq):
    """GRU4Rec with attention over its hidden states (see module docstring)."""

    name: ClassVar[str] = "agru"
    measure: ClassVar[Measure | None] = "dot"
    cell_type: ClassVar[str] = "gru"
    train_defaults: ClassVar[dict[str, Any]] = {"loss": "bpr", "n_negatives": 4, "batch_size": 256, "lr": 1e-3}

    @dataclass
    class Config:
        dim: int = 64
        s: int = 5
        attention: str = "self"  # or "prod" (NAIS)
        dropout: float = 0.0
        reg: float = 1e-4

    def __init__(self, n_users: int, n_items: int, config: Any = None) -> None:
        super().__init__(n_users, n_items, config)
        c = self.config
        if c.dim < 1 or c.s < 1 or c.attention not in ("self", "prod") or not 0 <= c.dropout < 1 or c.reg < 0:
            raise ConfigError(f"{self.name} needs positive sizes, attention self or prod, dropout in [0, 1), got {c}.")
        d = c.dim
        self.item_in = _emb(n_items, d, 0.01)
        self.item_out = _emb(n_items, d, 0.01)
        self.rnn = nn.GRUCell(d, d) if self.cell_type == "gru" else nn.LSTMCell(d, d)
        self.context = nn.Parameter(torch.randn(d) * 0.01)
        self.att_w = nn.Linear(d, d) if c.attention == "prod" else None
        self.att_h = nn.Parameter(torch.randn(d) * 0.01) if c.attention == "prod" else None
        self.out = nn.Linear(d, d, bias=False)
        self.drop = nn.Dropout(c.dropout)

    def sequence_vector(self, hist: Tensor) -> Tensor:
        hist = hist[:, -self.config.s :]
        mask = hist != 0
        h = run_cell(self.rnn, self.drop(self.item_in(hist)), mask)  # (B, s, d)
        if self.att_w is None:
            logits = h @ self.context / math.sqrt(self.config.dim)
        else:
            logits = F.relu(self.att_w(h * self.context)) @ self.att_h
        alpha = _masked_softmax(logits, mask)
        return torch.tanh(self.out((alpha.unsqueeze(-1) * h).sum(1)))

    def score(self, users: Tensor, items: Tensor, context: Context | None = None) -> Tensor:
        _check_items(self, users, items)
        u = self.sequence_vector(history_of(self, users, context, self.config.s))
        return torch.einsum("bd,bcd->bc", u, self.item_out(items))

    def item_vectors(self) -> Tensor:
        return self.item_out.weight.detach()

    def query_vectors(self, users: Tensor, context: Context | None = None) -> Tensor:
        return self.sequence_vector(history_of(self, users, context, self.config.s)).detach()

    def regularization(self, users: Tensor, items: Tensor) -> Tensor:
        if not self.config.reg:
            return torch.zeros((), device=users.device)
        return self.config.reg * self.item_out(items).pow(2).sum() / len(users)


@register
class ALSTM(AGRU):
    """The same construction with an LSTM."""

    name: ClassVar[str] = "alstm"
    cell_type: ClassVar[str] = "lstm"


# -- FPMC ----------------------------------------------------------------------------------------------
@register
class FPMC(_Seq):
    """Factorizing personalized Markov chains (see module docstring)."""

    name: ClassVar[str] = "fpmc"
    train_defaults: ClassVar[dict[str, Any]] = {"loss": "bpr", "n_negatives": 4, "batch_size": 256, "lr": 1e-3}

    @dataclass
    class Config:
        dim: int = 64
        s: int = 1
        init_std: float = 0.01
        reg: float = 1e-4

    def __init__(self, n_users: int, n_items: int, config: Any = None) -> None:
        super().__init__(n_users, n_items, config)
        c = self.config
        if c.dim < 1 or c.s < 1 or c.init_std <= 0 or c.reg < 0:
            raise ConfigError(f"fpmc needs dim, s >= 1, init_std > 0 and reg >= 0, got {c}.")
        self.user_ui = _emb(n_users, c.dim, c.init_std)  # V^{U,I}
        self.item_iu = _emb(n_items, c.dim, c.init_std)  # V^{I,U}
        self.item_il = _emb(n_items, c.dim, c.init_std)  # V^{I,L}
        self.item_li = _emb(n_items, c.dim, c.init_std)  # V^{L,I}

    def score(self, users: Tensor, items: Tensor, context: Context | None = None) -> Tensor:
        _check_items(self, users, items)
        hist = history_of(self, users, context, self.config.s)
        mf = torch.einsum("bd,bcd->bc", self.user_ui(users), self.item_iu(items))
        mask = (hist != 0).float()
        basket = (self.item_li(hist) * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp(min=1)
        return mf + torch.einsum("bd,bcd->bc", basket, self.item_il(items))

    def regularization(self, users: Tensor, items: Tensor) -> Tensor:
        if not self.config.reg:
            return torch.zeros((), device=users.device)
        rows = self.user_ui(users).pow(2).sum() + self.item_iu(items).pow(2).sum() + self.item_il(items).pow(2).sum()
        return self.config.reg * rows / len(users)


# -- AASVD ---------------------------------------------------------------------------------------------
@register
class AASVD(_Seq):
    """Attentive asymmetric SVD (see module docstring)."""

    name: ClassVar[str] = "aasvd"
    window_field: ClassVar[str] = "l"
    train_defaults: ClassVar[dict[str, Any]] = {"loss": "bpr", "n_negatives": 4, "batch_size": 256, "lr": 1e-3}

    @dataclass
    class Config:
        dim: int = 64
        l: int = 50  # noqa: E741
        init_std: float = 0.01
        reg: float = 1e-4

    def __init__(self, n_users: int, n_items: int, config: Any = None) -> None:
        super().__init__(n_users, n_items, config)
        c = self.config
        if c.dim < 1 or c.l < 1 or c.init_std <= 0 or c.reg < 0:
            raise ConfigError(f"aasvd needs dim, l >= 1, init_std > 0 and reg >= 0, got {c}.")
        self.user_p = _emb(n_users, c.dim, c.init_std)
        self.item_q = _emb(n_items, c.dim, c.init_std)
        self.item_y = _emb(n_items, c.dim, c.init_std)
        self.bias = nn.Embedding(n_items + 1, 1, padding_idx=0)
        nn.init.zeros_(self.bias.weight)

    def user_vector(self, users: Tensor, hist: Tensor) -> Tensor:
        p = self.user_p(users)
        y = self.item_y(hist)
        alpha = _masked_softmax((y @ p.unsqueeze(-1)).squeeze(-1) / math.sqrt(self.config.dim), hist != 0)
        return p + (alpha.unsqueeze(-1) * y).sum(1)

    def score(self, users: Tensor, items: Tensor, context: Context | None = None) -> Tensor:
        _check_items(self, users, items)
        u = self.user_vector(users, history_of(self, users, context, self.config.l))
        return torch.einsum("bd,bcd->bc", u, self.item_q(items)) + self.bias(items).squeeze(-1)

    def regularization(self, users: Tensor, items: Tensor) -> Tensor:
        if not self.config.reg:
            return torch.zeros((), device=users.device)
        rows = self.user_p(users).pow(2).sum() + self.item_q(items).pow(2).sum() + self.item_y(items).pow(2).sum()
        return self.config.reg * rows / len(users)


__all__ = ["AASVD", "AGRU", "ALSTM", "FPMC", "SASRec"]
