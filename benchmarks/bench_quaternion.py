"""QUALSE vs SASRec at the same embedding size: training samples/s and evaluation users/s on Toys and Yelp.

Training throughput: ``--train-batches`` batches of 256 training rows, each row its history
window, its positive and 4 sampled negatives (forward + backward + Adam step, as the trainer
does; the same candidates for both models so only the architecture differs), reported as
training rows per second. Evaluation throughput: ``--eval-users`` test users of the B.8
protocol, each ranking all of its test items with 1,000 sampled negatives through
:func:`segue.evaluation.protocols.evaluate`, reported as users per second. Models are
untrained (throughput does not depend on the weights). Users are subsampled (``--users``) so
the run stays small; the window is ``l = Q3 + 1.5 IQR`` of the sequence lengths for both
models (QUALSE's long-term window, SASRec's ``max_len``). One thread by default.

Usage::

    python benchmarks/bench_quaternion.py [--datasets toys,yelp] [--dim 64] [--users 3000]
        [--train-batches 20] [--eval-users 500] [--threads 1] [--data-dir ../shared/data]
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
from segue.data.preprocess import dedup
from segue.data.sampling import NegativeSampler
from segue.data.sequences import history_windows
from segue.evaluation.protocols import evaluate
from segue.evaluation.sequential import attach_history, sequential_protocol, subsample_users
from segue.models.base import Context, Recommender, build_model
from segue.models.qualse import whisker_length


def train_throughput(model: Recommender, train: Any, windows: torch.Tensor, batches: int) -> float:
    """Training rows per second over ``batches`` batches of 256 rows with 4 negatives each (2 warm-up batches)."""
    rng = np.random.default_rng(0)
    sampler = NegativeSampler(train.to_csr(), seed=rng)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    model.train()
    n = 256 * (batches + 2)
    rows = rng.choice(len(train), size=n, replace=n > len(train))
    negs = torch.as_tensor(sampler.sample(train.users[rows], 4))
    users, items = torch.as_tensor(train.users[rows]), torch.as_tensor(train.items[rows])
    t0 = 0.0
    for b in range(batches + 2):
        if b == 2:
            t0 = time.perf_counter()
        sl = slice(b * 256, (b + 1) * 256)
        cand = torch.cat([items[sl, None], negs[sl]], dim=1)
        scores = model.score(users[sl], cand, Context(history=windows[rows[sl]]))
        loss = -torch.nn.functional.logsigmoid(scores[:, :1] - scores[:, 1:]).mean()
        loss = loss + model.regularization(users[sl], cand)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return 256 * batches / (time.perf_counter() - t0)


def eval_throughput(model: Recommender, test: Any) -> float:
    model.eval()
    t0 = time.perf_counter()
    evaluate(model, test, ks=(10, 100), metrics=("HIT", "NDCG"), batch_size=256)
    return len(test) / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--datasets", default="toys,yelp")
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--users", type=int, default=3000)
    p.add_argument("--train-batches", type=int, default=20)
    p.add_argument("--eval-users", type=int, default=500)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    out: dict[str, Any] = {"dim": args.dim, "threads": args.threads, "torch": torch.__version__, "rows": []}
    print(f"dim {args.dim}, {args.threads} thread(s), torch {torch.__version__}")
    print(f"{'dataset':<8} {'model':<8} {'window':>6} {'params':>9} {'train rows/s':>13} {'eval users/s':>13}")
    for dataset in [d for d in args.datasets.split(",") if d]:
        data = subsample_users(dedup(load_dataset(dataset, data_dir=args.data_dir)), args.users, seed=0)
        proto = sequential_protocol(per_user=dataset in ("toys", "yelp"), n_negatives=1000)
        split = proto.split(data)
        _, test = proto.evalsets(split)
        test = test.subset(np.arange(min(args.eval_users, len(test))))
        w = whisker_length(data)
        windows = torch.as_tensor(history_windows(split.train, w))
        test_h = attach_history(test, [split.train, split.valid], w)
        for name, options in (
            ("qualse", {"dim": args.dim, "l": w}),
            ("sasrec", {"dim": args.dim, "max_len": w, "dropout": 0.5}),
        ):
            torch.manual_seed(0)
            model = build_model(name, split.train.n_users, split.train.n_items, options)
            n_params = sum(p.numel() for p in model.parameters())
            tr = train_throughput(model, split.train, windows, args.train_batches)
            ev = eval_throughput(model, test_h)
            row = {
                "dataset": dataset,
                "model": name,
                "window": w,
                "params": n_params,
                "train_rows_per_s": round(tr, 1),
                "eval_users_per_s": round(ev, 1),
                "eval_users": len(test_h),
            }
            out["rows"].append(row)
            print(f"{dataset:<8} {name:<8} {w:>6} {n_params:>9} {tr:>13.1f} {ev:>13.1f}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)
    return out


if __name__ == "__main__":
    main()
