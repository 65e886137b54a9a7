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

import numpy as np

from segue.data.groups import member_matrix, playlist_matrix, playlist_owners
from segue.data.interactions import Interactions
from segue.errors import DataError
from segue.evaluation.protocols import EvalSet, playlist_evalset  # playlist_evalset lives with the protocols


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
