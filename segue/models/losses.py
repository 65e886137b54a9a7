"""Pairwise and pointwise losses over (B, 1 + n) candidate scores, positive first.

Scores are "higher is better" (distance models pass minus the distance), so every loss here
pushes the positive above its negatives. A :class:`LossSpec` is what a model's default
:meth:`~segue.models.base.Recommender.loss` applies to its scores; the trainer builds it from
its configuration (``loss``, ``margin``, ``neg_reduce``, ``reduction``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from segue.errors import ConfigError


def _bpr_terms(pos: Tensor, neg: Tensor, margin: float) -> Tensor:
    return -F.logsigmoid(pos - neg)


def _hinge_terms(pos: Tensor, neg: Tensor, margin: float) -> Tensor:
    return F.relu(margin - pos + neg)


def _bce_terms(pos: Tensor, neg: Tensor, margin: float) -> Tensor:
    logits = torch.cat([pos, neg], 1)
    labels = torch.cat([torch.ones_like(pos), torch.zeros_like(neg)], 1)
    return F.binary_cross_entropy_with_logits(logits, labels, reduction="none")


_TERMS: dict[str, Callable[[Tensor, Tensor, float], Tensor]] = {
    "bpr": _bpr_terms,
    "hinge": _hinge_terms,
    "bce": _bce_terms,
}


def bpr_loss(pos: Tensor, neg: Tensor, margin: float = 0.0) -> Tensor:
    """Bayesian personalised ranking: mean over pairs of -log sigma(s+ - s-)."""
    return _bpr_terms(pos, neg, margin).mean()


def hinge_loss(pos: Tensor, neg: Tensor, margin: float = 1.0) -> Tensor:
    """Mean over pairs of max(0, margin - s+ + s-)."""
    return _hinge_terms(pos, neg, margin).mean()


def bce_loss(pos: Tensor, neg: Tensor, margin: float = 0.0) -> Tensor:
    """Binary cross-entropy on logits: positives labelled 1, negatives 0 (NCF's pointwise loss)."""
    return _bce_terms(pos, neg, margin).mean()


LOSSES: dict[str, Callable[..., Tensor]] = {"bpr": bpr_loss, "hinge": hinge_loss, "bce": bce_loss}


def get_loss(name: str) -> Callable[..., Tensor]:
    if name not in LOSSES:
        raise ConfigError(f"Unknown loss {name!r}; known losses: {', '.join(LOSSES)}.")
    return LOSSES[name]


@dataclass(frozen=True)
class LossSpec:
    """A loss over (B, 1 + n) scores with the positive in column 0.

    ``neg_reduce="each"`` keeps one term per (positive, negative) pair; ``"max"`` keeps one term
    against the hardest negative (the MASR authors' ``_get_neg_pred``). ``reduction`` is the
    mean or the sum of the terms over the batch.
    """

    name: str = "bpr"
    margin: float = 1.0
    neg_reduce: str = "each"
    reduction: str = "mean"

    def __post_init__(self) -> None:
        if self.name not in _TERMS:
            raise ConfigError(f"Unknown loss {self.name!r}; known losses: {', '.join(_TERMS)}.")
        if self.neg_reduce not in ("each", "max"):
            raise ConfigError(f"neg_reduce must be 'each' or 'max', got {self.neg_reduce!r}.")
        if self.reduction not in ("sum", "mean"):
            raise ConfigError(f"reduction must be 'sum' or 'mean', got {self.reduction!r}.")

    def __call__(self, scores: Tensor) -> Tensor:
        pos, neg = scores[:, :1], scores[:, 1:]
        if self.neg_reduce == "max":
            neg = neg.max(dim=1, keepdim=True).values
        terms = _TERMS[self.name](pos, neg, self.margin)
        return terms.sum() if self.reduction == "sum" else terms.mean()


__all__ = ["LOSSES", "LossSpec", "bce_loss", "bpr_loss", "get_loss", "hinge_loss"]
