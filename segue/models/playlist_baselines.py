"""Playlist-continuation baselines of Table 4.4 (spec M.11).

* ``fism``: FISM (Kabbur et al.) with a playlist neighbourhood, trained with BPR by the playlist
  trainer: y(p, s) = b_s + |M|^-a sum_{t in M} <P_t, Q_s>, M = the playlist's member songs (the
  target excluded in training, as for MASS). The user-based neighbourhood (all songs of the owner's
  playlists) is not implemented.
* MF-BPR, CML and NeuMF++ as user->song and playlist->song: no new classes. The foundation models
  (``mf-bpr``, ``cml``, ``neumf``) are trained by the generic trainer on the training rows keyed by
  the owner or by the playlist (:func:`segue.evaluation.playlist.keyed_train`) and evaluated on the
  same playlist cases re-keyed the same way (:func:`segue.training.playlist.fit_keyed`); the better of the two on dev is
  reported, as the paper did (M.10).
* Not implemented: CMN++ (memory network over neighbour users) and the sequential baselines of
  group 3 (PRME, TransRec, Caser are in ``segue.models.sequential_sdmr`` but need an order, and the
  paper feeds them the shuffled playlist order).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from segue.errors import ConfigError
from segue.models.base import Context, register
from segue.models.playlist import PlaylistModel, _emb


@register
class FISM(PlaylistModel):
    """Factored item similarity over the playlist's member songs, BPR-trained (playlist neighbourhood)."""

    name: ClassVar[str] = "fism"
    #: FISM is a baseline, not the MASR authors' model: one BPR term per negative (the text's loss),
    #: not the MASR family's hardest-negative [CODE-HINT] default.
    train_defaults: ClassVar[dict[str, Any]] = {**PlaylistModel.train_defaults, "neg_reduce": "each"}

    @dataclass
    class Config:
        dim: int = 64
        n_playlists: int = 0
        alpha: float = 0.5  # normalisation exponent |M|^-alpha

    def __init__(self, n_users: int, n_items: int, config: Any = None) -> None:
        super().__init__(n_users, n_items, config)
        c = self.config
        if c.dim < 1 or not 0 <= c.alpha <= 1:
            raise ConfigError(f"fism needs dim >= 1 and alpha in [0, 1], got {c}.")
        self.P = _emb(n_items, c.dim)
        self.Q = _emb(n_items, c.dim)
        self.bias = nn.Parameter(torch.zeros(n_items + 1))

    def score(self, users: Tensor, items: Tensor, context: Context | None = None) -> Tensor:
        members = self._check(users, items, context, need_group=True)
        assert members is not None
        n = (members != 0).sum(1, keepdim=True).clamp_min(1).float()
        agg = self.P(members).sum(1) / n.pow(self.config.alpha)  # pad rows of P are 0
        return (self.Q(items) * agg[:, None, :]).sum(-1) + self.bias[items]


__all__ = ["FISM"]
