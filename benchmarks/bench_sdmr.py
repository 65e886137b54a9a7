"""SDMR benchmarks on ml-1m: training samples/s and evaluation users/s for SDP, SDM (H = 1..4) and SDMR.

Training throughput: ``--train-batches`` batches of 256 training rows (each scored against its
positive and 4 negatives, forward + backward + Adam step, as the trainer does), reported as
training rows per second. Evaluation throughput: every ml-1m user's 101 candidates (the test
item and 100 sampled negatives) scored through :func:`segue.evaluation.protocols.evaluate`,
reported as users per second. Models are untrained (throughput does not depend on the
weights). One thread by default (``--threads``).

Usage::

    SEGUE_DATA_DIR=../shared/data python benchmarks/bench_sdmr.py [--dim 64] [--s 5] [--threads 1]
        [--train-batches 30] [--users 6040] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np
import torch

from segue.data.datasets import load_dataset
from segue.data.sampling import NegativeSampler
from segue.data.sequences import history_windows
from segue.evaluation.protocols import evaluate, get_protocol
from segue.models.base import Context, Recommender
from segue.models.sdmr import SDM, SDMR, SDP
from segue.pipeline import prepare


def train_throughput(model: Recommender, train: Any, windows: torch.Tensor | None, batches: int) -> float:
    """Training rows per second over ``batches`` batches of 256 rows with 4 negatives each."""
    rng = np.random.default_rng(0)
    sampler = NegativeSampler(train.to_csr(), seed=rng)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=1e-3)
    model.train()
    rows = rng.choice(len(train), size=256 * (batches + 2), replace=False)
    negs = torch.as_tensor(sampler.sample(train.users[rows], 4))
    users = torch.as_tensor(train.users[rows])
    items = torch.as_tensor(train.items[rows])
    t0 = 0.0
    for b in range(batches + 2):
        if b == 2:  # two warm-up batches
            t0 = time.perf_counter()
        sl = slice(b * 256, (b + 1) * 256)
        cand = torch.cat([items[sl, None], negs[sl]], dim=1)
        ctx = Context(history=windows[rows[sl]]) if windows is not None else None
        scores = model.score(users[sl], cand, ctx)
        loss = -torch.nn.functional.logsigmoid(scores[:, :1] - scores[:, 1:]).mean()
        loss = loss + model.regularization(users[sl], cand)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return 256 * batches / (time.perf_counter() - t0)


def eval_throughput(model: Recommender, test: Any, n_users: int) -> float:
    """Users per second when scoring each user's 101 candidates."""
    es = test.subset(np.arange(min(n_users, len(test))))
    evaluate(model, es.subset(np.arange(min(64, len(es)))))  # warm-up
    t0 = time.perf_counter()
    evaluate(model, es)
    return len(es) / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--s", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--train-batches", type=int, default=30)
    p.add_argument("--users", type=int, default=6040)
    p.add_argument("--json", default=None)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    t = time.perf_counter()
    data = load_dataset("ml-1m")
    _, split, _, test = prepare(data, get_protocol("loo-sampled"))
    train = split.train
    print(f"ml-1m: {len(train):,} train rows, {len(test):,} test users, prepared in {time.perf_counter() - t:.1f}s")
    windows = torch.as_tensor(history_windows(train, args.s))
    test_h = test.with_history(train, args.s)
    n_u, n_i = train.n_users, train.n_items
    models: list[tuple[str, Recommender]] = [("SDP", SDP(n_u, n_i, SDP.Config(dim=args.dim)))]
    for h in (1, 2, 3, 4):
        models.append((f"SDM H={h}", SDM(n_u, n_i, SDM.Config(dim=args.dim, hops=h, s=args.s))))
    sdmr = SDMR.from_parts(models[0][1], models[3][1])  # type: ignore[arg-type]
    sdmr.sdp.requires_grad_(False)
    sdmr.sdm.requires_grad_(False)
    models.append(("SDMR (H=3, frozen parts)", sdmr))
    out = []
    print(f"{'model':<26} {'train rows/s':>13} {'eval users/s':>13} {'eval all users (s)':>19}")
    for label, m in models:
        w = windows if "history" in m.needs else None
        tr = train_throughput(m, train, w, args.train_batches)
        m.eval()
        ev = eval_throughput(m, test_h, args.users)
        rec = {"model": label, "train_rows_per_s": round(tr, 1), "eval_users_per_s": round(ev, 1)}
        out.append(rec)
        print(f"{label:<26} {tr:>13,.0f} {ev:>13,.0f} {len(test) / ev:>19.1f}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"dim": args.dim, "s": args.s, "threads": args.threads, "results": out}, f, indent=2)


if __name__ == "__main__":
    main()
