"""Pairwise and pointwise losses over (B, 1) positive and (B, n) negative scores.

Scores are "higher is better" (distance models pass minus the distance), so every loss
here pushes the positive above its negatives.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from segue.errors import ConfigError


def bpr_loss(pos: Tensor, neg: Tensor, margin: float = 0.0) -> Tensor:
    """Bayesian personalised ranking: mean over pairs of -log sigma(s+ - s-)."""
    return -F.logsigmoid(pos - neg).mean()


def hinge_loss(pos: Tensor, neg: Tensor, margin: float = 1.0) -> Tensor:
    """Mean over pairs of max(0, margin - s+ + s-)."""
    return F.relu(margin - pos + neg).mean()


def bce_loss(pos: Tensor, neg: Tensor, margin: float = 0.0) -> Tensor:
    """Binary cross-entropy on logits: positives labelled 1, negatives 0 (NCF's pointwise loss)."""
    logits = torch.cat([pos, neg], 1)
    labels = torch.cat([torch.ones_like(pos), torch.zeros_like(neg)], 1)
    return F.binary_cross_entropy_with_logits(logits, labels)


LOSSES: dict[str, Callable[..., Tensor]] = {"bpr": bpr_loss, "hinge": hinge_loss, "bce": bce_loss}


def get_loss(name: str) -> Callable[..., Tensor]:
    if name not in LOSSES:
        raise ConfigError(f"Unknown loss {name!r}; known losses: {', '.join(LOSSES)}.")
    return LOSSES[name]
