"""Playlist-continuation evaluation cases (spec M.10) and the member lists the playlist models read.

One case per playlist: the query is the playlist (``EvalSet.users`` holds **playlist ids**; the
owner is looked up by the model), ``context.group`` = the playlist's training songs padded with 0,
the candidates = the held-out song first, then ``n_negatives`` distinct songs drawn uniformly
without replacement from the **training song vocabulary** minus every song of the playlist
(train, dev and test) [CODE-HINT M.10]. Cases whose held-out song never occurs in training are
dropped [CODE-HINT M.10]. Negatives are fixed by ``seed``, so every model of a table is ranked
against the same candidates. :func:`owner_evalset` re-keys the same cases by owner for the
user->song baselines.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from segue.data.groups import member_matrix, playlist_matrix, playlist_owners
from segue.data.interactions import Interactions
from segue.data.splits import Split
from segue.errors import DataError
from segue.evaluation.protocols import EvalSet, first_per_group
from segue.models.base import Context


def playlist_evalset(split: Split, part: str = "test", *, n_negatives: int = 100, seed: int = 0) -> EvalSet:
    """One case per playlist of ``part``: held-out song + ``n_negatives`` fixed negatives; members in context."""
    data: Interactions | None = getattr(split, part)
    if data is None or len(data) == 0:
        raise DataError(f"The split has no {part} part.")
    if "playlist" not in data.group_maps:
        raise DataError(f"{data.name} has no playlist grouping.")
    n_p = len(data.group_maps["playlist"])
    train = split.train
    vocab = np.flatnonzero(train.item_counts() > 0)
    known = playlist_matrix(train, n_p)
    for other in (split.valid, split.test):
        if other is not None:
            known = known + playlist_matrix(other, n_p)
    known = known.tocsr()
    pl = data.df["playlist"].to_numpy()
    tg = data.df["item"].to_numpy()
    seen_in_train = np.isin(tg, vocab)
    rows = first_per_group(pl, seen_in_train)  # one held-out song per playlist (M.10)
    pl, tg = pl[rows], tg[rows]
    if len(pl) == 0:
        raise DataError(f"No {part} song of any playlist occurs in training.")
    rng = np.random.default_rng(seed)
    negs = np.zeros((len(pl), n_negatives), dtype=np.int64)
    for r, p in enumerate(pl):
        avoid = known.indices[known.indptr[p] : known.indptr[p + 1]]
        pool_size = len(vocab) - np.isin(vocab, avoid, assume_unique=False).sum()
        if pool_size < n_negatives:
            raise DataError(f"Playlist {p} has only {pool_size} candidate negatives, fewer than {n_negatives}.")
        got: list[int] = []
        avoid_set = set(avoid.tolist())
        while len(got) < n_negatives:
            for c in rng.choice(vocab, size=2 * n_negatives, replace=False).tolist():
                if c not in avoid_set:
                    avoid_set.add(c)
                    got.append(c)
                    if len(got) == n_negatives:
                        break
        negs[r] = got
    members = member_matrix(train, n_p)
    targets = sp.csr_matrix((np.ones(len(pl), np.float32), (np.arange(len(pl)), tg)), shape=(len(pl), data.n_items + 1))
    meta: dict[str, Any] = {
        "kind": "sampled",
        "part": part,
        "n_negatives": n_negatives,
        "seed": seed,
        "split": split.name,
        "split_params": split.params,
        "query": "playlist",
        "dropped_unseen_targets": int((~seen_in_train).sum()),
    }
    return EvalSet(
        users=pl.astype(np.int64),
        targets=targets,
        candidates=np.concatenate([tg[:, None], negs], axis=1),
        n_pos=np.ones(len(pl), dtype=np.int64),
        exclude=None,
        context=Context(group=torch.as_tensor(members[pl])),
        meta=meta,
    )


def owner_evalset(evalset: EvalSet, owners: np.ndarray) -> EvalSet:
    """The same cases and candidates keyed by the playlist's owner (user->song baselines)."""
    return EvalSet(
        owners[evalset.users],
        evalset.targets,
        evalset.candidates,
        evalset.n_pos,
        evalset.exclude,
        evalset.context,
        {**evalset.meta, "query": "owner"},
    )


def keyed_train(train: Interactions, key: str) -> Interactions:
    """Training rows as a (key, song) table for the generic trainer: ``key`` = ``"playlist"`` or ``"user"``."""
    if key == "user":
        return train
    if key != "playlist":
        raise DataError(f"Unknown query key {key!r}; expected 'user' or 'playlist'.")
    df = train.df[["playlist", "item"]].rename(columns={"playlist": "user"}).reset_index(drop=True)
    return Interactions(df, train.group_maps["playlist"], train.item_map, {}, train.name + "-by-playlist")


__all__ = [
    "keyed_train",
    "member_matrix",
    "owner_evalset",
    "playlist_evalset",
    "playlist_matrix",
    "playlist_owners",
]
