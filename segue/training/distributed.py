"""Training and evaluation over several processes with ``torch.distributed`` (DistributedDataParallel).

Two ways in, one code path:

* ``segue train ... --nproc N`` spawns N local processes (:func:`launch`, ``torch.multiprocessing``) that
  meet through a file store in a temporary directory;
* ``torchrun --nproc-per-node N -m segue.cli train ...`` (one or several machines) starts the processes
  itself; :func:`torchrun_env` reads its ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` and :func:`init`
  joins its rendezvous (``env://``).

The backend is gloo on CPU and NCCL on GPU (one GPU per process, ``cuda:LOCAL_RANK``). Every rank runs
the same pipeline (load, split, fit, evaluate); what differs is in the hooks below, which the trainer
and the evaluator call only when :func:`world` says there are two or more ranks, so a single process
runs exactly as before.

Training (:class:`DataParallel`, called from :class:`~segue.training.trainer.Trainer`):

* each epoch's permutation is drawn on every rank from the run's seeded generator (the same on all), and
  rank ``r`` takes rows ``r, r + N, r + 2N, ...`` of it, the permutation padded with its first rows to a
  multiple of N as ``torch.utils.data.DistributedSampler`` does, so every rank runs the same number of
  steps; the per-rank batch is ``ceil(batch_size / N)`` rows, so the global batch, the steps per epoch and
  the learning-rate semantics stay those of one process;
* negatives are drawn per rank from a stream seeded by (seed, rank): a run is deterministic for a given N;
* the model's loss (``model.loss``, not ``forward``) runs inside a small module wrapped by
  ``torch.nn.parallel.DistributedDataParallel``, whose hooks average the gradients (summed instead
  when the loss is a sum over the batch, so a step is the one-process step); with ``sparse-adam`` /
  ``sparse-adagrad`` the embedding tables a model lists in ``sparse_tables`` have sparse gradients, which
  DDP reduces over gloo by gathering the rows each rank touched (NCCL has no sparse all-reduce: refused),
  so a step sends the batch's rows instead of the whole tables (docs/scale.md);
* the early-stopping decision is rank 0's, broadcast (``broadcast_object_list``); the dev metrics every
  rank sees are the same all-reduced numbers, so every rank keeps the same best state;
* with a run directory, the epoch checkpoint of segue/training/resume.py (``.NAME.resume`` beside it) holds
  every rank's RNG states and the shared model, optimizer, history and early-stopping states; rank 0 writes
  it after every epoch, then all ranks meet at a barrier; ``--resume`` continues it on the same N ranks,
  each restoring its own streams, and ends where an uninterrupted run ends; the final run directory is
  written once, by rank 0, and the checkpoint is then removed.

Evaluation (:func:`share`, :func:`reduce_means`, called from :func:`segue.evaluation.protocols.evaluate`):
the cases are split into N contiguous blocks; each rank scores its block and the per-case metric values
are summed in float64 with their count by one ``all_reduce``.

Embedding tables are replicated on every rank (plain DDP); docs/scale.md gives the size at which that stops
fitting and the row-sharded path past it.

Faults: a rank that raises or dies stops every rank (``torch.multiprocessing`` terminates the others; torchrun's
agent does the same) and :func:`launch` raises one sentence naming the rank, what happened and the checkpoint
kept. ``SEGUE_FAULT_RANK`` / ``SEGUE_FAULT_EPOCH`` (and ``SEGUE_FAULT_KIND`` = ``raise``, ``kill`` or ``abort``)
make a rank fail as it starts that epoch: the test hook for this path. A rank killed by a fatal signal that Python
can report (SIGABRT, SIGSEGV, SIGBUS, SIGFPE, SIGILL) leaves its Python stack in ``rank<N>.fault`` (``faulthandler``),
and the error names the innermost Python frame it died in.
"""

from __future__ import annotations

import faulthandler
import json
import logging
import math
import os
import pickle
import signal
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from segue.errors import ConfigError, RankFailedError, SegueError


@dataclass
class World:
    """This process's place in the process group."""

    rank: int
    size: int
    local_rank: int
    backend: str
    device: torch.device

    def share(self, n: int, rank: int | None = None) -> tuple[int, int]:
        """The contiguous block ``[lo, hi)`` of ``n`` rows this rank (or ``rank``) takes."""
        r = self.rank if rank is None else rank
        return r * n // self.size, (r + 1) * n // self.size


_WORLD: World | None = None


def world() -> World | None:
    """The process group of this process when it has two or more ranks; None in a single process."""
    if _WORLD is not None:
        return _WORLD if _WORLD.size > 1 else None
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:  # a group set up by the caller
        backend = dist.get_backend()
        dev = torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else torch.device("cpu")
        return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)), backend, dev)
    return None


def is_main() -> bool:
    w = world()
    return w is None or w.rank == 0


def torchrun_env() -> tuple[int, int, int] | None:
    """(rank, world size, local rank) when this process was started by torchrun with WORLD_SIZE > 1."""
    try:
        size = int(os.environ.get("WORLD_SIZE", "1"))
        if size <= 1:
            return None
        return int(os.environ["RANK"]), size, int(os.environ.get("LOCAL_RANK", "0"))
    except (KeyError, ValueError) as e:
        raise ConfigError(f"WORLD_SIZE is set but RANK/LOCAL_RANK are missing or not integers ({e}).") from e


def _wants_gpu(device: str) -> bool:
    return device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())


def check_nproc(nproc: int, device: str = "auto") -> str:
    """The backend for ``nproc`` local processes on ``device`` (gloo or nccl), or a one-sentence ConfigError."""
    if nproc < 1:
        raise ConfigError(f"--nproc must be at least 1, got {nproc}.")
    if not dist.is_available():
        raise ConfigError("This build of torch has no torch.distributed, so --nproc must be 1.")
    if _wants_gpu(device):
        if not torch.cuda.is_available():
            raise ConfigError("device 'cuda' was asked for but no CUDA GPU is available.")
        if not dist.is_nccl_available():
            raise ConfigError("The NCCL backend that multi-GPU training needs is not available in this torch build.")
        gpus = torch.cuda.device_count()
        if nproc > gpus:
            raise ConfigError(f"--nproc {nproc} is more than the {gpus} GPU(s) of this machine (one process per GPU).")
        return "nccl"
    if not dist.is_gloo_available():
        raise ConfigError("The gloo backend that CPU training over several processes needs is not available.")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if nproc > cores:
        raise ConfigError(f"--nproc {nproc} is more than the {cores} CPU core(s) this process may use.")
    return "gloo"


def init(backend: str, rank: int, size: int, local_rank: int, init_method: str = "env://") -> World:
    """Join the process group (``init_method`` env:// under torchrun, a file store under :func:`launch`)."""
    global _WORLD
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    if not dist.is_initialized():
        dist.init_process_group(backend, init_method=init_method, rank=rank, world_size=size)
    _WORLD = World(rank, size, local_rank, backend, device)
    return _WORLD


def shutdown() -> None:
    global _WORLD
    _WORLD = None
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def run_in_torchrun(fn: Callable[[Any], Any], payload: Any, device: str = "auto") -> Any:
    """Run ``fn(payload)`` as one rank of a torchrun job; returns rank 0's result (None on other ranks)."""
    env = torchrun_env()
    assert env is not None
    rank, size, local = env
    local_size = int(os.environ.get("LOCAL_WORLD_SIZE", size))
    backend = check_nproc(local_size, device)
    init(backend, rank, size, local)
    out = fn(payload)
    dist.barrier()
    shutdown()
    return out if rank == 0 else None


# -- launching N local processes --------------------------------------------------------------------------
def launch(nproc: int, fn: Callable[[Any], Any], payload: Any, *, device: str = "auto", out_dir: Any = None) -> Any:
    """Run ``fn(payload)`` on ``nproc`` local ranks; returns rank 0's result.

    A rank that fails stops them all; a :class:`~segue.errors.SegueError` raised by a rank is raised
    again as it was (one sentence), any other failure becomes a :class:`~segue.errors.RankFailedError`
    naming the rank, what it died of, and the checkpoint ``out_dir`` keeps.
    """
    import torch.multiprocessing as mp

    backend = check_nproc(nproc, device)
    logging.getLogger("torch.multiprocessing.spawn").setLevel(logging.ERROR)  # our own sentence says it
    with tempfile.TemporaryDirectory(prefix="segue-dist-") as tmp:
        init_method = f"file://{tmp}/store"
        ctx = mp.start_processes(
            _worker,
            args=(nproc, backend, init_method, tmp, fn, payload),
            nprocs=nproc,
            join=False,
            start_method="spawn",
        )
        try:
            while not ctx.join():
                pass
        except (mp.ProcessRaisedException, mp.ProcessExitedException) as e:
            raise _failure(e, ctx, tmp, nproc, out_dir) from None
        with open(Path(tmp) / "result.pkl", "rb") as f:
            return pickle.load(f)


def _worker(index: int, nproc: int, backend: str, init_method: str, tmp: str, fn: Callable, payload: Any) -> None:
    threads = max(1, (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1) // nproc)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", threads)))
    fault = open(Path(tmp) / f"rank{index}.fault", "w")  # noqa: SIM115  # open for the life of the rank
    faulthandler.enable(file=fault, all_threads=True)  # a fatal signal leaves this rank's Python stack there
    try:
        init(backend, index, nproc, index, init_method)
        out = fn(payload)
        if index == 0:
            with open(Path(tmp) / "result.pkl", "wb") as f:
                pickle.dump(out, f)
        dist.barrier()  # no rank leaves the group while another still uses it
        shutdown()
    except BaseException as e:  # leave without tearing the group down: the peers may be stuck in a collective
        record = {"time": time.time(), "type": type(e).__name__, "message": str(e), "segue": isinstance(e, SegueError)}
        (Path(tmp) / f"rank{index}.err").write_text(json.dumps(record))
        raise


_COLLATERAL = ("connection closed", "connection reset", "gloo", "nccl", "broken pipe", "timed out", "peer")


def _failure(exc: Exception, ctx: Any, tmp: str, nproc: int, out_dir: Any) -> Exception:
    """The one error to show for a failed run: the first rank to fail, not the ranks its death broke."""
    time.sleep(0.2)  # let the other ranks' error records land
    errors = {}
    for r in range(nproc):
        f = Path(tmp) / f"rank{r}.err"
        if f.exists():
            try:
                errors[r] = json.loads(f.read_text())
            except json.JSONDecodeError:
                continue
    segue_errors = sorted((e["time"], r) for r, e in errors.items() if e["segue"])
    if segue_errors:  # a user error (bad data, existing run directory, ...): its own sentence
        rec = errors[segue_errors[0][1]]
        cls = next((c for c in _segue_error_classes() if c.__name__ == rec["type"]), SegueError)
        return cls(rec["message"])
    own = sorted((e["time"], r) for r, e in errors.items() if not any(w in e["message"].lower() for w in _COLLATERAL))
    killed = [
        (r, -p.exitcode)
        for r, p in enumerate(ctx.processes)
        if p.exitcode is not None and p.exitcode < 0 and -p.exitcode not in (signal.SIGTERM, signal.SIGINT)
    ]
    if own:
        rank = own[0][1]
        what = f"failed with {errors[rank]['type']}: {_first_line(errors[rank]['message'])}"
    elif killed:
        rank, sig = killed[0]
        what = f"was killed by {signal.Signals(sig).name}" + _fault_frame(Path(tmp) / f"rank{rank}.fault")
    elif errors:
        rank = min(errors, key=lambda r: errors[r]["time"])
        what = f"failed with {errors[rank]['type']}: {_first_line(errors[rank]['message'])}"
    else:
        rank = getattr(exc, "error_index", 0)
        what = f"exited with status {getattr(exc, 'exit_code', '?')}"
    return RankFailedError(f"Rank {rank} of {nproc} {what}, so the whole run stopped; {_kept(out_dir)}.")


def _segue_error_classes() -> list[type]:
    import segue.errors as errors

    return [c for c in vars(errors).values() if isinstance(c, type) and issubclass(c, SegueError)]


def _fault_frame(path: Path) -> str:
    """`` in FUNCTION (FILE:LINE)``: the innermost Python frame of the crashed thread in a faulthandler dump, or ''."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    lines = text.splitlines()  # "Current thread 0x.. (most recent call first):" then '  File "f", line n in fn'
    start = next((i for i, line in enumerate(lines) if line.startswith("Current thread")), 0)
    for line in lines[start:]:
        line = line.strip()
        if line.startswith('File "') and " line " in line and " in " in line:
            file, _, rest = line[len('File "') :].partition('", line ')
            number, _, fn = rest.partition(" in ")
            return f" in {fn} ({Path(file).name}:{number})"
    return ""


def _first_line(msg: str) -> str:
    line = (msg.strip().splitlines() or [""])[0].rstrip(".")
    return line[:300]


def _kept(out_dir: Any) -> str:
    """What the run keeps: the epoch checkpoint of segue/training/resume.py beside the run directory."""
    from segue.dirs import resume_dir
    from segue.files import read_json

    if out_dir is None:
        return "no run directory was asked for"
    kept = resume_dir(out_dir)
    try:
        epoch = int(read_json(kept / "checkpoint.json")["epoch"])
    except Exception:  # no checkpoint, or none that can be read: none to point at
        return f"{kept} holds no epoch checkpoint (none was written)"
    return f"{kept} keeps the checkpoint of epoch {epoch} (continue with --resume)"


# -- the trainer's hooks ---------------------------------------------------------------------------------------
class _LossCall(nn.Module):
    """DDP wraps a module whose forward is the training objective, so its hooks see ``model.loss``."""

    def __init__(self, model: nn.Module, objective: Callable[..., torch.Tensor]) -> None:
        super().__init__()
        self.model = model
        self.objective = objective

    def forward(self, batch: Any, spec: Any, adversary: Any) -> torch.Tensor:
        return self.objective(self.model, batch, spec, adversary)


def _sum_hook(state, bucket):  # type: ignore[no-untyped-def]  # DDP rejects string annotations (future import)
    """DDP communication hook that sums the gradients instead of averaging them (losses summed over a batch)."""
    fut = dist.all_reduce(bucket.buffer(), async_op=True).get_future()
    return fut.then(lambda f: f.value()[0])


class DataParallel:
    """What :class:`~segue.training.trainer.Trainer` does differently on two or more ranks (module docstring)."""

    def __init__(self, model: nn.Module, batches: Any, cfg: Any, w: World, objective: Callable[..., Any]) -> None:
        from torch.nn.parallel import DistributedDataParallel

        from segue.training.optim import SPARSE_OPTIMIZERS, sparse_embeddings

        if cfg.optimizer in SPARSE_OPTIMIZERS and (w.backend != "gloo" or cfg.reduction == "sum"):
            why = "NCCL cannot all-reduce sparse gradients" if w.backend != "gloo" else "a loss summed over the batch"
            raise ConfigError(
                f"{cfg.optimizer} over several processes needs gloo and a mean loss ({why} here); "
                f"use {cfg.optimizer.removeprefix('sparse-')} instead."
            )
        if not getattr(batches, "shardable", False):
            raise ConfigError(
                f"{type(batches).__name__} batches are not split across processes yet; train this model with --nproc 1."
            )
        self.world = w
        self.cfg = cfg
        batches.shard = (w.rank, w.size)
        batches.batch_size = math.ceil(batches.batch_size / w.size)
        sampler = getattr(batches, "sampler", None)
        if sampler is not None:  # negatives: a stream of their own per rank, seeded by (seed, rank)
            sampler.rng = np.random.default_rng(np.random.SeedSequence(cfg.seed, spawn_key=(w.rank,)))
        for emb in sparse_embeddings(model):  # DDP lays out its buckets for the gradients the optimizer will see
            emb.sparse = cfg.optimizer in SPARSE_OPTIMIZERS
        ids = [w.device.index] if w.device.type == "cuda" else None
        # buffers (item-KNN's lists, ...) are not trained and equal on every rank: no sync per forward
        sync = "forward_sync_buffers" if "forward_sync_buffers" in _ddp_options() else "broadcast_buffers"
        self.ddp = DistributedDataParallel(
            _LossCall(model, objective),
            device_ids=ids,
            static_graph=True,  # the same parameters every step: unused ones are found once, not every step
            **{sync: False},
        )
        if cfg.reduction == "sum":
            self.ddp.register_comm_hook(None, _sum_hook)

    def loss(self, batch: Any, spec: Any, adversary: Any) -> torch.Tensor:
        return self.ddp(batch, spec, adversary)

    def _tensor(self, values: list[float]) -> torch.Tensor:
        return torch.tensor(values, dtype=torch.float64, device=self.world.device)

    def time_cap(self, cap: Any) -> bool:
        """Whether any rank hit the time cap (every rank stops at the same step); no collective without a cap."""
        if cap.max_seconds is None:
            return False
        t = self._tensor([1.0 if cap.hit else 0.0])
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    def epoch_sums(self, total: float, seen: int) -> tuple[float, int]:
        """The epoch's loss total and rows over all ranks (the logged loss is the global mean)."""
        t = self._tensor([total, float(seen)])
        dist.all_reduce(t)
        return float(t[0].item()), int(t[1].item())

    def epoch_end(self, epoch: int) -> None:
        """All ranks meet after the epoch (and its checkpoint, written by rank 0); then the fault hook fires."""
        dist.barrier()
        _fault_hook(self.world.rank, epoch + 1)

    def stop(self, flag: bool) -> bool:
        """Rank 0's early-stopping decision, on every rank."""
        box = [bool(flag)]
        dist.broadcast_object_list(box, src=0)
        return bool(box[0])


def _ddp_options() -> set[str]:
    import inspect

    from torch.nn.parallel import DistributedDataParallel

    return set(inspect.signature(DistributedDataParallel.__init__).parameters)


def data_parallel(model: nn.Module, batches: Any, cfg: Any, objective: Callable[..., Any]) -> DataParallel | None:
    """The trainer's distributed hooks when there are two or more ranks (the batches are sharded); else None."""
    w = world()
    if w is None:
        return None
    return DataParallel(model, batches, cfg, w, objective)


def _fault_hook(rank: int, epoch: int) -> None:
    """Test hook: ``SEGUE_FAULT_RANK`` raises (``SEGUE_FAULT_KIND=kill``: is killed; ``abort``: aborts) as ``epoch``
    starts."""
    want_rank, want_epoch = os.environ.get("SEGUE_FAULT_RANK"), os.environ.get("SEGUE_FAULT_EPOCH")
    if want_rank is None or want_epoch is None or int(want_rank) != rank or int(want_epoch) != epoch:
        return
    kind = os.environ.get("SEGUE_FAULT_KIND", "raise")
    if kind == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    if kind == "abort":  # as glibc does on a corrupted heap
        os.abort()
    raise RuntimeError(f"injected fault at the start of epoch {epoch}")


# -- evaluation ---------------------------------------------------------------------------------------------------
def eval_shard(n_cases: int) -> tuple[int, int] | None:
    """The block of ``n_cases`` this rank evaluates, or None when evaluation is not split (one process, or
    fewer cases than ranks)."""
    w = world()
    if w is None or n_cases < w.size:
        return None
    return w.share(n_cases)


def reduce_means(per_case: dict[str, torch.Tensor]) -> dict[str, float]:
    """Means over every rank's cases: per-metric float64 sums and the case count, reduced by one all_reduce."""
    w = world()
    assert w is not None
    keys = list(per_case)
    n = len(next(iter(per_case.values()))) if keys else 0
    t = torch.tensor([float(per_case[k].double().sum()) for k in keys] + [float(n)], dtype=torch.float64)
    t = t.to(w.device)
    dist.all_reduce(t)
    t = t.cpu()
    count = float(t[-1])
    return {k: float(t[i] / count) for i, k in enumerate(keys)}


def gather_cases(values: torch.Tensor, n_cases: int) -> torch.Tensor:
    """Every rank's per-case values of a split evaluation, in case order (all_gather, blocks padded to one size)."""
    w = world()
    assert w is not None
    width = math.ceil(n_cases / w.size) + 1
    buf = torch.zeros(width, dtype=torch.float64, device=w.device)
    buf[: len(values)] = values.double().to(w.device)
    parts = [torch.zeros_like(buf) for _ in range(w.size)]
    dist.all_gather(parts, buf)
    blocks = [parts[r][: w.share(n_cases, r)[1] - w.share(n_cases, r)[0]] for r in range(w.size)]
    return torch.cat(blocks).cpu()


__all__ = [
    "DataParallel",
    "World",
    "check_nproc",
    "data_parallel",
    "eval_shard",
    "gather_cases",
    "init",
    "is_main",
    "launch",
    "reduce_means",
    "run_in_torchrun",
    "shutdown",
    "torchrun_env",
    "world",
]
