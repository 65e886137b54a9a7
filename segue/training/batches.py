"""Batch builders, one per batch kind a model can declare (segue.data.batch.BATCH_KINDS).

A builder holds the epoch-independent arrays of a training set and, per epoch, yields batches
of its kind in a seeded random order with freshly drawn negatives (the vectorised
:class:`~segue.data.sampling.NegativeSampler`, one draw per epoch). Batches stay on the CPU;
the trainer moves them to the model's device.

=============  ======================================================================================
kind           rows and batch
=============  ======================================================================================
``pairs``      one row per training interaction (user, item+), ``n_negatives`` items the user never
               interacted with; sequential models get the row's context window (``TrainConfig.context``:
               the previous items, or the rest of the basket)
``groups``     one row per (playlist, song+) membership; ``users`` holds playlist ids and
               ``context.group`` the playlist's training songs minus the target ([AMBIG] M.1 default,
               the authors' ``tmp_seq[tmp_seq != iid]``); negatives are songs outside the playlist
``sequences``  one row per user: the training items in time order with a target at every position
               (SASRec's data.py); ``n_negatives`` negatives per position
``sessions``   CoSeRNN: one row per user, the padded session sequence (segue/training/cosernn.py)
``clips``      DCUE, WMF + regression, TripletRec: fresh log-mel crops or feature rows at every step,
               ``eval_every`` steps per epoch (segue/training/audio.py)
=============  ======================================================================================

Every kind is trained by the same :class:`~segue.training.trainer.Trainer` (``Trainer.run`` takes
any builder); the last two carry :class:`~segue.data.batch.FieldBatch` batches.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch

from segue.data.batch import Context, PairBatch, SequenceBatch
from segue.data.groups import member_matrix, playlist_matrix, playlist_owners
from segue.data.sampling import NegativeSampler
from segue.data.sequences import row_contexts, sequence_negatives, sequence_rows
from segue.errors import ConfigError, DataError

if TYPE_CHECKING:
    from segue.data.interactions import Interactions
    from segue.models.base import Recommender


def _check_sizes(model: Recommender, train: Interactions) -> None:
    if train.n_users != model.n_users or train.n_items != model.n_items:
        raise DataError(
            f"The training data has {train.n_users} users and {train.n_items} items but the model "
            f"was built for {model.n_users} and {model.n_items}."
        )


class Batches:
    """Base: ``n_rows`` training rows, ``epoch(rng)`` yields batches of ``batch_size`` rows.

    ``shard = (rank, world size)`` (set by segue/training/distributed.py) makes :meth:`_slices` yield only
    this rank's share of each epoch's permutation; builders whose ``epoch`` draws its rows through
    :meth:`_slices` say so with ``shardable``.
    """

    n_rows: int
    shardable: ClassVar[bool] = False
    shard: tuple[int, int] | None = None

    def __init__(self, batch_size: int, n_negatives: int) -> None:
        self.batch_size = batch_size
        self.n_negatives = n_negatives

    def __len__(self) -> int:
        rows = self.n_rows if self.shard is None else math.ceil(self.n_rows / self.shard[1])
        return math.ceil(rows / self.batch_size)

    def epoch(self, rng: np.random.Generator) -> Iterator[Any]:
        raise NotImplementedError

    def _slices(self, rng: np.random.Generator) -> Iterator[tuple[slice, torch.Tensor]]:
        perm = torch.as_tensor(rng.permutation(self.n_rows))
        if self.shard is not None:
            perm = shard_rows(perm, *self.shard)
        for b in range(len(self)):
            sl = slice(b * self.batch_size, (b + 1) * self.batch_size)
            yield sl, perm[sl]


def shard_rows(perm: torch.Tensor, rank: int, size: int) -> torch.Tensor:
    """Rank ``rank``'s rows of an epoch's permutation, as ``torch.utils.data.DistributedSampler`` takes them:
    the permutation padded with its own first rows to a multiple of ``size``, then every ``size``-th row."""
    total = math.ceil(len(perm) / size) * size
    if total > len(perm):
        perm = torch.cat([perm, perm.repeat(math.ceil(total / max(len(perm), 1)))[: total - len(perm)]])
    return perm[rank:total:size]


class PairBatches(Batches):
    """Rows (user, item+) with sampled negatives; a sequential model's context windows ride along."""

    shardable: ClassVar[bool] = True

    def __init__(self, model: Recommender, train: Interactions, cfg: Any, rng: np.random.Generator) -> None:
        super().__init__(cfg.batch_size, cfg.n_negatives)
        _check_sizes(model, train)
        self.users = train.users.copy()
        self.users_t = torch.as_tensor(self.users)
        self.items_t = torch.as_tensor(train.items.copy())
        self.n_rows = len(self.users)
        self.sampler = NegativeSampler(
            train.to_csr(),
            seed=rng,
            popularity=train.item_counts() if cfg.negative_sampling == "popularity" else None,
            alpha=cfg.popularity_alpha,
        )
        s = model.history_length() if "history" in model.needs else 0
        self.windows = torch.as_tensor(row_contexts(train, s, cfg.context)) if s else None

    def epoch(self, rng: np.random.Generator) -> Iterator[PairBatch]:
        slices = list(self._slices(rng))
        perm = torch.cat([idx for _, idx in slices]) if slices else torch.zeros(0, dtype=torch.long)
        negs = torch.as_tensor(self.sampler.sample(self.users[perm.numpy()], self.n_negatives))
        for sl, idx in slices:
            cand = torch.cat([self.items_t[idx, None], negs[sl]], dim=1)
            ctx = Context(history=self.windows[idx]) if self.windows is not None else None
            yield PairBatch(self.users_t[idx], cand, ctx)


class GroupBatches(Batches):
    """Playlist rows (playlist, song+): member list without the target, negatives outside the playlist."""

    shardable: ClassVar[bool] = True

    def __init__(self, model: Recommender, train: Interactions, cfg: Any, rng: np.random.Generator) -> None:
        super().__init__(cfg.batch_size, cfg.n_negatives)
        if "playlist" not in train.df.columns:
            raise DataError(
                f"{train.name} has no playlist column; playlist models train on (user, playlist, song) rows."
            )
        if train.n_items != model.n_items:
            raise DataError(f"The training data has {train.n_items} songs but the model was built for {model.n_items}.")
        n_p = len(train.group_maps["playlist"])
        if getattr(model, "n_playlists", n_p) != n_p:
            raise DataError(f"The training data has {n_p} playlists but the model was built for {model.n_playlists}.")
        self.pl = train.df["playlist"].to_numpy().copy()
        self.pl_t = torch.as_tensor(self.pl)
        self.it_t = torch.as_tensor(train.df["item"].to_numpy().copy())
        self.members = torch.as_tensor(member_matrix(train, n_p))
        self.sampler = NegativeSampler(playlist_matrix(train, n_p), seed=rng)
        self.n_rows = len(self.pl)

    def epoch(self, rng: np.random.Generator) -> Iterator[PairBatch]:
        slices = list(self._slices(rng))
        perm = torch.cat([idx for _, idx in slices]) if slices else torch.zeros(0, dtype=torch.long)
        negs = torch.as_tensor(self.sampler.sample(self.pl[perm.numpy()], self.n_negatives))
        for sl, idx in slices:
            p = self.pl_t[idx]
            pos = self.it_t[idx]
            mem = self.members[p]
            mem = mem.masked_fill(mem == pos[:, None], 0)
            yield PairBatch(p, torch.cat([pos[:, None], negs[sl]], dim=1), Context(group=mem))


class SequenceBatches(Batches):
    """One row per user: inputs, a target at every position, and negatives per position."""

    shardable: ClassVar[bool] = True

    def __init__(self, model: Recommender, train: Interactions, cfg: Any, rng: np.random.Generator) -> None:
        super().__init__(cfg.batch_size, cfg.n_negatives)
        _check_sizes(model, train)
        users, inputs, targets = sequence_rows(train, model.history_length())
        if len(users) == 0:
            raise DataError("No user has two or more training items, so there is no sequence to train on.")
        self.users = users
        self.users_t = torch.as_tensor(users)
        self.inputs = torch.as_tensor(inputs)
        self.targets = torch.as_tensor(targets)
        self.sampler = NegativeSampler(train.to_csr(), seed=rng)
        self.n_rows = len(users)
        self.n_targets = int((targets != 0).sum())

    def epoch(self, rng: np.random.Generator) -> Iterator[SequenceBatch]:
        for _, idx in self._slices(rng):
            targets = self.targets[idx]
            negs = sequence_negatives(self.sampler, self.users[idx.numpy()], targets.numpy(), self.n_negatives)
            yield SequenceBatch(self.users_t[idx], self.inputs[idx], targets, torch.as_tensor(negs))


BUILDERS: dict[str, type[Batches]] = {"pairs": PairBatches, "groups": GroupBatches, "sequences": SequenceBatches}


def batches_for(model: Recommender, train: Interactions, cfg: Any, rng: np.random.Generator) -> Batches:
    """The batch builder of the kind ``model`` declares."""
    kind = model.batch_kind
    if kind not in BUILDERS:
        raise ConfigError(
            f"{model.name} trains on {kind!r} batches, which the generic trainer does not build; "
            f"it builds {', '.join(BUILDERS)}."
        )
    if len(train) == 0:
        raise DataError("Cannot train on an empty training set.")
    return BUILDERS[kind](model, train, cfg, rng)


__all__ = [
    "BUILDERS",
    "Batches",
    "GroupBatches",
    "PairBatches",
    "SequenceBatches",
    "batches_for",
    "playlist_owners",
    "shard_rows",
]
