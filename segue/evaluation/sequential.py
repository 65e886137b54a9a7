"""Protocol B.8 for the long/short-term sequential models (QUALSE table), on top of protocols.py.

What :func:`segue.evaluation.protocols.get_protocol` ("temporal-sampled") already gives: the
global chronological 70/10/20 split, all of a user's test items ranked with 1,000 fixed
sampled unobserved items, only users with a train history, and the spec's multi-positive
metrics (``HIT@N = |topN & P_u| / |P_u|``, ``NDCG@N`` with binary gains and IDCG over
``min(|P_u|, N)`` positives; ``HR@N`` is the "any-hit" flag variant) at N in {1, 10, 20, 50, 100}.

What this module adds:

* :func:`sequential_protocol` - the same protocol with the **per-user** chronological split
  (the spec's option, and the only meaningful one for Toys / Yelp, whose ``timestamp`` is the
  position in the user's sequence, not a time: a global sort by position would mix users).
* :func:`attach_history` - B.1's rule for the history a model reads at evaluation time:
  train + validation items for the test set, train only for the dev set (``EvalSet.with_history``
  only reads one table).
* :func:`subsample_users` - a seeded random subset of users (then items re-numbered), for
  runs under a compute cap.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch

from segue.data.interactions import Interactions
from segue.data.sequences import last_items
from segue.errors import DataError
from segue.evaluation.protocols import EvalSet, Protocol, get_protocol
from segue.models.base import Context


def sequential_protocol(*, per_user: bool = False, n_negatives: int = 1000, seed: int = 0) -> Protocol:
    """Protocol B.8: ``temporal-sampled`` (global split) or its per-user variant."""
    name = "temporal-sampled-per-user" if per_user else "temporal-sampled"
    return get_protocol(name, seed=seed, n_negatives=n_negatives)


def concat(parts: Sequence[Interactions]) -> Interactions:
    """Rows of several parts of one split (they share id maps) as one table."""
    parts = [p for p in parts if p is not None]
    if not parts:
        raise DataError("No part to concatenate.")
    first = parts[0]
    for p in parts[1:]:
        if p.n_users != first.n_users or p.n_items != first.n_items:
            raise DataError("Parts of different splits cannot be concatenated (their id maps differ).")
    return first.with_frame(pd.concat([p.df for p in parts], ignore_index=True))


def attach_history(evalset: EvalSet, parts: Sequence[Interactions], w: int) -> EvalSet:
    """``evalset`` with ``context.history`` = each user's last ``w`` items over ``parts`` (time order)."""
    hist = torch.as_tensor(last_items(concat(parts), evalset.users, w))
    ctx = evalset.context or Context()
    return dataclasses.replace(
        evalset,
        context=Context(history=hist, group=ctx.group, features=ctx.features),
        meta=dict(evalset.meta) | {"history": f"last {w} items of {'+'.join(p.name for p in parts)}"},
    )


def subsample_users(data: Interactions, n_users: int, seed: int = 0) -> Interactions:
    """A seeded random subset of ``n_users`` users with all their rows, ids re-numbered (no-op if fewer)."""
    if n_users < 1:
        raise DataError(f"n_users must be >= 1, got {n_users}.")
    present = np.unique(data.users)
    if len(present) <= n_users:
        return data
    keep = np.random.default_rng(seed).choice(present, size=n_users, replace=False)
    return data.take(np.isin(data.users, keep)).compact()


__all__ = ["attach_history", "concat", "sequential_protocol", "subsample_users"]
