"""The one training loop: batches of the kind a model declares -> ``model.loss`` -> optimizer step.

The trainer sees a model only through what it declares (segue.models.base.Recommender):
its :meth:`~segue.models.base.Recommender.loss` on a batch of its ``batch_kind`` (default: a
pairwise or pointwise loss over :meth:`score` of ``[positive, n negatives]``), its
:meth:`regularization` of the rows a batch touched, and the tables an adversary may perturb.
Batches come from segue/training/batches.py; the adversarial term from segue/training/adversarial.py.

Callbacks own the bookkeeping, the same for every family:

* :class:`EarlyStopping`: the dev set is evaluated after every ``eval_every`` epochs; the best state
  by ``monitor`` (one metric, or several separated by commas, compared in order so that later ones
  break ties) is kept and restored at the end; training stops after ``patience`` evaluations
  without improvement.
* :class:`TimeCap`: ``max_seconds`` is checked after every step; the step that hit it is logged
  and recorded in the history (``stopped_by``, ``stop_step``), so a cap overruns by less than a step.
* progress bars and one log line per epoch.
* :class:`~segue.training.resume.EpochCheckpoint` (opt-in, ``Trainer(checkpoint=...)``): after every epoch,
  the model, optimizer, RNG (every rank's, over several processes), history and early-stopping states, so
  that a killed run resumes exactly.

Staged training, closed-form models and the adversarial stage are run by :func:`segue.training.fit`.
"""

from __future__ import annotations

import copy
import os
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from segue.config import from_options
from segue.data.batch import PairBatch
from segue.data.sequences import CONTEXTS
from segue.errors import ConfigError, DataError
from segue.models.base import Recommender
from segue.models.losses import LossSpec
from segue.training.batches import Batches, batches_for
from segue.training.distributed import data_parallel
from segue.training.optim import OPTIMIZERS, make_optimizer

if TYPE_CHECKING:
    from segue.data.interactions import Interactions
    from segue.evaluation.protocols import EvalSet
    from segue.training.adversarial import Adversary
    from segue.training.resume import EpochCheckpoint


@dataclass
class TrainConfig:
    """Hyper-parameters of the generic trainer (all loadable from the ``[train]`` table of a TOML file)."""

    epochs: int = 50
    batch_size: int = 1024
    lr: float = 1e-3
    weight_decay: float = 0.0
    optimizer: str = "adam"
    momentum: float = 0.0  # sgd only
    nesterov: bool = False  # sgd only
    lr_decay: float = 0.0  # per-step decay: lr_t = lr / (1 + lr_decay * t) (Keras' ``decay``; DCUE)
    clip: float | None = None  # clip the gradient norm of every step at this value (CoSeRNN)
    loss: str = "bpr"
    margin: float = 1.0
    neg_reduce: str = "each"  # each: one term per negative; max: the hardest negative (MASR authors' code)
    reduction: str = "mean"  # mean or sum of the loss terms over a batch
    n_negatives: int = 1
    negative_sampling: str = "uniform"  # or "popularity"
    popularity_alpha: float = 0.75
    patience: int | None = 5  # dev evaluations without improvement before stopping (None: never stop early)
    eval_every: int = 1
    monitor: str = "NDCG@10"  # or several, comma-separated, compared in order ("HR@10,NDCG@10")
    eval_batch_size: int = 1024
    dev_cases: int | None = None  # bound the dev cost per epoch: a fixed random subset of this many dev cases
    seed: int = 0
    device: str = "auto"
    threads: int | None = None
    progress: bool = True
    max_seconds: float | None = None  # wall-clock cap per stage, checked after every step
    context: str = "history"  # a sequential model's row context: previous items, or the rest of the basket/...
    # the adversarial stage (APR, QABPR) of models that declare one; see segue/training/adversarial.py
    adv_epochs: int = 50
    adv_eps: float = 1.0
    adv_weight: float = 1.0
    adv_norm: str = "row"  # row | tensor
    adv_scale: str = "std"  # std (APR's flexible noise) | unit (QABPR)
    adv_warm: bool = True  # start each batch's noise from the previous one (APR) or from 0 (QABPR)
    adv_lr: float | None = None  # None: lr

    def __post_init__(self) -> None:
        checks = [
            (self.epochs >= 1, "epochs must be >= 1"),
            (self.batch_size >= 1, "batch_size must be >= 1"),
            (self.lr > 0, "lr must be > 0"),
            (self.weight_decay >= 0, "weight_decay must be >= 0"),
            (self.momentum >= 0 and self.lr_decay >= 0, "momentum and lr_decay must be >= 0"),
            (not (self.nesterov and self.momentum == 0), "nesterov needs momentum > 0"),
            (self.clip is None or self.clip > 0, "clip must be > 0 (or None)"),
            (self.n_negatives >= 1, "n_negatives must be >= 1"),
            (self.patience is None or self.patience >= 1, "patience must be >= 1 (or None)"),
            (self.eval_every >= 1, "eval_every must be >= 1"),
            (self.eval_batch_size >= 1, "eval_batch_size must be >= 1"),
            (self.dev_cases is None or self.dev_cases >= 1, "dev_cases must be >= 1 (or None for all)"),
            (self.max_seconds is None or self.max_seconds > 0, "max_seconds must be > 0"),
            (self.adv_epochs >= 0, "adv_epochs must be >= 0"),
            (self.adv_eps >= 0 and self.adv_weight >= 0, "adv_eps and adv_weight must be >= 0"),
            (self.adv_norm in ("row", "tensor"), "adv_norm must be row or tensor"),
            (self.adv_scale in ("std", "unit"), "adv_scale must be std or unit"),
            (self.adv_lr is None or self.adv_lr > 0, "adv_lr must be > 0"),
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
        self.loss_spec()
        monitor_keys(self.monitor)

    def loss_spec(self) -> LossSpec:
        """The loss a model's default :meth:`~segue.models.base.Recommender.loss` applies."""
        return LossSpec(self.loss, self.margin, self.neg_reduce, self.reduction)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        return from_options(cls, values, "the trainer ([train] table)")

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
    stopped_by: str | None = None  # epochs | patience | time_cap
    stop_step: int | None = None  # the step that hit the time cap
    steps: int = 0
    train_seconds: float = 0.0
    stages: dict[str, Any] = field(
        default_factory=dict
    )  # earlier stages: parts, the plain stage before an adversarial one

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


class BestState:
    """The one early-stopping rule of every loop: keep the state with the best score (tuples compare in
    order, so later entries break ties) and say when ``patience`` offers in a row brought nothing."""

    def __init__(self, patience: int | None) -> None:
        self.patience = patience
        self.best: tuple[float, ...] | None = None
        self.best_state: dict[str, torch.Tensor] | None = None
        self.best_step: int | None = None
        self.bad = 0

    def offer(self, model: torch.nn.Module, value: tuple[float, ...] | float, step: int) -> bool:
        """Keep ``model``'s state if ``value`` beats the best so far; returns whether it did."""
        value = value if isinstance(value, tuple) else (float(value),)
        if self.best is None or value > self.best:
            self.best, self.bad, self.best_step = value, 0, step
            self.best_state = copy.deepcopy(model.state_dict())
            return True
        self.bad += 1
        return False

    @property
    def exhausted(self) -> bool:
        return self.patience is not None and self.bad >= self.patience

    def restore(self, model: torch.nn.Module) -> bool:
        """Load the kept state into ``model``; False when nothing was kept."""
        if self.best_state is None:
            return False
        model.load_state_dict(self.best_state)
        return True


#: A dev evaluation that is not a ranking protocol: ``dev(model) -> {metric: value}`` (higher is better).
DevFunction = Callable[[Any], dict[str, float]]


class EarlyStopping(BestState):
    """:class:`BestState` over the monitored dev metrics of an evaluation set or a :data:`DevFunction`."""

    def __init__(self, valid: EvalSet | DevFunction, cfg: TrainConfig) -> None:
        super().__init__(cfg.patience)
        if callable(valid):
            self.valid, self.cfg, self.keys = valid, cfg, monitor_keys(cfg.monitor)
            return
        if cfg.dev_cases is not None and len(valid) > cfg.dev_cases:  # the same cases every epoch
            keep = np.sort(np.random.default_rng(cfg.seed).choice(len(valid), cfg.dev_cases, replace=False))
            valid = valid.subset(keep)
        self.valid = valid
        self.cfg = cfg
        self.keys = monitor_keys(cfg.monitor)

    def evaluate(self, model: Recommender) -> dict[str, float]:
        from segue.evaluation.protocols import evaluate

        if callable(self.valid):
            model.eval()
            metrics = {k: float(v) for k, v in self.valid(model).items()}
            missing = [k for k in self.keys if k not in metrics]
            if missing:
                raise ConfigError(f"monitor {', '.join(missing)} is not among the dev metrics {', '.join(metrics)}.")
            return metrics

        ks = tuple(sorted({10, *(_monitor_k(k) for k in self.keys)}))
        names = tuple(dict.fromkeys(("HR", "NDCG", *(k.split("@")[0] for k in self.keys))))
        return evaluate(model, self.valid, ks=ks, metrics=names, batch_size=self.cfg.eval_batch_size)  # type: ignore[arg-type]

    def update(self, model: Recommender, metrics: dict[str, float], epoch: int, history: History) -> bool:
        """Record ``metrics``; keep the state when it improves. Returns whether it improved."""
        value = tuple(float(metrics[k]) for k in self.keys)
        if self.offer(model, value, epoch):
            history.best_value, history.best_epoch = value[0], epoch
            return True
        return False


class TimeCap:
    """``max_seconds`` of training, checked after every step."""

    def __init__(self, max_seconds: float | None) -> None:
        self.max_seconds = max_seconds
        self.t0 = time.perf_counter()

    def spent(self) -> float:
        return time.perf_counter() - self.t0

    @property
    def hit(self) -> bool:
        return self.max_seconds is not None and self.spent() > self.max_seconds


class Trainer:
    """Fit a :class:`~segue.models.base.Recommender` by gradient steps on its declared loss (module docstring).

    ``log`` receives one line per epoch (default: printed through rich); pass ``log=None`` to silence it.
    ``checkpoint`` writes a checkpoint after every epoch and, when asked to resume, continues from one.
    """

    def __init__(
        self,
        config: TrainConfig | None = None,
        log: Callable[[str], None] | str | None = "default",
        checkpoint: EpochCheckpoint | None = None,
    ) -> None:
        self.config = config or TrainConfig()
        self.checkpoint = checkpoint
        if log == "default":
            from rich.console import Console

            console = Console(stderr=True)
            self.log: Callable[[str], None] | None = lambda line: console.print(line, highlight=False)
        else:
            self.log = log  # type: ignore[assignment]

    def fit(
        self,
        model: Recommender,
        train: Interactions,
        valid: EvalSet | None = None,
        *,
        adversary: Adversary | None = None,
        phase: str | None = None,
    ) -> History:
        """Train ``model`` on ``train``; with ``adversary``, the dev state at the start counts as epoch 0."""
        if len(train) == 0:
            raise DataError("Cannot train on an empty training set.")

        def batches(rng: np.random.Generator) -> Batches:
            model.prepare(train)
            return batches_for(model, train, self.config, rng)

        return self.run(model, batches, valid, adversary=adversary, phase=phase, data=train)

    def run(
        self,
        model: Recommender,
        batches: Callable[[np.random.Generator], Batches],
        dev: EvalSet | DevFunction | None = None,
        *,
        adversary: Adversary | None = None,
        phase: str | None = None,
        data: Interactions | None = None,
    ) -> History:
        """The loop itself, for any batch builder: ``batches(rng)`` is called once, after seeding, with the
        run's generator; ``dev`` is an evaluation set or a function ``dev(model) -> {metric: value}``
        (the families whose dev selection is not a ranking protocol: CoSeRNN's cosine, DCUE's AUC).
        ``data`` is the interaction table the batches come from; a resume checkpoint is keyed on it."""
        if self.checkpoint is not None and data is None:
            raise ConfigError(f"Resuming {model.name} needs the interaction table its batches come from (data=).")
        # tiny Adam moments become denormal floats, ~100x slower on x86 CPUs: flush them to zero while
        # training only (the flag is process-wide; hypothesis and others expect IEEE subnormals)
        torch.set_flush_denormal(True)
        try:
            return self._run(model, batches, dev, adversary, phase, data)
        finally:
            torch.set_flush_denormal(False)

    def _run(
        self,
        model: Recommender,
        make_batches: Callable[[np.random.Generator], Batches],
        valid: EvalSet | DevFunction | None,
        adversary: Adversary | None,
        phase: str | None,
        train: Interactions | None,
    ) -> History:
        cfg = self.config
        params = [p for p in model.parameters() if p.requires_grad]
        if not params:
            raise ConfigError(f"{model.name} has no trainable parameters; it must implement fit() itself.")
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        seed_everything(cfg.seed)
        device = resolve_device(cfg.device)
        model.to(device)
        rng = np.random.default_rng(cfg.seed)
        spec = cfg.loss_spec()
        batches = make_batches(rng)
        par = data_parallel(model, batches, cfg, batch_loss)  # None in one process; shards the batches
        opt = make_optimizer(cfg.optimizer, model, cfg.lr, cfg.weight_decay, cfg.momentum, cfg.nesterov)
        decay = cfg.lr_decay
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 1.0 / (1.0 + decay * t)) if decay else None

        history = History(monitor=cfg.monitor if valid is not None else None)
        stopper = EarlyStopping(valid, cfg) if valid is not None else None
        if stopper is not None and adversary is not None:  # the adversarial stage starts from the kept state
            record0: dict[str, Any] = {"epoch": 0, "valid": stopper.evaluate(model)}
            stopper.update(model, record0["valid"], 0, history)
            history.epochs.append(record0 | ({"phase": phase} if phase else {}))
        start, step, ckpt, key, resumed = 1, 0, self.checkpoint, None, None
        sampler = getattr(batches, "sampler", None)  # its own negative stream per rank over several processes
        if ckpt is not None:
            key = ckpt.key(model, train, cfg, phase)
            resumed = ckpt.restore(model, opt, rng, stopper, key, sampler=sampler)
            if resumed is not None:  # an interrupted run that had already stopped goes straight to the end
                history, step = History(**_known(resumed.history, History)), resumed.step
                if sched is not None:  # the per-step decay continues from the checkpoint's step
                    sched.last_epoch = step
                start = resumed.epoch + 1 if history.stopped_by is None else cfg.epochs + 1
        cap = TimeCap(cfg.max_seconds)
        if resumed is not None:
            cap.t0 -= resumed.seconds
        n_rows = batches.n_rows
        for epoch in range(start, cfg.epochs + 1):
            t0 = time.perf_counter()
            model.train()
            total, seen = 0.0, 0
            progress = _progress(cfg.progress, len(batches), f"{phase or model.name} {epoch}/{cfg.epochs}")
            for batch in batches.epoch(rng):
                if device.type != "cpu":  # builders produce CPU tensors
                    batch = batch.to(device)
                loss = batch_loss(model, batch, spec, adversary) if par is None else par.loss(batch, spec, adversary)
                if not torch.isfinite(loss):
                    raise DataError(
                        f"Training of {model.name} diverged at epoch {epoch} (loss is {loss.item()}); "
                        "lower the learning rate."
                    )
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.clip:
                    torch.nn.utils.clip_grad_norm_(params, cfg.clip)
                opt.step()
                if sched is not None:
                    sched.step()
                step += 1
                total += loss.item() * (1 if spec.reduction == "sum" else len(batch))
                seen += len(batch)
                if progress is not None:
                    progress.update(1)
                if cap.hit if par is None else par.time_cap(cap):
                    history.stopped_by, history.stop_step = "time_cap", step
                    break
            if progress is not None:
                progress.close()
            if par is not None:
                total, seen = par.epoch_sums(total, seen)
            record: dict[str, Any] = {
                "epoch": epoch,
                "step": step,
                "loss": total / max(seen, 1),
                "train_seconds": time.perf_counter() - t0,
            }
            if phase:
                record["phase"] = phase
            if seen < n_rows:
                record["rows"] = seen
            improved = False
            capped = history.stopped_by == "time_cap"
            due = epoch % cfg.eval_every == 0 or epoch == cfg.epochs
            # at the cap, evaluate only when nothing was kept yet: the cap must not overrun by a dev pass
            if stopper is not None and ((due and not capped) or (capped and stopper.best_state is None)):
                record["valid"] = stopper.evaluate(model)
                improved = stopper.update(model, record["valid"], epoch, history)
            record["seconds"] = time.perf_counter() - t0
            history.epochs.append(record)
            if ckpt is not None:  # over several processes: every rank's RNG states, written once by rank 0
                stop = "time_cap" if capped else ("patience" if stopper is not None and stopper.exhausted else None)
                ckpt.save(
                    epoch, step, cap.spent(), model, opt, rng, history, stopper, key, stopped_by=stop, sampler=sampler
                )  # type: ignore[arg-type]
            if par is not None:
                par.epoch_end(epoch)
            if self.log is not None:
                self.log(_format(record, cfg.epochs, improved, model.name if phase is None else phase))
            if capped:
                if self.log is not None:
                    self.log(f"{model.name}: time cap of {cfg.max_seconds:g} s hit at step {step} (epoch {epoch})")
                break
            if stopper is not None and (stopper.exhausted if par is None else par.stop(stopper.exhausted)):
                history.stopped_by = "patience"
                break
        history.stopped_early = history.stopped_by is not None
        if history.stopped_by is None:
            history.stopped_by = "epochs"
        history.steps = step
        history.train_seconds = cap.spent()
        if self.log is not None:
            self.log(_stop_line(model.name if phase is None else f"{model.name} {phase}", history, cfg))
        restored = stopper is not None and stopper.restore(model)
        if not restored and history.epochs:
            history.best_epoch = history.epochs[-1]["epoch"]
        model.fitted = True
        model.eval()
        return history


def _known(values: dict[str, Any], cls: type) -> dict[str, Any]:
    return {k: v for k, v in values.items() if k in cls.__dataclass_fields__}


def batch_loss(model: Recommender, batch: Any, spec: LossSpec, adversary: Adversary | None = None) -> torch.Tensor:
    """The objective of one training step: the model's loss on ``batch``, its penalty on the rows the batch
    touched (pair batches; sequence losses include their own), and the adversarial term."""
    loss = model.loss(batch, spec)
    if isinstance(batch, PairBatch) and type(model).regularization is not Recommender.regularization:
        loss = loss + model.regularization(batch.users, batch.items)
    if adversary is not None:
        loss = loss + adversary.term(model, batch, spec)
    return loss


def monitor_keys(monitor: str) -> tuple[str, ...]:
    """The metrics of a monitor string: ``"NDCG@10"`` or ``"HR@10,NDCG@10"`` (later ones break ties)."""
    keys = tuple(k.strip() for k in monitor.split(",") if k.strip())
    if not keys:
        raise ConfigError("monitor must name at least one metric, e.g. 'NDCG@10'.")
    for k in keys:
        _monitor_k(k)
    return keys


def _monitor_k(key: str) -> int:
    if "@" not in key:
        return 10
    try:
        return int(key.split("@")[1])
    except ValueError as e:
        raise ConfigError(f"Cannot read the cut-off of monitor metric {key!r}.") from e


def _stop_line(name: str, history: History, cfg: TrainConfig) -> str:
    """Why training stopped, said plainly (and kept in history.json as ``stopped_by``)."""
    last = history.epochs[-1]["epoch"] if history.epochs else 0
    if history.stopped_by == "time_cap":
        why = f"the time cap ({cfg.max_seconds} s) at step {history.stop_step}"
    elif history.stopped_by == "patience":
        why = f"patience ({cfg.patience} dev evaluations without improvement)"
    else:
        why = f"the epoch cap ({cfg.epochs})"
    kept = "" if history.best_epoch is None else f"; kept epoch {history.best_epoch}"
    still = ""
    if history.stopped_by != "patience" and history.best_epoch == last and history.monitor is not None:
        still = " (dev was still improving)"
    return f"{name}: stopped by {why} after {last} epochs, {history.steps} steps, {history.train_seconds:.1f} s{kept}{still}"


def _format(rec: dict[str, Any], epochs: int, improved: bool, name: str) -> str:
    parts = [f"{name} {rec['epoch']:>3}/{epochs}", f"loss {rec['loss']:.4f}"]
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
