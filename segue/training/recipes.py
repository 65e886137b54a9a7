"""``fit``: the one entry point that trains any registered model.

=======================  =============================================================================
model declares           what runs
=======================  =============================================================================
``trainable = False``    its own closed-form ``fit(train, monitor, **extras)``; ``monitor(model, metric)``
                         evaluates the dev set, so closed-form models never import the evaluator
``batch_kind="clips"``   the audio batch builders (segue/training/audio.py) on the same trainer
``parts()``              staged training: each part is fitted first (by this same function), then
                         ``model.assemble(train)`` copies or freezes them
(always)                 :class:`~segue.training.trainer.Trainer` on the model's own loss, with
                         ``model.final_stage_options()`` applied after parts
``adversarial``          then an adversarial stage (:class:`~segue.training.adversarial.Adversary` over
                         ``adversary_tables()``, options from the config and ``adversary_options()``),
                         started from the kept dev state, with the seed + 1
=======================  =============================================================================

The returned :class:`~segue.training.trainer.History` is the last stage's; earlier stages are in
``history.stages``.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp

from segue.errors import ConfigError, DataError
from segue.training.adversarial import Adversary
from segue.training.trainer import History, TrainConfig, Trainer

if TYPE_CHECKING:
    from segue.data.interactions import Interactions
    from segue.evaluation.protocols import EvalSet
    from segue.models.base import Recommender
    from segue.training.resume import EpochCheckpoint


def default_config(model: Recommender) -> TrainConfig:
    """Generic defaults overridden by the model's ``train_defaults``."""
    return TrainConfig.from_dict(dict(model.train_defaults))


def dev_monitor(valid: EvalSet, batch_size: int = 1024) -> Callable[[Recommender, str], float]:
    """A callback ``monitor(model, "NDCG@10") -> float`` over ``valid`` for closed-form models."""
    from segue.evaluation.protocols import evaluate

    def monitor(model: Recommender, metric: str = "NDCG@10") -> float:
        name, _, k = metric.partition("@")
        return float(evaluate(model, valid, ks=(int(k or 10),), metrics=(name,), batch_size=batch_size)[metric])

    return monitor


def fit(
    model: Recommender,
    train: Interactions,
    valid: EvalSet | None = None,
    config: TrainConfig | None = None,
    *,
    log: Callable[[str], None] | str | None = "default",
    pretrained: bool = False,
    checkpoint: EpochCheckpoint | None = None,
    **extras: Any,
) -> History:
    """Train ``model`` on ``train`` (early stopping on ``valid``); see the module docstring.

    ``pretrained=True`` skips the plain stage of an adversarial model (its BPR checkpoint is
    already loaded). ``extras`` go to closed-form and audio models (e.g. ``mels=``, ``dislikes=``).
    ``checkpoint`` (segue/training/resume.py) checkpoints every epoch of a single-stage gradient-trained
    model and resumes one; other families train without it and refuse to resume.
    """
    from segue.training.resume import check_resumable

    if model.batch_kind == "clips":
        from segue.training.audio import fit_clips

        check_resumable(model, checkpoint, "trains in the audio family loop, which keeps no epoch checkpoints")
        return fit_clips(model, train, valid, config, log=log, **extras)
    if not model.trainable:
        check_resumable(model, checkpoint, "is fitted in closed form, without epochs to resume")
        return _fit_closed_form(model, train, valid, config, extras)
    if extras:
        raise ConfigError(f"{model.name} takes no extra fit arguments, got {', '.join(sorted(extras))}.")
    cfg = config or default_config(model)
    stages: dict[str, Any] = {}
    parts = model.parts()
    if parts or model.adversarial or pretrained:
        check_resumable(
            model, checkpoint, "trains in stages (parts or an adversarial stage), which are not checkpointed"
        )
        checkpoint = None
    for name, part in parts.items():
        stages[name] = fit(part, train, valid, cfg, log=log).to_dict()
    model.assemble(train, parts, seed=cfg.seed, context=cfg.context)
    history: History | None = None
    if parts and not any(p.requires_grad for p in model.parameters()):  # a fusion of frozen parts (MASR)
        history = History(epochs=[], stopped_by="parts only")
    elif not (pretrained and model.adversarial):
        own = dataclasses.replace(cfg, **model.final_stage_options())
        history = Trainer(own, log=log, checkpoint=checkpoint).fit(model, train, valid)
    if model.adversarial:
        if history is not None:
            stages["plain"] = history.to_dict()
        options = model.adversary_options()
        if "loss" in options and options["loss"] != cfg.loss:
            raise ConfigError(
                f"{model.name}'s adversarial stage extends {options['loss']}; it needs loss={options['loss']!r}, "
                f"got {cfg.loss!r}."
            )
        adv = dataclasses.replace(cfg, **options)
        if adv.adv_epochs or history is None:
            history = adversarial_stage(model, train, valid, adv, log=log)
    assert history is not None
    history.stages = {**stages, **history.stages}
    return history


def adversarial_stage(
    model: Recommender,
    train: Interactions,
    valid: EvalSet | None,
    cfg: TrainConfig,
    *,
    log: Callable[[str], None] | str | None = "default",
    tables: list[str] | None = None,
) -> History:
    """``adv_epochs`` epochs with the adversarial term over ``tables`` (default: the model's declared ones).

    Starts from the model's current (kept) state, which counts as epoch 0 on the dev set; the
    learning rate is ``adv_lr`` (or ``lr``) and the seed ``seed + 1``.
    """
    if cfg.adv_epochs < 1:
        raise ConfigError(f"{model.name}: the adversarial stage needs adv_epochs >= 1, got {cfg.adv_epochs}.")
    stage = dataclasses.replace(cfg, epochs=cfg.adv_epochs, lr=cfg.adv_lr or cfg.lr, seed=cfg.seed + 1)
    adversary = Adversary.from_config(model.adversary_tables() if tables is None else tables, stage)
    return Trainer(stage, log=log).fit(model, train, valid, adversary=adversary, phase="adversarial")


def valid_positives(valid: EvalSet, n_users: int, n_items: int) -> sp.csr_matrix:
    """The dev set's positives as a binary (n_users + 1, n_items + 1) user x item matrix (id 0 = padding)."""
    t = sp.csr_matrix(valid.targets)
    rows = np.repeat(np.asarray(valid.users, dtype=np.int64), np.diff(t.indptr))
    m = sp.csr_matrix((np.ones(len(rows)), (rows, t.indices)), shape=(n_users + 1, n_items + 1))
    m.data[:] = 1.0
    return m


def _fit_closed_form(
    model: Recommender, train: Interactions, valid: EvalSet | None, config: TrainConfig | None, extras: dict[str, Any]
) -> History:
    if len(train) == 0:
        raise DataError("Cannot fit on an empty training set.")
    monitor = None if valid is None else dev_monitor(valid, config.eval_batch_size if config else 1024)
    if valid is not None and getattr(model, "masks_valid_items", False) and "dislike_mask" not in extras:
        extras = {**extras, "dislike_mask": valid_positives(valid, train.n_users, train.n_items)}
    t0 = time.perf_counter()
    out = model.fit(train, monitor, **extras)  # type: ignore[attr-defined]
    seconds = time.perf_counter() - t0
    model.fitted = True
    if out is None:
        return History(epochs=[{"epoch": 1, "loss": None, "seconds": seconds}], best_epoch=1, train_seconds=seconds)
    known = {f.name for f in dataclasses.fields(History)}
    history = History(**{k: v for k, v in out.items() if k in known})
    history.train_seconds = seconds
    return history


__all__ = ["adversarial_stage", "default_config", "dev_monitor", "fit", "valid_positives"]
