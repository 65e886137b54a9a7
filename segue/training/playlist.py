"""Playlist trainer: BPR with member-list context (M.6) and APR with flexible noise (M.7).

Training instances are the triples (owner, playlist, song+) of the training table, one per
(playlist, song) membership. Each row's member list is the playlist's training songs **minus the
target** ([AMBIG] M.1 default, the code's ``tmp_seq[tmp_seq != iid]``); its 4 negatives are drawn
uniformly from the songs outside the playlist's training songs, resampled every epoch, and scored
with the same member list.

Loss (Eq. 4.30 on scores y = -D): ``neg_reduce="each"`` (default, the text) sums one BPR term per
(positive, negative) pair; ``"max"`` keeps one term against the hardest of the negatives
([CODE-HINT] ``torch.max`` in the authors' code). ``reduction="sum"`` sums over the batch as the
code does ([CODE-HINT]); ``"mean"`` averages. Regularisation is Adam's coupled ``weight_decay``
(= lambda_Theta, M.6). The best epoch by dev HR@10 (ties by NDCG@10) is kept.

APR (M.7), started from the best BPR checkpoint, per mini-batch::

    g_P = dL_BPR(Theta + delta_prev)/dP          for each perturbed P
    delta_P = eps * std(P) * normalize(g_P)       row-wise L2 (apr_norm="row") or global ("tensor")
    L = L_BPR(Theta) + reg_adv * L_BPR(Theta + delta)   (delta constant), Adam step on Theta

[AMBIG] M.7 defaults: the adversarial term is evaluated at Theta + delta with gradients to Theta;
1-D tensors (B vectors, song biases, stored as columns) normalise to sign(g); all parameters but
the query layers' bias vectors are perturbed; std is the unbiased std of the current values.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.func import functional_call

from segue.data.sampling import NegativeSampler
from segue.errors import ConfigError, DataError
from segue.evaluation.playlist import member_matrix, playlist_matrix, playlist_owners
from segue.models.base import Context
from segue.training.trainer import History, resolve_device, seed_everything

if TYPE_CHECKING:
    from segue.data.interactions import Interactions
    from segue.evaluation.protocols import EvalSet
    from segue.models.base import Recommender


@dataclass
class PlaylistTrainConfig:
    """Hyper-parameters of :func:`fit_playlist` (defaults: spec M.6 / M.7 / M.8)."""

    epochs: int = 50
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.0
    n_negatives: int = 4
    neg_reduce: str = "each"  # each (text) | max (code: hardest of the negatives)
    reduction: str = "sum"  # sum (code) | mean
    patience: int | None = None  # epochs without dev improvement before stopping (None: run all epochs)
    max_seconds: float | None = None  # wall-clock cap per phase (BPR, APR)
    seed: int = 98765
    device: str = "auto"
    eval_batch_size: int = 128
    # APR (M.7)
    apr_epochs: int = 50
    eps: float = 1.0
    reg_adv: float = 1.0
    apr_norm: str = "row"  # row (code) | tensor (text-literal global norm)
    apr_lr: float | None = None  # None: the same learning rate

    def __post_init__(self) -> None:
        if self.neg_reduce not in ("each", "max"):
            raise ConfigError(f"neg_reduce must be 'each' or 'max', got {self.neg_reduce!r}.")
        if self.reduction not in ("sum", "mean"):
            raise ConfigError(f"reduction must be 'sum' or 'mean', got {self.reduction!r}.")
        if self.apr_norm not in ("row", "tensor"):
            raise ConfigError(f"apr_norm must be 'row' or 'tensor', got {self.apr_norm!r}.")
        if self.epochs < 0 or self.apr_epochs < 0 or self.batch_size < 1 or self.n_negatives < 1:
            raise ConfigError("epochs must be >= 0 and batch_size, n_negatives >= 1.")
        if self.eps < 0 or self.reg_adv < 0:
            raise ConfigError(f"eps and reg_adv must be >= 0, got {self.eps} and {self.reg_adv}.")


def pairwise_bpr(scores: Tensor, neg_reduce: str = "each", reduction: str = "sum") -> Tensor:
    """BPR on (B, 1 + n) scores (positive first): -log sigma(y+ - y-) per pair, or vs the hardest negative."""
    pos, neg = scores[:, :1], scores[:, 1:]
    if neg_reduce == "max":
        neg = neg.max(dim=1, keepdim=True).values
    loss = -F.logsigmoid(pos - neg)
    return loss.sum() if reduction == "sum" else loss.mean()


def normalize_grad(g: Tensor, how: str = "row") -> Tensor:
    """L2-normalise a gradient per row of the stored 2-D tensor (1-D tensors: sign) or globally; zero stays zero."""
    if how == "tensor":
        n = g.norm()
        return g / n if n > 0 else torch.zeros_like(g)
    if g.dim() <= 1:
        return torch.sign(g)
    flat = g.reshape(g.shape[0], -1)
    n = flat.norm(dim=1, keepdim=True)
    return torch.where(n > 0, flat / n.clamp_min(1e-30), torch.zeros_like(flat)).reshape(g.shape)


def adversarial_noise(
    grads: dict[str, Tensor], params: dict[str, Tensor], eps: float, how: str = "row"
) -> dict[str, Tensor]:
    """delta_P = eps * std(P) * normalize(dL/dP) for each perturbed parameter (Eq. 4.33 with flexible magnitude)."""
    out = {}
    for name, g in grads.items():
        p = params[name].detach()
        std = p.std() if p.numel() > 1 else p.abs().reshape(())
        out[name] = (eps * std * normalize_grad(g.detach(), how)).detach()
    return out


def _batches(n: int, size: int, rng: np.random.Generator) -> tuple[np.ndarray, int]:
    return rng.permutation(n), math.ceil(n / size)


def fit_playlist(
    model: Recommender,
    train: Interactions,
    valid: EvalSet | None = None,
    config: PlaylistTrainConfig | None = None,
    *,
    apr: bool = False,
    log: Callable[[str], None] | None = print,
    skip_bpr: bool = False,
) -> History:
    """Train a playlist model with BPR (and then APR when ``apr``), keeping the best dev epoch of each phase."""
    from segue.evaluation.protocols import evaluate

    cfg = config or PlaylistTrainConfig()
    if "playlist" not in train.df.columns:
        raise DataError(f"{train.name} has no playlist column; playlist models train on (user, playlist, song) rows.")
    if train.n_items != model.n_items:
        raise DataError(f"The training data has {train.n_items} songs but the model was built for {model.n_items}.")
    n_p = len(train.group_maps["playlist"])
    if getattr(model, "n_playlists", n_p) != n_p:
        raise DataError(f"The training data has {n_p} playlists but the model was built for {model.n_playlists}.")
    if not any(p.requires_grad for p in model.parameters()):
        raise ConfigError(f"{model.name} has no trainable parameters.")
    if hasattr(model, "set_owners") and model.n_users == train.n_users:
        model.set_owners(playlist_owners(train))
    seed_everything(cfg.seed)
    device = resolve_device(cfg.device)
    model.to(device)
    rng = np.random.default_rng(cfg.seed)
    pl = train.df["playlist"].to_numpy().copy()
    it = train.df["item"].to_numpy().copy()
    members = torch.as_tensor(member_matrix(train, n_p))
    sampler = NegativeSampler(playlist_matrix(train, n_p), seed=rng)
    pl_t, it_t = torch.as_tensor(pl), torch.as_tensor(it)
    history = History(monitor="HR@10" if valid is not None else None)

    def run_phase(phase: str, epochs: int, lr: float) -> None:
        opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=cfg.weight_decay)
        names = _perturbed(model) if phase == "apr" else []
        noise: dict[str, Tensor] = {}
        best: tuple[float, float] | None = None
        best_state: dict[str, Tensor] | None = None
        if phase == "apr" and valid is not None:  # APR starts from the best BPR checkpoint (M.7)
            m0 = evaluate(model, valid, ks=(10,), batch_size=cfg.eval_batch_size)
            best, best_state = (m0["HR@10"], m0["NDCG@10"]), copy.deepcopy(model.state_dict())
        bad = 0
        t_start = time.perf_counter()
        for epoch in range(1, epochs + 1):
            t0 = time.perf_counter()
            model.train()
            perm, n_batches = _batches(len(pl), cfg.batch_size, rng)
            negs = torch.as_tensor(sampler.sample(pl[perm], cfg.n_negatives))
            perm_t = torch.as_tensor(perm)
            total = 0.0
            for b in range(n_batches):
                sl = slice(b * cfg.batch_size, (b + 1) * cfg.batch_size)
                idx = perm_t[sl]
                p = pl_t[idx].to(device)
                pos = it_t[idx]
                mem = members[pl_t[idx]]
                mem = mem.masked_fill(mem == pos[:, None], 0).to(device)
                cand = torch.cat([pos[:, None], negs[sl]], dim=1).to(device)
                ctx = Context(group=mem)
                loss = pairwise_bpr(model.score(p, cand, ctx), cfg.neg_reduce, cfg.reduction)
                if phase == "apr":
                    noise = apr_noise(model, names, noise, p, cand, ctx, cfg)
                    if cfg.reg_adv:
                        loss = loss + cfg.reg_adv * pairwise_bpr(
                            _perturbed_scores(model, noise, p, cand, ctx), cfg.neg_reduce, cfg.reduction
                        )
                if not torch.isfinite(loss):
                    raise DataError(
                        f"{phase} training of {model.name} diverged at epoch {epoch}; lower the learning rate."
                    )
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += loss.item()
            rec: dict[str, Any] = {
                "phase": phase,
                "epoch": epoch,
                "loss": total / len(pl),
                "train_seconds": time.perf_counter() - t0,
            }
            improved = False
            if valid is not None:
                m = evaluate(model, valid, ks=(10,), batch_size=cfg.eval_batch_size)
                rec["valid"] = m
                key = (m["HR@10"], m["NDCG@10"])
                if best is None or key > best:
                    best, best_state, improved, bad = key, copy.deepcopy(model.state_dict()), True, 0
                    history.best_value, history.best_epoch = key[0], epoch
                else:
                    bad += 1
            rec["seconds"] = time.perf_counter() - t0
            history.epochs.append(rec)
            if log is not None:
                v = rec.get("valid", {})
                log(
                    f"{model.name} {phase} {epoch}/{epochs} loss {rec['loss']:.4f} "
                    f"dev HR@10 {v.get('HR@10', float('nan')):.4f} NDCG@10 {v.get('NDCG@10', float('nan')):.4f} "
                    f"{rec['seconds']:.1f}s{' *' if improved else ''}"
                )
            if cfg.patience is not None and bad >= cfg.patience:
                history.stopped_early = True
                break
            if cfg.max_seconds is not None and time.perf_counter() - t_start > cfg.max_seconds:
                history.stopped_early = True
                break
        if best_state is not None:
            model.load_state_dict(best_state)

    if not skip_bpr:
        run_phase("bpr", cfg.epochs, cfg.lr)
    if apr:
        run_phase("apr", cfg.apr_epochs, cfg.apr_lr or cfg.lr)
    model.fitted = True
    model.eval()
    return history


def _perturbed(model: torch.nn.Module) -> list[str]:
    from segue.models.playlist import perturbable

    return perturbable(model)


def _perturbed_scores(
    model: torch.nn.Module, noise: dict[str, Tensor], p: Tensor, cand: Tensor, ctx: Context
) -> Tensor:
    """Scores at Theta + delta with delta constant: gradients reach Theta, not delta ([AMBIG] M.7)."""
    params = dict(model.named_parameters())
    return functional_call(
        model, {n: params[n] + d for n, d in noise.items()}, (p, cand, ctx), strict=False, tie_weights=True
    )


def apr_noise(
    model: torch.nn.Module,
    names: list[str],
    prev: dict[str, Tensor],
    p: Tensor,
    cand: Tensor,
    ctx: Context,
    cfg: PlaylistTrainConfig,
) -> dict[str, Tensor]:
    """New adversarial noise from the gradient of the BPR loss at Theta + previous noise (Eq. 4.33)."""
    params = dict(model.named_parameters())
    if cfg.eps == 0:
        return {n: torch.zeros_like(params[n]) for n in names}
    deltas = {n: (prev[n] if n in prev else torch.zeros_like(params[n])).clone().requires_grad_(True) for n in names}
    loss = pairwise_bpr(
        functional_call(model, {n: params[n].detach() + deltas[n] for n in names}, (p, cand, ctx), strict=False),
        cfg.neg_reduce,
        cfg.reduction,
    )
    grads = torch.autograd.grad(loss, [deltas[n] for n in names], allow_unused=True)
    g = {n: (torch.zeros_like(params[n]) if gr is None else gr) for n, gr in zip(names, grads, strict=True)}
    return adversarial_noise(g, params, cfg.eps, cfg.apr_norm)


__all__ = ["PlaylistTrainConfig", "adversarial_noise", "apr_noise", "fit_playlist", "normalize_grad", "pairwise_bpr"]
