"""The CoSeRNN training loop (spec A.6 / A.7): cosine loss on training targets, early stopping on validation.

One example is one user's whole session sequence (the last ``max_len`` sessions), padded at
the end; a batch counts users ([CODE-HINT] batching). The loss is the mean of ``1 - u_t . s_t^+``
over the steps whose session is in the training split **and** has a played track (A.2 / A.7:
sessions without a target and padded steps are masked out, but every real session is still fed
as input to the next step). Adam (``lr``), gradient-norm clipping at ``clip`` (5, an
implementation choice of the spec), no weight decay. After every epoch the mean cosine on the
validation targets is computed; the best state is kept and training stops after ``patience``
epochs without improvement, at ``epochs``, or after ``max_seconds``. Seeds: ``torch``, ``numpy``
and Python through :func:`segue.training.trainer.seed_everything`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from segue.data.sessions import TRAIN, VALID
from segue.errors import ConfigError, DataError
from segue.models.cosernn import CoSeRNN, SessionInputs, pad_users
from segue.training.trainer import BestState, TimeCap, seed_everything


@dataclass
class CoSeRNNHistory:
    """Per-epoch records and the outcome of a training run."""

    epochs: list[dict[str, Any]] = field(default_factory=list)
    best_epoch: int = 0
    best_valid_cosine: float | None = None
    stopped: str = ""
    seconds: float = 0.0
    train_sessions_per_second: float = 0.0


def masked_cosine_loss(u: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``sum w (1 - u . s+) / sum w`` over (B, T) steps (``u`` and ``target`` unit norm)."""
    w = weight.to(u.dtype)
    return ((1.0 - (u * target).sum(-1)) * w).sum() / w.sum().clamp(min=1.0)


def _targets(inputs: SessionInputs, labels: np.ndarray, part: int, rows: torch.Tensor) -> torch.Tensor:
    ok = (labels == part) & inputs.has_target
    r = rows.numpy()
    m = r >= 0
    w = np.zeros(r.shape, dtype=bool)
    w[m] = ok[r[m]]
    return torch.from_numpy(w)


def fit_cosernn(
    model: CoSeRNN,
    inputs: SessionInputs,
    labels: np.ndarray,
    *,
    progress: bool = False,
    log: Any = None,
) -> CoSeRNNHistory:
    """Train ``model`` in place on ``inputs`` with split ``labels`` (0 train, 1 valid, 2 test); returns the history."""
    c = model.config
    if len(labels) != len(inputs.data):
        raise DataError(f"labels has {len(labels)} entries for {len(inputs.data)} sessions.")
    if c.lr <= 0 or c.batch_size < 1 or c.epochs < 1 or c.patience < 1:
        raise ConfigError(f"CoSeRNN training needs lr > 0 and batch_size, epochs, patience >= 1, got {c}.")
    train_ok = (labels == TRAIN) & inputs.has_target
    if not train_ok.any():
        raise DataError("No training session has a played track: nothing to train on.")
    seed_everything(c.seed)
    rng = np.random.default_rng(c.seed)
    d = inputs.data
    users = np.unique(d.user[train_ok])
    valid_users = np.unique(d.user[(labels == VALID) & inputs.has_target])
    opt = torch.optim.Adam(model.parameters(), lr=c.lr)
    hist = CoSeRNNHistory()
    keeper = BestState(c.patience)
    cap = TimeCap(c.max_seconds)
    n_train_sessions = 0
    train_time = 0.0
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=c.epochs, desc="cosernn", leave=False, dynamic_ncols=True, mininterval=0.5)
    for epoch in range(1, c.epochs + 1):
        e0 = time.perf_counter()
        model.train()
        order = rng.permutation(users)
        total, n_b = 0.0, 0
        for s in range(0, len(order), c.batch_size):
            batch = pad_users(inputs, order[s : s + c.batch_size], c.max_len)
            w = _targets(inputs, labels, TRAIN, batch["rows"])
            if not bool(w.any()):
                continue
            u = model(batch)
            loss = masked_cosine_loss(u, batch["played"], w)
            opt.zero_grad()
            loss.backward()
            if c.clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), c.clip)
            opt.step()
            total += float(loss.detach())
            n_b += 1
            n_train_sessions += int(batch["mask"].sum())
            if cap.hit:  # checked every step; the partial epoch is still evaluated and may be kept
                break
        train_time += time.perf_counter() - e0
        val = valid_cosine(model, inputs, labels, valid_users) if len(valid_users) else None
        rec = {"epoch": epoch, "loss": total / max(n_b, 1), "valid_cosine": val, "seconds": time.perf_counter() - e0}
        hist.epochs.append(rec)
        if log is not None:
            log(f"epoch {epoch}: loss {rec['loss']:.4f} valid cosine {val if val is None else round(val, 4)}")
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{rec['loss']:.4f}", valid=None if val is None else f"{val:.4f}")
        if keeper.offer(model, val if val is not None else -rec["loss"], epoch):
            hist.best_epoch = epoch
        elif keeper.exhausted:
            hist.stopped = f"early stop after {c.patience} epochs without improvement"
            break
        if cap.hit:
            hist.stopped = f"time cap of {c.max_seconds:.0f} s"
            break
    else:
        hist.stopped = f"epoch cap of {c.epochs}"
    if bar is not None:
        bar.close()
    keeper.restore(model)
    model.eval()
    hist.best_valid_cosine = keeper.best[0] if len(valid_users) and keeper.best is not None else None
    hist.seconds = cap.spent()
    hist.train_sessions_per_second = n_train_sessions / max(train_time, 1e-9)
    return hist


@torch.no_grad()
def valid_cosine(model: CoSeRNN, inputs: SessionInputs, labels: np.ndarray, users: np.ndarray | None = None) -> float:
    """Mean ``u_t . s_t^+`` over the validation targets (the early-stopping monitor)."""
    rows = np.flatnonzero((labels == VALID) & inputs.has_target)
    if len(rows) == 0:
        raise DataError("No validation session has a played track.")
    u = model.predict(inputs, np.unique(inputs.data.user[rows]) if users is None else users)
    return float((u[rows] * inputs.emb["played"][rows]).sum(1).mean())


__all__ = ["CoSeRNNHistory", "fit_cosernn", "masked_cosine_loss", "valid_cosine"]
