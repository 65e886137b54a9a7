"""CoSeRNN's ``sessions`` batches (spec A.6 / A.7), trained by the one trainer.

One row is one user's whole session sequence (the last ``max_len`` sessions), padded at the
end; a batch counts users ([CODE-HINT] batching). The model's loss (``CoSeRNN.loss``) is the
mean of ``1 - u_t . s_t^+`` over the steps whose session is in the training split **and** has a
played track (A.2 / A.7: sessions without a target and padded steps are masked out, but every
real session is still fed as input to the next step); batches without such a step are skipped.
:func:`fit_cosernn` runs :class:`~segue.training.trainer.Trainer` with Adam (``lr``), gradient-norm
clipping at ``clip`` (5, an implementation choice of the spec), no weight decay, and the mean
cosine on the validation targets as the dev monitor (``cosine``): the best state is kept and
training stops after ``patience`` epochs without improvement, at ``epochs``, or after
``max_seconds`` (checked every step). Without validation targets the last state is kept.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from segue.data.batch import FieldBatch
from segue.data.sessions import TRAIN, VALID
from segue.errors import ConfigError, DataError
from segue.models.cosernn import CoSeRNN, SessionInputs, masked_cosine_loss, pad_users
from segue.training.batches import Batches
from segue.training.trainer import History, TrainConfig, Trainer


@dataclass
class CoSeRNNHistory:
    """Per-epoch records and the outcome of a training run (the trainer's :class:`History` is ``history``)."""

    epochs: list[dict[str, Any]] = field(default_factory=list)
    best_epoch: int = 0
    best_valid_cosine: float | None = None
    stopped: str = ""
    seconds: float = 0.0
    train_sessions_per_second: float = 0.0
    history: History | None = None


def _targets(inputs: SessionInputs, labels: np.ndarray, part: int, rows: torch.Tensor) -> torch.Tensor:
    ok = (labels == part) & inputs.has_target
    r = rows.numpy()
    m = r >= 0
    w = np.zeros(r.shape, dtype=bool)
    w[m] = ok[r[m]]
    return torch.from_numpy(w)


class SessionBatches(Batches):
    """Batches of ``batch_size`` users in a seeded random order, as :func:`pad_users` tensors plus ``weight``."""

    def __init__(self, inputs: SessionInputs, labels: np.ndarray, batch_size: int, max_len: int) -> None:
        super().__init__(batch_size, 0)
        if len(labels) != len(inputs.data):
            raise DataError(f"labels has {len(labels)} entries for {len(inputs.data)} sessions.")
        train_ok = (labels == TRAIN) & inputs.has_target
        if not train_ok.any():
            raise DataError("No training session has a played track: nothing to train on.")
        self.inputs, self.labels, self.max_len = inputs, labels, max_len
        self.users = np.unique(inputs.data.user[train_ok])
        self.n_rows = len(self.users)
        self.sessions = 0  # sessions fed so far (the throughput figure)

    def epoch(self, rng: np.random.Generator) -> Iterator[FieldBatch]:
        order = rng.permutation(self.users)
        for s in range(0, len(order), self.batch_size):
            fields = pad_users(self.inputs, order[s : s + self.batch_size], self.max_len)
            fields["weight"] = _targets(self.inputs, self.labels, TRAIN, fields["rows"])
            if not bool(fields["weight"].any()):
                continue
            self.sessions += int(fields["mask"].sum())
            yield FieldBatch(fields, len(fields["mask"]))


def fit_cosernn(
    model: CoSeRNN,
    inputs: SessionInputs,
    labels: np.ndarray,
    *,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
) -> CoSeRNNHistory:
    """Train ``model`` in place on ``inputs`` with split ``labels`` (0 train, 1 valid, 2 test); returns the history."""
    c = model.config
    if c.lr <= 0 or c.batch_size < 1 or c.epochs < 1 or c.patience < 1:
        raise ConfigError(f"CoSeRNN training needs lr > 0 and batch_size, epochs, patience >= 1, got {c}.")
    cfg = TrainConfig(
        epochs=c.epochs,
        batch_size=c.batch_size,
        lr=c.lr,
        optimizer="adam",
        clip=c.clip or None,
        patience=c.patience,
        monitor="cosine",
        seed=c.seed,
        device="cpu",
        progress=progress,
        max_seconds=c.max_seconds,
    )
    built: list[SessionBatches] = []

    def batches(rng: np.random.Generator) -> SessionBatches:
        built.append(SessionBatches(inputs, labels, c.batch_size, c.max_len))
        return built[0]

    if len(labels) != len(inputs.data):  # checked before seeding, as the builder does
        raise DataError(f"labels has {len(labels)} entries for {len(inputs.data)} sessions.")
    valid_users = np.unique(inputs.data.user[(labels == VALID) & inputs.has_target])
    dev = None
    if len(valid_users):

        def dev(m: CoSeRNN) -> dict[str, float]:
            return {"cosine": valid_cosine(m, inputs, labels, valid_users)}

    h = Trainer(cfg, log=log).run(model, batches, dev)
    out = CoSeRNNHistory(epochs=h.epochs, best_epoch=h.best_epoch or 0, seconds=h.train_seconds, history=h)
    out.best_valid_cosine = h.best_value if dev is not None else None
    out.stopped = {
        "patience": f"early stop after {c.patience} epochs without improvement",
        "time_cap": f"time cap of {c.max_seconds:g} s" if c.max_seconds else "time cap",
        "epochs": f"epoch cap of {c.epochs}",
    }.get(h.stopped_by or "", h.stopped_by or "")
    train_time = sum(r.get("train_seconds", 0.0) for r in h.epochs)
    out.train_sessions_per_second = built[0].sessions / max(train_time, 1e-9)
    return out


@torch.no_grad()
def valid_cosine(model: CoSeRNN, inputs: SessionInputs, labels: np.ndarray, users: np.ndarray | None = None) -> float:
    """Mean ``u_t . s_t^+`` over the validation targets (the early-stopping monitor)."""
    rows = np.flatnonzero((labels == VALID) & inputs.has_target)
    if len(rows) == 0:
        raise DataError("No validation session has a played track.")
    u = model.predict(inputs, np.unique(inputs.data.user[rows]) if users is None else users)
    return float((u[rows] * inputs.emb["played"][rows]).sum(1).mean())


__all__ = ["CoSeRNNHistory", "SessionBatches", "fit_cosernn", "masked_cosine_loss", "valid_cosine"]
