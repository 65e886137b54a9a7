"""Sequential baselines of the SDMR tables (spec A.9, Group 2): PRME, PRME_s, TransRec and Caser.

All read ``context.history`` (B, s), the user's most recent items, oldest first,
left-padded with 0, and score candidates "higher is better" (distance models return
minus the distance).

``prme`` (Feng et al., IJCAI'15)
    Two latent spaces: preference ``|U_u - X_j|^2`` and sequential ``|S_k - S_j|^2`` with
    ``k`` the previous item; ``d = alpha |U_u - X_j|^2 + (1 - alpha) |S_k - S_j|^2``,
    trained with (S-)BPR. Without a previous item only the preference term is used (PRME's
    rule for a time gap above its threshold; PRME's time threshold itself is not used,
    every consecutive pair is a transition). ``alpha`` = 0.2, not tuned here.
``prme-s`` (the SDMR authors' PRME_s)
    The sequential term is the mean of ``|S_k - S_j|^2`` over the ``s`` previous items.
``transrec`` (He, Kang, McAuley, RecSys'17)
    ``score = beta_j - |gamma_k + t + t_u - gamma_j|_2`` with a global translation ``t``, a
    user translation ``t_u`` (initialised at 0), item biases ``beta`` and item vectors kept in
    the unit ball; L2 (not squared) distance, trained with S-BPR. Without a previous item
    ``gamma_k = 0``.
``caser`` (Tang and Wang, WSDM'18)
    The ``L`` previous item embeddings form an ``L x d`` image; ``n_h`` horizontal filters of
    every height 1..L (ReLU, max-pooled over time) and ``n_v`` vertical filters, dropout, a
    ReLU fully connected layer to ``z`` (d), then ``y_j = W'_j . [z; P_u] + b'_j``. Caser
    trains with the binary cross-entropy over the next target and sampled negatives
    (``loss="bce"``); here one target per window (T = 1).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from segue.errors import ConfigError
from segue.models.base import Context, Recommender, register
from segue.models.metric_baselines import _check, _emb
from segue.models.sdmr import _history


class _Sequential(Recommender):
    needs: ClassVar[frozenset[str]] = frozenset({"history"})

    def history_length(self) -> int:
        return int(self.config.s)


@register
class PRME(_Sequential):
    """Personalized ranking metric embedding over the previous item (``s = 1``) or the mean over ``s`` (PRME_s)."""

    name: ClassVar[str] = "prme"

    @dataclass
    class Config:
        dim: int = 64
        alpha: float = 0.2
        s: int = 1
        init_std: float = 0.1
        reg: float = 1e-4

    def __init__(self, n_users: int, n_items: int, config: Any = None) -> None:
        super().__init__(n_users, n_items, config)
        c = self.config
        if c.dim < 1 or c.s < 1 or not 0 <= c.alpha <= 1 or c.init_std <= 0 or c.reg < 0:
            raise ConfigError(f"{self.name} needs dim >= 1, s >= 1, alpha in [0, 1], init_std > 0, reg >= 0, got {c}.")
        self.user_pref = _emb(n_users, c.dim, c.init_std)
        self.item_pref = _emb(n_items, c.dim, c.init_std)
        self.item_seq = _emb(n_items, c.dim, c.init_std)

    def score(self, users: Tensor, items: Tensor, context: Context | None = None) -> Tensor:
        _check(self, users, items)
        hist = _history(self, users, context, self.config.s)
        a = self.config.alpha
        pref = (self.user_pref(users)[:, None, :] - self.item_pref(items)).square().sum(-1)  # (B, C)
        sj = self.item_seq(items)  # (B, C, d)
        sk = self.item_seq(hist)  # (B, s, d)
        mask = (hist != 0).float()  # (B, s)
        # |S_k - S_j|^2 for every (candidate, context item): (B, C, s)
        dist = sj.square().sum(-1)[:, :, None] - 2 * sj @ sk.transpose(1, 2) + sk.square().sum(-1)[:, None, :]
        n = mask.sum(1)
        seq = (dist * mask[:, None, :]).sum(-1) / n.clamp(min=1)[:, None]
        has = (n > 0)[:, None]
        d = torch.where(has, a * pref + (1 - a) * seq, pref)
        return -d

    def regularization(self, users: Tensor, items: Tensor) -> Tensor:
        if not self.config.reg:
            return torch.zeros((), device=users.device)
        rows = (
            self.user_pref(users).pow(2).sum() + self.item_pref(items).pow(2).sum() + self.item_seq(items).pow(2).sum()
        )
        return self.config.reg * rows / len(users)


@register
class PRMES(PRME):
    """PRME_s: PRME whose sequential term averages over the ``s`` previous items (default 5)."""

    name: ClassVar[str] = "prme-s"

    @dataclass
    class Config:
        dim: int = 64
        alpha: float = 0.2
        s: int = 5
        init_std: float = 0.1
        reg: float = 1e-4


@register
class TransRec(_Sequential):
    """Translation-based sequential recommendation (see module docstring)."""

    name: ClassVar[str] = "transrec"

    @dataclass
    class Config:
        dim: int = 64
        init_std: float = 0.1
        max_norm: float = 1.0  # unit ball for item vectors; 0 disables it
        reg: float = 1e-4
        s: int = 1  # only the previous item is used

    def __init__(self, n_users: int, n_items: int, config: Any = None) -> None:
        super().__init__(n_users, n_items, config)
        c = self.config
        if c.dim < 1 or c.init_std <= 0 or c.max_norm < 0 or c.reg < 0 or c.s != 1:
            raise ConfigError(f"transrec needs dim >= 1, init_std > 0, reg >= 0 and s = 1, got {c}.")
        self.item_emb = _emb(n_items, c.dim, c.init_std, c.max_norm or None)
        self.user_t = nn.Embedding(n_users + 1, c.dim, padding_idx=0)
        nn.init.zeros_(self.user_t.weight)
        self.t = nn.Parameter(torch.zeros(c.dim))
        self.bias = nn.Embedding(n_items + 1, 1, padding_idx=0)
        nn.init.zeros_(self.bias.weight)

    def score(self, users: Tensor, items: Tensor, context: Context | None = None) -> Tensor:
        _check(self, users, items)
        prev = _history(self, users, context, 1)[:, -1]
        query = self.item_emb(prev) * (prev != 0)[:, None] + self.t + self.user_t(users)  # (B, d)
        diff = query[:, None, :] - self.item_emb(items)
        dist = (diff.square().sum(-1) + 1e-12).sqrt()
        return self.bias(items).squeeze(-1) - dist

    def regularization(self, users: Tensor, items: Tensor) -> Tensor:
        if not self.config.reg:
            return torch.zeros((), device=users.device)
        rows = self.user_t(users).pow(2).sum() + self.item_emb(items).pow(2).sum() + self.bias(items).pow(2).sum()
        return self.config.reg * (rows + self.t.pow(2).sum()) / len(users)


@register
class Caser(_Sequential):
    """Convolutional sequence embedding (see module docstring)."""

    name: ClassVar[str] = "caser"

    @dataclass
    class Config:
        dim: int = 50
        s: int = 5  # L, the number of previous items
        n_h: int = 16
        n_v: int = 4
        dropout: float = 0.5
        reg: float = 0.0

    def __init__(self, n_users: int, n_items: int, config: Any = None) -> None:
        super().__init__(n_users, n_items, config)
        c = self.config
        if c.dim < 1 or c.s < 1 or c.n_h < 1 or c.n_v < 1 or not 0 <= c.dropout < 1 or c.reg < 0:
            raise ConfigError(f"caser needs positive sizes, dropout in [0, 1) and reg >= 0, got {c}.")
        d, L = c.dim, c.s
        self.user_emb = _emb(n_users, d, 1.0 / d)
        self.item_emb = _emb(n_items, d, 1.0 / d)
        self.conv_v = nn.Conv2d(1, c.n_v, (L, 1))
        self.conv_h = nn.ModuleList(nn.Conv2d(1, c.n_h, (h, d)) for h in range(1, L + 1))
        self.fc1 = nn.Linear(c.n_v * d + c.n_h * L, d)
        self.drop = nn.Dropout(c.dropout)
        self.w2 = _emb(n_items, 2 * d, 1.0 / (2 * d))
        self.b2 = nn.Embedding(n_items + 1, 1, padding_idx=0)
        nn.init.zeros_(self.b2.weight)

    def sequence_vector(self, users: Tensor, hist: Tensor) -> Tensor:
        """``[z; P_u]`` (B, 2d) for each case."""
        x = self.item_emb(hist)[:, None, :, :]  # (B, 1, L, d)
        out_v = self.conv_v(x).flatten(1)  # (B, n_v * d)
        pooled = []
        for conv in self.conv_h:
            h = F.relu(conv(x).squeeze(3))  # (B, n_h, L - h + 1)
            pooled.append(h.max(dim=2).values)
        z = F.relu(self.fc1(self.drop(torch.cat([out_v, *pooled], dim=1))))
        return torch.cat([z, self.user_emb(users)], dim=1)

    def score(self, users: Tensor, items: Tensor, context: Context | None = None) -> Tensor:
        _check(self, users, items)
        hist = _history(self, users, context, self.config.s)
        if hist.shape[1] < self.config.s:  # left-pad a short window
            hist = F.pad(hist, (self.config.s - hist.shape[1], 0))
        x = self.sequence_vector(users, hist)
        return torch.einsum("bd,bcd->bc", x, self.w2(items)) + self.b2(items).squeeze(-1)

    def regularization(self, users: Tensor, items: Tensor) -> Tensor:
        if not self.config.reg:
            return torch.zeros((), device=users.device)
        rows = self.user_emb(users).pow(2).sum() + self.w2(items).pow(2).sum()
        return self.config.reg * rows / len(users)
