"""QABPR, the quaternion adversarial BPR of spec B.6 (Eqs. 5.39-5.41), for AQUALE / AQUASE / AQUALSE.

1. BPR through the generic :class:`~segue.training.trainer.Trainer` (skipped with
   ``pretrained=True``, e.g. when the caller loaded the best-dev BPR checkpoint of the plain
   model), keeping its best dev checkpoint ``E*, Theta*``.
2. Then, for ``model.config.adv_epochs`` epochs, per mini-batch:

   * adversary: ``delta = 0`` on every user and item quaternion table of the model; the
     gradient ``g`` of the BPR loss with respect to ``delta`` (one backward pass);
     ``delta* = eps * g / ||g||`` per embedding row over the full ``d`` (rows the batch does not
     touch have ``g = 0`` and stay unperturbed), or over the whole table with
     ``adv_norm="global"`` (Eq. 5.40, fast gradient method);
   * min player: ``L_BPR(E, Theta) + lambda_adv * L_BPR(E + delta*, Theta)`` with ``delta*`` detached
     (Eq. 5.41), plus the model's regularisation, one Adam step.

   The dev set is evaluated after every epoch; the best state (including the BPR starting
   point, "epoch 0") is restored at the end. The epoch loop stops early after ``patience``
   evaluations without improvement or when ``max_seconds`` (of the TrainConfig) is spent.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from segue.data.sampling import NegativeSampler
from segue.data.sequences import history_windows
from segue.errors import ConfigError, DataError
from segue.models.base import Context
from segue.training.losses import bpr_loss
from segue.training.trainer import History, TrainConfig, Trainer, _make_optimizer, resolve_device, seed_everything

if TYPE_CHECKING:
    from segue.data.interactions import Interactions
    from segue.evaluation.protocols import EvalSet
    from segue.models.qualse import _QuaternionModel


def adversarial_noise(model: _QuaternionModel, loss_fn: Callable[[], torch.Tensor]) -> dict[str, torch.Tensor]:
    """``delta*`` of Eq. 5.40 for every perturbed table: ``eps * g / ||g||`` (per row or global), detached."""
    c = model.config
    tables = model.adv_tables()
    deltas = {t: torch.zeros_like(getattr(model, t).weight, requires_grad=True) for t in tables}
    model._adv = deltas
    try:
        loss = loss_fn()
        grads = torch.autograd.grad(loss, [deltas[t] for t in tables], allow_unused=True)
    finally:
        model._adv = None
    noise = {}
    for t, g in zip(tables, grads, strict=True):
        if g is None:
            continue
        if c.adv_norm == "row":
            norm = g.norm(dim=1, keepdim=True)
            noise[t] = torch.where(norm > 0, c.eps * g / norm.clamp_min(1e-12), torch.zeros_like(g))
        else:
            n = g.norm()
            noise[t] = c.eps * g / n if n > 0 else torch.zeros_like(g)
    return noise


def fit_qabpr(
    model: _QuaternionModel,
    train: Interactions,
    valid: EvalSet | None = None,
    config: TrainConfig | None = None,
    log: Callable[[str], None] | str | None = "default",
    pretrained: bool = False,
) -> History:
    """BPR (unless ``pretrained``) then QABPR; see the module docstring. Returns the QABPR phase's history."""
    cfg = config or TrainConfig()
    if cfg.loss != "bpr":
        raise ConfigError(f"QABPR extends BPR; {model.name} needs loss='bpr', got {cfg.loss!r}.")
    trainer = Trainer(cfg, log=log)
    pre: History | None = None
    if not pretrained:
        pre = trainer.fit(model, train, valid)
    if len(train) == 0:
        raise DataError("Cannot train on an empty training set.")
    if train.n_users != model.n_users or train.n_items != model.n_items:
        raise DataError(
            f"The training data has {train.n_users} users and {train.n_items} items but the model "
            f"was built for {model.n_users} and {model.n_items}."
        )
    emit = trainer.log
    seed_everything(cfg.seed + 1)
    device = resolve_device(cfg.device)
    model.to(device)
    rng = np.random.default_rng(cfg.seed + 1)
    opt = _make_optimizer(cfg.optimizer, [p for p in model.parameters() if p.requires_grad], cfg.lr, cfg.weight_decay)
    users = train.users.copy()
    sampler = NegativeSampler(train.to_csr(), seed=rng)
    windows = torch.as_tensor(history_windows(train, model.history_length()))
    users_t, items_t = torch.as_tensor(users), torch.as_tensor(train.items.copy())
    n = len(users)
    n_batches = math.ceil(n / cfg.batch_size)

    history = History(monitor=cfg.monitor if valid is not None else None)
    history.epochs.append({"epoch": 0, "phase": "bpr", "pretrain": None if pre is None else pre.to_dict()})
    best_state = None
    if valid is not None:
        value = _dev(model, valid, cfg.monitor)
        history.best_value, history.best_epoch = value, 0
        history.epochs[0]["valid"] = {cfg.monitor: value}
        best_state = copy.deepcopy(model.state_dict())
    bad = 0
    t_start = time.perf_counter()
    for epoch in range(1, model.config.adv_epochs + 1):
        t0 = time.perf_counter()
        model.train()
        perm = torch.as_tensor(rng.permutation(n))
        negs = torch.as_tensor(sampler.sample(users[perm.numpy()], cfg.n_negatives))
        total = 0.0
        for b in range(n_batches):
            sl = slice(b * cfg.batch_size, (b + 1) * cfg.batch_size)
            idx = perm[sl]
            u = users_t[idx].to(device)
            cand = torch.cat([items_t[idx, None], negs[sl]], dim=1).to(device)
            ctx = Context(history=windows[idx].to(device))

            def bpr(u: torch.Tensor = u, cand: torch.Tensor = cand, ctx: Context = ctx) -> torch.Tensor:
                s = model.score(u, cand, ctx)
                return bpr_loss(s[:, :1], s[:, 1:])

            noise = adversarial_noise(model, bpr)
            clean = bpr()
            model._adv = noise
            try:
                adv = bpr()
            finally:
                model._adv = None
            loss = clean + model.config.adv_weight * adv + model.regularization(u, cand)
            if not torch.isfinite(loss):
                raise DataError(f"QABPR diverged at epoch {epoch} (loss is {loss.item()}); lower lr or eps.")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        record: dict[str, Any] = {"epoch": epoch, "phase": "qabpr", "loss": total / n}
        improved = False
        if valid is not None:
            value = _dev(model, valid, cfg.monitor)
            record["valid"] = {cfg.monitor: value}
            if history.best_value is None or value > history.best_value:
                history.best_value, history.best_epoch = value, epoch
                best_state = copy.deepcopy(model.state_dict())
                improved, bad = True, 0
            else:
                bad += 1
        record["seconds"] = time.perf_counter() - t0
        history.epochs.append(record)
        if emit is not None:
            dev = f"  dev {cfg.monitor} {record['valid'][cfg.monitor]:.4f}" if "valid" in record else ""
            star = "  *" if improved else ""
            emit(
                f"qabpr {epoch:>3}/{model.config.adv_epochs}  loss {record['loss']:.4f}{dev}  {record['seconds']:.1f}s{star}"
            )
        if valid is not None and bad >= cfg.patience:
            history.stopped_early = True
            break
        if cfg.max_seconds is not None and time.perf_counter() - t_start > cfg.max_seconds:
            history.stopped_early = True
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    elif history.epochs:
        history.best_epoch = history.epochs[-1]["epoch"]
    model.fitted = True
    model.eval()
    return history


def _dev(model: Any, valid: EvalSet, monitor: str) -> float:
    from segue.evaluation.protocols import evaluate

    name, _, k = monitor.partition("@")
    ks = (int(k),) if k else (10,)
    return float(evaluate(model, valid, ks=ks, metrics=(name,))[monitor])


__all__ = ["adversarial_noise", "fit_qabpr"]
