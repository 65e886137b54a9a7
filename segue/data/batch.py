"""What a model sees of the data at training and scoring time: :class:`Context` and the batch kinds.

These live in the data layer so that models, the trainer, the evaluator and the server share
them without importing one another. A model declares which batch kind it trains on
(:attr:`segue.models.base.Recommender.batch_kind`); the trainer builds batches of that kind
(segue/training/batches.py) and hands them to the model's ``loss``.

All id tensors use 0 as padding.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

#: The batch kinds a model may declare.
BATCH_KINDS = ("pairs", "groups", "sequences", "sessions", "clips")


@dataclass
class Context:
    """Side inputs for sequential, playlist, basket and session models, already padded.

    All tensors have the batch as first dimension and use 0 as padding id.
    ``history``: (B, s) most recent items, oldest first; ``group``: (B, m) members of the
    playlist / basket / session; ``features``: (B, f) float context features.
    """

    history: Tensor | None = None
    group: Tensor | None = None
    features: Tensor | None = None

    def index(self, idx: Tensor | np.ndarray | slice) -> Context:
        return Context(
            **{f.name: (None if (v := getattr(self, f.name)) is None else v[idx]) for f in dataclasses.fields(self)}
        )

    def to(self, device: torch.device | str) -> Context:
        return Context(
            **{
                f.name: (None if (v := getattr(self, f.name)) is None else v.to(device))
                for f in dataclasses.fields(self)
            }
        )

    def present(self) -> set[str]:
        return {f.name for f in dataclasses.fields(self) if getattr(self, f.name) is not None}


@dataclass
class PairBatch:
    """Rows of (query, positive, negatives): ``items`` (B, 1 + n) holds the positive in column 0.

    ``users`` (B,) are user ids, or playlist ids for playlist models (batch kind ``groups``,
    whose ``context.group`` is the playlist's member list without the target).
    """

    users: Tensor
    items: Tensor
    context: Context | None = None

    def __len__(self) -> int:
        return int(self.users.shape[0])

    def to(self, device: torch.device | str) -> PairBatch:
        ctx = None if self.context is None else self.context.to(device)
        return PairBatch(self.users.to(device), self.items.to(device), ctx)


@dataclass
class SequenceBatch:
    """Whole sequences with a target at every position (SASRec-style training).

    ``inputs`` (B, L): item ids oldest first, left-padded with 0; ``targets`` (B, L): the item
    that follows each input position (0 where there is none); ``negatives`` (B, L, n): sampled
    items the user never interacted with, one set per position.
    """

    users: Tensor
    inputs: Tensor
    targets: Tensor
    negatives: Tensor

    def __len__(self) -> int:
        return int(self.users.shape[0])

    def to(self, device: torch.device | str) -> SequenceBatch:
        return SequenceBatch(*(t.to(device) for t in (self.users, self.inputs, self.targets, self.negatives)))


@dataclass
class FieldBatch:
    """Named tensors with ``rows`` rows: the batches of the ``sessions`` kind (CoSeRNN: padded session
    sequences, ``segue.models.cosernn.pad_users``) and the ``clips`` kind (DCUE, WMF + regression,
    TripletRec: log-mel crops or feature rows). The model that declares the kind names the fields."""

    fields: dict[str, Tensor]
    rows: int

    def __len__(self) -> int:
        return self.rows

    def __getitem__(self, name: str) -> Tensor:
        return self.fields[name]

    def get(self, name: str) -> Tensor | None:
        return self.fields.get(name)

    def to(self, device: torch.device | str) -> FieldBatch:
        return FieldBatch({k: v.to(device) for k, v in self.fields.items()}, self.rows)


__all__ = ["BATCH_KINDS", "Context", "FieldBatch", "PairBatch", "SequenceBatch"]
