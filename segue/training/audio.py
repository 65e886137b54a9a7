"""The ``clips`` batches of the audio content models (DCUE, WMF + regression, TripletRec), trained by
the one trainer, and the tagging MLP of A.6.

These models train on random 3-s crops of each clip's log-mel (DCUE, content spec A.4) or on
item feature rows (TripletRec, B.5), drawn afresh at every step, so their builders here are
step-based: ``steps`` batches in all, ``eval_every`` of them between two dev evaluations (one
trainer "epoch"). :class:`~segue.training.trainer.Trainer` runs them with the model's own
``loss``, the paper's SGD (Nesterov momentum, per-step decay ``lr / (1 + decay t)``) or Adam,
``max_seconds`` checked every step, and keeps the state with the best ``valid_fn`` score when one
is given (A.4 [AMBIG] choice: validation cold-start AUC every ``eval_every`` steps, patience
``patience`` evaluations). In the returned history an epoch record's ``epoch`` is its step count,
and ``best_epoch`` the step whose state was kept.

Also here: the A.6 evaluation helpers :func:`per_user_auc` (ROC-AUC per user column, ties
counted one half as ``sklearn.metrics.roc_auc_score``, single-class users skipped and counted)
and :func:`mean_tag_auc` (mean per-tag ROC-AUC over tags with a positive and a negative).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import rankdata
from torch import Tensor

from segue.data.batch import FieldBatch
from segue.errors import ConfigError, DataError
from segue.training.batches import Batches
from segue.training.trainer import BestState, History, TrainConfig, Trainer, seed_everything

if TYPE_CHECKING:
    from segue.data.interactions import Interactions
    from segue.models.dcue import DCUE, WMFRegression
    from segue.models.tripletrec import TripletRec

SEGMENT = 130


@dataclass
class AudioTrainConfig:
    """Options of the clip models' training; defaults are DCUE's (A.4: SGD, Nesterov 0.9, lr 0.2, decay 1e-6,
    batch 10). :func:`train_config` maps them onto the trainer's (one epoch = ``eval_every`` steps)."""

    steps: int = 2000
    batch_size: int = 10
    optimizer: str = "sgd"  # the paper's; "adam" is a documented deviation for short runs
    lr: float = 0.2
    momentum: float = 0.9
    nesterov: bool = True
    decay: float = 1e-6
    seed: int = 0
    eval_every: int = 200
    patience: int = 10
    max_seconds: float | None = None
    norm_clips: int = 200  # training clips used for the global mean / std of the input
    device: str = "cpu"  # or cuda / auto: the trainer moves each batch there

    def __post_init__(self) -> None:
        if self.optimizer not in ("sgd", "adam"):
            raise ConfigError(f"optimizer must be sgd or adam, got {self.optimizer!r}.")
        if self.steps < 1 or self.batch_size < 1 or self.lr <= 0 or self.eval_every < 1 or self.patience < 1:
            raise ConfigError(f"Invalid audio training options: {self}.")


# -- evaluation helpers ------------------------------------------------------------------------
def per_user_auc(scores: np.ndarray, truth: np.ndarray) -> tuple[float, int, np.ndarray]:
    """Mean over users of the ROC-AUC of ``scores[:, u]`` against ``truth[:, u]`` (rows = songs).

    Returns (mean AUC, number of users skipped because their column has one class, per-user AUCs
    with NaN for skipped users). Ties count one half (``sklearn.metrics.roc_auc_score``).
    """
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(truth) > 0
    if s.shape != y.shape or s.ndim != 2:
        raise DataError(f"scores and truth must be (songs, users) of the same shape, got {s.shape} and {y.shape}.")
    if np.isnan(s).any():
        raise DataError("The score matrix contains NaN.")
    ranks = rankdata(s, axis=0)  # average ranks for ties
    npos = y.sum(0)
    nneg = y.shape[0] - npos
    ok = (npos > 0) & (nneg > 0)
    auc = np.full(y.shape[1], np.nan)
    auc[ok] = ((ranks * y).sum(0)[ok] - npos[ok] * (npos[ok] + 1) / 2) / (npos[ok] * nneg[ok])
    n_skipped = int((~ok).sum())
    mean = float(np.nanmean(auc)) if ok.any() else float("nan")
    return mean, n_skipped, auc


def mean_tag_auc(y: np.ndarray, p: np.ndarray) -> float:
    """Mean over tags of the per-tag ROC-AUC on (songs, tags), ignoring tags with a single class in ``y``."""
    mean, _, _ = per_user_auc(np.asarray(p), np.asarray(y))
    return mean


# -- sampling ----------------------------------------------------------------------------------
def _binary_pairs(train: Interactions) -> tuple[np.ndarray, np.ndarray]:
    x = train.to_csr().tocoo()
    keep = x.data > 0
    return x.row[keep].astype(np.int64), x.col[keep].astype(np.int64)


class _NegativeDrawer:
    """Uniform draws with replacement from the training songs minus the user's training songs (A.4)."""

    def __init__(self, users: np.ndarray, items: np.ndarray, rng: np.random.Generator) -> None:
        self.songs = np.unique(items)
        self.rng = rng
        self.seen: dict[int, set[int]] = {}
        for u, i in zip(users.tolist(), items.tolist(), strict=True):
            self.seen.setdefault(u, set()).add(i)

    def draw(self, user: int, n: int) -> np.ndarray:
        seen = self.seen.get(user, set())
        if len(seen) >= len(self.songs):
            raise DataError(f"User {user} played every training song, so no negative can be drawn.")
        out = self.songs[self.rng.integers(0, len(self.songs), n)]
        bad = np.array([i in seen for i in out.tolist()])
        while bad.any():
            out[bad] = self.songs[self.rng.integers(0, len(self.songs), int(bad.sum()))]
            bad = np.array([i in seen for i in out.tolist()])
        return out


def crops(mels: Any, items: np.ndarray, rng: np.random.Generator, frames: int = SEGMENT) -> Tensor:
    """Random ``frames``-long windows (float32) of the clips of ``items`` (1-based ids; row = id - 1)."""
    items = np.asarray(items).reshape(-1)
    t = mels.shape[-1]
    out = np.empty((len(items), mels.shape[1], frames), dtype=np.float32)
    for k, i in enumerate(items.tolist()):
        if t >= frames:
            s = int(rng.integers(0, t - frames + 1))
            out[k] = mels[i - 1, :, s : s + frames]
        else:
            row = np.asarray(mels[i - 1], dtype=np.float32)
            out[k] = np.tile(row, (1, -(-frames // t)))[:, :frames]
    return torch.from_numpy(out)


def _set_norm(tower: torch.nn.Module, mels: Any, items: np.ndarray, n: int, rng: np.random.Generator) -> None:
    rows = np.sort(rng.choice(np.unique(items), size=min(n, len(np.unique(items))), replace=False)) - 1
    x = np.asarray(mels[rows], dtype=np.float32)
    with torch.no_grad():
        tower.norm.copy_(torch.tensor([float(x.mean()), float(x.std()) or 1.0]))


class StepBatches(Batches):
    """``steps`` batches from ``draw(step)``, ``eval_every`` of them per trainer epoch."""

    def __init__(self, cfg: AudioTrainConfig, draw: Callable[[int], FieldBatch]) -> None:
        super().__init__(cfg.batch_size, 0)
        self.steps, self.per_epoch, self.draw, self.done = cfg.steps, cfg.eval_every, draw, 0
        self.n_rows = cfg.eval_every * cfg.batch_size

    def __len__(self) -> int:
        return self.per_epoch

    def epoch(self, rng: np.random.Generator) -> Iterator[FieldBatch]:
        for _ in range(min(self.per_epoch, self.steps - self.done)):
            self.done += 1
            yield self.draw(self.done)


def train_config(cfg: AudioTrainConfig) -> TrainConfig:
    """The trainer's options for an :class:`AudioTrainConfig` (one trainer epoch = ``eval_every`` steps)."""
    sgd = cfg.optimizer == "sgd"
    return TrainConfig(
        epochs=math.ceil(cfg.steps / cfg.eval_every),
        batch_size=cfg.batch_size,
        optimizer=cfg.optimizer,
        lr=cfg.lr,
        momentum=cfg.momentum if sgd else 0.0,
        nesterov=sgd and cfg.nesterov and cfg.momentum > 0,
        lr_decay=cfg.decay,
        patience=cfg.patience,
        monitor="valid",
        seed=cfg.seed,
        device=cfg.device,
        progress=False,
        max_seconds=cfg.max_seconds,
    )


def _train(
    model: Any,
    cfg: AudioTrainConfig,
    make: Callable[[np.random.Generator], Callable[[int], FieldBatch]],
    valid_fn: Callable[[Any], float] | None,
    log: Callable[[str], None] | None,
) -> History:
    """Run the trainer on the step batches of ``make(rng)`` (called once, after seeding, with the run's rng)."""

    def dev(m: Any) -> dict[str, float]:
        assert valid_fn is not None
        return {"valid": float(valid_fn(m))}

    hist = Trainer(train_config(cfg), log=log).run(
        model, lambda rng: StepBatches(cfg, make(rng)), dev if valid_fn is not None else None
    )
    by_epoch = {r["epoch"]: r["step"] for r in hist.epochs if "step" in r}
    for r in hist.epochs:  # clip models count steps
        r["epoch"] = r.get("step", r["epoch"])
    hist.best_epoch = by_epoch.get(hist.best_epoch, hist.best_epoch) if hist.best_epoch is not None else None
    return hist


# -- DCUE --------------------------------------------------------------------------------------
def fit_dcue(
    model: DCUE,
    train: Interactions,
    mels: Any,
    config: AudioTrainConfig | None = None,
    valid_fn: Callable[[Any], float] | None = None,
    log: Callable[[str], None] | None = None,
) -> History:
    """Hinge-loss training of DCUE (A.4): batches of (user, positive) pairs, N fresh negatives each.

    ``mels`` (n_items, F, T) for the audio model, ``None`` for the id ablation. With the model's
    ``shared_negatives`` option, one set of N negatives (drawn from the training songs) serves
    the whole batch and pairs where it is the user's own training song are masked out.
    """
    cfg = config or AudioTrainConfig()
    if not isinstance(cfg, AudioTrainConfig):
        raise ConfigError(f"fit_dcue expects an AudioTrainConfig, got {type(cfg).__name__}.")
    users0, items0 = _binary_pairs(train)
    if len(users0) == 0:
        raise DataError("Cannot fit DCUE on an empty training set.")
    n_neg = model.config.n_negatives
    audio = mels is not None

    def make(rng: np.random.Generator) -> Callable[[int], FieldBatch]:
        users, items = users0, items0
        drawer = _NegativeDrawer(users, items, rng)
        full = {u for u, seen in drawer.seen.items() if len(seen) >= len(drawer.songs)}
        if full:  # a user who played every training song has no negative: their pairs cannot train
            keep = ~np.isin(users, list(full))
            users, items = users[keep], items[keep]
            if len(users) == 0:
                raise DataError("Every user played every training song, so no negative can be drawn.")
        order = rng.permutation(len(users))
        if audio:
            _set_norm(model.audio_tower, mels, items, cfg.norm_clips, rng)

        def draw(step: int) -> FieldBatch:
            start = ((step - 1) * cfg.batch_size) % len(order)
            idx = order[np.arange(start, start + cfg.batch_size) % len(order)]
            u, pos = users[idx], items[idx]
            fields: dict[str, Tensor] = {"users": torch.as_tensor(u)}
            if model.config.shared_negatives:
                neg = drawer.songs[rng.integers(0, len(drawer.songs), n_neg)]
                fields["mask"] = torch.tensor(
                    [[i not in drawer.seen.get(uu, ()) for i in neg.tolist()] for uu in u.tolist()],
                    dtype=torch.float32,
                )
            else:
                neg = np.stack([drawer.draw(uu, n_neg) for uu in u.tolist()])
            if audio:
                p, n = crops(mels, pos, rng), crops(mels, neg, rng)
                if not model.config.shared_negatives:
                    n = n.view(len(u), n_neg, *n.shape[1:])
            else:
                p, n = torch.as_tensor(pos), torch.as_tensor(neg)
            fields["pos"], fields["neg"] = p, n
            return FieldBatch(fields, len(u))

        return draw

    hist = _train(model, cfg, make, valid_fn, log)
    model.set_item_audio(mels)
    model.fitted = True
    return hist


def fit_regression(
    model: WMFRegression,
    seen_items: np.ndarray,
    mels: Any,
    config: AudioTrainConfig | None = None,
    valid_fn: Callable[[Any], float] | None = None,
    log: Callable[[str], None] | None = None,
) -> History:
    """MSE regression of the audio tower onto the WMF factors of ``seen_items`` (random 3-s crops)."""
    cfg = config or AudioTrainConfig()
    seen = np.asarray(seen_items, dtype=np.int64)
    if len(seen) == 0:
        raise DataError("wmf-regression has no training item to regress on.")

    def make(rng: np.random.Generator) -> Callable[[int], FieldBatch]:
        _set_norm(model.audio_tower, mels, seen, cfg.norm_clips, rng)
        with torch.no_grad():
            model.target_scale.fill_(float(model.target_factors[torch.as_tensor(seen)].std()) or 1.0)

        def draw(step: int) -> FieldBatch:
            batch = seen[rng.integers(0, len(seen), cfg.batch_size)]
            return FieldBatch({"crops": crops(mels, batch, rng), "items": torch.as_tensor(batch)}, len(batch))

        return draw

    hist = _train(model, cfg, make, valid_fn, log)
    model.set_item_audio(mels)
    model.fitted = True
    return hist


# -- auto-tagging (A.6) ------------------------------------------------------------------------
def fit_tagger(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_valid: np.ndarray,
    y_valid: np.ndarray,
    max_epochs: int = 100,
    seed: int = 0,
    lr: float = 0.1,
    batch_size: int = 10,
) -> torch.nn.Module:
    """The A.6 tagging MLP on frozen features: BCE, SGD (lr 0.1, Nesterov 0.9), batch 10, early
    stopping on the validation loss (patience 9), ReduceLROnPlateau (0.2, patience 4, min 1.6e-7).

    The Keras decay 1e-6 of the code is left out: over the few thousand steps here it changes the
    learning rate by less than 1%.
    """
    from segue.models.dcue import TagMLP

    seed_everything(seed)
    xt = torch.as_tensor(x_train, dtype=torch.float32)
    yt = torch.as_tensor(y_train, dtype=torch.float32)
    xv = torch.as_tensor(x_valid, dtype=torch.float32)
    yv = torch.as_tensor(y_valid, dtype=torch.float32)
    if len(xt) < 2 or xt.shape[0] != yt.shape[0]:
        raise DataError("The tagger needs at least two training songs with one label row each.")
    net = TagMLP(xt.shape[1], yt.shape[1])
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9, nesterov=True)
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.2, patience=4, min_lr=1.6e-7)
    g = torch.Generator().manual_seed(seed)
    keeper = BestState(patience=9)  # on the negated validation loss
    for epoch in range(1, max_epochs + 1):
        net.train()
        perm = torch.randperm(len(xt), generator=g)
        for s in range(0, len(perm), batch_size):
            idx = perm[s : s + batch_size]
            if len(idx) < 2:  # BatchNorm needs two rows
                continue
            loss = F.binary_cross_entropy_with_logits(net(xt[idx]), yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        net.eval()
        with torch.no_grad():
            v = float(F.binary_cross_entropy_with_logits(net(xv), yv))
        plateau.step(v)
        keeper.offer(net, -round(v, 6), epoch)
        if keeper.exhausted:
            break
    keeper.restore(net)
    net.eval()
    return net


# -- TripletRec and the two-branch baseline (B.4 / B.5 / B.8) ----------------------------------------
def triplet_config(**overrides: Any) -> AudioTrainConfig:
    """B.5 defaults: SGD lr 0.01, momentum 0.9 (no Nesterov, no decay), batch 256 triples."""
    return AudioTrainConfig(
        **{"lr": 0.01, "momentum": 0.9, "nesterov": False, "decay": 0.0, "batch_size": 256, **overrides}
    )


def fit_triplet(
    model: TripletRec,
    songs: np.ndarray,
    features: Any = None,
    topics: np.ndarray | None = None,
    config: AudioTrainConfig | None = None,
    variant: str = "unbalanced",
    valid_fn: Callable[[Any], float] | None = None,
    log: Callable[[str], None] | None = None,
) -> History:
    """Train TripletRec (triplet BCE, each triple shown in a random order with the matching label)
    or, for ``twonet``, the pointwise BCE of its (group, positive, 1) and (group, negative, 0) pairs.

    ``songs``: training item ids; ``features`` (n_items, in_dim), row i - 1 = item i;
    ``topics`` (n_items,) in 0..n_topics - 1. Triples are redrawn (:func:`make_triples`) at every pass.
    """
    from segue.models.tripletrec import TwoNet, make_triples

    if features is None or topics is None:
        raise DataError(f"{model.name} needs features= (n_items, in_dim) and topics= (n_items,) to fit.")
    cfg = config or triplet_config()
    songs = np.asarray(songs, dtype=np.int64)
    model.set_normalisation(np.asarray(features[np.sort(songs) - 1], dtype=np.float32))
    groups = model.groups[1:]
    two = isinstance(model, TwoNet)

    def feats(ids: np.ndarray) -> Tensor:
        order = np.argsort(ids)
        x = np.asarray(features[ids[order] - 1], dtype=np.float32)
        out = np.empty_like(x)
        out[order] = x
        return torch.from_numpy(out)

    def make(rng: np.random.Generator) -> Callable[[int], FieldBatch]:
        state = {"triples": np.zeros((0, 3), dtype=np.int64), "pos": 0}

        def draw(step: int) -> FieldBatch:
            if state["pos"] + cfg.batch_size > len(state["triples"]):
                t = make_triples(topics, songs, variant, model.config.n_topics, rng)
                state["triples"], state["pos"] = t[rng.permutation(len(t))], 0
            b = state["triples"][state["pos"] : state["pos"] + cfg.batch_size]
            state["pos"] += cfg.batch_size
            g = groups[torch.as_tensor(b[:, 0])]
            if two:
                x = feats(np.concatenate([b[:, 1], b[:, 2]]))
                labels = torch.cat([torch.ones(len(b)), torch.zeros(len(b))])
                return FieldBatch({"groups": torch.cat([g, g]), "x": x, "labels": labels}, len(b))
            swap = rng.random(len(b)) < 0.5
            i = np.where(swap, b[:, 2], b[:, 1])
            j = np.where(swap, b[:, 1], b[:, 2])
            x = feats(np.concatenate([i, j]))
            labels = torch.as_tensor(swap, dtype=torch.float32)
            return FieldBatch({"groups": g, "x_i": x[: len(b)], "x_j": x[len(b) :], "labels": labels}, len(b))

        return draw

    hist = _train(model, cfg, make, valid_fn, log)
    model.set_item_features(features)
    return hist


def fit_wmf_regression(
    model: WMFRegression, train: Interactions, mels: Any, config: AudioTrainConfig | None = None, **kwargs: Any
) -> History:
    """Fit WMF on ``train`` (implicit ALS), then regress the audio tower onto the factors of the
    items that have training interactions (:func:`fit_regression`)."""
    from segue.models.base import build_model

    c = model.config
    wmf = build_model(
        "wmf",
        model.n_users,
        model.n_items,
        {
            "factors": c.factors,
            "regularization": c.regularization,
            "alpha": c.alpha,
            "iterations": c.iterations,
            "use_weights": c.use_weights,
            "seed": c.seed,
        },
    )
    wmf.fit(train)
    with torch.no_grad():
        model.user_factors.copy_(wmf.user_emb.weight)
        model.target_factors.copy_(wmf.item_emb.weight)
    return fit_regression(model, np.unique(train.items), mels, config, **kwargs)


def fit_clips(
    model: Any,
    train: Interactions,
    valid: Any = None,
    config: AudioTrainConfig | None = None,
    *,
    log: Callable[[str], None] | str | None = None,
    **extras: Any,
) -> History:
    """The clip-trained models' entry from :func:`segue.training.fit`: DCUE (``mels=``; none for the
    id ablation), WMF + regression (``mels=``), TripletRec / TwoNet (``features=``, ``topics=``).

    Their dev selection is a ``valid_fn=`` callback (A.4), not an evaluation set.
    """
    from segue.models.dcue import DCUE, DCUEItemID, WMFRegression
    from segue.models.tripletrec import TripletRec

    if valid is not None:
        raise ConfigError(f"{model.name} selects on a valid_fn= callback (content spec A.4), not a dev set.")
    kwargs = {**extras, "log": None if log == "default" else log}
    if isinstance(model, DCUEItemID):
        return fit_dcue(model, train, None, config, **kwargs)
    if isinstance(model, DCUE):
        return fit_dcue(model, train, model._check_mels(kwargs.pop("mels", None)), config, **kwargs)
    if isinstance(model, WMFRegression):
        return fit_wmf_regression(model, train, model._check_mels(kwargs.pop("mels", None)), config, **kwargs)
    if isinstance(model, TripletRec):
        return fit_triplet(model, np.unique(train.items), config=config, **kwargs)
    raise ConfigError(f"{model.name} declares clip batches but segue/training/audio.py has no loop for it.")


def retrieval_accuracy(model: TripletRec, features: Any, topics: np.ndarray, songs: np.ndarray) -> dict[str, float]:
    """Exp. 1 and Exp. 3 of B.7 on the (test) ``songs``, with their chance levels.

    Exp. 1 (user -> song): each group g is a query weighted by its number of positive songs
    among ``songs`` (one query per unbalanced test triple); hit iff the nearest song's topic is in g.
    Exp. 3 (song -> song): for every song q the nearest other song by D(phi(q), phi(s)); hit iff
    same topic. Chance = expected hit rate of a uniformly random candidate.
    """
    songs = np.asarray(songs, dtype=np.int64)
    t = np.asarray(topics)[songs - 1]
    was = model.training
    model.eval()
    with torch.no_grad():
        e = model.item_embed(torch.from_numpy(np.asarray(features[np.sort(songs) - 1], dtype=np.float32)))
        e = e[torch.as_tensor(np.argsort(np.argsort(songs)))]  # back to the order of songs
        groups = model.groups[1:]
        eu = model.user_embed(groups)
        d_us = model.distance(eu[:, None, :], e[None, :, :])  # (G, S)
        d_ss = model.distance(e[:, None, :], e[None, :, :])
    model.train(was)
    gm = groups.numpy().astype(bool)
    member = gm[:, t]  # (G, S): song s positive for group g
    weight = member.sum(1).astype(float)
    weight[member.all(1)] = 0  # the all-topics group has no test triple
    nearest = d_us.argmin(1).numpy()
    hit_u = member[np.arange(len(gm)), nearest]
    chance_u = member.mean(1)
    d = d_ss.numpy().copy()
    np.fill_diagonal(d, np.inf)
    nn_ = d.argmin(1)
    same = t[:, None] == t[None, :]
    np.fill_diagonal(same, False)
    return {
        "user_song_accuracy": float((hit_u * weight).sum() / weight.sum()),
        "user_song_chance": float((chance_u * weight).sum() / weight.sum()),
        "user_song_group_mean": float(hit_u[weight > 0].mean()),
        "song_song_accuracy": float((t[nn_] == t).mean()),
        "song_song_chance": float((same.sum(1) / max(len(songs) - 1, 1)).mean()),
    }
