"""SASRec on ml-1m: seconds per epoch, per-window rows vs per-sequence rows, then a short per-sequence run.

Part 1, epoch time at each ``--lens`` window/sequence length:

* old (per window): the generic trainer's loop, one (50- or 200-item history window, next item)
  row per training interaction, scored through ``score`` against one negative, BCE, Adam.
  ``--old-batches`` batches are timed (after 2 warm-up batches) and extrapolated to the epoch's
  ``ceil(rows / batch)`` batches, plus the epoch's negative sampling, timed in full.
* new (per sequence): one row per user (:func:`segue.data.sequences.sequence_rows`) with a
  target at every position, one negative per position
  (:func:`segue.data.sequences.sequence_negatives`), :meth:`SASRec.loss`, Adam; a whole
  epoch is timed, negative sampling included.

The epochs are not the same work: an old epoch trains every training row, a new one only the
last ``L`` targets of each user (as the authors do), so a second ratio is given per target.

Part 2: a minimal Adam loop over sequence batches at the paper's ml-1m setting (Kang and
McAuley 2018, section IV: d = 50, 2 blocks, 1 head, max_len n = 200, dropout 0.2, batch 128,
lr 1e-3, BCE with one negative per position) for at most ``--train-seconds`` of training
time (evaluation time excluded), the dev set evaluated every ``--eval-every`` epochs and the
best-dev state kept; dev and test HR@10 / NDCG@10 on the ``loo-sampled`` sets (100 sampled
negatives) through :func:`segue.evaluation.protocols.evaluate`, with Popularity on the same
sets for reference. One thread by default (``--threads``).

Usage::

    SEGUE_DATA_DIR=../shared/data taskset -c 0 python benchmarks/bench_sasrec_epoch.py \\
        [--lens 50 200] [--old-batches 20] [--train-seconds 300] [--max-len 200] [--json out.json]
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import time
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np
import torch

from segue.data.batch import SequenceBatch
from segue.data.datasets import load_dataset
from segue.data.sampling import NegativeSampler
from segue.data.sequences import history_windows, sequence_negatives, sequence_rows
from segue.evaluation.protocols import EvalSet, evaluate, get_protocol
from segue.models.base import Context, build_model
from segue.models.losses import LossSpec, get_loss
from segue.models.sequential_baselines import SASRec
from segue.pipeline import prepare


def _model(train: Any, max_len: int, dropout: float, dim: int, seed: int = 0) -> SASRec:
    torch.manual_seed(seed)
    m = build_model("sasrec", train.n_users, train.n_items, {"dim": dim, "max_len": max_len, "dropout": dropout})
    assert isinstance(m, SASRec)
    return m


def old_epoch_seconds(train: Any, max_len: int, batch: int, n_batches: int, dropout: float, dim: int) -> dict:
    """The generic trainer's per-window epoch, extrapolated from ``n_batches`` timed batches."""
    m = _model(train, max_len, dropout, dim)
    opt = torch.optim.Adam(m.parameters(), lr=1e-3)
    loss_fn = get_loss("bce")
    rng = np.random.default_rng(0)
    sampler = NegativeSampler(train.to_csr(), seed=rng)
    t = time.perf_counter()
    windows = torch.as_tensor(history_windows(train, max_len))
    prep = time.perf_counter() - t
    users, items = train.users, train.items
    t = time.perf_counter()
    perm = rng.permutation(len(users))
    negs = torch.as_tensor(sampler.sample(users[perm], 1))  # the trainer samples a whole epoch at once
    sampling = time.perf_counter() - t
    users_t, items_t = torch.as_tensor(users.copy()), torch.as_tensor(items.copy())
    perm_t = torch.as_tensor(perm)
    m.train()
    t0 = 0.0
    for b in range(n_batches + 2):
        if b == 2:
            t0 = time.perf_counter()
        sl = slice(b * batch, (b + 1) * batch)
        idx = perm_t[sl]
        u = users_t[idx]
        cand = torch.cat([items_t[idx, None], negs[sl]], 1)
        scores = m.score(u, cand, Context(history=windows[idx]))
        loss = loss_fn(scores[:, :1], scores[:, 1:]) + m.regularization(u, cand)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    per_batch = (time.perf_counter() - t0) / n_batches
    epoch_batches = math.ceil(len(users) / batch)
    return {
        "rows": len(users),
        "batches": epoch_batches,
        "timed_batches": n_batches,
        "seconds_per_batch": per_batch,
        "sampling_seconds": sampling,
        "window_build_seconds": prep,
        "epoch_seconds": per_batch * epoch_batches + sampling,
    }


class SequenceEpochs:
    """Per-sequence rows of ``train`` and a sampler of per-position negatives, batched per epoch."""

    def __init__(self, train: Any, max_len: int, batch: int, seed: int = 0) -> None:
        t = time.perf_counter()
        self.users, self.inputs, self.targets = sequence_rows(train, max_len)
        self.build_seconds = time.perf_counter() - t
        self.rng = np.random.default_rng(seed)
        self.sampler = NegativeSampler(train.to_csr(), seed=self.rng)
        self.batch = batch

    def __len__(self) -> int:
        return math.ceil(len(self.users) / self.batch)

    def epoch(self) -> Any:
        perm = self.rng.permutation(len(self.users))
        negs = sequence_negatives(self.sampler, self.users[perm], self.targets[perm], 1)
        u, x, y = (torch.as_tensor(a[perm]) for a in (self.users, self.inputs, self.targets))
        n = torch.as_tensor(negs)
        for b in range(len(self)):
            sl = slice(b * self.batch, (b + 1) * self.batch)
            yield SequenceBatch(u[sl], x[sl], y[sl], n[sl])


def train_epoch(m: SASRec, opt: torch.optim.Optimizer, data: SequenceEpochs) -> float:
    m.train()
    total, n = 0.0, 0
    for batch in data.epoch():
        loss = m.loss(batch, LossSpec("bce"))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        total += loss.item() * len(batch)
        n += len(batch)
    return total / n


def new_epoch_seconds(train: Any, max_len: int, batch: int, dropout: float, dim: int) -> dict:
    m = _model(train, max_len, dropout, dim)
    opt = torch.optim.Adam(m.parameters(), lr=1e-3)
    data = SequenceEpochs(train, max_len, batch)
    t = time.perf_counter()
    train_epoch(m, opt, data)
    sec = time.perf_counter() - t
    return {
        "rows": len(data.users),
        "targets": int((data.targets != 0).sum()),
        "batches": len(data),
        "row_build_seconds": data.build_seconds,
        "epoch_seconds": sec,
    }


def metrics(model: Any, es: EvalSet) -> dict[str, float]:
    return {k: round(v, 4) for k, v in evaluate(model, es, ks=(10,), metrics=("HR", "NDCG")).items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--lens", type=int, nargs="*", default=[50, 200], help="lengths for the epoch-time comparison")
    p.add_argument("--old-batches", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--dim", type=int, default=50)
    p.add_argument("--dropout", type=float, default=0.2)
    p.add_argument("--max-len", type=int, default=200, help="max_len of the quality run (the paper's ml-1m value)")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--train-seconds", type=float, default=300.0, help="training-time budget (0 skips the run)")
    p.add_argument("--eval-every", type=int, default=5)
    p.add_argument("--json", default=None)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)  # as the trainer does: denormal Adam moments are ~100x slower on x86
    t = time.perf_counter()
    data = load_dataset("ml-1m")
    _, split, valid, test = prepare(data, get_protocol("loo-sampled"))
    assert valid is not None
    train = split.train
    print(
        f"ml-1m loo-sampled: {len(train):,} train rows, {train.n_users:,} users, {train.n_items:,} items, "
        f"prepared in {time.perf_counter() - t:.1f}s; {args.threads} thread(s), batch {args.batch_size}"
    )
    out: dict[str, Any] = {"threads": args.threads, "batch_size": args.batch_size, "dim": args.dim, "epochs": []}

    print(f"{'len':>4} {'old s/epoch (extrapolated)':>27} {'new s/epoch':>12} {'ratio':>7} {'per target':>12}")
    for L in args.lens:
        old = old_epoch_seconds(train, L, args.batch_size, args.old_batches, args.dropout, args.dim)
        new = new_epoch_seconds(train, L, args.batch_size, args.dropout, args.dim)
        ratio = old["epoch_seconds"] / new["epoch_seconds"]
        # an old epoch trains every row; a new one only the last ``L`` targets of each user
        per_target = ratio * new["targets"] / old["rows"]
        out["epochs"].append({"len": L, "old": old, "new": new, "ratio": ratio, "ratio_per_target": per_target})
        print(
            f"{L:>4} {old['epoch_seconds']:>27.1f} {new['epoch_seconds']:>12.2f} {ratio:>6.0f}x {per_target:>11.0f}x"
            f"   (old: {old['batches']} batches x {old['seconds_per_batch']:.3f}s + {old['sampling_seconds']:.1f}s "
            f"sampling, {old['rows']:,} targets; new: {new['batches']} batches, {new['targets']:,} targets)",
            flush=True,
        )

    pop = build_model("pop", train.n_users, train.n_items)
    pop.fit(train)
    out["pop"] = {"dev": metrics(pop, valid), "test": metrics(pop, test)}
    print(f"pop: dev {out['pop']['dev']}  test {out['pop']['test']}", flush=True)
    if args.train_seconds > 0:
        out["run"] = quality_run(train, valid, test, args)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)


def quality_run(train: Any, valid: EvalSet, test: EvalSet, args: argparse.Namespace) -> dict[str, Any]:
    L = args.max_len
    m = _model(train, L, args.dropout, args.dim)
    opt = torch.optim.Adam(m.parameters(), lr=args.lr, betas=(0.9, 0.98))
    data = SequenceEpochs(train, L, args.batch_size)
    dev_h, test_h = valid.with_history(train, L), test.with_history(train, L)
    print(
        f"training: dim {args.dim}, max_len {L}, dropout {args.dropout}, lr {args.lr}, batch {args.batch_size}, "
        f"budget {args.train_seconds:.0f}s of training time",
        flush=True,
    )
    spent, eval_spent, epoch = 0.0, 0.0, 0
    best: tuple[float, int, dict] | None = None
    log = []
    while spent < args.train_seconds:
        epoch += 1
        t = time.perf_counter()
        loss = train_epoch(m, opt, data)
        spent += time.perf_counter() - t
        rec: dict[str, Any] = {"epoch": epoch, "loss": round(loss, 4), "train_seconds": round(spent, 1)}
        if epoch % args.eval_every == 0 or spent >= args.train_seconds:
            t = time.perf_counter()
            rec["dev"] = metrics(m, dev_h)
            eval_spent += time.perf_counter() - t
            if best is None or rec["dev"]["NDCG@10"] > best[0]:
                best = (rec["dev"]["NDCG@10"], epoch, copy.deepcopy(m.state_dict()))
        log.append(rec)
        print("  " + "  ".join(f"{k} {v}" for k, v in rec.items()), flush=True)
    last_test = metrics(m, test_h)
    assert best is not None
    m.load_state_dict(best[2])
    res = {
        "max_len": L,
        "dropout": args.dropout,
        "lr": args.lr,
        "epochs": epoch,
        "train_seconds": round(spent, 1),
        "eval_seconds": round(eval_spent, 1),
        "best_epoch": best[1],
        "dev": metrics(m, dev_h),
        "test": metrics(m, test_h),
        "test_last_epoch": last_test,
        "log": log,
    }
    print(
        f"sasrec (per-sequence, best dev epoch {best[1]} of {epoch}, {spent:.0f}s training): "
        f"dev {res['dev']}  test {res['test']}  (last epoch test {last_test})",
        flush=True,
    )
    return res


if __name__ == "__main__":
    main()
