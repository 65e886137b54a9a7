"""MDR, MASS, MASR and their adversarial versions AMDR, AMASS, AMASR (spec Part M, SIGIR'19 MASR paper).

Query convention
----------------
Playlist models are scored per **playlist**: the ``users`` argument of :meth:`score` holds
playlist ids, and each model looks the owner up in its ``owner`` buffer (set with
:meth:`PlaylistModel.set_owners`; identity when the data have no owners, so a playlist is its
own user). ``context.group`` (B, l) holds the playlist's member songs padded with 0: at training
time the training songs minus the target (M.1 [AMBIG] default), at evaluation all training songs.

Distances and scores (M.1, M.5 [AMBIG] signs): every model computes a squared diagonal
Mahalanobis distance D (lower is better) and returns the score y = -D; MASR mixes scores.

=========  =====================================================================================
model      definition
=========  =====================================================================================
``mdr``    D = ||B1 (u - s)||^2 + ||B2 (p - s)||^2 + theta_s (Eq. 4.20); ``mode`` us / ps / ups
``mass``   D = sum_t alpha_t ||B3 (q - s_t)||^2 + b_s with q = ReLU(W1 [u; s] + b1) and
           alpha = softmax_t(-||B4 (q_a - s^a_t)||^2) over the members (Eqs. 4.21-4.28);
           ``mode`` us / ps; ``attention`` mem-metric / nonmem-metric / mem-dot / nonmem-dot
``masr``   y = a y_MDR + (1 - a) y_MASS over frozen, separately trained MDR and MASS (Eq. 4.29)
``amdr``,  the same models trained with APR with flexible noise after BPR pre-training
``amass``  (M.7: they declare ``adversarial`` and their perturbable parameters; segue.training.fit runs it)
=========  =====================================================================================

Init follows the authors' code (M.6): embeddings N(0, 1/d) with pad row 0, biases 0, B1 = B3 = B4 = 1,
B2 ~ U[0, 1), W1 = W2 = [-I, I]. Not implemented: MASS_ups (the [AMBIG] second query per memory),
the full-A metric for MASS (MDR has ``metric="full"``).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from segue.data.groups import playlist_owners
from segue.errors import ConfigError, DataError
from segue.models.base import Context, Recommender, register

if TYPE_CHECKING:
    from segue.data.interactions import Interactions


def _emb(n: int, d: int) -> nn.Embedding:
    e = nn.Embedding(n + 1, d, padding_idx=0)
    nn.init.normal_(e.weight, 0.0, 1.0 / d)
    with torch.no_grad():
        e.weight[0] = 0
    return e


def _query_layer(d: int) -> nn.Linear:
    """Linear(2d, d) with weight [-I, I], so that q = s - u + b before the ReLU (M.6 init)."""
    lin = nn.Linear(2 * d, d)
    with torch.no_grad():
        eye = torch.eye(d)
        lin.weight.copy_(torch.cat([-eye, eye], dim=1))
    return lin


def sq_mahalanobis(x: Tensor, y: Tensor, b: Tensor) -> Tensor:
    """Squared diagonal Mahalanobis distance sum((b * (x - y))**2) over the last axis (Eq. 4.12, squared)."""
    return (b * (x - y)).square().sum(-1)


def _pairwise(q: Tensor, m: Tensor, b: Tensor) -> Tensor:
    """||b (q_c - m_t)||^2 for q (B, C, d), m (B, l, d) -> (B, C, l), by expansion (no (B, C, l, d) tensor)."""
    w = b.square()
    qq = (q.square() * w).sum(-1)[:, :, None]
    mm = (m.square() * w).sum(-1)[:, None, :]
    return (qq + mm - 2 * torch.bmm(q * w, m.transpose(1, 2))).clamp_min(0)


class PlaylistModel(Recommender):
    """Base of the playlist models: playlist-keyed queries, an owner table, member-list context."""

    needs: ClassVar[frozenset[str]] = frozenset({"group"})
    batch_kind: ClassVar[str] = "groups"
    #: M.6 / M.8: BPR over 4 negatives summed over the batch ([CODE-HINT] sum), Adam 1e-3, batch 256,
    #: every epoch run (no patience), the best dev epoch by HR@10 then NDCG@10 kept; APR (M.7) for
    #: the adversarial models: eps 1, reg_adv 1, row-wise flexible noise from the previous batch's.
    #: [CODE-HINT] ``neg_reduce="max"``: one BPR term per positive against the hardest of its 4
    #: negatives, as the authors' code trains (thanhdtran/MASR, model.py, ``REC._get_neg_pred``:
    #: ``torch.max`` over the negatives' predictions, used for the BPR and the APR losses alike).
    #: The text's reading of Eq. 21 / Eq. 4.30 (one term per negative, summed) stays available as
    #: ``neg_reduce="each"``.
    train_defaults: ClassVar[dict[str, Any]] = {
        "epochs": 50,
        "batch_size": 256,
        "lr": 1e-3,
        "n_negatives": 4,
        "neg_reduce": "max",
        "reduction": "sum",
        "patience": None,
        "seed": 98765,
        "eval_batch_size": 128,
        "monitor": "HR@10,NDCG@10",
        "adv_epochs": 50,
        "adv_eps": 1.0,
        "adv_weight": 1.0,
        "adv_norm": "row",
        "adv_scale": "std",
        "adv_warm": True,
    }

    def __init__(self, n_users: int, n_items: int, config: Any = None) -> None:
        super().__init__(n_users, n_items, config)
        n_p = int(getattr(self.config, "n_playlists", 0) or 0)
        if n_p < 0:
            raise ConfigError(f"n_playlists must be >= 0, got {n_p}.")
        self.n_playlists = n_p or n_users
        owner = torch.arange(self.n_playlists + 1) if not n_p else torch.zeros(n_p + 1, dtype=torch.long)
        if n_p and n_p == n_users:
            owner = torch.arange(n_p + 1)
        self.register_buffer("owner", owner.long())

    @property
    def n_queries(self) -> int:
        return self.n_playlists

    @property
    def query_kind(self) -> str:
        return "playlist"

    def prepare(self, train: Interactions) -> None:
        """Take the playlist owners from the training table when it has the model's users."""
        if (
            "playlist" in train.df.columns
            and self.n_users == train.n_users
            and len(train.group_maps["playlist"]) == self.n_playlists
        ):
            self.set_owners(playlist_owners(train))

    def set_owners(self, owner: np.ndarray | Tensor) -> None:
        """Set the (n_playlists + 1,) playlist -> owner user table (entry 0 is the pad)."""
        o = torch.as_tensor(np.asarray(owner), dtype=torch.long)
        if o.shape != self.owner.shape:
            raise DataError(f"The owner table must have {self.owner.shape[0]} entries, got {o.shape[0]}.")
        if o.numel() > 1 and (o[1:].min() < 1 or o.max() > self.n_users):
            raise DataError(f"Owner ids must lie in 1..{self.n_users}.")
        self.owner.copy_(o.to(self.owner.device))

    def _check(self, playlists: Tensor, items: Tensor, context: Context | None, need_group: bool) -> Tensor | None:
        if items.dim() != 2 or playlists.dim() != 1 or items.shape[0] != playlists.shape[0]:
            raise DataError(
                f"{self.name}: expected playlists (B,) and items (B, C), got {tuple(playlists.shape)} "
                f"and {tuple(items.shape)}."
            )
        if need_group:
            if context is None or context.group is None:
                raise DataError(f"{self.name} needs context.group, the playlist's member songs (B, l).")
            return context.group
        return None

    def distance(self, playlists: Tensor, items: Tensor, context: Context | None = None) -> Tensor:
        raise NotImplementedError

    def score(self, users: Tensor, items: Tensor, context: Context | None = None) -> Tensor:
        """Minus the distance, (B, C); ``users`` holds playlist ids."""
        return -self.distance(users, items, context)

    def forward(self, users: Tensor, items: Tensor, context: Context | None = None) -> Tensor:
        """The score (so ``torch.func.functional_call`` can evaluate perturbed parameters for APR)."""
        return self.score(users, items, context)


@register
class MDR(PlaylistModel):
    """Mahalanobis Distance based Recommender (Eq. 4.20); ``mode`` gives the MDR_us / MDR_ps ablations."""

    name: ClassVar[str] = "mdr"

    @dataclass
    class Config:
        dim: int = 64
        n_playlists: int = 0
        mode: str = "ups"  # ups = MDR, us = user term only, ps = playlist term only (Table 4.5)
        metric: str = "diag"  # diag (B vectors) or full (A matrices), M.2
        dropout: float = 0.0  # [CODE-HINT] 0.2 on B (x - y) in the code; 0 = the text

    def __init__(self, n_users: int, n_items: int, config: Any = None) -> None:
        super().__init__(n_users, n_items, config)
        c = self.config
        if c.mode not in ("ups", "us", "ps") or c.metric not in ("diag", "full") or c.dim < 1:
            raise ConfigError(f"mdr needs mode in ups/us/ps, metric in diag/full and dim >= 1, got {c}.")
        d = c.dim
        self.user_emb = _emb(n_users, d)
        self.playlist_emb = _emb(self.n_playlists, d)
        self.song_emb = _emb(n_items, d)
        self.theta = nn.Parameter(torch.zeros(n_items + 1))
        if c.metric == "diag":
            self.B1 = nn.Parameter(torch.ones(d))
            self.B2 = nn.Parameter(torch.rand(d))
        else:
            self.B1 = nn.Parameter(torch.eye(d))
            self.B2 = nn.Parameter(torch.eye(d) * torch.rand(d))
        self.drop = nn.Dropout(c.dropout)

    def _term(self, x: Tensor, s: Tensor, b: Tensor) -> Tensor:
        diff = (x - s) @ b.T if self.config.metric == "full" else b * (x - s)
        return self.drop(diff).square().sum(-1)

    def distance(self, playlists: Tensor, items: Tensor, context: Context | None = None) -> Tensor:
        self._check(playlists, items, context, need_group=False)
        s = self.song_emb(items)
        d = self.theta[items]
        if self.config.mode in ("ups", "us"):
            d = d + self._term(self.user_emb(self.owner[playlists])[:, None, :], s, self.B1)
        if self.config.mode in ("ups", "ps"):
            d = d + self._term(self.playlist_emb(playlists)[:, None, :], s, self.B2)
        return d


ATTENTIONS = ("mem-metric", "nonmem-metric", "mem-dot", "nonmem-dot")


@register
class MASS(PlaylistModel):
    """Mahalanobis distance based Attentive Song Similarity (Eqs. 4.21-4.28), two memories."""

    name: ClassVar[str] = "mass"

    @dataclass
    class Config:
        dim: int = 64
        n_playlists: int = 0
        mode: str = "us"  # us = MASS (owner queries), ps = playlist tables instead of user tables
        attention: str = "mem-metric"  # Table 4.6 variants
        dropout: float = 0.0  # [CODE-HINT] 0.2 in the code (applied on B (q - s) before squaring)

    def __init__(self, n_users: int, n_items: int, config: Any = None) -> None:
        super().__init__(n_users, n_items, config)
        c = self.config
        if c.mode not in ("us", "ps") or c.attention not in ATTENTIONS or c.dim < 1:
            raise ConfigError(f"mass needs mode in us/ps, attention in {', '.join(ATTENTIONS)} and dim >= 1, got {c}.")
        d = c.dim
        n_q = n_users if c.mode == "us" else self.n_playlists
        self.user_emb = _emb(n_q, d)
        self.song_emb = _emb(n_items, d)
        self.W1 = _query_layer(d)
        self.B3 = nn.Parameter(torch.ones(d))
        self.bias = nn.Parameter(torch.zeros(n_items + 1))
        self.mem = c.attention.startswith("mem")
        if self.mem:
            self.user_att = _emb(n_q, d)
            self.song_att = _emb(n_items, d)
        if c.attention != "nonmem-dot":
            self.W2 = _query_layer(d)
        if c.attention.endswith("metric"):
            self.B4 = nn.Parameter(torch.ones(d))
        self.drop = nn.Dropout(c.dropout)

    def _queries(self, playlists: Tensor) -> Tensor:
        return self.owner[playlists] if self.config.mode == "us" else playlists

    def _dist_to_members(self, q: Tensor, m: Tensor, b: Tensor) -> Tensor:
        if self.training and self.config.dropout > 0:
            return self.drop(b * (q[:, :, None, :] - m[:, None, :, :])).square().sum(-1)
        return _pairwise(q, m, b)

    def attention_weights(self, playlists: Tensor, items: Tensor, members: Tensor) -> Tensor:
        """alpha (B, C, l): softmax over the members of minus the attention distance, 0 on pads (Eq. 4.27)."""
        q_ids = self._queries(playlists)
        mask = (members != 0)[:, None, :]
        att = self.config.attention
        if att == "nonmem-dot":
            q = F.relu(self.W1(self._cat(self.user_emb(q_ids), self.song_emb(items))))
            logits = torch.bmm(q, self.song_emb(members).transpose(1, 2))
        else:
            ue, se = (self.user_att, self.song_att) if self.mem else (self.user_emb, self.song_emb)
            qa = F.relu(self.W2(self._cat(ue(q_ids), se(items))))
            ma = se(members)
            if att.endswith("metric"):
                logits = -self._dist_to_members(qa, ma, self.B4)
            else:
                logits = torch.bmm(qa, ma.transpose(1, 2))
        logits = logits.masked_fill(~mask, float("-inf"))
        return torch.softmax(logits, dim=-1).nan_to_num(0.0)  # a playlist without members: alpha = 0 (M.4)

    @staticmethod
    def _cat(u: Tensor, s: Tensor) -> Tensor:
        return torch.cat([u[:, None, :].expand(-1, s.shape[1], -1), s], dim=-1)

    def distance(self, playlists: Tensor, items: Tensor, context: Context | None = None) -> Tensor:
        members = self._check(playlists, items, context, need_group=True)
        assert members is not None
        q = F.relu(self.W1(self._cat(self.user_emb(self._queries(playlists)), self.song_emb(items))))
        d_main = self._dist_to_members(q, self.song_emb(members), self.B3)
        alpha = self.attention_weights(playlists, items, members)
        return (alpha * d_main).sum(-1) + self.bias[items]


@register
class MASR(PlaylistModel):
    """MASR = a * MDR + (1 - a) * MASS on scores, over frozen pre-trained components (Eq. 4.29, M.5)."""

    name: ClassVar[str] = "masr"

    @dataclass
    class Config:
        dim: int = 64
        n_playlists: int = 0
        alpha: float = 0.5  # weight of MDR (fixed in the paper)
        mdr_mode: str = "ups"
        mass_mode: str = "us"

    def __init__(self, n_users: int, n_items: int, config: Any = None) -> None:
        super().__init__(n_users, n_items, config)
        c = self.config
        if not 0 <= c.alpha <= 1:
            raise ConfigError(f"masr alpha must lie in [0, 1], got {c.alpha}.")
        mdr_cls, mass_cls = self.part_classes()
        self.mdr = mdr_cls(n_users, n_items, mdr_cls.Config(dim=c.dim, n_playlists=c.n_playlists, mode=c.mdr_mode))
        self.mass = mass_cls(n_users, n_items, mass_cls.Config(dim=c.dim, n_playlists=c.n_playlists, mode=c.mass_mode))
        self.pretrained = False

    @classmethod
    def part_classes(cls) -> tuple[type[MDR], type[MASS]]:
        return MDR, MASS

    @classmethod
    def from_parts(cls, mdr: MDR, mass: MASS, alpha: float = 0.5) -> MASR:
        """Combine trained MDR and MASS (their best dev checkpoints), frozen."""
        if mdr.n_items != mass.n_items or mdr.n_playlists != mass.n_playlists:
            raise DataError("MDR and MASS were built for different songs or playlists.")
        if mdr.config.dim != mass.config.dim:
            raise DataError(f"MASR needs MDR and MASS of one size, got dim {mdr.config.dim} and {mass.config.dim}.")
        self = cls(
            mdr.n_users,
            mdr.n_items,
            cls.Config(
                dim=mdr.config.dim,
                n_playlists=mdr.n_playlists,
                alpha=alpha,
                mdr_mode=mdr.config.mode,
                mass_mode=mass.config.mode,
            ),
        )
        self.mdr, self.mass = copy.deepcopy(mdr), copy.deepcopy(mass)  # the originals stay trainable
        self.owner = mdr.owner.clone()
        self.pretrained = True
        self.freeze()
        self.fitted = True
        return self

    def freeze(self) -> None:
        for p in self.parameters():
            p.requires_grad_(False)

    def set_owners(self, owner: np.ndarray | Tensor) -> None:
        super().set_owners(owner)
        self.mdr.set_owners(owner)
        self.mass.set_owners(owner)

    def score(self, users: Tensor, items: Tensor, context: Context | None = None) -> Tensor:
        a = self.config.alpha
        return a * self.mdr.score(users, items, context) + (1 - a) * self.mass.score(users, items, context)

    def parts(self) -> dict[str, Recommender]:
        """MDR and MASS, trained first unless the model was built :meth:`from_parts`."""
        return {} if self.pretrained else {"mdr": self.mdr, "mass": self.mass}

    def assemble(
        self, train: Interactions, parts: dict[str, Recommender], *, seed: int = 0, context: str = "history"
    ) -> None:
        self.pretrained = True
        self.freeze()


@register
class AMDR(MDR):
    """MDR trained with APR with flexible noise (M.7): BPR first, then adversarial epochs from the best checkpoint."""

    name: ClassVar[str] = "amdr"

    @property
    def adversarial(self) -> bool:
        return True

    def adversary_tables(self) -> list[str]:
        return perturbable(self)


@register
class AMASS(MASS):
    """MASS trained with APR with flexible noise (M.7)."""

    name: ClassVar[str] = "amass"

    @property
    def adversarial(self) -> bool:
        return True

    def adversary_tables(self) -> list[str]:
        return perturbable(self)


@register
class AMASR(MASR):
    """MASR over the APR-trained AMDR and AMASS (M.5); build it with :meth:`MASR.from_parts`."""

    name: ClassVar[str] = "amasr"

    @classmethod
    def part_classes(cls) -> tuple[type[MDR], type[MASS]]:
        return AMDR, AMASS


def perturbable(model: nn.Module) -> list[str]:
    """Names of the parameters APR perturbs (M.7): all of them except the query layers' bias vectors."""
    return [n for n, p in model.named_parameters() if p.requires_grad and not n.endswith(("W1.bias", "W2.bias"))]


__all__ = [
    "AMASR",
    "AMASS",
    "AMDR",
    "ATTENTIONS",
    "MASR",
    "MASS",
    "MDR",
    "PlaylistModel",
    "perturbable",
    "sq_mahalanobis",
]
