"""The generic gradient trainer: sampled negatives, a pairwise loss, Adam, early stopping.

The trainer sees a model only through :meth:`~segue.models.base.Recommender.score` and
:meth:`~segue.models.base.Recommender.regularization` (and, for sequential models, the
history length it declares): each batch scores ``[positive, n negatives]`` for its users
and applies the configured loss. Negatives for a whole epoch are drawn at once by the
vectorised :class:`~segue.data.sampling.NegativeSampler`.

After each epoch (every ``eval_every``) the dev set is evaluated; the best state by
``monitor`` is kept and restored at the end, and training stops after ``patience``
evaluations without improvement.
"""

from __future__ import annotations

import copy
import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from segue.data.sampling import NegativeSampler
from segue.data.sequences import CONTEXTS, row_contexts
from segue.errors import ConfigError, DataError
from segue.models.base import Context
from segue.training.losses import get_loss
from segue.training.optim import OPTIMIZERS, make_optimizer, optimizer_for_params

if TYPE_CHECKING:
    from segue.data.interactions import Interactions
    from segue.evaluation.protocols import EvalSet
    from segue.models.base import Recommender


@dataclass
class TrainConfig:
    """Hyper-parameters of the generic trainer (all loadable from the ``[train]`` table of a TOML file)."""

    epochs: int = 50
    batch_size: int = 1024
    lr: float = 1e-3
    weight_decay: float = 0.0
    optimizer: str = "adam"
    loss: str = "bpr"
    margin: float = 1.0
    n_negatives: int = 1
    negative_sampling: str = "uniform"  # or "popularity"
    popularity_alpha: float = 0.75
    patience: int = 5
    eval_every: int = 1
    monitor: str = "NDCG@10"
    seed: int = 0
    device: str = "auto"
    threads: int | None = None
    progress: bool = True
    max_seconds: float | None = None
    context: str = "history"  # a sequential model's row context: previous items, or the rest of the basket/...

    def __post_init__(self) -> None:
        checks = [
            (self.epochs >= 1, "epochs must be >= 1"),
            (self.batch_size >= 1, "batch_size must be >= 1"),
            (self.lr > 0, "lr must be > 0"),
            (self.weight_decay >= 0, "weight_decay must be >= 0"),
            (self.n_negatives >= 1, "n_negatives must be >= 1"),
            (self.patience >= 1, "patience must be >= 1"),
            (self.eval_every >= 1, "eval_every must be >= 1"),
            (self.optimizer in OPTIMIZERS, f"optimizer must be one of {', '.join(OPTIMIZERS)}"),
            (self.negative_sampling in ("uniform", "popularity"), "negative_sampling must be uniform or popularity"),
            (self.context in CONTEXTS, f"context must be one of {', '.join(CONTEXTS)}"),
            (
                self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:"),
                "device must be auto, cpu or cuda",
            ),
        ]
        for ok, msg in checks:
            if not ok:
                raise ConfigError(f"Invalid training option: {msg}.")
        get_loss(self.loss)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"Unknown training option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}.")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class History:
    """Per-epoch records (loss, dev metrics, seconds) and the epoch whose state was kept."""

    epochs: list[dict[str, Any]] = field(default_factory=list)
    best_epoch: int | None = None
    best_value: float | None = None
    monitor: str | None = None
    stopped_early: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' was asked for but no CUDA GPU is available.")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) for reproducible runs."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    os.environ.setdefault("PYTHONHASHSEED", str(seed))


def _make_optimizer(name: str, params: list[torch.nn.Parameter], lr: float, wd: float) -> torch.optim.Optimizer:
    return optimizer_for_params(name, params, lr, wd)


class Trainer:
    """Fit a :class:`~segue.models.base.Recommender` by negative sampling (see module docstring).

    ``log`` receives one line per epoch (default: printed through rich); pass
    ``log=None`` to silence it.
    """

    def __init__(self, config: TrainConfig | None = None, log: Callable[[str], None] | str | None = "default") -> None:
        self.config = config or TrainConfig()
        if log == "default":
            from rich.console import Console

            console = Console(stderr=True)
            self.log: Callable[[str], None] | None = lambda line: console.print(line, highlight=False)
        else:
            self.log = log  # type: ignore[assignment]

    def fit(self, model: Recommender, train: Interactions, valid: EvalSet | None = None) -> History:
        # tiny Adam moments become denormal floats, ~100x slower on x86 CPUs: flush them to zero while
        # training only (the flag is process-wide; hypothesis and others expect IEEE subnormals)
        torch.set_flush_denormal(True)
        try:
            return self._fit(model, train, valid)
        finally:
            torch.set_flush_denormal(False)

    def _fit(self, model: Recommender, train: Interactions, valid: EvalSet | None) -> History:
        cfg = self.config
        if len(train) == 0:
            raise DataError("Cannot train on an empty training set.")
        if train.n_users != model.n_users or train.n_items != model.n_items:
            raise DataError(
                f"The training data has {train.n_users} users and {train.n_items} items but the model "
                f"was built for {model.n_users} and {model.n_items}."
            )
        if not any(p.requires_grad for p in model.parameters()):
            raise ConfigError(f"{model.name} has no trainable parameters; it must implement fit() itself.")
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        seed_everything(cfg.seed)
        device = resolve_device(cfg.device)
        model.to(device)
        rng = np.random.default_rng(cfg.seed)
        loss_fn = get_loss(cfg.loss)
        opt = make_optimizer(cfg.optimizer, model, cfg.lr, cfg.weight_decay)

        users = train.users.copy()
        items = train.items.copy()
        sampler = NegativeSampler(
            train.to_csr(),
            seed=rng,
            popularity=train.item_counts() if cfg.negative_sampling == "popularity" else None,
            alpha=cfg.popularity_alpha,
        )
        s = model.history_length() if "history" in model.needs else 0
        windows = torch.as_tensor(row_contexts(train, s, cfg.context)) if s else None
        users_t = torch.as_tensor(users)
        items_t = torch.as_tensor(items)
        n = len(users)
        n_batches = math.ceil(n / cfg.batch_size)

        history = History(monitor=cfg.monitor if valid is not None else None)
        best_state: dict[str, torch.Tensor] | None = None
        bad = 0
        t_start = time.perf_counter()
        for epoch in range(1, cfg.epochs + 1):
            t0 = time.perf_counter()
            model.train()
            perm = torch.as_tensor(rng.permutation(n))
            negs = torch.as_tensor(sampler.sample(users[perm.numpy()], cfg.n_negatives))
            total = 0.0
            progress = _progress(cfg.progress, n_batches, f"epoch {epoch}/{cfg.epochs}")
            for b in range(n_batches):
                sl = slice(b * cfg.batch_size, (b + 1) * cfg.batch_size)
                idx = perm[sl]
                u = users_t[idx].to(device)
                cand = torch.cat([items_t[idx, None], negs[sl]], dim=1).to(device)
                ctx = Context(history=windows[idx].to(device)) if windows is not None else None
                scores = model.score(u, cand, ctx)
                loss = loss_fn(scores[:, :1], scores[:, 1:], cfg.margin) + model.regularization(u, cand)
                if not torch.isfinite(loss):
                    raise DataError(
                        f"Training diverged at epoch {epoch} (loss is {loss.item()}); lower the learning rate."
                    )
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += loss.item() * len(idx)
                if progress is not None:
                    progress.update(1)
            if progress is not None:
                progress.close()
            record: dict[str, Any] = {"epoch": epoch, "loss": total / n, "train_seconds": time.perf_counter() - t0}
            improved = False
            if valid is not None and (epoch % cfg.eval_every == 0 or epoch == cfg.epochs):
                from segue.evaluation.protocols import evaluate

                # one pass: HR/NDCG@10 for the log line and the monitored metric
                ks = tuple(sorted({10, *_monitor_ks(cfg.monitor)}))
                names = tuple(dict.fromkeys(("HR", "NDCG", cfg.monitor.split("@")[0])))
                metrics = evaluate(model, valid, ks=ks, metrics=names)
                record["valid"] = metrics
                value = metrics[cfg.monitor]
                if history.best_value is None or value > history.best_value:
                    history.best_value, history.best_epoch = value, epoch
                    best_state = copy.deepcopy(model.state_dict())
                    improved = True
                    bad = 0
                else:
                    bad += 1
            record["seconds"] = time.perf_counter() - t0
            history.epochs.append(record)
            if self.log is not None:
                self.log(_format(record, cfg.epochs, improved))
            if valid is not None and bad >= cfg.patience:
                history.stopped_early = True
                break
            if cfg.max_seconds is not None and time.perf_counter() - t_start > cfg.max_seconds:
                history.stopped_early = True
                break
        if best_state is not None:
            model.load_state_dict(best_state)
        else:
            history.best_epoch = history.epochs[-1]["epoch"]
        model.fitted = True
        model.eval()
        return history


def _monitor_ks(monitor: str) -> tuple[int, ...]:
    if "@" not in monitor:
        return (10,)
    try:
        return (int(monitor.split("@")[1]),)
    except ValueError as e:
        raise ConfigError(f"Cannot read the cut-off of monitor metric {monitor!r}.") from e


def _format(rec: dict[str, Any], epochs: int, improved: bool) -> str:
    parts = [f"epoch {rec['epoch']:>3}/{epochs}", f"loss {rec['loss']:.4f}"]
    for k, v in rec.get("valid", {}).items():
        parts.append(f"dev {k} {v:.4f}")
    parts.append(f"{rec['seconds']:.1f}s")
    return "  ".join(parts) + ("  *" if improved else "")


class _Bar:
    def __init__(self, total: int, desc: str) -> None:
        from tqdm.auto import tqdm

        self._bar = tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True, mininterval=0.5)

    def update(self, n: int) -> None:
        self._bar.update(n)

    def close(self) -> None:
        self._bar.close()


def _progress(enabled: bool, total: int, desc: str) -> _Bar | None:
    return _Bar(total, desc) if enabled else None
