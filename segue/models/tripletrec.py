"""TripletRec (Liang, Zeng, Yu, Oyama): user-group and song towers into a shared 7-d space (content spec Part B).

Users are the 127 non-empty subsets ("groups") of 7 topics, fed to the user network pi as
k-hot vectors; songs are 30-s MFCC matrices (20 x 378, flattened to 7560) fed to the song
network phi. Both are MLPs whose hidden layers are Linear -> BatchNorm -> ReLU -> Dropout(0.2)
and whose output Linear(., 7) is plain (B.3 [AMBIG] default); widths phi 7560-1024-256-64-16-7 and
pi 7-64-64-64-64-7. The learned distance is

    D(E_u, E_i) = w . (E_u - E_i)^2 + b        (one Linear(7, 1), initialised w = 1, b = 0)

and a triple (group g, song i, song j) gives the logit ``o_ij = D(pi(g), phi(i)) - D(pi(g), phi(j))``
and the loss ``BCEWithLogits(o_ij, label)`` with label 0 for (positive, negative) and 1 for
(negative, positive) (Section III's convention): for (pos, neg) it is softplus(D+ - D-), a BPR
loss on distances. phi is one module applied to the positive and negative songs as one batch.

``twonet`` is the paper's two-branch baseline (B.8): the same towers and distance, trained with
pointwise BCE on sigmoid(c - D(pi(g), phi(s))) with a learned scalar c.

The score of the recommender interface is ``-D`` (higher is better); users are the group
indices 1..127 (``k_hot_groups()[u - 1]``) and item vectors are phi of the songs' features,
computed once by :meth:`TripletRec.set_item_features`. On DSC-7 the 7 topics are the 7 sources
(spec C.5.4); :func:`lda_topics` is the real LDA path of B.6 (gensim ``LdaModel`` on tag
documents, top 7 topics by mass, a song's label is its dominant kept topic).
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from segue.errors import ConfigError, DataError, NotFittedError
from segue.models.base import Context, Recommender, register

if TYPE_CHECKING:
    pass


def k_hot_groups(n_topics: int = 7) -> Tensor:
    """All 2^n - 1 non-empty subsets of the topics as k-hot rows, (2^n - 1, n) float, in binary order."""
    if not 1 <= n_topics <= 16:
        raise ConfigError(f"n_topics must be in 1..16, got {n_topics}.")
    rows = [[(g >> t) & 1 for t in range(n_topics)] for g in range(1, 2**n_topics)]
    return torch.tensor(rows, dtype=torch.float32)


def mlp(sizes: Sequence[int], dropout: float = 0.2, bn_out: bool = False) -> nn.Sequential:
    """Hidden layers Linear -> BatchNorm1d -> ReLU -> Dropout; the last Linear is plain (optionally BN)."""
    layers: list[nn.Module] = []
    for a, b in itertools.pairwise(sizes[:-1]):
        layers += [nn.Linear(a, b), nn.BatchNorm1d(b), nn.ReLU(), nn.Dropout(dropout)]
    layers.append(nn.Linear(sizes[-2], sizes[-1]))
    if bn_out:
        layers.append(nn.BatchNorm1d(sizes[-1]))
    return nn.Sequential(*layers)


class WeightedDistance(nn.Module):
    """D(a, b) = w . (a - b)^2 + b0 (Linear(dim, 1), w = 1, b0 = 0 at init); optional hidden layer or w >= 0."""

    def __init__(self, dim: int = 7, hidden: int = 0, positive: bool = False) -> None:
        super().__init__()
        self.positive = positive
        if hidden:
            self.net: nn.Module = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, 1))
        else:
            self.net = nn.Linear(dim, 1)
            with torch.no_grad():
                self.net.weight.fill_(1.0)
                self.net.bias.zero_()

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        sq = (a - b) ** 2
        if self.positive and isinstance(self.net, nn.Linear):
            return sq @ F.softplus(self.net.weight).squeeze(0) + self.net.bias
        return self.net(sq).squeeze(-1)


@register
class TripletRec(Recommender):
    """Triplet network: k-hot user groups and MFCC songs in a 7-d space with a learned distance (Part B)."""

    name: ClassVar[str] = "tripletrec"
    #: trained on feature rows of (group, song, song) triples by segue/training/audio.py
    #: (``features=`` and ``topics=`` to fit)
    batch_kind: ClassVar[str] = "clips"
    measure: ClassVar[Any] = None

    @dataclass
    class Config:
        n_topics: int = 7
        in_dim: int = 7560
        n_coeffs: int = 20
        item_hidden: list[int] = field(default_factory=lambda: [1024, 256, 64, 16])
        user_hidden: list[int] = field(default_factory=lambda: [64, 64, 64, 64])
        dim: int = 7
        dropout: float = 0.2
        bn_out: bool = False
        dist_hidden: int = 0
        positive_weights: bool = False

    def __init__(self, n_users: int, n_items: int, config: Any = None) -> None:
        super().__init__(n_users, n_items, config)
        c = self.config
        groups = k_hot_groups(c.n_topics)
        if n_users != len(groups):
            raise ConfigError(
                f"{self.name} has one user per topic group: n_users must be {len(groups)}, got {n_users}."
            )
        if not 0 <= c.dropout < 1 or c.dim < 1 or c.in_dim < 1:
            raise ConfigError(f"{self.name} needs 0 <= dropout < 1, dim >= 1 and in_dim >= 1, got {c}.")
        self.register_buffer("groups", torch.cat([torch.zeros(1, c.n_topics), groups]))
        self.phi = mlp([c.in_dim, *c.item_hidden, c.dim], c.dropout, c.bn_out)
        self.pi = mlp([c.n_topics, *c.user_hidden, c.dim], c.dropout, c.bn_out)
        self.dist = WeightedDistance(c.dim, c.dist_hidden, c.positive_weights)
        self.register_buffer("feat_mean", torch.zeros(c.in_dim))
        self.register_buffer("feat_std", torch.ones(c.in_dim))
        self.register_buffer("item_vecs", torch.zeros(n_items + 1, c.dim))

    # -- towers ----------------------------------------------------------------------------
    def set_normalisation(self, features: np.ndarray | Tensor) -> None:
        """Per-coefficient standardisation (B.2) from training features (N, in_dim), coefficient-major."""
        x = torch.as_tensor(np.asarray(features, dtype=np.float32))
        c = self.config
        if c.in_dim % c.n_coeffs == 0:
            per = x.view(x.shape[0], c.n_coeffs, -1)
            mu = per.mean((0, 2)).repeat_interleave(c.in_dim // c.n_coeffs)
            sd = per.std((0, 2)).repeat_interleave(c.in_dim // c.n_coeffs)
        else:
            mu, sd = x.mean(0), x.std(0)
        with torch.no_grad():
            self.feat_mean.copy_(mu)
            self.feat_std.copy_(sd.clamp_min(1e-6))

    def item_embed(self, features: Tensor) -> Tensor:
        return self.phi((features.float() - self.feat_mean) / self.feat_std)

    def user_embed(self, k_hot: Tensor) -> Tensor:
        return self.pi(k_hot.float())

    def distance(self, eu: Tensor, ei: Tensor) -> Tensor:
        return self.dist(eu, ei)

    def forward(self, k_hot: Tensor, i: Tensor, j: Tensor) -> Tensor:
        """o_ij = D(pi(g), phi(i)) - D(pi(g), phi(j)) for (B, 7) groups and (B, in_dim) songs i, j."""
        e = self.item_embed(torch.cat([i, j]))
        ei, ej = e.chunk(2)
        eu = self.user_embed(k_hot)
        return self.distance(eu, ei) - self.distance(eu, ej)

    # -- interface ------------------------------------------------------------------------
    @torch.no_grad()
    def set_item_features(self, features: np.ndarray | Tensor, batch: int = 1024) -> None:
        """phi of every song's features (n_items, in_dim), row i - 1 = item i, in eval mode."""
        shape = tuple(getattr(features, "shape", ()))
        if len(shape) != 2 or shape[0] != self.n_items or shape[1] != self.config.in_dim:
            raise DataError(f"features must be ({self.n_items}, {self.config.in_dim}), got {shape}.")
        was = self.training
        self.eval()
        for s in range(0, self.n_items, batch):
            x = torch.as_tensor(np.asarray(features[s : s + batch], dtype=np.float32))
            self.item_vecs[1 + s : 1 + s + len(x)] = self.item_embed(x)
        self.train(was)
        self.fitted = True

    def score(self, users: Tensor, items: Tensor, context: Context | None = None) -> Tensor:
        if not self.fitted:
            raise NotFittedError(f"{self.name} is not fitted.")
        eu = self.user_embed(self.groups[users])  # (B, dim)
        ei = self.item_vecs[items]  # (B, C, dim)
        return -self.distance(eu[:, None, :], ei)

    def score_all(self, users: Tensor, context: Context | None = None, chunk: int = 4096) -> Tensor:
        s = self.score(users, torch.arange(self.n_items + 1, device=users.device).expand(users.shape[0], -1))
        s[:, 0] = float("-inf")
        return s

    def loss(self, batch: Any, spec: Any = None) -> Tensor:
        """B.5 on a ``clips`` batch: ``groups`` (B, G) k-hot, the features ``x_i``, ``x_j`` of each triple's two
        songs in shown order, and ``labels`` (1 where the first one shown is the negative)."""
        return self.triplet_loss(self(batch["groups"], batch["x_i"], batch["x_j"]), batch["labels"])

    def triplet_loss(self, logits: Tensor, labels: Tensor) -> Tensor:
        """BCE with logits; label 0 when (i, j) = (positive, negative), 1 when reversed (Section III)."""
        return F.binary_cross_entropy_with_logits(logits, labels.float())


@register
class TwoNet(TripletRec):
    """The two-branch baseline of TripletRec (B.8): pointwise BCE on sigmoid(c - D(pi(g), phi(s)))."""

    name: ClassVar[str] = "twonet"

    def __init__(self, n_users: int, n_items: int, config: Any = None) -> None:
        super().__init__(n_users, n_items, config)
        self.c = nn.Parameter(torch.zeros(()))

    def loss(self, batch: Any, spec: Any = None) -> Tensor:
        """The pointwise BCE of (group, song, label) pairs: ``groups``, ``x`` (features), ``labels``."""
        return F.binary_cross_entropy_with_logits(self.pair_logits(batch["groups"], batch["x"]), batch["labels"])

    def pair_logits(self, k_hot: Tensor, songs: Tensor) -> Tensor:
        return self.c - self.distance(self.user_embed(k_hot), self.item_embed(songs))


# -- triples (B.6) -----------------------------------------------------------------------------
def make_triples(
    topics: np.ndarray,
    songs: np.ndarray,
    variant: str = "unbalanced",
    n_topics: int = 7,
    rng: np.random.Generator | None = None,
    n_negatives: int = 10,
) -> np.ndarray:
    """(group index 0..2^n - 2, positive song, negative song) rows over ``songs`` (item ids).

    ``topics[i - 1]`` is the topic of item i. Positive for group g: topic in g; negative: not in g.
    ``unbalanced``: one uniform negative per (group, positive song); ``balanced``: every group
    under-sampled to the smallest group's count; ``1-to-n``: balanced with ``n_negatives``
    negatives per positive. The all-topics group has no negatives and is skipped with a warning.
    """
    rng = rng or np.random.default_rng(0)
    if variant not in ("unbalanced", "balanced", "1-to-n"):
        raise ConfigError(f"variant must be unbalanced, balanced or 1-to-n, got {variant!r}.")
    songs = np.asarray(songs, dtype=np.int64)
    t = np.asarray(topics)[songs - 1]
    groups = k_hot_groups(n_topics).numpy().astype(bool)
    per_group = []
    for g, mask in enumerate(groups):
        pos_mask = mask[t]
        pos, neg = songs[pos_mask], songs[~pos_mask]
        if len(neg) == 0:
            warnings.warn(f"Group {g} (all topics present) has no negative song and gives no triple.", stacklevel=2)
            continue
        if len(pos) == 0:
            continue
        per_group.append((g, pos, neg))
    if not per_group:
        raise DataError("No group has both positive and negative songs; check the topics.")
    if variant != "unbalanced":
        m = min(len(p) for _, p, _ in per_group)
        per_group = [(g, rng.choice(p, m, replace=False), n) for g, p, n in per_group]
    k = n_negatives if variant == "1-to-n" else 1
    out = []
    for g, pos, neg in per_group:
        p = np.repeat(pos, k)
        out.append(np.stack([np.full(len(p), g), p, neg[rng.integers(0, len(neg), len(p))]], 1))
    return np.concatenate(out)


# -- the LDA path (B.6) ----------------------------------------------------------------------------
def lda_topics(
    docs: Sequence[Sequence[str]], n_topics: int = 20, keep: int = 7, seed: int = 0, passes: int = 10
) -> tuple[np.ndarray, np.ndarray]:
    """Topic labels from tag documents with gensim's ``LdaModel`` (B.6 [AMBIG] default).

    Fits K = ``n_topics`` topics, keeps the ``keep`` topics with the largest total document mass
    and labels each document with its dominant kept topic (0..keep-1, ordered by mass). Returns
    (labels (n_docs,), theta (n_docs, keep) restricted to the kept topics).
    """
    from gensim.corpora import Dictionary
    from gensim.models import LdaModel

    docs = [list(d) for d in docs]
    if not docs or not any(docs):
        raise DataError("LDA needs at least one non-empty tag document.")
    if keep > n_topics:
        raise ConfigError(f"Cannot keep {keep} of {n_topics} topics.")
    vocab = Dictionary(docs)
    bow = [vocab.doc2bow(d) for d in docs]
    lda = LdaModel(bow, id2word=vocab, num_topics=n_topics, random_state=seed, passes=passes, alpha="auto", eta="auto")
    theta = np.zeros((len(docs), n_topics))
    for r, b in enumerate(bow):
        for t, p in lda.get_document_topics(b, minimum_probability=0.0):
            theta[r, t] = p
    kept = np.argsort(-theta.sum(0), kind="stable")[:keep]
    sub = theta[:, kept]
    return sub.argmax(1), sub
