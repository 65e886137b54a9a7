"""Per-epoch checkpoints of the generic trainer, so that ``segue train --resume`` continues a killed run.

After every epoch, :class:`EpochCheckpoint` writes into its directory (``.NAME.resume`` beside the run
directory ``NAME`` when ``segue train`` writes one)::

    epoch-0007.safetensors   tensors only: the model's state_dict (``model.*``), the early-stopping best
                             state (``best.*``), the optimizer's state (``opt.<param>.<key>``), and the
                             torch RNG states (``rng.torch``, ``rng.cuda.<i>``)
    checkpoint.json          epoch, step, seconds, the tensor file's name, the history so far, the
                             early-stopping bookkeeping, the optimizer's param groups, the sampler's NumPy
                             Generator state and Python's ``random`` state, and a key of the run

Under N processes (segue/training/distributed.py) the checkpoint is the same pair, written once by rank 0:
the model, best and optimizer states are the same on every rank (DistributedDataParallel steps them
together), while every rank's own RNG states (the run's generator, its negative stream, Python's and
torch's) are gathered (``all_gather_object``) into ``ranks`` of ``checkpoint.json`` and ``rank<r>.*``
tensors, with ``nproc`` beside them. On resume rank 0 reads the checkpoint and broadcasts it; every rank
restores the shared state and its own RNG states, so a resumed N-process run equals an uninterrupted one.
A checkpoint written with N processes is refused, in one sentence, by a run with another N.

No pickles: tensors go through safetensors, everything else through JSON. Each file is written to a
temporary name and renamed into place, the tensor file first (under a new name per epoch) and
``checkpoint.json`` last, so a kill at any moment leaves the previous epoch's pair whole.

Resuming restores all of it, so the rest of the run draws the same negatives, shuffles, dropout masks and
optimizer steps as an uninterrupted run with the same seed: on CPU the final state_dict is bitwise equal.
The key (model, options, training options other than ``epochs``, ``patience``, ``max_seconds`` and the
presentation ones, and a fingerprint of the training data) must match, else resuming is refused in one
sentence. A checkpoint that cannot be written (full disk) is reported once and training goes on without.

Only the plain single-stage trainer checkpoints; models fitted in closed form, in stages (parts) or with
an adversarial stage, and the audio and CoSeRNN family loops, refuse ``--resume`` in one sentence.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.distributed as dist

from segue.dirs import resume_dir
from segue.errors import ConfigError, RunDirError
from segue.files import first_line, read_json
from segue.training.distributed import world

if TYPE_CHECKING:
    from segue.data.interactions import Interactions
    from segue.models.base import Recommender

FORMAT = 1
#: training options that may differ between the interrupted run and its resumption
FREE_OPTIONS = ("epochs", "patience", "max_seconds", "progress", "device", "threads", "eval_batch_size")


@dataclass
class Resumed:
    """Where a resumed run continues: the last finished epoch, the step count, the seconds spent, and the
    history so far (as ``History.to_dict`` wrote it)."""

    epoch: int
    step: int
    seconds: float
    history: dict[str, Any]


class EpochCheckpoint:
    """The per-epoch checkpoint hook of :class:`~segue.training.trainer.Trainer` (module docstring).

    ``resume=True`` continues from the checkpoint in ``directory`` when there is one (else starts afresh);
    ``resume=False`` discards any checkpoint there and starts afresh.
    """

    def __init__(
        self, directory: str | Path, *, resume: bool = False, log: Callable[[str], None] | None = None
    ) -> None:
        self.directory = Path(directory)
        self.resume = resume
        self.log = log
        self.enabled = True

    # -- key ------------------------------------------------------------------------------
    @staticmethod
    def key(model: Recommender, train: Interactions, cfg: Any, phase: str | None) -> dict[str, Any]:
        """What must be the same for a checkpoint to continue this run."""
        crc = zlib.crc32(np.ascontiguousarray(train.users).tobytes())
        crc = zlib.crc32(np.ascontiguousarray(train.items).tobytes(), crc)
        options = {k: v for k, v in cfg.to_dict().items() if k not in FREE_OPTIONS}
        key = {
            "model": model.name,
            "model_options": model.config_dict(),
            "train": options,
            "phase": phase,
            "data": {"n_users": model.n_users, "n_items": model.n_items, "rows": len(train), "crc32": crc},
        }
        return json.loads(json.dumps(key, default=str))

    # -- restore ---------------------------------------------------------------------------
    def restore(
        self,
        model: Recommender,
        opt: torch.optim.Optimizer,
        rng: np.random.Generator,
        stopper: Any,
        key: dict[str, Any],
        *,
        sampler: Any = None,
    ) -> Resumed | None:
        """Load the checkpoint into the run's objects; ``None`` when starting afresh. ``sampler``: the batches'
        negative sampler, whose generator is the run's in one process and a stream of its own per rank."""
        w = world()
        if w is None:
            loaded = self._read(key, 1)
        else:  # rank 0 reads (the directory may exist on its machine only) and every rank gets the same
            box: list[Any] = [None]
            if w.rank == 0:
                try:
                    box = [("ok", self._read(key, w.size))]
                except (RunDirError, ConfigError) as e:
                    box = [("error", type(e).__name__, str(e))]
            dist.broadcast_object_list(box, src=0)
            if box[0][0] == "error":
                raise (ConfigError if box[0][1] == "ConfigError" else RunDirError)(box[0][2])
            loaded = box[0][1]
        if loaded is None:
            return None
        meta, tensors = loaded
        try:
            model.load_state_dict(_strip(tensors, "model."))
            if stopper is not None and meta["stopper"]["has_best"]:
                stopper.best_state = _strip(tensors, "best.")
            _load_optimizer(opt, tensors, meta["optimizer"])
            if stopper is not None:
                best = meta["stopper"]["best"]
                stopper.best = None if best is None else tuple(float(x) for x in best)
                stopper.best_step, stopper.bad = meta["stopper"]["best_step"], int(meta["stopper"]["bad"])
            if w is None:
                _set_rng_state(meta["rng"], _strip(tensors, "rng."), rng, sampler)
            else:  # this rank's own streams
                _set_rng_state(meta["ranks"][w.rank], _strip(tensors, f"rank{w.rank}."), rng, sampler)
            if not isinstance(meta["history"], dict):
                raise TypeError("the history is not an object")
            resumed = Resumed(int(meta["epoch"]), int(meta["step"]), float(meta["seconds"]), meta["history"])
        except (RunDirError, ConfigError):
            raise
        except Exception as e:  # a damaged or truncated checkpoint, whatever the error
            raise RunDirError(
                f"The epoch checkpoint in {self.directory} is damaged ({first_line(e)}); run without --resume."
            ) from e
        if self.log is not None:
            self.log(f"resuming from the checkpoint of epoch {resumed.epoch} in {self.directory}")
        return resumed

    def _read(self, key: dict[str, Any], nproc: int) -> tuple[dict[str, Any], dict[str, torch.Tensor]] | None:
        """The checkpoint's JSON and tensors when resuming one that fits this run of ``nproc`` processes;
        None when starting afresh (a checkpoint there is discarded unless resuming)."""
        from safetensors.torch import load_file

        meta_file = self.directory / "checkpoint.json"
        if not self.resume:
            if self.directory.exists():
                if self.log is not None and meta_file.exists():
                    self.log(f"discarding the epoch checkpoint in {self.directory} (pass --resume to continue it)")
                shutil.rmtree(self.directory, ignore_errors=True)
            return None
        if not meta_file.exists():
            if self.log is not None:
                self.log(f"no epoch checkpoint in {self.directory}: training from epoch 1")
            return None
        meta = read_json(meta_file)
        if meta.get("format") != FORMAT or not isinstance(meta.get("key"), dict):
            raise RunDirError(f"{meta_file} is not a segue epoch checkpoint of format {FORMAT}.")
        if meta["key"] != key:
            what = ", ".join(k for k in key if meta["key"].get(k) != key[k])
            raise ConfigError(
                f"The checkpoint in {self.directory} was written by a different run (its {what} differ); "
                "run without --resume to start over."
            )
        written = meta.get("nproc", 1)
        if written != nproc:
            raise ConfigError(
                f"The checkpoint in {self.directory} was written by {_procs(written)} and this run has "
                f"{_procs(nproc)}; resume it with --nproc {written}, or run without --resume to start over."
            )
        try:
            return meta, load_file(str(self.directory / str(meta["file"])))
        except Exception as e:  # a damaged or truncated tensor file, whatever the error
            raise RunDirError(
                f"The epoch checkpoint in {self.directory} is damaged ({first_line(e)}); run without --resume."
            ) from e

    # -- save ------------------------------------------------------------------------------
    def save(
        self,
        epoch: int,
        step: int,
        seconds: float,
        model: Recommender,
        opt: torch.optim.Optimizer,
        rng: np.random.Generator,
        history: Any,
        stopper: Any,
        key: dict[str, Any],
        *,
        stopped_by: str | None = None,
        sampler: Any = None,
    ) -> None:
        """Write the checkpoint of a finished epoch (``stopped_by``: why training stops after it, if it does).
        Over several processes every rank calls it (its RNG states are gathered) and rank 0 writes."""
        w = world()
        ranks = None
        if w is not None:  # every rank, every epoch, even once rank 0 has given up writing: a collective
            ranks = [None] * w.size
            dist.all_gather_object(ranks, _rng_state(rng, sampler))
            if w.rank != 0:
                return
        if not self.enabled:
            return
        from safetensors import SafetensorError

        try:
            self._save(
                epoch, step, seconds, model, opt, rng, history, stopper, key, stopped_by, ranks=ranks, sampler=sampler
            )
        except (OSError, SafetensorError) as e:  # a full disk must not stop training: go on without checkpoints
            self.enabled = False
            if self.log is not None:
                self.log(f"cannot write the epoch checkpoint in {self.directory} ({first_line(e)}); continuing without")

    def _save(
        self,
        epoch: int,
        step: int,
        seconds: float,
        model: Recommender,
        opt: torch.optim.Optimizer,
        rng: np.random.Generator,
        history: Any,
        stopper: Any,
        key: dict[str, Any],
        stopped_by: str | None,
        *,
        ranks: list[Any] | None = None,
        sampler: Any = None,
    ) -> None:
        from safetensors.torch import save_file

        self.directory.mkdir(parents=True, exist_ok=True)
        tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
        if stopper is not None and stopper.best_state is not None:
            tensors |= {f"best.{k}": v for k, v in stopper.best_state.items()}
        opt_tensors, opt_meta = _dump_optimizer(opt)
        tensors |= opt_tensors
        if ranks is None:
            rng_meta, rng_tensors = _rng_state(rng, sampler)
            tensors |= {f"rng.{k}": v for k, v in rng_tensors.items()}
        else:
            tensors |= {f"rank{r}.{k}": v for r, (_, t) in enumerate(ranks) for k, v in t.items()}
        tensors = {k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}
        name = f"epoch-{epoch:04d}.safetensors"
        tmp = self.directory / f".{name}.tmp"
        save_file(tensors, str(tmp))
        _fsync(tmp)
        os.replace(tmp, self.directory / name)
        hist = history.to_dict()
        if stopped_by is not None:
            hist["stopped_by"] = stopped_by
        meta: dict[str, Any] = {
            "format": FORMAT,
            "epoch": epoch,
            "step": step,
            "seconds": seconds,
            "file": name,
            "key": key,
            "history": hist,
            "stopper": {
                "has_best": stopper is not None and stopper.best_state is not None,
                "best": None if stopper is None or stopper.best is None else list(stopper.best),
                "best_step": None if stopper is None else stopper.best_step,
                "bad": 0 if stopper is None else stopper.bad,
            },
            "optimizer": opt_meta,
        }
        if ranks is None:
            meta["rng"] = rng_meta
        else:
            meta["nproc"], meta["ranks"] = len(ranks), [js for js, _ in ranks]
        tmp = self.directory / ".checkpoint.json.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(meta, f, default=float)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.directory / "checkpoint.json")
        for old in self.directory.glob("epoch-*.safetensors"):
            if old.name != name:
                old.unlink(missing_ok=True)

    def discard(self) -> None:
        """Remove the checkpoint (the run it belongs to was written)."""
        shutil.rmtree(self.directory, ignore_errors=True)


def check_resumable(model: Recommender, checkpoint: EpochCheckpoint | None, why: str) -> None:
    """Refuse ``--resume`` (one sentence) for a model whose training the trainer does not checkpoint."""
    if checkpoint is not None and checkpoint.resume:
        raise ConfigError(f"{model.name} cannot resume: it {why}; run it again without --resume.")


def _procs(n: int) -> str:
    return "1 process" if n == 1 else f"{n} processes"


def _rng_state(rng: np.random.Generator, sampler: Any) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """This process's RNG states: the run's generator, the negative sampler's when it has its own (one per
    rank), Python's ``random`` (JSON) and torch's CPU and CUDA states (tensors)."""
    version, state, gauss = random.getstate()
    js: dict[str, Any] = {"numpy": rng.bit_generator.state, "python": [version, list(state), gauss]}
    if sampler is not None and sampler.rng is not rng:
        js["sampler"] = sampler.rng.bit_generator.state
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        tensors |= {f"cuda.{i:03d}": s for i, s in enumerate(torch.cuda.get_rng_state_all())}
    return js, tensors


def _set_rng_state(
    js: dict[str, Any], tensors: dict[str, torch.Tensor], rng: np.random.Generator, sampler: Any
) -> None:
    rng.bit_generator.state = js["numpy"]
    if "sampler" in js:
        if sampler is None or sampler.rng is rng:
            raise ValueError("the checkpoint holds a negative stream this run does not have")
        sampler.rng.bit_generator.state = js["sampler"]
    version, state, gauss = js["python"]
    random.setstate((version, tuple(state), gauss))
    torch.set_rng_state(tensors["torch"])
    if torch.cuda.is_available():
        cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("cuda."))]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)


def _strip(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}


def _dump_optimizer(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, Any] = {}
    for pid, st in sd["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"opt.{pid}.{k}"] = v
            else:
                scalars[f"{pid}.{k}"] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _load_optimizer(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    state: dict[int, dict[str, Any]] = {}
    for key, v in tensors.items():
        if key.startswith("opt."):
            pid, k = key[4:].split(".", 1)
            state.setdefault(int(pid), {})[k] = v
    for key, v in meta["scalars"].items():
        pid, k = key.split(".", 1)
        state.setdefault(int(pid), {})[k] = v
    groups = meta["param_groups"]
    for saved, current in zip(groups, opt.param_groups, strict=True):
        for k, v in current.items():  # JSON turned tuples (betas) into lists
            if isinstance(v, tuple) and isinstance(saved.get(k), list):
                saved[k] = tuple(saved[k])
    opt.load_state_dict({"state": state, "param_groups": groups})


def _fsync(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


__all__ = ["EpochCheckpoint", "Resumed", "check_resumable", "resume_dir"]
