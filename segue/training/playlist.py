"""The playlist models' training recipe (spec M.6-M.8) on the shared trainer.

Training rows are the (playlist, song+) memberships of the training table (batch kind
``groups``, segue/training/batches.py): each row's member list is the playlist's training songs
**minus the target** ([AMBIG] M.1 default, the code's ``tmp_seq[tmp_seq != iid]``); its 4
negatives are drawn uniformly from the songs outside the playlist's training songs, resampled
every epoch, and scored with the same member list.

Loss (Eq. 4.30 on scores y = -D): ``neg_reduce="max"`` (default for MDR / MASS / MASR and their
APR versions, [CODE-HINT] thanhdtran/MASR model.py ``REC._get_neg_pred``: ``torch.max`` over the
negatives' predictions) keeps one BPR term per positive against the hardest of its negatives;
``"each"`` (the text's reading, FISM's default) sums one BPR term per (positive, negative) pair. ``reduction="sum"`` sums over the batch as the
code does ([CODE-HINT]); ``"mean"`` averages. Regularisation is Adam's coupled ``weight_decay``
(= lambda_Theta, M.6). The best epoch by dev HR@10 (ties by NDCG@10) is kept.

APR (M.7), started from the best BPR checkpoint, is the shared adversarial stage
(segue/training/adversarial.py) with flexible noise, per mini-batch::

    g_P = dL_BPR(Theta + delta_prev)/dP          for each perturbed P
    delta_P = eps * std(P) * normalize(g_P)       row-wise L2 (adv_norm="row") or global ("tensor")
    L = L_BPR(Theta) + reg_adv * L_BPR(Theta + delta)   (delta constant), Adam step on Theta

[AMBIG] M.7 defaults: the adversarial term is evaluated at Theta + delta with gradients to Theta;
1-D tensors (B vectors, song biases, stored as columns) normalise to sign(g); all parameters but
the query layers' bias vectors are perturbed (:func:`segue.models.playlist.perturbable`); std is
the unbiased std of the current values. The APR stage runs with the seed + 1.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from segue.errors import ConfigError
from segue.evaluation.playlist import keyed_train, owner_evalset
from segue.models.base import build_model
from segue.models.playlist import PlaylistModel, perturbable
from segue.training.recipes import adversarial_stage, fit
from segue.training.trainer import History, TrainConfig, Trainer

if TYPE_CHECKING:
    from segue.data.interactions import Interactions
    from segue.evaluation.protocols import EvalSet
    from segue.models.base import Recommender

#: The M.6-M.8 names of the APR options and their TrainConfig names.
_APR_NAMES = {
    "apr_epochs": "adv_epochs",
    "eps": "adv_eps",
    "reg_adv": "adv_weight",
    "apr_norm": "adv_norm",
    "apr_lr": "adv_lr",
}


def playlist_config(model: type[PlaylistModel] | None = None, **options: Any) -> TrainConfig:
    """The playlist models' TrainConfig (M.6-M.8 defaults of ``model``, else of the MASR family);
    APR options may use the spec's names."""
    renamed = {_APR_NAMES.get(k, k): v for k, v in options.items()}
    defaults = (model or PlaylistModel).train_defaults
    return TrainConfig.from_dict({**defaults, **renamed})


def fit_playlist(
    model: Recommender,
    train: Interactions,
    valid: EvalSet | None = None,
    config: TrainConfig | None = None,
    *,
    apr: bool = False,
    log: Callable[[str], None] | str | None = print,
    skip_bpr: bool = False,
) -> History:
    """BPR (unless ``skip_bpr``), then APR over :func:`perturbable` parameters when ``apr``, for any playlist model."""
    cfg = config or playlist_config(type(model) if isinstance(model, PlaylistModel) else None)
    history = None if skip_bpr else Trainer(cfg, log=log).fit(model, train, valid, phase="bpr")
    if apr:
        adv = adversarial_stage(model, train, valid, cfg, log=log, tables=perturbable(model))
        if history is not None:
            adv.stages = {"bpr": history.to_dict()}
        history = adv
    if history is None:
        raise ConfigError("fit_playlist was asked to skip BPR without APR: nothing to train.")
    return history


def fit_keyed(
    name: str,
    split: Any,
    key: str,
    dev: Any,
    owners: np.ndarray,
    options: dict[str, Any] | None = None,
    train_config: Any = None,
) -> Recommender:
    """Train foundation model ``name`` as a ``key``->song model (key = user or playlist) and return it.

    The returned model carries ``eval_key`` (``"user"`` / ``"playlist"``) telling which ids its
    evaluation cases need (:func:`segue.evaluation.playlist.owner_evalset` for ``"user"``), and
    ``train_history``, the trainer's History (how training stopped).
    """
    train = keyed_train(split.train, key)
    model = build_model(name, train.n_users, train.n_items, options)
    valid = owner_evalset(dev, owners) if key == "user" else dev
    model.train_history = fit(model, train, valid, train_config, log=None)  # type: ignore[attr-defined]
    model.eval_key = key  # type: ignore[attr-defined]
    return model


__all__ = ["fit_keyed", "fit_playlist", "playlist_config"]
